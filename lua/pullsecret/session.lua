--- An IBM Cloud session: the OAuth token of step 2, kept fresh, and saved between runs.
--
-- Sessions come from pullsecret.login (UAA: password, passcode, API key, refresh token;
-- IAM: API key) or from a file written by `s:save`.
--
--     local login = require "pullsecret.login"
--     local session = require "pullsecret.session"
--     local s = assert(login.password{ api = "api.example.com", username = "me@example.com",
--                                      password = os.getenv("IBM_PASSWORD") })
--     s:oauth_token()          --> "bearer eyJhbGciOi..."  (token_type .. " " .. access_token;
--                              --   refreshed first when it expires within 60 s)
--     local res, err = s:request{ method = "GET", url = s.api .. "/v2/organizations" }
--                              -- pullsecret.http request with Authorization set; after a 401 the
--                              -- session refreshes its token and retries once
--     assert(s:save(os.getenv("HOME") .. "/.pullsecret/session.json"))   -- mode 0600, atomic
--     s = assert(session.load(path, { ca_file = "..." }))             -- same http options as login
--     print(s)                 --> session me@example.com@api.example.com (expires in 41 min)
--     s:close()
--
-- Fields (read-only): kind ("uaa" | "iam"), user, api (API base URL, or the IAM base URL),
-- host (host[:port] of api), domain (or nil), registry (default registry base URL or nil),
-- authorization_endpoint, token_url, account (IAM account id or nil), token_type,
-- expires_at (unix seconds or nil when unknown). The access and refresh tokens are not
-- fields: they are kept where tostring, pairs and JSON encoders do not see them.
-- Methods: oauth_token() -> string | nil, err; refresh() -> true | nil, err;
-- request(req) -> res | nil, err; expires_in() -> seconds | nil; save(path) -> true | nil, err;
-- close(). Errors: kind "auth" (refresh refused: log in again), "protocol", "input" (files),
-- and the transport kinds of pullsecret.http.
local cjson = require "cjson.safe"
local core = require "pullsecret.core"
local errors = require "pullsecret.errors"
local http = require "pullsecret.http"
local ibmerr = require "pullsecret.ibmerr"

local session = {}

local Session = {}
Session.__index = Session
Session.__name = "pullsecret.session"

-- access_token / refresh_token per session, out of sight of tostring, pairs and encoders.
local secret = setmetatable({}, { __mode = "k" })

session.REFRESH_MARGIN = 60
session.CLIENTS = { uaa = "Basic Y2Y6", iam = "Basic Yng6Yng=" }   -- cf: and bx:bx

local HTTP_OPTIONS = { "ca_file", "ca_pem", "cert_file", "cert_pem", "key_file", "key_pem", "insecure",
  "proxy", "http2", "user_agent", "connect_to", "retry", "on_event", "log" }

--- The pullsecret.http client for `opts` (opts.http, or a new one): h, owned.
function session.http_client(opts)
  if opts.http then return opts.http, false end
  local o = {}
  for _, k in ipairs(HTTP_OPTIONS) do o[k] = opts[k] end
  return http.new(o), true
end

--- Decoded JWT claims of `token`, or nil (opaque or malformed tokens are allowed here).
function session.claims(token)
  if type(token) ~= "string" then return nil end
  local _, payload = core.jwt_claims(token)
  local claims = payload and cjson.decode(payload)
  return type(claims) == "table" and claims or nil
end

--- "host[:port]" of a URL.
function session.host_of(url)
  return url and url:match("^%a[%w+.-]*://([^/]+)") or url
end

--- POSTs a token grant and checks the answer: token response table | nil, err.
-- g = { h =, kind = "uaa"|"iam", token_url =, form = {{k,v},...}, what =, hint =, secrets =, timeout_ms = }
function session.token_grant(g)
  local res, err = g.h:request{
    method = "POST", url = g.token_url, idempotent = false, timeout_ms = g.timeout_ms,
    headers = { ["Authorization"] = session.CLIENTS[g.kind], ["Accept"] = "application/json",
                ["Content-Type"] = "application/x-www-form-urlencoded" },
    body = core.form_encode(g.form),
  }
  if not res then return nil, errors.wrap(err, g.what) end
  if res.status < 200 or res.status > 299 then
    return nil, ibmerr.response(res, { what = g.what, hint = g.hint, secrets = g.secrets })
  end
  local body, perr = ibmerr.json_object(res, g.what, "a JSON token response")
  if not body then return nil, perr end
  if type(body.access_token) ~= "string" or body.access_token == "" then
    return nil, ibmerr.protocol(g.what, "a JSON token response with an access_token field", "no access_token")
  end
  if type(body.token_type) ~= "string" or body.token_type == "" or body.token_type:find("%s") then
    return nil, ibmerr.protocol(g.what, "a JSON token response with a token_type field", "no token_type")
  end
  if body.refresh_token ~= nil and type(body.refresh_token) ~= "string" then body.refresh_token = nil end
  return body
