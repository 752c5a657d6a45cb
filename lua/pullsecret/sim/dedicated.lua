--- The simulated IBM Cloud Dedicated environment: configuration and state shared by the
-- four simulated hosts `api` (Cloud Controller v2), `login` (UAA), `iam` and `registry`.
--
-- Configuration: one table, `config.dedicated`, read by all four services (each of
-- `config.services.api|login|iam|registry` may be `true` or `{}` to take the defaults).
-- Every field is optional; with no configuration at all there is one demo user
-- "demo@example.com" / "demo-password" (API key "demo-apikey", passcode "demo-passcode")
-- in one org "demo-org".
--
--     config.dedicated = {
--       domain = "sim.example",            -- tokens' iss = "registry.<domain>"; CF "name"
--       users = {                          -- who can log in
--         { name = "demo@example.com",     -- UAA user name (matched case-insensitively, like UAA)
--           password = "demo-password",    -- password grant
--           passcode = "demo-passcode",    -- SSO one-time passcode (a string or a list; each works ONCE)
--           apikey = "demo-apikey",        -- UAA grant with username=apikey, and the IAM apikey grant
--           orgs = { "demo-org" },         -- org names the user is a member of
--           account = "0123abcd...",       -- IAM account id (Account header); default derived from the name
--         },
--       },
--       orgs = { { name = "demo-org", guid = "a7aff246-5f5b-4cf8-87d8-f316053e4a20" } },
--                                          -- orgs named by users but not listed get a derived guid
--       page_size = 50,                    -- CF results-per-page default (max 100)
--       name_filter = "ci",                -- q=name: match: "ci" case-insensitive (CF on MySQL) | "exact"
--       token_lifetime = 3600,             -- UAA access token lifetime, seconds (make it short to test refresh)
--       refresh_lifetime = 2592000,        -- UAA/IAM refresh token lifetime, seconds
--       iam_token_lifetime = 3600,         -- IAM access token lifetime, seconds
--       registry_token_lifetime = 86400,   -- lifetime of a registry token created with permanent=false
--       login_path = "/UAALoginServerWAR", -- path of authorization_endpoint on the login host
--       registry_identifier = false,       -- true: POST /api/v1/tokens also answers "identifier"
--       registry_create_status = 200,      -- 200 or 201 for POST /api/v1/tokens
--       secret = "pullsecret-sim-dedicated", -- HMAC key of every token the simulator signs
--       login_url = nil, api_url = nil,    -- override the base URLs the hosts advertise (default:
--       iam_url = nil, registry_url = nil, --   the listeners' own https://127.0.0.1:PORT)
--     }
--
-- Wire behaviour: ../../../shared/docs/wire-ibm.md; each host documents its own rules.
-- State (for specs, via `s:state("registry")` etc.): issued registry tokens with their
-- revoked flags, the grants seen by the login and iam hosts (field names only, in order),
-- and every request's method, path and exact query string per host.
local jwt = require "pullsecret.sim.jwt"
local util = require "pullsecret.sim.util"

local dedicated = {}

dedicated.DEMO = {
  name = "demo@example.com", password = "demo-password", passcode = "demo-passcode",
  apikey = "demo-apikey", orgs = { "demo-org" },
}
dedicated.DEMO_ORG = { name = "demo-org", guid = "a7aff246-5f5b-4cf8-87d8-f316053e4a20" }

local DEFAULTS = {
  domain = "sim.example", page_size = 50, name_filter = "ci",
  token_lifetime = 3600, refresh_lifetime = 2592000, iam_token_lifetime = 3600,
  registry_token_lifetime = 86400, login_path = "/UAALoginServerWAR",
  registry_identifier = false, registry_create_status = 200,
  secret = "pullsecret-sim-dedicated",
}

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- A stable GUID-shaped id derived from a string (so that configs need not invent guids).
function dedicated.derived_guid(s)
  local h = jwt.hex(jwt.sha256(s))
  return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-4" .. h:sub(14, 16) .. "-a" .. h:sub(18, 20) .. "-" .. h:sub(21, 32)
end

--- A random v4 UUID.
dedicated.uuid = util.uuid

--- Random URL-safe text of `n` bytes of entropy.
function dedicated.random(n)
  return util.b64url(util.random_bytes(n))
end

-- Finds config.dedicated whether `new` was handed the whole sim config or one service's part.
local function find_config(cfg, shared)
  if type(cfg) == "table" then
    if type(cfg.dedicated) == "table" then return cfg.dedicated end
    if type(cfg.services) == "table" then return {} end
  end
  if type(shared) == "table" and type(shared.config) == "table" and type(shared.config.dedicated) == "table" then
    return shared.config.dedicated
  end
  return {}
end

local function normalise(raw)
  local cfg = copy(DEFAULTS)
  for k, v in pairs(raw) do cfg[k] = v end
  cfg.users = raw.users or { copy(dedicated.DEMO) }
  cfg.orgs = raw.orgs or (raw.users == nil and { copy(dedicated.DEMO_ORG) } or {})
  return cfg
end

--- The one shared state of the four hosts (created by whichever service starts first).
function dedicated.get(cfg, shared)
  shared = shared or {}
  if shared.dedicated then return shared.dedicated end
  local c = normalise(find_config(cfg, shared))
  local st = {
    cfg = c, shared = shared,
    users = {}, users_by_name = {}, orgs = {}, orgs_by_guid = {},
    refresh = {},                  -- refresh token -> { user =, exp =, issuer = "uaa"|"iam" }
    passcodes = {},                -- passcode -> user (deleted on use)
    grants = { login = {}, iam = {} },
    tokens = {}, tokens_by_id = {}, -- registry tokens, in creation order
    requests = { api = {}, login = {}, iam = {}, registry = {} },
    urls = {},                     -- base URLs learnt from requests (listener -> base_url)
  }
  local function add_org(name, guid)
    if st.orgs_by_name_exact and st.orgs_by_name_exact[name] and not guid then return end
    local o = { name = name, guid = guid or dedicated.derived_guid("org:" .. name) }
    st.orgs[#st.orgs + 1] = o
    st.orgs_by_guid[o.guid] = o
    st.orgs_by_name_exact = st.orgs_by_name_exact or {}
    st.orgs_by_name_exact[name] = st.orgs_by_name_exact[name] or o
  end
  for _, o in ipairs(c.orgs) do add_org(o.name, o.guid) end
  for i, u in ipairs(c.users) do
    local user = copy(u)
    user.id = user.id or dedicated.derived_guid("user:" .. u.name)
    user.account = user.account or jwt.hex(jwt.sha256("account:" .. u.name)):sub(1, 32)
    user.orgs = user.orgs or {}
    user.member = {}
    for _, name in ipairs(user.orgs) do
      if not (st.orgs_by_name_exact and st.orgs_by_name_exact[name]) then add_org(name) end
      for _, o in ipairs(st.orgs) do
        if o.name == name then user.member[o.guid] = true end
      end
    end
    local codes = type(u.passcode) == "table" and u.passcode or { u.passcode }
    for _, code in ipairs(codes) do st.passcodes[code] = user end
    st.users[i] = user
    st.users_by_name[u.name:lower()] = user
  end
  shared.dedicated = st
  return st
end

--- The base URL a host advertises for listener `name` ("api", "login", "iam", "registry").
function dedicated.url(st, name, req)
  local c = st.cfg
  local explicit = c[name .. "_url"]
  if explicit then return explicit end
  local sh = st.shared
  for _, key in ipairs({ "urls", "base_urls" }) do
    if type(sh[key]) == "table" and sh[key][name] then return sh[key][name] end
  end
  if type(sh.listeners) == "table" and type(sh.listeners[name]) == "table" then
    return sh.listeners[name].base_url or sh.listeners[name].url
  end
  if req and req.listener == name then return req.base_url end
  return st.urls[name]
end

--- Records a request (method, path, exact raw query) for specs; also learns the base URL.
function dedicated.record(st, host, req, extra)
  if req.listener and req.base_url then st.urls[req.listener] = req.base_url end
  local list = st.requests[host]
  if #list >= 1000 then table.remove(list, 1) end
  local r = { method = req.method, path = req.path, query = req.query or "" }
  if extra then for k, v in pairs(extra) do r[k] = v end end
  list[#list + 1] = r
  return r
end

function dedicated.now() return os.time() end

--- The user a bearer token stands for: user, claims | nil, why ("missing", "expired", "invalid").
function dedicated.bearer_user(st, req)
  local auth = req.headers and req.headers.authorization
  if not auth or auth == "" then return nil, "missing" end
  local token = util.bearer(req)
  if not token then return nil, "invalid" end
  local claims = jwt.verify(token, st.cfg.secret)
  if not claims then return nil, "invalid" end
  if type(claims.exp) ~= "number" or claims.exp <= dedicated.now() then return nil, "expired" end
  local user
  if claims.origin == "uaa" then
    user = st.users_by_name[tostring(claims.user_name or ""):lower()]
  elseif claims.iam_id then
    for _, u in ipairs(st.users) do
      if "IBMid-" .. u.id == claims.iam_id then user = u end
    end
  end
  if not user then return nil, "invalid" end
  return user, claims
end

--- The module and the method table of one of the four hosts (`host`: "api", "login", "iam",
-- "registry"): `M.new(config, shared, whole)` makes the service on the shared state, and
-- `svc:state()` is its snapshot. The host adds `Svc:handle(req)`.
function dedicated.service(host)
  local M, Svc = {}, {}
  Svc.__index = Svc
  function M.new(config, shared, whole)
    return setmetatable({ st = dedicated.get(whole or config, shared) }, Svc)
  end
  function Svc:state()
    return dedicated.snapshot(self.st, host)
  end
  return M, Svc
end

--- A token request's form body: params, list of {name, value}, and the names in order (an array).
function dedicated.form(req)
  local params, list = util.parse_form(req.body or "")
  local names = util.array()
  for i, kv in ipairs(list) do names[i] = kv[1] end
  return params, list, names
end

--- A JSON-able snapshot for specs (never holds passwords; holds issued registry tokens).
--- Keeps what a token grant of `host` handed out (for specs that scan for leaks: s:state(host).issued).
function dedicated.issued(st, host, access_token, refresh_token)
  st.issued = st.issued or {}
  local list = st.issued[host] or util.array()
  st.issued[host] = list
  list[#list + 1] = access_token
  if refresh_token then list[#list + 1] = refresh_token end
end

function dedicated.snapshot(st, host)
  local snap = { requests = st.requests[host] or util.array() }
  if #snap.requests == 0 then snap.requests = util.array() end
  if host == "login" or host == "iam" then
    snap.grants = #st.grants[host] > 0 and st.grants[host] or util.array()
    snap.issued = st.issued and st.issued[host] or util.array()
  end
  if host == "registry" then
    local tokens = util.array()
    for i, t in ipairs(st.tokens) do tokens[i] = copy(t) end
    snap.tokens = tokens
  end
  if host == "api" then
    local orgs = util.array()
    for i, o in ipairs(st.orgs) do orgs[i] = { name = o.name, guid = o.guid } end
    snap.orgs = orgs
  end
  return snap
end

return dedicated
