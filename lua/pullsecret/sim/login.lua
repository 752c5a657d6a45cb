--- Simulated UAA login host of IBM Cloud Dedicated (`login.<domain>`).
--
-- Config: `config.dedicated` (see pullsecret.sim.dedicated). One endpoint:
--
--   POST <login_path>/oauth/token          (login_path default "/UAALoginServerWAR"; a bare
--                                           /oauth/token is 404, as the advertised token_endpoint
--                                           does not behave like a standard one)
--   Authorization: Basic Y2Y6              (client "cf", empty secret) else 401 unauthorized
--   Content-Type: application/x-www-form-urlencoded else 415; Accept must allow JSON else 406
--   grants:  grant_type=password&username=U&password=P&scope=
--            grant_type=password&passcode=CODE&scope=        (each passcode works once)
--            grant_type=password&username=apikey&password=KEY&scope=
--            grant_type=refresh_token&refresh_token=R&scope=
--   200 {"access_token":<HS256 JWT, exp = now + token_lifetime>,"token_type":"bearer",
--        "refresh_token":R,"expires_in":N,"scope":"...","jti":"..."}
--   errors (UAA shapes): 400 invalid_request / unsupported_grant_type,
--        401 {"error":"unauthorized","error_description":"Bad credentials"} (wrong password,
--        unknown user, bad API key), 401 unauthorized "Invalid passcode",
--        401 invalid_token "Invalid refresh token (expired): <token>" (UAA echoes the token:
--        clients must not copy descriptions blindly).
-- Unknown form fields are refused (400), so a client sending extra fields is caught.
local dedicated = require "pullsecret.sim.dedicated"
local jwt = require "pullsecret.sim.jwt"
local util = require "pullsecret.sim.util"

local M, Svc = dedicated.service("login")

local SCOPES = { "cloud_controller.read", "cloud_controller.write", "openid", "password.write",
  "cloud_controller_service_permissions.read", "uaa.user" }

local function uaa_error(status, code, description)
  return util.json(status, { error = code, error_description = description },
    { ["Cache-Control"] = "no-store", ["WWW-Authenticate"] = 'Bearer realm="UAA/oauth", error="' .. code .. '"' })
end

local ALLOWED = { grant_type = true, username = true, password = true, passcode = true,
  refresh_token = true, scope = true, response_type = true }

-- Issues an access/refresh token pair for `user`.
function Svc:issue(user, req, grant, refresh_token)
  local st, c = self.st, self.st.cfg
  local now = dedicated.now()
  local jti = dedicated.uuid():gsub("-", "")
  local base = dedicated.url(st, "login", req) or req.base_url or ""
  local access = jwt.sign({
    jti = jti, sub = user.id, user_id = user.id, user_name = user.name, email = user.name,
    origin = "uaa", zid = "uaa", cid = "cf", client_id = "cf", grant_type = grant,
    scope = SCOPES, aud = { "cloud_controller", "openid", "password", "uaa" },
    iat = now, exp = now + c.token_lifetime,
    iss = base .. c.login_path .. "/oauth/token",
  }, c.secret)
  if not refresh_token then
    refresh_token = dedicated.random(24) .. "-r"
    st.refresh[refresh_token] = { user = user, exp = now + c.refresh_lifetime, issuer = "uaa" }
  end
  dedicated.issued(st, "login", access, refresh_token)
  return util.json(200, {
    access_token = access, token_type = "bearer", refresh_token = refresh_token,
    expires_in = c.token_lifetime, scope = table.concat(SCOPES, " "), jti = jti,
  }, { ["Cache-Control"] = "no-store", Pragma = "no-cache" })
end

function Svc:handle(req)
  local st, c = self.st, self.st.cfg
  local path = req.path
  if path ~= c.login_path .. "/oauth/token" then
    dedicated.record(st, "login", req)
    return util.json(404, { error = "not_found", error_description = "no such endpoint: " .. path })
  end
  local params, list, fields = dedicated.form(req)
  local grant = { fields = fields, grant_type = params.grant_type }
  st.grants.login[#st.grants.login + 1] = grant
  dedicated.record(st, "login", req, { fields = fields })

  if req.method ~= "POST" then
    return util.json(405, { error = "method_not_allowed", error_description = "Request method '" .. req.method ..
      "' not supported" }, { Allow = "POST" })
  end
  local auth = req.headers.authorization
  if not auth then
    return uaa_error(401, "unauthorized", "Full authentication is required to access this resource")
  end
  if auth ~= "Basic Y2Y6" then
    return uaa_error(401, "unauthorized", "Bad credentials")
  end
  if not util.is_form(req) then
    return uaa_error(415, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
  end
  local accept = (req.headers.accept or "*/*"):lower()
  if not (accept:find("application/json", 1, true) or accept:find("*/*", 1, true)) then
    return uaa_error(406, "invalid_request", "Accept must allow application/json")
  end
  for _, kv in ipairs(list) do
    if not ALLOWED[kv[1]] then
      return uaa_error(400, "invalid_request", "Unexpected parameter: " .. kv[1])
    end
  end

  local gt = params.grant_type
  if gt == nil or gt == "" then
    return uaa_error(400, "invalid_request", "Missing grant type")
  elseif gt == "password" then
    if params.passcode then
      if params.username or params.password then
        return uaa_error(400, "invalid_request", "passcode cannot be combined with username/password")
      end
      local user = st.passcodes[params.passcode]
      if not user then return uaa_error(401, "unauthorized", "Invalid passcode") end
      st.passcodes[params.passcode] = nil         -- one-time
      grant.kind, grant.user = "passcode", user.name
      return self:issue(user, req, "password")
    end
    if not params.username or params.username == "" or not params.password then
      return uaa_error(400, "invalid_request", "Missing username or password")
    end
    if params.username == "apikey" then
      grant.kind = "apikey"
      for _, u in ipairs(st.users) do
        if u.apikey and u.apikey == params.password then
          grant.user = u.name
          return self:issue(u, req, "password")
        end
      end
      return uaa_error(401, "unauthorized", "Bad credentials")
    end
    grant.kind = "password"
    local user = st.users_by_name[params.username:lower()]
    if not user or not user.password or user.password ~= params.password then
      return uaa_error(401, "unauthorized", "Bad credentials")
    end
    grant.user = user.name
    return self:issue(user, req, "password")
  elseif gt == "refresh_token" then
    grant.kind = "refresh"
    local rt = params.refresh_token
    if not rt or rt == "" then return uaa_error(400, "invalid_request", "Missing refresh_token") end
    local r = st.refresh[rt]
    if not r or r.issuer ~= "uaa" then
      return uaa_error(401, "invalid_token", "Invalid refresh token: " .. rt)
    end
    if r.exp <= dedicated.now() then
      return uaa_error(401, "invalid_token", "Invalid refresh token (expired): " .. rt)
    end
    grant.user = r.user.name
    return self:issue(r.user, req, "refresh_token", rt)
  end
  return uaa_error(400, "unsupported_grant_type", "Unsupported grant type: " .. gt)
end

return M
