-- The simulated IBM Cloud Dedicated hosts (api, login, iam, registry), driven directly through
-- their :handle(req) with hand-made requests: what a client that gets the wire format wrong sees.
local jwt = require "pullsecret.sim.jwt"
local util = require "pullsecret.sim.util"

local URLS = { api = "https://api.test:1", login = "https://login.test:2", iam = "https://iam.test:3",
  registry = "https://registry.test:4" }
local DEMO_ORG = "a7aff246-5f5b-4cf8-87d8-f316053e4a20"

local function hosts(dedicated_config)
  local shared = { urls = URLS }
  local whole = { services = { api = true, login = true, iam = true, registry = true }, dedicated = dedicated_config }
  local h = {}
  for _, name in ipairs({ "api", "login", "iam", "registry" }) do
    h[name] = require("pullsecret.sim." .. name).new({}, shared, whole)
  end
  return h
end

local function req(t)
  t.method = t.method or "GET"
  t.headers = t.headers or {}
  t.query = t.query or ""
  t.params = util.parse_query(t.query)
  t.body = t.body or ""
  return t
end

local function json(resp) return assert(util.decode(resp.body)) end

local FORM = "application/x-www-form-urlencoded"
local function grant(h, body, headers)
  headers = headers or { authorization = "Basic Y2Y6", ["content-type"] = FORM, accept = "application/json" }
  return h.login:handle(req{ method = "POST", path = "/UAALoginServerWAR/oauth/token", body = body,
    headers = headers, listener = "login", base_url = URLS.login })
end

local function password_login(h, user, pw)
  return grant(h, util.form_encode{ { "grant_type", "password" }, { "username", user or "demo@example.com" },
    { "password", pw or "demo-password" }, { "scope", "" } })
end

local function bearer(h)
  local body = json(password_login(h))
  return "bearer " .. body.access_token
end

