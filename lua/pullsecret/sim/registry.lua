--- Simulated IBM Cloud Container Registry token API of IBM Cloud Dedicated (`registry.<domain>`).
--
-- Config: `config.dedicated` (see pullsecret.sim.dedicated): registry_token_lifetime,
-- registry_identifier, registry_create_status, domain, secret. Rules, in order:
--
--   1. Authorization: bearer <token from the login or iam host>, unexpired
--        else 401 {"code":"CRG0001E",...}
--   2. Organization: <org guid> and/or Account: <account id>; at least one
--        else 400 {"code":"CRG0002E",...}; an org the user is not a member of, or an account
--        that is not the user's: 401 {"code":"CRG0009E","message":"You are not authorized to
--        access the specified account.",...}. Tokens belong to the org (or the account).
--   3. The operation (wire-ibm.md section 5):
--      POST   /api/v1/tokens?permanent=true|false[&write=true|false][&description=TEXT]
--             -> 200 (or registry_create_status) {"token":"<jwt>"} (+ "identifier" when
--                registry_identifier); the JWT is HS256 with jti = id, iss = "registry.<domain>",
--                exp only when not permanent. permanent absent = false. Unknown or repeated
--                parameters and values other than true/false: 400 CRG0004E.
--      GET    /api/v1/tokens             -> {"tokens":[{"_id","owner","token","secondary_owner",
--                                            "readonly","revoked","expiry"}]} (revoked ones too)
--      GET    /api/v1/tokens/<id>        -> {"token":"<jwt>"}; unknown or revoked: 404 CRG0005E
--      DELETE /api/v1/tokens/<id|token>  -> 204; unknown: 404 CRG0005E
--      DELETE /api/v1/tokens?secondaryOwner=TEXT -> 204 (revokes every token with that description)
-- Error bodies: {"code":"CRG....","message":"...","request-id":"..."} plus an X-Request-Id header.
-- Only CRG0009E is a code seen on the real service; the others are the simulator's own.
local dedicated = require "pullsecret.sim.dedicated"
local jwt = require "pullsecret.sim.jwt"
local util = require "pullsecret.sim.util"

local M, Svc = dedicated.service("registry")

local function crg(status, code, message)
  local rid = dedicated.uuid()
  return util.json(status, { code = code, message = message, ["request-id"] = rid }, { ["X-Request-Id"] = rid })
end

local function no_content()
  return util.response(204, nil, "", { ["X-Request-Id"] = dedicated.uuid() })
end

local function public(t)
  return { _id = t._id, owner = t.owner, token = t.token, secondary_owner = t.secondary_owner,
    readonly = t.readonly, revoked = t.revoked, expiry = t.expiry }
end

-- The scope (org or account) the request acts in: scope | nil, error response.
function Svc.scope(_, req, user)
  local org = req.headers.organization
  local account = req.headers.account
  if (not org or org == "") and (not account or account == "") then
    return nil, crg(400, "CRG0002E", "The Organization or Account header is missing.")
  end
  if org and org ~= "" and not user.member[org] then
    return nil, crg(401, "CRG0009E", "You are not authorized to access the specified account.")
  end
  if account and account ~= "" and account ~= user.account then
    return nil, crg(401, "CRG0009E", "You are not authorized to access the specified account.")
  end
  if org and org ~= "" then return "org:" .. org end
  return "account:" .. account
end

function Svc:find(scope, key)
  for _, t in ipairs(self.st.tokens) do
    if t.scope == scope and (t._id == key or t.token == key) then return t end
  end
end

function Svc:create(req, user, scope)
  local st, c = self.st, self.st.cfg
  local _, list = util.parse_query(req.query or "")
  local p, seen = {}, {}
  for _, kv in ipairs(list) do
    local k, v = kv[1], kv[2]
    if k ~= "permanent" and k ~= "write" and k ~= "description" then
      return crg(400, "CRG0004E", "Unknown parameter: " .. k)
    end
    if seen[k] then return crg(400, "CRG0004E", "Repeated parameter: " .. k) end
    seen[k] = true
    if (k == "permanent" or k == "write") and v ~= "true" and v ~= "false" then
      return crg(400, "CRG0004E", "The " .. k .. " parameter must be true or false.")
    end
    p[k] = v
  end
  local now = dedicated.now()
  local id = dedicated.uuid()
  local claims = { jti = id, iss = "registry." .. c.domain }
  local permanent = p.permanent == "true"
  if not permanent then claims.exp = now + c.registry_token_lifetime end
  local token = jwt.sign(claims, c.secret)
  local rec = { _id = id, owner = user.name, token = token, secondary_owner = p.description or "",
    readonly = p.write ~= "true", revoked = false, expiry = claims.exp or 0, scope = scope, created = now }
  st.tokens[#st.tokens + 1] = rec
  local body = { token = token }
  if c.registry_identifier then body.identifier = id end
  return util.json(c.registry_create_status, body, { ["X-Request-Id"] = dedicated.uuid() })
end

function Svc:handle(req)
  local st = self.st
  dedicated.record(st, "registry", req)
  local key = req.path:match("^/api/v1/tokens/(.+)$")
  if req.path ~= "/api/v1/tokens" and not key then
    return crg(404, "CRG0006E", "Not found: " .. req.path)
  end
  local user = dedicated.bearer_user(st, req)
  if not user then
    return crg(401, "CRG0001E", "You are not authorized to access this resource: the token is missing, "
      .. "expired or not valid. Log in again.")
  end
  local scope, resp = self:scope(req, user)
  if not scope then return resp end
  local m = req.method
  if not key then
    if m == "POST" then return self:create(req, user, scope) end
    if m == "GET" then
      local out = util.array()
      for _, t in ipairs(st.tokens) do
        if t.scope == scope then out[#out + 1] = public(t) end
      end
      return util.json(200, { tokens = out }, { ["X-Request-Id"] = dedicated.uuid() })
    end
    if m == "DELETE" then
      local _, list = util.parse_query(req.query or "")
      if #list ~= 1 or list[1][1] ~= "secondaryOwner" or list[1][2] == "" then
        return crg(400, "CRG0004E", "DELETE /api/v1/tokens needs exactly one parameter: secondaryOwner.")
      end
      for _, t in ipairs(st.tokens) do
        if t.scope == scope and t.secondary_owner == list[1][2] then t.revoked = true end
      end
      return no_content()
    end
    return crg(405, "CRG0007E", "Method not allowed.")
  end
  key = util.percent_decode(key)
  if m == "GET" then
    local t = self:find(scope, key)
    if not t or t.revoked then return crg(404, "CRG0005E", "The token was not found.") end
    return util.json(200, { token = t.token }, { ["X-Request-Id"] = dedicated.uuid() })
  elseif m == "DELETE" then
    local t = self:find(scope, key)
    if not t then return crg(404, "CRG0005E", "The token was not found.") end
    t.revoked = true
    return no_content()
  end
  return crg(405, "CRG0007E", "Method not allowed.")
end

return M
