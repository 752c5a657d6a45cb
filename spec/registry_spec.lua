-- Step 4 against the simulated registry over TLS: creating, listing, getting and revoking
-- registry tokens, exactly the query strings of wire-ibm.md, and the registry's errors.
local sim = require "pullsecret.sim"
local login = require "pullsecret.login"
local registry = require "pullsecret.registry"

local ORG = "a7aff246-5f5b-4cf8-87d8-f316053e4a20"
local OTHER = "bbbbbbbb-0000-4000-8000-000000000000"
local SEED_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJqdGkiOiI2MzdiM2Q4Yy1hMDg3LTVhZjktYTYzNi0xNmU3ZWZj" ..
  "NzA5NjciLCJpc3MiOiJyZWdpc3RyeS5jZnNkZWRpY2F0ZWQxLnVzLXNvdXRoLmJsdWVtaXgubmV0"

local function start(extra)
  local d = { domain = "sim.example", registry_token_lifetime = 86400,
    orgs = { { name = "demo-org", guid = ORG }, { name = "other", guid = OTHER } },
    users = { { name = "demo@example.com", password = "demo-password", apikey = "demo-apikey",
                orgs = { "demo-org" } } } }
  for k, v in pairs(extra or {}) do d[k] = v end
  return sim.start{ services = { api = true, login = true, iam = true, registry = true }, dedicated = d }
end

local function session_for(s, extra)
  local o = { api = s.urls.api, ca_file = s.ca_file, username = "demo@example.com", password = "demo-password",
    registry = s.urls.registry }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(login.password(o))
end

local function queries(s)
  local out = {}
  for i, r in ipairs(s:state("registry").requests) do out[i] = r.method .. " " .. r.path .. "?" .. r.query end
  return out
end