describe("sim jwt (HMAC-SHA256 in pure Lua)", function()
  local function hex(s) return (s:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end

  it("computes SHA-256 of the FIPS 180 examples", function()
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", jwt.hex(jwt.sha256("")))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", jwt.hex(jwt.sha256("abc")))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      jwt.hex(jwt.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))
  end)

  it("matches the RFC 4231 HMAC-SHA256 test vectors", function()
    local cases = {
      { string.rep("\11", 20), "Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
      { "Jefe", "what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
      { string.rep("\170", 20), string.rep("\221", 50),
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
      { hex("0102030405060708090a0b0c0d0e0f10111213141516171819"), string.rep("\205", 50),
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
      { string.rep("\170", 131), "Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
      { string.rep("\170", 131), "This is a test using a larger than block-size key and a larger than block-size "
        .. "data. The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
    }
    for i, c in ipairs(cases) do
      assert.equal(c[3], jwt.hex(jwt.hmac_sha256(c[1], c[2])), "RFC 4231 case " .. i)
    end
    -- case 5: output truncated to 128 bits
    assert.equal("a3b6167473100ee06e0c796c2955552b",
      jwt.hex(jwt.hmac_sha256(string.rep("\12", 20), "Test With Truncation")):sub(1, 32))
  end)

  it("signs HS256 tokens that verify, and refuses tampered ones", function()
    local t = jwt.sign({ jti = "abc", iss = "registry.sim.example" }, "k")
    local h, p, s = t:match("^([%w_-]+)%.([%w_-]+)%.([%w_-]+)$")
    assert.truthy(h and p and s)
    assert.same({ alg = "HS256", typ = "JWT" }, util.decode(jwt.b64url_decode(h)))
    assert.same({ jti = "abc", iss = "registry.sim.example" }, jwt.verify(t, "k"))
    assert.same({ nil, "bad signature" }, { jwt.verify(t, "other") })
    local forged = h .. "." .. jwt.b64url('{"jti":"abc","iss":"evil"}') .. "." .. s
    assert.same({ nil, "bad signature" }, { jwt.verify(forged, "k") })
    assert.same({ nil, "malformed" }, { jwt.verify(h .. "." .. p, "k") })
  end)

  it("round-trips base64url without padding", function()
    for _, s in ipairs({ "", "f", "fo", "foo", "foob", "fooba", "foobar", "\255\254\253" }) do
      local e = jwt.b64url(s)
      assert.falsy(e:find("[=+/]"))
      assert.equal(s, jwt.b64url_decode(e))
    end
    assert.equal("Zm9vYg", jwt.b64url("foob"))
    assert.is_nil(jwt.b64url_decode("Zm9v*"))
  end)
end)

describe("sim api host", function()
  it("advertises the login host's authorization_endpoint in /v2/info, without auth", function()
    local h = hosts()
    local r = h.api:handle(req{ path = "/v2/info", listener = "api", base_url = URLS.api })
    assert.equal(200, r.status)
    local info = json(r)
    assert.equal(URLS.login .. "/UAALoginServerWAR", info.authorization_endpoint)
    assert.equal(URLS.login, info.token_endpoint)
  end)

  it("answers 401 CF-NotAuthenticated without a bearer and CF-InvalidAuthToken with a bad one", function()
    local h = hosts()
    local r = h.api:handle(req{ path = "/v2/organizations" })
    assert.equal(401, r.status)
    assert.same({ code = 10002, description = "Authentication error", error_code = "CF-NotAuthenticated" }, json(r))
    r = h.api:handle(req{ path = "/v2/organizations", headers = { authorization = "bearer eyJ.x.y" } })
    assert.equal(401, r.status)
    assert.equal("CF-InvalidAuthToken", json(r).error_code)
  end)

  it("filters by q=name: (case-insensitively, like CF on MySQL) and pages with next_url", function()
    local h = hosts{ page_size = 2, users = { { name = "u", password = "p",
      orgs = { "a", "MyOrg", "b", "MYORG", "myorg" } } } }
    local auth = "bearer " .. json(password_login(h, "u", "p")).access_token
    local r = h.api:handle(req{ path = "/v2/organizations", query = "q=name%3Amyorg",
      headers = { authorization = auth } })
    assert.equal(200, r.status)
    local page1 = json(r)
    assert.equal(3, page1.total_results)
    assert.equal(2, page1.total_pages)
    assert.equal(util.null, page1.prev_url)
    assert.equal("/v2/organizations?order-direction=asc&page=2&q=name%3Amyorg&results-per-page=2", page1.next_url)
    assert.same({ "MyOrg", "MYORG" }, { page1.resources[1].entity.name, page1.resources[2].entity.name })
    local path, query = page1.next_url:match("^([^?]+)%?(.*)$")
    local page2 = json(h.api:handle(req{ path = path, query = query, headers = { authorization = auth } }))
    assert.equal(1, #page2.resources)
    assert.equal("myorg", page2.resources[1].entity.name)
    assert.equal(util.null, page2.next_url)
    -- unfiltered: every org of the user; bad paging values are CF errors
    local all = json(h.api:handle(req{ path = "/v2/organizations", query = "results-per-page=100",
      headers = { authorization = auth } }))
    assert.equal(5, all.total_results)
    r = h.api:handle(req{ path = "/v2/organizations", query = "page=0", headers = { authorization = auth } })
    assert.equal(400, r.status)
    r = h.api:handle(req{ path = "/v2/organizations", query = "q=status%3Aactive",
      headers = { authorization = auth } })
    assert.equal(400, r.status)
    assert.equal("CF-BadQueryParameter", json(r).error_code)
  end)

  it("refuses an expired bearer, here and at the registry", function()
    local h = hosts{ token_lifetime = 0 }
    local auth = "bearer " .. json(password_login(h)).access_token
    local r = h.api:handle(req{ path = "/v2/organizations", headers = { authorization = auth } })
    assert.equal(401, r.status)
    assert.equal("CF-InvalidAuthToken", json(r).error_code)
    r = h.registry:handle(req{ path = "/api/v1/tokens", headers = { authorization = auth, organization = DEMO_ORG } })
    assert.equal(401, r.status)
    assert.equal("CRG0001E", json(r).code)
  end)

  it("refuses IAM tokens (Cloud Controller takes UAA tokens only)", function()
    local h = hosts()
    local t = json(h.iam:handle(req{ method = "POST", path = "/identity/token", headers = {
      authorization = "Basic Yng6Yng=", ["content-type"] = FORM },
      body = "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey=demo-apikey"
        .. "&response_type=cloud_iam" }))
    local r = h.api:handle(req{ path = "/v2/organizations", headers = { authorization = "Bearer " .. t.access_token } })
    assert.equal(401, r.status)
  end)
end)

describe("sim login host (UAA)", function()
  it("issues a bearer JWT with exp = now + token_lifetime and a refresh token for the password grant", function()
    local h = hosts{ token_lifetime = 120 }
    local r = password_login(h)
    assert.equal(200, r.status)
    local body = json(r)
    assert.equal("bearer", body.token_type)
    assert.equal(120, body.expires_in)
    assert.is_string(body.refresh_token)
    local claims = util.integers(jwt.verify(body.access_token, "pullsecret-sim-dedicated"))
    assert.equal("demo@example.com", claims.user_name)
    assert.near(os.time() + 120, claims.exp, 2)
    assert.same({ { fields = { "grant_type", "username", "password", "scope" }, grant_type = "password",
      kind = "password", user = "demo@example.com" } }, h.login:state().grants)
  end)

  it("checks the client: no Authorization is 401, another client is 401 Bad credentials", function()
    local h = hosts()
    local body = "grant_type=password&username=demo%40example.com&password=demo-password&scope="
    local r = grant(h, body, { ["content-type"] = FORM })
    assert.equal(401, r.status)
    assert.equal("unauthorized", json(r).error)
    r = grant(h, body, { authorization = "Basic Yng6Yng=", ["content-type"] = FORM })
    assert.equal(401, r.status)
    assert.equal("Bad credentials", json(r).error_description)
    r = grant(h, body, { authorization = "Basic Y2Y6", ["content-type"] = "application/json" })
    assert.equal(415, r.status)
  end)

  it("answers UAA errors for a wrong password, an unknown user, a bad grant and unknown fields", function()
    local h = hosts()
    local r = password_login(h, "demo@example.com", "wrong")
    assert.equal(401, r.status)
    assert.same({ error = "unauthorized", error_description = "Bad credentials" }, json(r))
    r = password_login(h, "nobody@example.com", "demo-password")
    assert.equal(401, r.status)
    assert.equal("Bad credentials", json(r).error_description)
    r = grant(h, "grant_type=client_credentials&scope=")
    assert.equal(400, r.status)
    assert.equal("unsupported_grant_type", json(r).error)
    r = grant(h, "grant_type=password&username=demo%40example.com&password=demo-password&scope=&write=true")
    assert.equal(400, r.status)
    assert.equal("invalid_request", json(r).error)
  end)

  it("serves the token endpoint under the login path only", function()
    local h = hosts()
    local r = h.login:handle(req{ method = "POST", path = "/oauth/token", body = "grant_type=password",
      headers = { authorization = "Basic Y2Y6", ["content-type"] = FORM } })
    assert.equal(404, r.status)
  end)

  it("accepts a one-time passcode exactly once", function()
    local h = hosts()
    local r = grant(h, "grant_type=password&passcode=demo-passcode&scope=")
    assert.equal(200, r.status)
    r = grant(h, "grant_type=password&passcode=demo-passcode&scope=")
    assert.equal(401, r.status)
    assert.equal("Invalid passcode", json(r).error_description)
  end)

  it("accepts an API key as username=apikey and refreshes with the refresh token", function()
    local h = hosts()
    local r = grant(h, "grant_type=password&username=apikey&password=demo-apikey&scope=")
    assert.equal(200, r.status)
    local rt = json(r).refresh_token
    r = grant(h, util.form_encode{ { "grant_type", "refresh_token" }, { "refresh_token", rt }, { "scope", "" } })
    assert.equal(200, r.status)
    assert.equal(rt, json(r).refresh_token)
    r = grant(h, "grant_type=refresh_token&refresh_token=nope&scope=")
    assert.equal(401, r.status)
    assert.equal("invalid_token", json(r).error)
    r = grant(h, "grant_type=password&username=apikey&password=wrong-key&scope=")
    assert.equal(401, r.status)
  end)
end)

describe("sim iam host", function()
  local function iam(h, key, auth)
    return h.iam:handle(req{ method = "POST", path = "/identity/token", listener = "iam", base_url = URLS.iam,
      headers = { authorization = auth or "Basic Yng6Yng=", ["content-type"] = FORM },
      body = util.form_encode{ { "grant_type", "urn:ibm:params:oauth:grant-type:apikey" }, { "apikey", key },
        { "response_type", "cloud_iam" } } })
  end

  it("grants a Bearer token for a known API key, with expiration and the account", function()
    local h = hosts()
    local r = iam(h, "demo-apikey")
    assert.equal(200, r.status)
    local body = json(r)
    assert.equal("Bearer", body.token_type)
    assert.near(os.time() + 3600, body.expiration, 2)
    local claims = jwt.verify(body.access_token, "pullsecret-sim-dedicated")
    assert.is_string(claims.account.bss)
    assert.equal(URLS.iam .. "/identity", claims.iss)
  end)

  it("answers IAM errors: unknown key BXNIM0415E, wrong client BXNIM0308E", function()
    local h = hosts()
    local r = iam(h, "nope")
    assert.equal(400, r.status)
    local body = json(r)
    assert.equal("BXNIM0415E", body.errorCode)
    assert.equal("Provided API key could not be found", body.errorMessage)
    assert.is_string(body.context.requestId)
    r = iam(h, "demo-apikey", "Basic Y2Y6")
    assert.equal(401, r.status)
    assert.equal("BXNIM0308E", json(r).errorCode)
  end)
end)

describe("sim registry host", function()
  local function call(h, t)
    t.listener, t.base_url = "registry", URLS.registry
    return h.registry:handle(req(t))
  end
  local function authed(h, org)
    return { authorization = bearer(h), organization = org or DEMO_ORG }
  end

  it("answers 401 without a valid bearer and 400 CRG0002E without Organization or Account", function()
    local h = hosts()
    local r = call(h, { method = "POST", path = "/api/v1/tokens", query = "permanent=true" })
    assert.equal(401, r.status)
    assert.equal("CRG0001E", json(r).code)
    r = call(h, { method = "POST", path = "/api/v1/tokens", query = "permanent=true",
      headers = { authorization = bearer(h) } })
    assert.equal(400, r.status)
    local body = json(r)
    assert.equal("CRG0002E", body.code)
    assert.is_string(body["request-id"])
  end)

  it("answers CRG0009E for an org the user is not a member of", function()
    local h = hosts{ users = { { name = "u", password = "p", orgs = { "mine" } } },
      orgs = { { name = "mine", guid = "11111111-1111-4111-8111-111111111111" },
               { name = "theirs", guid = "22222222-2222-4222-8222-222222222222" } } }
    local auth = "bearer " .. json(password_login(h, "u", "p")).access_token
    local r = call(h, { method = "GET", path = "/api/v1/tokens",
      headers = { authorization = auth, organization = "22222222-2222-4222-8222-222222222222" } })
    assert.equal(401, r.status)
    assert.same("CRG0009E", json(r).code)
    assert.equal("You are not authorized to access the specified account.", json(r).message)
  end)

  it("issues HS256 tokens: jti = id, iss = registry.<domain>, exp only when not permanent", function()
    local h = hosts{ domain = "d.example", registry_token_lifetime = 600 }
    local headers = authed(h)
    local r = call(h, { method = "POST", path = "/api/v1/tokens", query = "permanent=true", headers = headers })
    assert.equal(200, r.status)
    local body = json(r)
    assert.is_nil(body.identifier)
    local claims = jwt.verify(body.token, "pullsecret-sim-dedicated")
    assert.equal("registry.d.example", claims.iss)
    assert.is_nil(claims.exp)
    r = call(h, { method = "POST", path = "/api/v1/tokens", query = "permanent=false&write=true&description=a%20b%26c",
      headers = headers })
    local claims2 = util.integers(jwt.verify(json(r).token, "pullsecret-sim-dedicated"))
    assert.near(os.time() + 600, claims2.exp, 2)
    local tokens = h.registry:state().tokens
    assert.equal(2, #tokens)
    assert.same({ claims.jti, "", true, 0 }, { tokens[1]._id, tokens[1].secondary_owner, tokens[1].readonly,
      tokens[1].expiry })
    assert.same({ claims2.jti, "a b&c", false, claims2.exp }, { tokens[2]._id, tokens[2].secondary_owner,
      tokens[2].readonly, tokens[2].expiry })
    assert.same({ "permanent=true", "permanent=false&write=true&description=a%20b%26c" },
      { h.registry:state().requests[1].query, h.registry:state().requests[2].query })
  end)

  it("refuses unknown, repeated and non-boolean parameters with 400", function()
    local h = hosts()
    local headers = authed(h)
    for _, q in ipairs({ "permanent=yes", "permanent=true&permanent=false", "permanent=true&expiry=0",
                         "permanent=true&write=" }) do
      local r = call(h, { method = "POST", path = "/api/v1/tokens", query = q, headers = headers })
      assert.equal(400, r.status, q)
      assert.equal("CRG0004E", json(r).code, q)
    end
    assert.equal(0, #h.registry:state().tokens)
  end)

  it("lists, gets and revokes by id, by token and by description", function()
    local h = hosts{ registry_identifier = true, registry_create_status = 201 }
    local headers = authed(h)
    local made = {}
    for i, d in ipairs({ "x", "y", "y" }) do
      local r = call(h, { method = "POST", path = "/api/v1/tokens", query = "permanent=true&description=" .. d,
        headers = headers })
      assert.equal(201, r.status)
      made[i] = json(r)
      assert.is_string(made[i].identifier)
    end
    local list = json(call(h, { path = "/api/v1/tokens", headers = headers })).tokens
    assert.equal(3, #list)
    assert.same({ made[1].identifier, "demo@example.com", made[1].token, "x", true, false, 0 },
      { list[1]._id, list[1].owner, list[1].token, list[1].secondary_owner, list[1].readonly, list[1].revoked,
        list[1].expiry })
    local r = call(h, { path = "/api/v1/tokens/" .. made[1].identifier, headers = headers })
    assert.same({ token = made[1].token }, json(r))
    -- by token
    r = call(h, { method = "DELETE", path = "/api/v1/tokens/" .. made[1].token, headers = headers })
    assert.equal(204, r.status)
    r = call(h, { path = "/api/v1/tokens/" .. made[1].identifier, headers = headers })
    assert.equal(404, r.status)
    r = call(h, { method = "DELETE", path = "/api/v1/tokens/no-such-id", headers = headers })
    assert.equal(404, r.status)
    -- by description
    r = call(h, { method = "DELETE", path = "/api/v1/tokens", query = "secondaryOwner=y", headers = headers })
    assert.equal(204, r.status)
    list = json(call(h, { path = "/api/v1/tokens", headers = headers })).tokens
    assert.same({ true, true, true }, { list[1].revoked, list[2].revoked, list[3].revoked })
    r = call(h, { method = "DELETE", path = "/api/v1/tokens", headers = headers })
    assert.equal(400, r.status)
  end)

  it("keeps each org's tokens apart", function()
    local h = hosts{ users = { { name = "u", password = "p", orgs = { "o1", "o2" } } } }
    local auth = "bearer " .. json(password_login(h, "u", "p")).access_token
    local st = h.api:state()
    local g1, g2 = st.orgs[1].guid, st.orgs[2].guid
    call(h, { method = "POST", path = "/api/v1/tokens", query = "permanent=true",
      headers = { authorization = auth, organization = g1 } })
    local list = json(call(h, { path = "/api/v1/tokens", headers = { authorization = auth, organization = g2 } }))
    assert.equal(0, #list.tokens)
    assert.equal('{"tokens":[]}', call(h, { path = "/api/v1/tokens",
      headers = { authorization = auth, organization = g2 } }).body)
  end)
end)
