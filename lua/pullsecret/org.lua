--- Step 3 of the procedure: the GUID of an org (what `bx iam org <org> --guid` prints).
--
--     local org = require "pullsecret.org"
--     local guid, err = org.guid(session, "myorg")   --> "a7aff246-5f5b-4cf8-87d8-f316053e4a20"
--     local orgs, err = org.list(session)            --> { { name = "myorg", guid = "a7af..." }, ... }
--
-- `session` is a UAA session from pullsecret.login (its `api` is the Cloud Controller).
-- Options (third argument of guid, second of list): api (override the session's API base
-- URL), max_pages (default 100).
-- GET <api>/v2/organizations?q=name%3A<org>, following next_url (a path relative to the
-- API host) until null; only an exact (case-sensitive) name match counts.
-- Errors: kind "input" (no org name), "auth" (401: log in again), "http" (other statuses),
-- "protocol" (not the CF v2 paging document), and, for the lookup itself, kind "input"
-- with reason "not found" (the message lists the names of the orgs the user can see) or
-- reason "ambiguous" (more than one org with that exact name: err.guids lists them).
local core = require "pullsecret.core"
local errors = require "pullsecret.errors"
local ibmerr = require "pullsecret.ibmerr"

local org = {}

local function origin_of(url) return url:match("^(%a[%w+.-]*://[^/]+)") end

local function api_of(s, opts)
  local api = (opts and opts.api) or s.api
  if type(api) ~= "string" or s.kind == "iam" and not (opts and opts.api) then
    return nil, errors.new("input", "looking up an org needs a Cloud Foundry API session: log in with the API " ..
      "endpoint api.<domain>", { field = "api" })
  end
  return (api:gsub("/+$", ""))
end

-- Every resource of a paged CF v2 listing: list of resources | nil, err.
local function each_page(s, api, first, what, max_pages)
  local out, seen = {}, {}
  local url = api .. first
  local origin = origin_of(api)
  for _ = 1, max_pages or 100 do
    local res, err = s:request{ method = "GET", url = url, headers = { ["Accept"] = "application/json" } }
    if not res then return nil, errors.wrap(err, what) end
    if res.status ~= 200 then
      return nil, ibmerr.response(res, { what = what, hint = function(info)
        if res.status == 401 then return "the session expired or the token is not accepted: log in again" end
        if info.status and info.status >= 500 then return "the Cloud Controller is failing: try again later" end
      end })
    end
    local doc, perr = ibmerr.json_object(res, what, "a Cloud Foundry v2 paged list")
    if not doc then return nil, perr end
    if type(doc.resources) ~= "table" then
      return nil, ibmerr.protocol(what, "a Cloud Foundry v2 paged list with resources", "no resources array")
    end
    for _, r in ipairs(doc.resources) do out[#out + 1] = r end
    local nxt = doc.next_url
    if type(nxt) ~= "string" or nxt == "" then return out end
    if nxt:find("^/") then
      url = origin .. nxt
    elseif origin_of(nxt) == origin then
      url = nxt
    else
      return nil, ibmerr.protocol(what, "a next_url on the API host", "next_url points elsewhere")
    end
    if seen[url] then return nil, ibmerr.protocol(what, "next_url to advance", "next_url repeats a page") end
    seen[url] = true
  end
  return nil, ibmerr.protocol(what, "the listing to end", "more than " .. (max_pages or 100) .. " pages")
end

local function org_of(r)
  local md, en = type(r) == "table" and r.metadata, type(r) == "table" and r.entity
  if type(md) ~= "table" or type(en) ~= "table" or type(md.guid) ~= "string" or type(en.name) ~= "string" then
    return nil
  end
  return { name = en.name, guid = md.guid }
end

--- Every org the session's user can see: list of { name =, guid = } | nil, err.
function org.list(s, opts)
  if type(s) ~= "table" or type(s.request) ~= "function" then error("org.list: expects a session", 2) end
  local api, err = api_of(s, opts)
  if not api then return nil, err end
  local what = "listing orgs at " .. (s.host or api)
  local resources
  resources, err = each_page(s, api, "/v2/organizations", what, opts and opts.max_pages)
  if not resources then return nil, err end
  local orgs = {}
  for _, r in ipairs(resources) do
    local o = org_of(r)
    if not o then return nil, ibmerr.protocol(what, "org resources with metadata.guid and entity.name") end
    orgs[#orgs + 1] = o
  end
  return orgs
end

--- The GUID of the org named exactly `name`: guid | nil, err.
function org.guid(s, name, opts)
  if type(s) ~= "table" or type(s.request) ~= "function" then error("org.guid: expects a session", 2) end
  if type(name) ~= "string" or name == "" then
    return nil, errors.new("input", "the org name is missing: give the org (e.g. -o myorg)", { field = "org" })
  end
  local api, err = api_of(s, opts)
  if not api then return nil, err end
  local host = s.host or api
  local what = "looking up org \"" .. name .. "\" at " .. host
  local resources
  resources, err = each_page(s, api, "/v2/organizations?q=" .. core.urlencode("name:" .. name), what,
    opts and opts.max_pages)
  if not resources then return nil, err end
  local guids = {}
  for _, r in ipairs(resources) do
    local o = org_of(r)
    if not o then return nil, ibmerr.protocol(what, "org resources with metadata.guid and entity.name") end
    if o.name == name then guids[#guids + 1] = o.guid end
  end
  if #guids == 1 then return guids[1] end
  if #guids > 1 then
    return nil, errors.new("input", "org \"" .. name .. "\" is ambiguous at " .. host .. ": " .. #guids ..
      " orgs have that name; give the org GUID instead", { reason = "ambiguous", guids = guids, org = name })
  end
  local msg = "org \"" .. name .. "\" not found at " .. host
  local all = org.list(s, opts)
  if all then
    local names = {}
    for i, o in ipairs(all) do
      if i > 50 then names[#names + 1] = "..."; break end
      names[#names + 1] = o.name
    end
    if #names == 0 then
      msg = msg .. "; " .. tostring(s.user) .. " is not a member of any org"
    else
      msg = msg .. "; the orgs " .. tostring(s.user) .. " can see: " .. table.concat(names, ", ")
    end
  end
  return nil, errors.new("input", msg, { reason = "not found", org = name })
end

return org