describe("registry tokens (step 4) over TLS", function()
  local s, sess, reg
  setup(function()
    s = start()
    sess = session_for(s)
    reg = assert(registry.new{ session = sess, org_guid = ORG })
  end)
  teardown(function()
    if sess then sess:close() end
    if s then s:stop() end
  end)

  it("creates a permanent read-only token by default, sending only permanent=true", function()
    local n = #queries(s)
    local t = assert(reg:create())
    assert.matches("^eyJ[%w_-]+%.[%w_-]+%.[%w_-]+$", t.token)
    assert.same({ true, true, nil, "registry.sim.example" }, { t.permanent, t.readonly, t.expires, t.issuer })
    assert.equal(t.id, registry.token_info(t.token).id)
    assert.equal("POST /api/v1/tokens?permanent=true", queries(s)[n + 1])
    local rec = s:state("registry").tokens
    rec = rec[#rec]
    assert.same({ t.id, 0, true, "" }, { rec._id, rec.expiry, rec.readonly, rec.secondary_owner })
  end)

  it("creates an expiring read-write token with a description holding spaces and &", function()
    local n = #queries(s)
    local t = assert(reg:create{ permanent = false, write = true, description = "ci pull & push" })
    assert.same({ false, false, "ci pull & push" }, { t.permanent, t.readonly, t.description })
    assert.near(os.time() + 86400, t.expires, 5)
    assert.equal("POST /api/v1/tokens?permanent=false&write=true&description=ci%20pull%20%26%20push", queries(s)[n + 1])
  end)

  it("never sends write= for a read-only token, whatever permanent is", function()
    local n = #queries(s)
    assert(reg:create{ permanent = false })
    assert(reg:create{ permanent = true, write = false, description = "ro" })
    local q = queries(s)
    assert.same({ "POST /api/v1/tokens?permanent=false", "POST /api/v1/tokens?permanent=true&description=ro" },
      { q[n + 1], q[n + 2] })
  end)

  it("lists tokens with friendly field names", function()
    local made = assert(reg:create{ description = "listed one" })
    local list = assert(reg:list())
    local found
    for _, t in ipairs(list) do if t.id == made.id then found = t end end
    assert.same({ id = made.id, description = "listed one", readonly = true, revoked = false,
      owner = "demo@example.com", token = made.token }, found)
    local expiring
    for _, t in ipairs(list) do if t.expires then expiring = t end end
    assert.near(os.time() + 86400, expiring.expires, 10)
  end)

  it("gets a token by id, or by the token itself, which is sent as its id", function()
    local made = assert(reg:create{ description = "get me" })
    local got = assert(reg:get(made.id))
    assert.same({ made.token, made.id, true }, { got.token, got.id, got.permanent })
    local n = #queries(s)
    got = assert(reg:get(made.token))
    assert.same({ made.token, made.id }, { got.token, got.id })
    assert.equal("GET /api/v1/tokens/" .. made.id .. "?", queries(s)[n + 1])
    -- a failure names the id, never the token
    assert.is_true(reg:revoke(made.id))
    local none, err = reg:get(made.token)
    assert.is_nil(none)
    assert.same({ "registry", 404 }, { err.kind, err.status })
    assert.matches("getting registry token " .. made.id, err.message, 1, true)
    assert.is_nil(err.message:find(made.token, 1, true))
    none, err = reg:get("not.a.jwt")
    assert.is_nil(none)
    assert.equal("protocol", err.kind)
  end)

  it("revokes by id and by token; a token is sent as its id, never in the URL", function()
    local a = assert(reg:create{ description = "revoke a" })
    local b = assert(reg:create{ description = "revoke b" })
    local n = #queries(s)
    assert.is_true(reg:revoke(a.id))
    assert.is_true(reg:revoke(b.token))
    local q = queries(s)
    assert.same({ "DELETE /api/v1/tokens/" .. a.id .. "?", "DELETE /api/v1/tokens/" .. b.id .. "?" },
      { q[n + 1], q[n + 2] })
    local revoked = {}
    for _, t in ipairs(assert(reg:list())) do revoked[t.id] = t.revoked end
    assert.same({ true, true }, { revoked[a.id], revoked[b.id] })
    local got, err = reg:get(a.id)
    assert.is_nil(got)
    assert.same({ "registry", 404, "CRG0005E" }, { err.kind, err.status, err.code })
    assert.matches("no registry token with id " .. a.id .. ": list the tokens", err.message, 1, true)
  end)

  it("revokes every token with a description", function()
    local a = assert(reg:create{ description = "nightly & co" })
    local b = assert(reg:create{ description = "nightly & co" })
    local keep = assert(reg:create{ description = "nightly" })
    local n = #queries(s)
    assert.is_true(reg:revoke_by_description("nightly & co"))
    assert.equal("DELETE /api/v1/tokens?secondaryOwner=nightly%20%26%20co", queries(s)[n + 1])
    local revoked = {}
    for _, t in ipairs(assert(reg:list())) do revoked[t.id] = t.revoked end
    assert.same({ true, true, false }, { revoked[a.id], revoked[b.id], revoked[keep.id] })
  end)

  it("reports an unknown id on revoke as a registry 404", function()
    local ok, err = reg:revoke("00000000-dead-4000-8000-000000000000")
    assert.is_nil(ok)
    assert.same({ "registry", 404, "CRG0005E" }, { err.kind, err.status, err.code })
    assert.is_string(err.request_id)
  end)

  it("surfaces CRG0009E for an org the user is not a member of, saying what to check", function()
    local other = assert(registry.new{ session = sess, org_guid = OTHER })
    local t, err = other:create()
    assert.is_nil(t)
    assert.equal("registry", err.kind)
    assert.equal("CRG0009E", err.code)
    assert.equal(401, err.status)
    assert.matches("^[%x-]+$", err.request_id)
    assert.equal("creating a registry token at " .. reg.host .. " failed: not authorized for org " .. OTHER ..
      ": check the org name and that demo@example.com is a member of it (registry CRG0009E: You are not " ..
      "authorized to access the specified account., HTTP 401) [request id " .. err.request_id .. "]", err.message)
  end)

  it("sends the Account header when configured, and both headers when both are", function()
    local bad = assert(registry.new{ session = sess, account = "not-my-account" })
    local _, err = bad:list()
    assert.equal("CRG0009E", err.code)
    local both = assert(registry.new{ session = sess, org_guid = ORG, account = "not-my-account" })
    _, err = both:list()
    assert.equal("CRG0009E", err.code)
  end)

  it("needs an org GUID or an account", function()
    local r, err = registry.new{ session = sess }
    assert.is_nil(r)
    assert.equal("input", err.kind)
    assert.has_error(function() registry.new{ org_guid = ORG } end)
  end)
end)

describe("registry tokens, other server behaviours", function()
  it("takes the id from 'identifier' when the registry sends one (and accepts 201)", function()
    local s = start{ registry_identifier = true, registry_create_status = 201 }
    local ok, e = pcall(function()
      local sess = session_for(s)
      local reg = assert(registry.new{ session = sess, org_guid = ORG })
      local t = assert(reg:create{ description = "x" })
      assert.equal(s:state("registry").tokens[1]._id, t.id)
      sess:close()
    end)
    s:stop()
    assert(ok, e)
  end)

  it("works with an IAM session and the Account header (the later public-cloud form)", function()
    local s = start()
    local ok, e = pcall(function()
      local sess = assert(login.iam{ iam = s.urls.iam, ca_file = s.ca_file, apikey = "demo-apikey",
        registry = s.urls.registry })
      local reg = assert(registry.new{ session = sess })       -- account from the IAM token
      assert.equal(sess.account, reg.account)
      assert(reg:create{ description = "iam" })
      assert.equal(1, #assert(reg:list()))
      sess:close()
    end)
    s:stop()
    assert(ok, e)
  end)

  it("says 'log in again' when the registry does not accept the session's token (after one retry)", function()
    local a = start{ secret = "secret-a" }
    local b = start{ secret = "secret-b" }
    local ok, e = pcall(function()
      local both = os.tmpname()
      assert(os.execute("cat '" .. a.ca_file .. "' '" .. b.ca_file .. "' > '" .. both .. "'"))
      local sess = session_for(a, { registry = b.urls.registry, ca_file = both })
      local reg = assert(registry.new{ session = sess, org_guid = ORG })
      local t, err = reg:create()
      assert.is_nil(t)
      assert.same({ "registry", 401, "CRG0001E" }, { err.kind, err.status, err.code })
      assert.matches("the session expired or the token is not accepted; log in again", err.message, 1, true)
      assert.equal(2, #b:state("registry").requests)          -- the first try and one retry
      local g = a:state("login").grants
      assert.equal("refresh", g[#g].kind)
      sess:close()
      os.remove(both)
    end)
    a:stop(); b:stop()
    assert(ok, e)
  end)
end)

describe("answers that are not what the wire format says", function()
  local s, sess, reg
  setup(function()
    s = start()
    sess = session_for(s, { retry = { attempts = 2, base_ms = 10, max_ms = 20 } })
    reg = assert(registry.new{ session = sess, org_guid = ORG })
  end)
  teardown(function()
    if sess then sess:close() end
    if s then s:stop() end
  end)

  it("a 200 without a token field is a protocol error naming the field", function()
    s:fault{ listener = "registry", method = "POST", path = "/api/v1/tokens", status = 200, times = 1 }
    local t, err = reg:create()
    assert.is_nil(t)
    assert.equal("protocol", err.kind)
    assert.equal("creating a registry token at " .. reg.host ..
      ": unexpected answer (expected a JSON object with a token field): no token field", err.message)
  end)

  it("a body that is not JSON is a protocol error", function()
    s:fault{ listener = "registry", method = "GET", path = "/api/v1/tokens", status = 200, oversize = 64, times = 1 }
    local list, err = reg:list()
    assert.is_nil(list)
    assert.equal("protocol", err.kind)
    assert.matches('expected a JSON object with a "tokens" array%): body is not JSON', err.message)
  end)

  it("a login answer without an access token is a protocol error", function()
    s:fault{ listener = "login", method = "POST", status = 200, times = 1 }
    local again, err = login.password{ api = s.urls.api, ca_file = s.ca_file,
      username = "demo@example.com", password = "demo-password" }
    assert.is_nil(again)
    assert.equal("protocol", err.kind)
    assert.matches("access_token", err.message)
  end)

  it("a failing registry (503 after the retries) is an http error saying to try later", function()
    s:fault{ listener = "registry", method = "GET", path = "/api/v1/tokens", status = 503 }
    local list, err = reg:list()
    assert.is_nil(list)
    assert.same({ "http", 503 }, { err.kind, err.status })
    assert.matches("the registry is failing: try again later", err.message, 1, true)
  end)
end)

describe("registry token decoding", function()
  it("reads id, issuer and expiry from a well-formed token", function()
    local jwt = require "pullsecret.sim.jwt"
    local info = assert(registry.token_info(jwt.sign({ jti = "id-1", iss = "registry.x", exp = 1700000000 }, "k")))
    assert.same({ id = "id-1", issuer = "registry.x", expires = 1700000000, permanent = false }, info)
  end)

  it("reports the seed's truncated sample token as malformed instead of guessing", function()
    local info, err = registry.token_info(SEED_TOKEN)
    assert.is_nil(info)
    assert.equal("protocol", err.kind)
    assert.equal("malformed registry token: 2 dot-separated parts (expected header.payload.signature)", err.message)
    assert.equal("2 dot-separated parts (expected header.payload.signature)", err.reason)
  end)

  it("reports other malformed tokens as protocol errors naming what was expected", function()
    local jwt = require "pullsecret.sim.jwt"
    local cases = {
      [""] = "malformed registry token: empty (expected a JWT)",
      ["abc"] = "malformed registry token: 1 dot-separated part (expected header.payload.signature)",
      ["a..b"] = "malformed registry token: an empty part (expected header.payload.signature)",
      [jwt.b64url('{"alg":"HS256"}') .. "." .. jwt.b64url("[1,2]") .. ".sig"] =
        "malformed registry token: the payload is not a JSON object (expected JWT claims)",
      [jwt.b64url('{"alg":"HS256"}') .. "." .. jwt.b64url('{"iss":"x"}') .. ".sig"] =
        "malformed registry token: no jti claim (expected the token id)",
    }
    for token, message in pairs(cases) do
      local info, err = registry.token_info(token)
      assert.is_nil(info)
      assert.equal("protocol", err.kind)
      assert.equal(message, err.message)
    end
    local head, claims = jwt.b64url('{"alg":"HS256","typ":"JWT"}'), jwt.b64url('{"jti":"x"}')
    local more = {
      [jwt.b64url("not json") .. "." .. claims .. ".sig"] =
        "malformed registry token: the header is not a JSON object (expected a JWT header)",
      [head .. "." .. claims .. ".s*g"] =
        "malformed registry token: the signature is not base64url (expected header.payload.signature)",
      [head .. "." .. jwt.b64url('{"jti":"x","exp":"soon"}') .. ".sig"] =
        "malformed registry token: the exp claim is not a number (expected unix seconds)",
      [head .. "." .. jwt.b64url('{"jti":"x1"}') .. "=.sig"] = "malformed registry token: invalid JWT payload: "
        .. "padding '=' at position " .. (#head + 1 + #jwt.b64url('{"jti":"x1"}') + 1)
        .. " (JWT segments are unpadded base64url) (expected a JWT)",
    }
    for token, message in pairs(more) do
      local info, err = registry.token_info(token)
      assert.is_nil(info, token)
      assert.equal("protocol", err.kind)
      assert.equal(message, err.message)
    end
    assert.equal("x", assert(registry.token_info(head .. "." .. claims .. ".sig")).id)
    local _, err = registry.token_info("a.b*c.d")
    assert.equal("protocol", err.kind)
    assert.matches("^malformed registry token: ", err.message)
  end)
end)
