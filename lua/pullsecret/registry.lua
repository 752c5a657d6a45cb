--- Step 4 of the procedure: registry tokens of IBM Cloud Container Registry (Dedicated).
--
--     local registry = require "pullsecret.registry"
--     local reg = assert(registry.new{ session = s, org_guid = guid })   -- url default: s.registry
--     local t, err = reg:create{ description = "k8s pull secret" }
--       --> { token = "eyJ...", id = "637b3d8c-...", permanent = true, readonly = true,
--       --     description = "k8s pull secret", expires = nil, issuer = "registry.<domain>" }
--     reg:create{ permanent = false, write = true }      -- expiring (exp in the JWT), read-write
--     local list = reg:list()
--       --> { { id =, description =, readonly =, expires = nil | unix, revoked =, owner =, token = }, ... }
--     local t = reg:get(id_or_token)                     --> like create's answer
--     assert(reg:revoke(id_or_token))    -- a JWT (anything with a ".") is revoked by its id, its jti
--     assert(reg:revoke_by_description("k8s pull secret"))
--     registry.token_info(token) --> { id =, issuer =, expires = nil | unix, permanent = } | nil, err
--
-- registry.new options: session (required; its oauth token is the Authorization), url
-- (registry base URL or host, default session.registry = https://registry.<domain>),
-- org_guid (sent as "Organization"), account (sent as "Account"; for IAM sessions defaults
-- to the session's account when no org_guid is given). At least one of org_guid/account.
-- create options: permanent (default true: the procedure's point), write (default false:
-- read-only), description (default none). The query string is exactly
-- "permanent=true|false" [.. "&write=true"] [.. "&description=<percent-encoded>"].
-- Errors: kind "registry" (the registry's answer: err.code "CRG0009E", err.status,
-- err.request_id; the message says what to do), "auth" (the session could not be refreshed),
-- "http" (unexpected statuses without a registry body), "protocol" (non-JSON body, no token
-- field, malformed JWT: err.reason names what was expected), "input" (bad arguments).
local cjson = require "cjson.safe"
local core = require "pullsecret.core"
local errors = require "pullsecret.errors"
local ibmerr = require "pullsecret.ibmerr"

local registry = {}

local Registry = {}
Registry.__index = Registry
Registry.__name = "pullsecret.registry"

-- The claims of a JWT, checked for shape: claims | nil, err (kind "protocol").
local function claims_of(token)
  local function bad(reason)
    return nil, errors.new("protocol", "malformed registry token: " .. reason, { reason = reason })
  end
  if type(token) ~= "string" or token == "" then return bad("empty (expected a JWT)") end
  local parts = select(2, token:gsub("%.", "")) + 1
  if parts ~= 3 then
    return bad(parts .. " dot-separated part" .. (parts == 1 and "" or "s") ..
      " (expected header.payload.signature)")
  end
  if token:find("%.%.") or token:find("^%.") or token:find("%.$") then
    return bad("an empty part (expected header.payload.signature)")
  end
  if not token:match("[^.]+$"):find("^[%w_-]+$") then
    return bad("the signature is not base64url (expected header.payload.signature)")
  end
  local header, payload = core.jwt_claims(token)
  if not header then return bad(ibmerr.scrub(tostring(payload), { token }) .. " (expected a JWT)") end
  local head = header:find("^%s*{") and cjson.decode(header)
  if type(head) ~= "table" then return bad("the header is not a JSON object (expected a JWT header)") end
  local claims = payload:find("^%s*{") and cjson.decode(payload)
  if type(claims) ~= "table" then return bad("the payload is not a JSON object (expected JWT claims)") end
  if claims.exp ~= nil and type(claims.exp) ~= "number" then
    return bad("the exp claim is not a number (expected unix seconds)")
  end
  return claims
end

local function info_of(claims, id)
  return { id = id, issuer = type(claims.iss) == "string" and claims.iss or nil,
           expires = claims.exp and math.floor(claims.exp) or nil, permanent = claims.exp == nil }
end

--- Claims of a registry token: { id =, issuer =, expires =, permanent = } | nil, err (kind "protocol").
function registry.token_info(token)
  local claims, err = claims_of(token)
  if not claims then return nil, err end
  if type(claims.jti) ~= "string" or claims.jti == "" then
    return nil, errors.new("protocol", "malformed registry token: no jti claim (expected the token id)",
      { reason = "no jti claim (expected the token id)" })
  end
  return info_of(claims, claims.jti)
end

--- A registry token client: reg | nil, err (kind "input").
function registry.new(opts)
  if type(opts) ~= "table" then error("registry.new: expects an option table", 2) end
  local s = opts.session
  if type(s) ~= "table" or type(s.request) ~= "function" then error("registry.new: session is required", 2) end
  local url = opts.url or s.registry
  if type(url) ~= "string" or url == "" then
    return nil, errors.new("input", "the registry URL is unknown: give it (e.g. registry.<domain>)",
      { field = "registry" })
  end
  if not url:find("^%a[%w+.-]*://") then url = "https://" .. url end
  url = url:gsub("/+$", "")
  local account = opts.account
  if not opts.org_guid and not account and s.kind == "iam" then account = s.account end
  if (type(opts.org_guid) ~= "string" or opts.org_guid == "") and (type(account) ~= "string" or account == "") then
    return nil, errors.new("input", "the registry needs the org GUID (Organization header) or an account id " ..
      "(Account header): give org_guid or account", { field = "org_guid" })
  end
  return setmetatable({ session = s, url = url, host = url:match("^%a[%w+.-]*://([^/]+)"),
    org_guid = opts.org_guid, account = account }, Registry)
end

function Registry:__tostring()
  return "registry " .. self.host .. " (" .. (self.org_guid and ("org " .. self.org_guid) or
    ("account " .. tostring(self.account))) .. ")"
end

local function hint(self, action)
  return function(info)
    if info.code == "CRG0009E" then
      return "not authorized for " .. (self.org_guid and ("org " .. self.org_guid) or ("account " ..
        tostring(self.account))) .. ": check the org name and that " .. tostring(self.session.user) ..
        " is a member of it"
    end
    if info.status == 401 then return "the session expired or the token is not accepted; log in again" end
    if info.status == 404 and action.id then
      return "no registry token with id " .. action.id .. ": list the tokens to see which exist"
    end
    if info.status == 400 then return "the registry refused the request" end
    if info.status and info.status >= 500 then return "the registry is failing: try again later" end
  end
end

function Registry:call(method, path, query, action)
  local headers = { ["Accept"] = "application/json" }
  if self.org_guid then headers["Organization"] = self.org_guid end
  if self.account then headers["Account"] = self.account end
  local url = self.url .. path .. (query and query ~= "" and ("?" .. query) or "")
  local what = action.what .. " at " .. self.host
  local res, err = self.session:request{ method = method, url = url, headers = headers,
    idempotent = method ~= "POST" }
  if not res then return nil, errors.wrap(err, what) end
  if res.status < 200 or res.status > 299 then
    return nil, ibmerr.response(res, { what = what, hint = hint(self, action), secrets = action.secrets })
  end
  return res, what
end

-- A token answer -> the friendly record.
local function token_record(body, what)
  if type(body.token) ~= "string" or body.token == "" then
    return nil, ibmerr.protocol(what, "a JSON object with a token field", "no token field")
  end
  -- the id: the answer's identifier when it has one, else the JWT's jti
  local claims, err = claims_of(body.token)
  if not claims then return nil, errors.wrap(err, what) end
  local id = body.identifier
  if type(id) ~= "string" or id == "" then
    local info
    info, err = registry.token_info(body.token)
    if not info then return nil, errors.wrap(err, what) end
    id = info.id
  end
  local info = info_of(claims, id)
  info.token = body.token
  return info
end

--- POST /api/v1/tokens: { token, id, permanent, readonly, description, expires, issuer } | nil, err.
function Registry:create(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("registry:create: expects an option table", 2) end
  local permanent = opts.permanent ~= false
  local write = opts.write == true
  local q = "permanent=" .. tostring(permanent)
  if write then q = q .. "&write=true" end
  if opts.description ~= nil then
    if type(opts.description) ~= "string" then error("registry:create: description must be a string", 2) end
    q = q .. "&description=" .. core.urlencode(opts.description)
  end
  local res, what = self:call("POST", "/api/v1/tokens", q, { what = "creating a registry token" })
  if not res then return nil, what end
  local body, err = ibmerr.json_object(res, what, "a JSON object with a token field")
  if not body then return nil, err end
  local rec
  rec, err = token_record(body, what)
  if not rec then return nil, err end
  rec.readonly = not write
  rec.description = opts.description
  return rec
end

--- GET /api/v1/tokens: list of { id, description, readonly, expires, revoked, owner, token } | nil, err.
function Registry:list()
  local res, what = self:call("GET", "/api/v1/tokens", nil, { what = "listing registry tokens" })
  if not res then return nil, what end
  local body, err = ibmerr.json_object(res, what, 'a JSON object with a "tokens" array')
  if not body then return nil, err end
  if type(body.tokens) ~= "table" then
    return nil, ibmerr.protocol(what, 'a JSON object with a "tokens" array', "no tokens array")
  end
  local out = {}
  for _, t in ipairs(body.tokens) do
    if type(t) ~= "table" then return nil, ibmerr.protocol(what, "token objects in the tokens array") end
    local id = type(t._id) == "string" and t._id or nil
    if not id and type(t.token) == "string" then
      local info = registry.token_info(t.token)
      id = info and info.id
    end
    local expiry = tonumber(t.expiry)
    local desc = t.secondary_owner
    out[#out + 1] = {
      id = id,
      description = (type(desc) == "string" and desc ~= "") and desc or nil,
      readonly = t.readonly ~= false,
      expires = (expiry and expiry > 0) and math.floor(expiry) or nil,
      revoked = t.revoked == true,
      owner = type(t.owner) == "string" and t.owner or nil,
      token = type(t.token) == "string" and t.token or nil,
    }
  end
  return out
end

-- A token id, or a token (a JWT: anything with a ".") mapped to its id, its jti, so that the token
-- never travels in a URL or an error message: id | nil, err.
local function id_of(id_or_token, fname)
  if type(id_or_token) ~= "string" or id_or_token == "" then
    error("registry:" .. fname .. ": expects a token id", 3)
  end
  if not id_or_token:find(".", 1, true) then return id_or_token end
  local info, err = registry.token_info(id_or_token)
  if not info then return nil, err end
  return info.id
end

--- GET /api/v1/tokens/<id> (a token is looked up by its id, its jti): { token, id, permanent, expires,
-- issuer } | nil, err.
function Registry:get(id_or_token)
  local id, ierr = id_of(id_or_token, "get")
  if not id then return nil, ierr end
  local res, what = self:call("GET", "/api/v1/tokens/" .. core.urlencode(id), nil,
    { what = "getting registry token " .. id, id = id })
  if not res then return nil, what end
  local body, err = ibmerr.json_object(res, what, "a JSON object with a token field")
  if not body then return nil, err end
  return token_record(body, what)
end

--- DELETE /api/v1/tokens/<id>; a token (a JWT) is revoked by its id (jti) so that it never
-- travels in a URL: true | nil, err.
function Registry:revoke(id_or_token)
  local id, ierr = id_of(id_or_token, "revoke")
  if not id then return nil, ierr end
  local res, what = self:call("DELETE", "/api/v1/tokens/" .. core.urlencode(id), nil,
    { what = "revoking registry token " .. id, id = id, secrets = { id_or_token } })
  if not res then return nil, what end
  return true
end

--- DELETE /api/v1/tokens?secondaryOwner=<description>: true | nil, err.
function Registry:revoke_by_description(text)
  if type(text) ~= "string" or text == "" then
    error("registry:revoke_by_description: expects a non-empty description", 2)
  end
  local res, what = self:call("DELETE", "/api/v1/tokens", "secondaryOwner=" .. core.urlencode(text),
    { what = "revoking the registry tokens described \"" .. text .. "\"" })
  if not res then return nil, what end
  return true
end

return registry
