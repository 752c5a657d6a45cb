--- Step 1 of the procedure: log in to IBM Cloud (Dedicated: UAA; public: IAM) and get a session.
--
--     local login = require "pullsecret.login"
--     local s, err = login.password{ api = "api.example.com",          -- or "https://api.example.com"
--                                    username = "me@example.com", password = pw }
--     s, err = login.passcode{ api = "api.example.com", passcode = code }  -- SSO one-time passcode
--     s, err = login.apikey{ api = "api.example.com", apikey = key }       -- UAA, username=apikey
--     s, err = login.refresh{ api = "api.example.com", refresh_token = rt }
--     s, err = login.iam{ apikey = key }              -- IAM, default iam = "https://iam.cloud.ibm.com"
--     s, err = login.login{ api = ..., password = ... | passcode = ... | apikey = ... | refresh_token = ... }
--                                                     -- picks the grant from the fields given
--     local info, err = login.discover{ api = "api.example.com" }     -- the /v2/info document
--     print(s:oauth_token())                          --> bearer eyJhbGciOi...
--
-- Options (all grants):
--   api                     "api.<domain>" or a full URL (required for UAA grants)
--   authorization_endpoint  skip discovery and use this (tokens go to <it>/oauth/token)
--   token_url               the token endpoint itself (overrides the above)
--   domain                  default: the api host without its leading "api."
--   registry                registry base URL; default "https://registry.<domain>"
--   http                    a pullsecret.http client to use; else one is made from
--   ca_file, ca_pem, cert_file, cert_pem, key_file, key_pem, insecure, proxy, http2,
--   user_agent, connect_to, retry, log, on_event   (see pullsecret.http; log gets redacted lines)
--   timeout_ms, refresh_margin (default 60 s)
-- IAM grant: apikey, iam ("iam.<domain>" or URL; default "iam.<domain>" when `domain` is given or
--   `api` is "api.<domain>", else https://iam.cloud.ibm.com), token_url (default <iam>/identity/token),
--   registry, domain.
--
-- Returns a pullsecret.session, or nil and an error: kind "auth" (credentials refused: the
-- message says what to check), "http" (unexpected status), "protocol" (an answer that is not
-- what the wire format says), "input" (bad options), or a transport kind from pullsecret.http.
-- Secrets never appear in messages or log lines.
local errors = require "pullsecret.errors"
local ibmerr = require "pullsecret.ibmerr"
local session = require "pullsecret.session"

local login = {}

login.IAM_DEFAULT = "https://iam.cloud.ibm.com"

--- "api.example.com" | "https://api.example.com/" -> "https://api.example.com" | nil, err.
function login.base_url(s, what)
  if type(s) ~= "string" or s == "" then
    return nil, errors.new("input", what .. " is missing: give the API endpoint, e.g. api.<domain>", { field = what })
  end
  if s:find("[%s%c]") then
    return nil, errors.new("input", what .. " is not a valid host name or URL", { field = what })
  end
  if not s:find("^%a[%w+.-]*://") then s = "https://" .. s end
  if not s:find("^https?://[^/]+") then
    return nil, errors.new("input", what .. " must be a host name or an http(s) URL", { field = what })
  end
  return (s:gsub("/+$", ""))
end

local function check_opts(opts, fname)
  if type(opts) ~= "table" then error("login." .. fname .. ": expects an option table", 3) end
end

--- GET <api>/v2/info: the document | nil, err. opts: api, http options.
function login.discover(opts)
  check_opts(opts, "discover")
  local api, err = login.base_url(opts.api, "api")
  if not api then return nil, err end
  local h, owned = session.http_client(opts)
  local doc
  doc, err = login.fetch_info(h, api, opts.timeout_ms)
  if owned then h:close() end
  return doc, err
end

function login.fetch_info(h, api, timeout_ms)
  local what = "discovering the login endpoints at " .. api .. "/v2/info"
  local res, err = h:request{ method = "GET", url = api .. "/v2/info", timeout_ms = timeout_ms,
    headers = { ["Accept"] = "application/json" } }
  if not res then return nil, errors.wrap(err, what) end
  if res.status ~= 200 then
    return nil, ibmerr.response(res, { what = what,
      hint = "check the API endpoint (api.<domain> of the IBM Cloud Dedicated environment)" })
  end
  local doc, perr = ibmerr.json_object(res, what, "the Cloud Foundry /v2/info JSON document")
  if not doc then return nil, perr end
  if type(doc.authorization_endpoint) ~= "string" or not doc.authorization_endpoint:find("^https?://") then
    return nil, ibmerr.protocol(what, "an authorization_endpoint URL in /v2/info", "authorization_endpoint missing")
  end
  return doc
end

local HINTS = {
  password = function(api) return "check the user name and password for " .. api end,
  apikey = function(api) return "check the API key for " .. api end,
  passcode = function(_, auth_ep)
    return "the one-time passcode was not accepted (each works once): get a new one from "
      .. auth_ep .. "/passcode"
  end,
  refresh = function() return "the session expired: log in again" end,
}

-- The UAA grants: one shape, four forms.
local function uaa(opts, grant, form, secrets, user)
  local api, err = login.base_url(opts.api, "api")
  if not api then return nil, err end
  local h, owned = session.http_client(opts)
  local function fail(e)
    if owned then h:close() end
    return nil, e
  end
  local auth_ep = opts.authorization_endpoint
  if not auth_ep and not opts.token_url then
    local info
    info, err = login.fetch_info(h, api, opts.timeout_ms)
    if not info then return fail(err) end
    auth_ep = info.authorization_endpoint
  end
  auth_ep = auth_ep and auth_ep:gsub("/+$", "")
  local token_url = opts.token_url or (auth_ep .. "/oauth/token")
  local tok
  tok, err = session.token_grant{
    h = h, kind = "uaa", token_url = token_url, form = form, timeout_ms = opts.timeout_ms,
    what = "login to " .. api, secrets = secrets,
    hint = function(info)
      if info.status and info.status >= 500 then return "the login service is failing: try again later" end
      if info.status == 404 or info.status == 405 then
        return "the token endpoint " .. token_url .. " is wrong: check the API endpoint"
      end
      return HINTS[grant](api, auth_ep or token_url)
    end,
  }
  if not tok then return fail(err) end
  local host = session.host_of(api)
  local domain = opts.domain or host:match("^api%.([^:]+)")
  local registry = opts.registry or (domain and ("https://registry." .. domain))
  return session.from_token(tok, {
    kind = "uaa", api = api, user = user, domain = domain, registry = registry,
    authorization_endpoint = auth_ep, token_url = token_url, h = h, owned = owned,
    refresh_margin = opts.refresh_margin, timeout_ms = opts.timeout_ms,
  })
end

local function need(opts, field, how)
  if type(opts[field]) ~= "string" or opts[field] == "" then
    return nil, errors.new("input", field .. " is missing: " .. how, { field = field })
  end
  return true
end

--- UAA password grant: opts.username, opts.password.
function login.password(opts)
  check_opts(opts, "password")
  local ok, err = need(opts, "username", "give the IBM Cloud user name")
  if ok then ok, err = need(opts, "password", "give the password (from the environment or standard input)") end
  if not ok then return nil, err end
  return uaa(opts, "password", {
    { "grant_type", "password" }, { "username", opts.username }, { "password", opts.password }, { "scope", "" },
  }, { opts.password }, opts.username)
end

--- UAA SSO one-time passcode grant: opts.passcode.
function login.passcode(opts)
  check_opts(opts, "passcode")
  local ok, err = need(opts, "passcode", "get a one-time passcode from <authorization_endpoint>/passcode")
  if not ok then return nil, err end
  return uaa(opts, "passcode", { { "grant_type", "password" }, { "passcode", opts.passcode }, { "scope", "" } },
    { opts.passcode })
end

--- UAA API-key grant (username "apikey"): opts.apikey.
function login.apikey(opts)
  check_opts(opts, "apikey")
  local ok, err = need(opts, "apikey", "give the API key (from the environment or a file)")
  if not ok then return nil, err end
  return uaa(opts, "apikey", {
    { "grant_type", "password" }, { "username", "apikey" }, { "password", opts.apikey }, { "scope", "" },
  }, { opts.apikey })
end

--- UAA refresh-token grant: opts.refresh_token.
function login.refresh(opts)
  check_opts(opts, "refresh")
  local ok, err = need(opts, "refresh_token", "give the refresh token of an earlier session")
  if not ok then return nil, err end
  return uaa(opts, "refresh", {
    { "grant_type", "refresh_token" }, { "refresh_token", opts.refresh_token }, { "scope", "" },
  }, { opts.refresh_token })
end

--- IAM API-key grant: opts.apikey, opts.iam (default iam.<domain>, else https://iam.cloud.ibm.com),
-- opts.token_url.
function login.iam(opts)
  check_opts(opts, "iam")
  local ok, err = need(opts, "apikey", "give the IBM Cloud API key (from the environment or a file)")
  if not ok then return nil, err end
  local iam
  local domain = opts.domain
  if not domain and type(opts.api) == "string" then      -- "api.<domain>" or https://api.<domain>[:port]
    domain = opts.api:gsub("^%a[%w+.-]*://", ""):match("^api%.([^:/]+)")
  end
  iam, err = login.base_url(opts.iam or (domain and ("iam." .. domain)) or login.IAM_DEFAULT, "iam")
  if not iam then return nil, err end
  local token_url = opts.token_url or (iam .. "/identity/token")
  local h, owned = session.http_client(opts)
  local tok
  tok, err = session.token_grant{
    h = h, kind = "iam", token_url = token_url, timeout_ms = opts.timeout_ms,
    form = { { "grant_type", "urn:ibm:params:oauth:grant-type:apikey" }, { "apikey", opts.apikey },
             { "response_type", "cloud_iam" } },
    what = "IAM login at " .. iam, secrets = { opts.apikey },
    hint = function(info)
      if info.status and info.status >= 500 then return "the IAM service is failing: try again later" end
      if info.code == "BXNIM0415E" then return "the API key was not found: check the API key" end
      return "check the API key"
    end,
  }
  if not tok then
    if owned then h:close() end
    return nil, err
  end
  return session.from_token(tok, {
    kind = "iam", api = iam, domain = domain, registry = opts.registry, token_url = token_url,
    h = h, owned = owned, refresh_margin = opts.refresh_margin, timeout_ms = opts.timeout_ms,
  })
end

--- One entry point: the grant follows from the fields given (passcode, apikey, refresh_token,
-- or username + password); `iam` (true or the IAM endpoint) or `grant = "iam"` asks for the IAM
-- API-key grant.
function login.login(opts)
  check_opts(opts, "login")
  local g = opts.grant
  if not g then
    if opts.iam and opts.apikey then g = "iam"
    elseif opts.passcode then g = "passcode"
    elseif opts.apikey then g = "apikey"
    elseif opts.refresh_token then g = "refresh"
    else g = "password" end
  end
  local f = ({ password = login.password, passcode = login.passcode, apikey = login.apikey,
               refresh = login.refresh, iam = login.iam })[g]
  if not f then
    return nil, errors.new("input", "unknown grant " .. tostring(g) ..
      ": use password, passcode, apikey, refresh or iam", { field = "grant" })
  end
  if g == "iam" and opts.iam == true then
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.iam = nil
    return f(o)
  end
  return f(opts)
end

return login