end

-- When the access token stops being good: min(now + expires_in, JWT exp), or nil.
local function expiry_of(tok, claims, now)
  local at
  local ein = tonumber(tok.expires_in)
  if ein then at = now + math.floor(ein) end
  local exp = claims and tonumber(claims.exp)
  if exp then exp = math.floor(exp); at = at and math.min(at, exp) or exp end
  return at
end

--- Makes a session from a token response (used by pullsecret.login): session.
-- o = { kind =, api =, user =, domain =, registry =, authorization_endpoint =, token_url =, h =,
--       owned =, refresh_margin =, timeout_ms =, account = }
function session.from_token(tok, o)
  local claims = session.claims(tok.access_token)
  local s = setmetatable({
    kind = o.kind, api = o.api, host = session.host_of(o.api), domain = o.domain, registry = o.registry,
    authorization_endpoint = o.authorization_endpoint, token_url = o.token_url,
    user = o.user, account = o.account, token_type = tok.token_type,
    refresh_margin = o.refresh_margin or session.REFRESH_MARGIN, timeout_ms = o.timeout_ms,
  }, Session)
  s.expires_at = expiry_of(tok, claims, os.time())
  if claims then
    s.user = s.user or claims.user_name or claims.email or claims.sub
    if s.kind == "iam" and type(claims.account) == "table" then s.account = s.account or claims.account.bss end
  end
  s.user = s.user or "?"
  rawset(s, "_h", o.h)
  rawset(s, "_owned", o.owned)
  secret[s] = { access = tok.access_token, refresh = tok.refresh_token }
  return s
end

