--- Simulated Cloud Controller (v2) API host of IBM Cloud Dedicated (`api.<domain>`).
--
-- Config: one `config.dedicated` table read by all four IBM hosts (api, login, iam, registry),
-- documented in full at the top of pullsecret.sim.dedicated. In short:
--   config.services = { api = true, login = true, iam = true, registry = true }
--   config.dedicated = { domain = "sim.example",
--     users = { { name =, password =, passcode = (string or list, one-time), apikey =, orgs = { names },
--                 account = } },
--     orgs = { { name =, guid = } }, page_size = 50, name_filter = "ci" | "exact",
--     token_lifetime = 3600, refresh_lifetime =, iam_token_lifetime =, registry_token_lifetime = 86400,
--     login_path = "/UAALoginServerWAR", registry_identifier = false, registry_create_status = 200,
--     secret = "..." }
--   No config at all: user "demo@example.com" / "demo-password" (API key "demo-apikey", passcode
--   "demo-passcode") in org "demo-org" (guid a7aff246-5f5b-4cf8-87d8-f316053e4a20).
-- Endpoints:
--
--   GET /v2/info             no auth. {"authorization_endpoint":"<login base><login_path>",
--                            "token_endpoint":"<login base>", "api_version":"2.106.0", ...}
--   GET /v2/organizations    Authorization: bearer <UAA token> (401 CF-NotAuthenticated when absent,
--                            401 CF-InvalidAuthToken when bad or expired). Lists the orgs the user is
--                            a member of. Query: q=name:<name> (name_filter "ci": case-insensitive,
--                            like CF on MySQL; "exact"), page (>= 1), results-per-page (1..100,
--                            default page_size), order-direction asc|desc; anything else in q is
--                            400 CF-BadQueryParameter. Paging answers total_results, total_pages,
--                            prev_url, next_url (path + query, or null) and resources.
--   GET /v2/organizations/<guid>   one org (404 CF-OrganizationNotFound when not visible).
-- Every answer carries X-VCAP-Request-ID.
local dedicated = require "pullsecret.sim.dedicated"
local util = require "pullsecret.sim.util"

local M, Svc = dedicated.service("api")

local function cf(status, code, description, error_code)
  return util.json(status, { code = code, description = description, error_code = error_code },
    { ["X-VCAP-Request-ID"] = dedicated.uuid() })
end

local function org_resource(o)
  local url = "/v2/organizations/" .. o.guid
  return {
    metadata = { guid = o.guid, url = url, created_at = "2016-06-08T16:41:33Z", updated_at = util.null },
    entity = {
      name = o.name, status = "active", billing_enabled = false,
      quota_definition_guid = "dcb680a9-b190-4838-a3d2-b84aa17517a6", default_isolation_segment_guid = util.null,
      spaces_url = url .. "/spaces", users_url = url .. "/users", managers_url = url .. "/managers",
    },
  }
end

function Svc:info(req)
  local st, c = self.st, self.st.cfg
  local login = dedicated.url(st, "login", req)
  if not login then
    return util.json(500, { code = 10001, description = "simulator: the login host's URL is unknown",
      error_code = "CF-ServerError" })
  end
  return util.json(200, {
    name = "Bluemix", build = "sim", support = "https://ibm.biz/bluemix-support",
    version = 0, description = "IBM Cloud Dedicated (simulated, " .. c.domain .. ")",
    authorization_endpoint = login .. c.login_path, token_endpoint = login,
    min_cli_version = util.null, min_recommended_cli_version = util.null,
    api_version = "2.106.0", app_ssh_endpoint = "ssh." .. c.domain .. ":2222",
    app_ssh_host_key_fingerprint = util.null, app_ssh_oauth_client = "ssh-proxy",
    doppler_logging_endpoint = "wss://doppler." .. c.domain .. ":443",
    routing_endpoint = (dedicated.url(st, "api", req) or "") .. "/routing",
  }, { ["X-VCAP-Request-ID"] = dedicated.uuid() })
