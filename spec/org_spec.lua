-- Step 3 against the simulated Cloud Controller over TLS: the org GUID, across pages, and what
-- a user sees when the org does not exist or is ambiguous.
local sim = require "pullsecret.sim"
local login = require "pullsecret.login"
local org = require "pullsecret.org"
local session = require "pullsecret.session"
local cjson = require "cjson.safe"

local ORGS = {
  { name = "MyOrg", guid = "00000000-0000-4000-8000-000000000001" },
  { name = "MYORG", guid = "00000000-0000-4000-8000-000000000002" },
  { name = "myOrg", guid = "00000000-0000-4000-8000-000000000003" },
  { name = "Myorg", guid = "00000000-0000-4000-8000-000000000004" },
  { name = "myorg", guid = "00000000-0000-4000-8000-000000000005" },
  { name = "my org & co", guid = "00000000-0000-4000-8000-000000000006" },
  { name = "twin", guid = "00000000-0000-4000-8000-000000000007" },
  { name = "twin", guid = "00000000-0000-4000-8000-000000000008" },
  { name = "hidden", guid = "00000000-0000-4000-8000-000000000009" },
}

describe("org GUID lookup (step 3) over TLS", function()
  local s, sess, lonely
  setup(function()
    s = sim.start{ services = { api = true, login = true }, dedicated = {
      page_size = 2, orgs = ORGS,
      users = { { name = "bob@example.com", password = "bob-pw-1",
                  orgs = { "MyOrg", "MYORG", "myOrg", "Myorg", "myorg", "my org & co", "twin" } },
                { name = "carol@example.com", password = "carol-pw-1", orgs = {} } } } }
    sess = assert(login.password{ api = s.urls.api, ca_file = s.ca_file,
      username = "bob@example.com", password = "bob-pw-1" })
    lonely = assert(login.password{ api = s.urls.api, ca_file = s.ca_file,
      username = "carol@example.com", password = "carol-pw-1" })
  end)
  teardown(function()
    if sess then sess:close() end
    if lonely then lonely:close() end
    if s then s:stop() end
  end)

  local function api_requests_since(n)
    local all = s:state("api").requests
    local out = {}
    for i = n + 1, #all do out[#out + 1] = all[i].path .. "?" .. all[i].query end
    return out
  end

  it("finds the exact name on the third page, following next_url", function()
    local n = #s:state("api").requests
    assert.equal("00000000-0000-4000-8000-000000000005", org.guid(sess, "myorg"))
    assert.same({
      "/v2/organizations?q=name%3Amyorg",
      "/v2/organizations?order-direction=asc&page=2&q=name%3Amyorg&results-per-page=2",
      "/v2/organizations?order-direction=asc&page=3&q=name%3Amyorg&results-per-page=2",
    }, api_requests_since(n))
  end)

  it("matches the case exactly even when the server filters case-insensitively", function()
    assert.equal("00000000-0000-4000-8000-000000000002", org.guid(sess, "MYORG"))
    assert.equal("00000000-0000-4000-8000-000000000004", org.guid(sess, "Myorg"))
  end)

  it("URL-encodes the whole q value", function()
    local n = #s:state("api").requests
    assert.equal("00000000-0000-4000-8000-000000000006", org.guid(sess, "my org & co"))
    assert.equal("/v2/organizations?q=name%3Amy%20org%20%26%20co", api_requests_since(n)[1])
  end)

  it("says the org was not found and lists the names of the orgs the user can see", function()
    local guid, err = org.guid(sess, "nope")
    assert.is_nil(guid)
    assert.equal("input", err.kind)
    assert.equal("not found", err.reason)
    assert.equal("org \"nope\" not found at " .. sess.host .. "; the orgs bob@example.com can see: " ..
      "MyOrg, MYORG, myOrg, Myorg, myorg, my org & co, twin, twin", err.message)
    assert.falsy(err.message:find("hidden", 1, true))           -- not a member: not shown
    assert.falsy(err.message:find("00000000", 1, true))         -- names only
  end)

  it("says so when the user is in no org at all", function()
    local _, err = org.guid(lonely, "alpha")
    assert.equal("org \"alpha\" not found at " .. sess.host .. "; carol@example.com is not a member of any org",
      err.message)
  end)

  it("refuses a name that more than one org has", function()
    local guid, err = org.guid(sess, "twin")
    assert.is_nil(guid)
    assert.equal("ambiguous", err.reason)
    assert.same({ "00000000-0000-4000-8000-000000000007", "00000000-0000-4000-8000-000000000008" }, err.guids)
    assert.matches("2 orgs have that name; give the org GUID instead", err.message, 1, true)
  end)

  it("lists every org across pages", function()
    local all = assert(org.list(sess))
    assert.equal(8, #all)
    assert.same({ name = "MyOrg", guid = "00000000-0000-4000-8000-000000000001" }, all[1])
    assert.same({ name = "twin", guid = "00000000-0000-4000-8000-000000000008" }, all[8])
  end)

  it("surfaces the Cloud Controller's error for a token it does not accept, saying to log in again", function()
    local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -m 700 " .. dir)
    assert(sess:save(dir .. "/s.json"))
    local f = assert(io.open(dir .. "/s.json")); local doc = cjson.decode(f:read("a")); f:close()
    local bogus = "not-a-token-" .. ("x"):rep(40)
    doc.access_token, doc.refresh_token = bogus, nil       -- not accepted, and cannot be refreshed
    f = assert(io.open(dir .. "/s.json", "w")); f:write(cjson.encode(doc)); f:close()
    local stale = assert(session.load(dir .. "/s.json", { ca_file = s.ca_file }))
    os.execute("rm -rf " .. dir)
    local guid, err = org.guid(stale, "myorg")
    stale:close()
    assert.is_nil(guid)
    assert.same({ "auth", 401, "cf", "CF-InvalidAuthToken", 1000 },
      { err.kind, err.status, err.service, err.code, err.cf_code })
    assert.matches('^looking up org "myorg" at ' .. sess.host:gsub("%p", "%%%0") .. " failed: the session "
      .. "expired or the token is not accepted: log in again %(Cloud Controller CF%-InvalidAuthToken: .+, HTTP 401%)",
      err.message)
    assert.is_nil(err.message:find(bogus, 1, true))
  end)

  it("refuses an empty org name and a session that is not a Cloud Foundry one", function()
    local guid, err = org.guid(sess, "")
    assert.is_nil(guid)
    assert.equal("input", err.kind)
    assert.has_error(function() org.guid(nil, "x") end)
    local fake = { kind = "iam", request = function() error("must not be called") end }
    guid, err = org.guid(fake, "x")
    assert.is_nil(guid)
    assert.matches("needs a Cloud Foundry API session", err.message)
  end)
end)
