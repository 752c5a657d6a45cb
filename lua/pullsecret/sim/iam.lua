--- Simulated IBM Cloud IAM host (`iam.<domain>`): the API-key grant and its refresh.
--
-- Config: `config.dedicated` (see pullsecret.sim.dedicated); a user's `apikey` is accepted.
--
--   POST /identity/token
--   Authorization: Basic Yng6Yng=   (client "bx:bx")  else 400 BXNIM0308E (missing) / 401 BXNIM0308E (wrong)
--   Content-Type: application/x-www-form-urlencoded   else 400 BXNIM0109E
--   grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=KEY&response_type=cloud_iam
--   grant_type=refresh_token&refresh_token=R
--   200 {"access_token":<HS256 JWT with iam_id, account.bss, exp>,"refresh_token":R,
--        "token_type":"Bearer","expires_in":N,"expiration":<unix>,"scope":"ibm openid"}
--   errors: {"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found",
--            "context":{"requestId":"..."}} (400), BXNIM0109E missing property (400),
--            BXNIM0103E unsupported grant type (400), BXNIM0407E bad refresh token (400).
local dedicated = require "pullsecret.sim.dedicated"
local jwt = require "pullsecret.sim.jwt"
local util = require "pullsecret.sim.util"

local M, Svc = dedicated.service("iam")

local APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"

local function iam_error(status, code, message)
  local rid = dedicated.uuid()
  return util.json(status, {
    errorCode = code, errorMessage = message, errorDetails = message,
    context = { requestId = rid, requestType = "incoming.Identity_Token" },
  }, { ["Transaction-Id"] = rid })
end

function Svc:issue(user, req, refresh_token)
  local st, c = self.st, self.st.cfg
  local now = dedicated.now()
  local base = dedicated.url(st, "iam", req) or req.base_url or ""
  local access = jwt.sign({
    iam_id = "IBMid-" .. user.id, id = "IBMid-" .. user.id, sub = user.name, email = user.name,
    account = { bss = user.account, valid = true }, grant_type = APIKEY_GRANT,
    scope = "ibm openid", client_id = "bx", cid = "bx", acr = 1, amr = { "pwd" },
    iat = now, exp = now + c.iam_token_lifetime, iss = base .. "/identity",
  }, c.secret)
  if not refresh_token then
    refresh_token = dedicated.random(32)
    st.refresh[refresh_token] = { user = user, exp = now + c.refresh_lifetime, issuer = "iam" }
  end
  dedicated.issued(st, "iam", access, refresh_token)
  return util.json(200, {
    access_token = access, refresh_token = refresh_token, token_type = "Bearer",
    expires_in = c.iam_token_lifetime, expiration = now + c.iam_token_lifetime, scope = "ibm openid",
  })
end

function Svc:handle(req)
  local st = self.st
  local params, _, fields = dedicated.form(req)
  dedicated.record(st, "iam", req, { fields = fields })
  if req.path ~= "/identity/token" then
    return iam_error(404, "BXNIM0101E", "Not found: " .. req.path)
  end
  local grant = { fields = fields, grant_type = params.grant_type }
  st.grants.iam[#st.grants.iam + 1] = grant
  if req.method ~= "POST" then return iam_error(405, "BXNIM0102E", "Method not allowed") end
  local auth = req.headers.authorization
  if not auth then return iam_error(400, "BXNIM0308E", "Missing client credentials") end
  if auth ~= "Basic Yng6Yng=" then return iam_error(401, "BXNIM0308E", "Client id or secret is invalid") end
  if not util.is_form(req) then
    return iam_error(400, "BXNIM0109E", "Content-Type must be application/x-www-form-urlencoded")
  end
  local gt = params.grant_type
  if gt == APIKEY_GRANT then
    grant.kind = "apikey"
    if not params.apikey or params.apikey == "" then
      return iam_error(400, "BXNIM0109E", "Property missing or empty: apikey")
    end
    for _, u in ipairs(st.users) do
      if u.apikey and u.apikey == params.apikey then
        grant.user = u.name
        return self:issue(u, req)
      end
    end
    return iam_error(400, "BXNIM0415E", "Provided API key could not be found")
  elseif gt == "refresh_token" then
    grant.kind = "refresh"
    local r = params.refresh_token and st.refresh[params.refresh_token]
    if not r or r.issuer ~= "iam" or r.exp <= dedicated.now() then
      return iam_error(400, "BXNIM0407E", "Provided refresh token is invalid or expired")
    end
    grant.user = r.user.name
    return self:issue(r.user, req, params.refresh_token)
  elseif not gt or gt == "" then
    return iam_error(400, "BXNIM0109E", "Property missing or empty: grant_type")
  end
  return iam_error(400, "BXNIM0103E", "Unsupported grant type")
end

return M