function Session:__tostring()
  local left = self:expires_in()
  local when
  if not left then when = "expiry unknown"
  elseif left <= 0 then when = "expired"
  else when = "expires in " .. (left // 60) .. " min" end
  return "session " .. tostring(self.user) .. "@" .. tostring(self.host) .. " (" .. when .. ")"
end

--- Seconds until the access token expires (negative once expired), or nil when unknown.
function Session:expires_in()
  if not self.expires_at then return nil end
  return self.expires_at - os.time()
end

--- True when the session holds a refresh token.
function Session:can_refresh()
  return secret[self] ~= nil and secret[self].refresh ~= nil
end

--- Gets a new access token with the refresh token: true | nil, err (kind "auth": log in again).
function Session:refresh()
  local sec = secret[self]
  if not sec then return nil, errors.new("input", "the session is closed") end
  if not sec.refresh then
    return nil, errors.new("auth", "the session for " .. tostring(self.host) ..
      " expired and cannot be refreshed (no refresh token): log in again", { reason = "no refresh token" })
  end
  local form
  if self.kind == "iam" then
    form = { { "grant_type", "refresh_token" }, { "refresh_token", sec.refresh } }
  else
    form = { { "grant_type", "refresh_token" }, { "refresh_token", sec.refresh }, { "scope", "" } }
  end
  local tok, err = session.token_grant{
    h = self._h, kind = self.kind, token_url = self.token_url, form = form, timeout_ms = self.timeout_ms,
    what = "refreshing the session for " .. tostring(self.host),
    hint = function(info)
      if info.status and info.status < 500 then return "the session expired: log in again" end
    end,
    secrets = { sec.refresh, sec.access },
  }
  if not tok then return nil, err end
  sec.access = tok.access_token
  sec.refresh = tok.refresh_token or sec.refresh
  self.token_type = tok.token_type
  self.expires_at = expiry_of(tok, session.claims(tok.access_token), os.time())
  return true
end

--- The step-2 string "<token_type> <access_token>", refreshed first when it expires within
-- refresh_margin (60 s): string | nil, err.
function Session:oauth_token()
  local sec = secret[self]
  if not sec then return nil, errors.new("input", "the session is closed") end
  local left = self:expires_in()
  if left and left <= self.refresh_margin then
    if sec.refresh then
      local ok, err = self:refresh()
      -- a token that is still good is used even when its refresh failed; an expired one is not
      if not ok and left <= 0 then return nil, err end
    elseif left <= 0 then
      return nil, errors.new("auth", "the session for " .. tostring(self.host) .. " expired: log in again",
        { reason = "expired" })
    end
  end
  return self.token_type .. " " .. sec.access
end

--- A pullsecret.http request with `Authorization: <oauth token>`; after a 401 the token is
-- refreshed and the request sent once more. Returns the response (any status) | nil, err.
function Session:request(req)
  local token, err = self:oauth_token()
  if not token then return nil, err end
  local function send(tok)
    local r = {}
    for k, v in pairs(req) do r[k] = v end
    r.headers = {}
    for k, v in pairs(req.headers or {}) do r.headers[k] = v end
    r.headers["Authorization"] = tok
    r.timeout_ms = r.timeout_ms or self.timeout_ms
    return self._h:request(r)
  end
  local res, herr = send(token)
  if not res then return nil, herr end
  if res.status == 401 and self:can_refresh() then
    local ok, rerr = self:refresh()
    if not ok then return nil, rerr end
    res, herr = send(self.token_type .. " " .. secret[self].access)
    if not res then return nil, herr end
  end
  return res
end

--- The pullsecret.http client the session sends with.
function Session:http()
  return self._h
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Writes the session to `path` (JSON, mode 0600, written to a private temp file in the same
-- directory and renamed over `path`): true | nil, err (kind "input").
function Session:save(path)
  if type(path) ~= "string" or path == "" then error("session:save: path must be a non-empty string", 2) end
  local sec = secret[self]
  if not sec then return nil, errors.new("input", "the session is closed") end
  local doc = {
    version = 1, kind = self.kind, api = self.api, domain = self.domain, registry = self.registry,
    authorization_endpoint = self.authorization_endpoint, token_url = self.token_url,
    user = self.user, account = self.account, token_type = self.token_type, expires_at = self.expires_at,
    access_token = sec.access, refresh_token = sec.refresh,
  }
  local text = assert(cjson.encode(doc))
  local dir = path:match("^(.*)/[^/]*$") or "."
  if dir == "" then dir = "/" end
  local base = path:match("([^/]*)$")
  -- mktemp(1) creates the file with O_EXCL and mode 0600 whatever the umask: no window in
  -- which another user could open it.
  local p = io.popen("mktemp " .. shell_quote(dir .. "/." .. base .. ".XXXXXX") .. " 2>/dev/null")
  local tmp = p and p:read("l")
  if p then p:close() end
  if not tmp or tmp == "" then
    return nil, errors.new("input", "cannot save the session: cannot create a file in " .. dir ..
      " (does the directory exist and is it writable?)", { path = path })
  end
  local f, ferr = io.open(tmp, "w")
  if not f then
    os.remove(tmp)
    return nil, errors.new("input", "cannot save the session to " .. path .. ": " .. tostring(ferr), { path = path })
  end
  local ok, werr = f:write(text, "\n")
  if ok then ok, werr = f:flush() end
  f:close()
  if ok then os.execute("sync " .. shell_quote(tmp) .. " 2>/dev/null") end
  if ok then ok, werr = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    return nil, errors.new("input", "cannot save the session to " .. path .. ": " .. tostring(werr), { path = path })
  end
  return true
end

-- "rwxr-x---" of a file (LuaFileSystem when present, else stat(1)), or nil when it does not exist.
local function permissions(path)
  local ok, lfs = pcall(require, "lfs")
  if ok then return lfs.attributes(path, "permissions") end
  local p = io.popen("stat -L -c %A " .. shell_quote(path) .. " 2>/dev/null")
  local mode = p and p:read("l")
  if p then p:close() end
  return mode and mode:sub(2, 10) or nil
end

--- Reads a session written by `save`: session | nil, err (kind "input").
-- opts: the http options of pullsecret.login (ca_file, http, log, ...), refresh_margin, timeout_ms.
function session.load(path, opts)
  if type(path) ~= "string" then error("session.load: path must be a string", 2) end
  opts = opts or {}
  local perm = permissions(path)
  if perm and perm:sub(4) ~= "------" then
    return nil, errors.new("input", "session file " .. path .. " can be read by other users (" .. perm ..
      "): run chmod 600 " .. path .. " or log in again", { path = path })
  end
  local f, ferr = io.open(path, "r")
  if not f then
    return nil, errors.new("input", "no saved session at " .. path .. " (" .. tostring(ferr) .. "): log in first",
      { path = path })
  end
  local text = f:read("a")
  f:close()
  local doc = cjson.decode(text)
  if type(doc) ~= "table" or doc.version ~= 1 or type(doc.access_token) ~= "string"
      or type(doc.token_type) ~= "string" or (doc.kind ~= "uaa" and doc.kind ~= "iam") then
    return nil, errors.new("input", "session file " .. path .. " is not a pullsecret session: log in again",
      { path = path })
  end
  local h, owned = session.http_client(opts)
  local s = session.from_token({ access_token = doc.access_token, token_type = doc.token_type,
    refresh_token = doc.refresh_token }, {
    kind = doc.kind, api = doc.api, user = doc.user, domain = doc.domain, registry = doc.registry,
    authorization_endpoint = doc.authorization_endpoint, token_url = doc.token_url, account = doc.account,
    h = h, owned = owned, refresh_margin = opts.refresh_margin, timeout_ms = opts.timeout_ms,
  })
  s.expires_at = math.tointeger(doc.expires_at) or s.expires_at
  return s
end

--- Forgets the tokens and closes the http client if the session made it. Idempotent.
function Session:close()
  secret[self] = nil
  if self._owned and self._h then self._h:close() end
  rawset(self, "_h", nil)
end

session.Session = Session
return session