end

function Svc:organizations(req, user)
  local c = self.st.cfg
  local p = req.params or util.parse_query(req.query or "")
  local q = p.q
  local name
  if q then
    name = q:match("^name:(.*)$")
    if not name then
      return cf(400, 10005, "The query parameter is invalid: q=" .. q .. " (the simulator supports name:)",
        "CF-BadQueryParameter")
    end
  end
  local page = p.page or "1"
  local per = p["results-per-page"] or tostring(c.page_size)
  local dir = p["order-direction"] or "asc"
  if not page:match("^%d+$") or tonumber(page) < 1 then
    return cf(400, 1001, "Request invalid due to parse error: page must be an integer >= 1", "CF-MessageParseError")
  end
  if not per:match("^%d+$") or tonumber(per) < 1 or tonumber(per) > 100 then
    return cf(400, 1001, "Request invalid due to parse error: results-per-page must be between 1 and 100",
      "CF-MessageParseError")
  end
  if dir ~= "asc" and dir ~= "desc" then
    return cf(400, 1001, "Request invalid due to parse error: order-direction must be asc or desc",
      "CF-MessageParseError")
  end
  page, per = math.tointeger(tonumber(page)), math.tointeger(tonumber(per))
  local visible = {}
  for _, o in ipairs(self.st.orgs) do
    if user.member[o.guid] then
      local match = name == nil or (c.name_filter == "exact" and o.name == name)
        or (c.name_filter ~= "exact" and o.name:lower() == name:lower())
      if match then visible[#visible + 1] = o end
    end
  end
  if dir == "desc" then
    local r = {}
    for i = #visible, 1, -1 do r[#r + 1] = visible[i] end
    visible = r
  end
  local total = #visible
  local pages = math.max(1, (total + per - 1) // per)
  local resources = util.array()
  for i = (page - 1) * per + 1, math.min(total, page * per) do resources[#resources + 1] = org_resource(visible[i]) end
  local function url_for(n)
    local parts = { "order-direction=" .. dir, "page=" .. n }
    if q then parts[#parts + 1] = "q=" .. util.percent_encode(q) end
    parts[#parts + 1] = "results-per-page=" .. per
    return "/v2/organizations?" .. table.concat(parts, "&")
  end
  return util.json(200, {
    total_results = total, total_pages = (total == 0) and 0 or pages,
    prev_url = page > 1 and url_for(page - 1) or util.null,
    next_url = page < pages and url_for(page + 1) or util.null,
    resources = resources,
  }, { ["X-VCAP-Request-ID"] = dedicated.uuid() })
end

function Svc:handle(req)
  local st = self.st
  dedicated.record(st, "api", req)
  if req.method ~= "GET" then
    return cf(405, 10000, "Unknown request", "CF-NotFound")
  end
  if req.path == "/v2/info" then return self:info(req) end
  local guid = req.path:match("^/v2/organizations/([^/]+)$")
  if req.path ~= "/v2/organizations" and not guid then
    return cf(404, 10000, "Unknown request", "CF-NotFound")
  end
  local user, why = dedicated.bearer_user(st, req)
  if user and why.origin ~= "uaa" then user, why = nil, "invalid" end   -- CF takes UAA tokens only
  if not user then
    if why == "missing" then return cf(401, 10002, "Authentication error", "CF-NotAuthenticated") end
    return cf(401, 1000, "Invalid Auth Token", "CF-InvalidAuthToken")
  end
  if guid then
    local o = st.orgs_by_guid[guid]
    if not o or not user.member[guid] then
      return cf(404, 30003, "The organization could not be found: " .. guid, "CF-OrganizationNotFound")
    end
    return util.json(200, org_resource(o), { ["X-VCAP-Request-ID"] = dedicated.uuid() })
  end
  return self:organizations(req, user)
end

return M
