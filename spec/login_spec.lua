-- Steps 1 and 2 against the simulated IBM Cloud Dedicated environment over TLS: logging in
-- with each grant, what a user sees when credentials are wrong, the session's OAuth token
-- (and its refresh), and sessions saved to and loaded from a file.
local cjson = require "cjson.safe"
local sim = require "pullsecret.sim"
local login = require "pullsecret.login"
local session = require "pullsecret.session"
local org = require "pullsecret.org"

local USERS = {
  { name = "alice@example.com", password = "alice-pw-1", passcode = { "pc-one", "pc-two" },
    apikey = "alice-apikey-1", orgs = { "alpha" } },
}

local function start(extra)
  local d = { domain = "sim.example", users = USERS }
  for k, v in pairs(extra or {}) do d[k] = v end
  return sim.start{ services = { api = true, login = true, iam = true, registry = true }, dedicated = d }
end

local function grants(s)
  local out = {}
  for i, g in ipairs(s:state("login").grants) do out[i] = g.kind end
  return out
end

local function mode_of(path)
  local p = io.popen("stat -c %a '" .. path .. "'")
  local m = p:read("l")
  p:close()
  return m
end

describe("login (step 1) over TLS", function()
  local s, opts
  setup(function()
    s = start()
    opts = { api = s.urls.api, ca_file = s.ca_file }
  end)
  teardown(function() if s then s:stop() end end)

  local function with(t)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    for k, v in pairs(t) do o[k] = v end
    return o
  end

  it("logs in with a user name and password, discovering the login host from /v2/info", function()
    local sess = assert(login.password(with{ username = "alice@example.com", password = "alice-pw-1" }))
    assert.equal("alice@example.com", sess.user)
    assert.equal(s.urls.api, sess.api)
    assert.equal(s.urls.login .. "/UAALoginServerWAR", sess.authorization_endpoint)
    assert.equal(s.urls.login .. "/UAALoginServerWAR/oauth/token", sess.token_url)
    assert.matches("^bearer eyJ[%w_-]+%.[%w_-]+%.[%w_-]+$", sess:oauth_token())
    assert.matches("^session alice@example%.com@127%.0%.0%.1:%d+ %(expires in [56]%d min%)$", tostring(sess))
    local last = s:state("login").grants
    assert.same({ "grant_type", "username", "password", "scope" }, last[#last].fields)
    sess:close()
  end)

  it("takes api as host[:port] without a scheme (https is implied)", function()
    local sess = assert(login.password(with{ api = s.urls.api:gsub("^https://", ""),
      username = "alice@example.com", password = "alice-pw-1" }))
    assert.equal(s.urls.api, sess.api)
    sess:close()
  end)

  it("takes api as api.<domain>: https implied, domain and registry derived from it", function()
    local port = s.urls.api:match(":(%d+)$")
    local sess = assert(login.password(with{ api = "api.sim.example", insecure = true,
      connect_to = { "api.sim.example:443:127.0.0.1:" .. port },
      username = "alice@example.com", password = "alice-pw-1" }))
    assert.same({ "https://api.sim.example", "api.sim.example", "sim.example", "https://registry.sim.example" },
      { sess.api, sess.host, sess.domain, sess.registry })
    assert.matches("^session alice@example%.com@api%.sim%.example %(expires in [56]%d min%)$", tostring(sess))
    sess:close()
  end)

  it("says a wrong passcode was not accepted", function()
    local sess, err = login.passcode(with{ passcode = "pc-wrong" })
    assert.is_nil(sess)
    assert.same({ "auth", 401, "unauthorized" }, { err.kind, err.status, err.code })
    assert.matches("the one-time passcode was not accepted (each works once): get a new one from " ..
      s.urls.login .. "/UAALoginServerWAR/passcode", err.message, 1, true)
  end)

  it("logs in with an SSO one-time passcode, which works once", function()
    local sess = assert(login.passcode(with{ passcode = "pc-one" }))
    assert.equal("alice@example.com", sess.user)          -- from the access token's user_name
    local last = s:state("login").grants
    assert.same({ "grant_type", "passcode", "scope" }, last[#last].fields)
    sess:close()
    local again, err = login.passcode(with{ passcode = "pc-one" })
    assert.is_nil(again)
    assert.equal("auth", err.kind)
    assert.equal(401, err.status)
    assert.matches("passcode was not accepted", err.message)
    assert.matches(s.urls.login .. "/UAALoginServerWAR/passcode", err.message, 1, true)
  end)

  it("logs in with an API key as username=apikey", function()
    local sess = assert(login.apikey(with{ apikey = "alice-apikey-1" }))
    assert.equal("alice@example.com", sess.user)
    local last = s:state("login").grants
    assert.same({ "password", "apikey" }, { last[#last].grant_type, last[#last].kind })
    sess:close()
  end)

  it("logs in with the refresh token of a saved session", function()
    local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -m 700 " .. dir)
    local first = assert(login.password(with{ username = "alice@example.com", password = "alice-pw-1" }))
    assert(first:save(dir .. "/s.json"))
    local f = assert(io.open(dir .. "/s.json")); local doc = cjson.decode(f:read("a")); f:close()
    local sess = assert(login.refresh(with{ refresh_token = doc.refresh_token }))
    assert.equal("alice@example.com", sess.user)
    local last = s:state("login").grants
    assert.same({ "grant_type", "refresh_token", "scope" }, last[#last].fields)
    first:close(); sess:close()
    os.execute("rm -rf " .. dir)
  end)

  it("picks the grant from the fields given (login.login)", function()
    local sess = assert(login.login(with{ apikey = "alice-apikey-1" }))
    assert.equal("apikey", s:state("login").grants[#s:state("login").grants].kind)
    sess:close()
    local none, err = login.login(with{ grant = "magic" })
    assert.is_nil(none)
    assert.equal("input", err.kind)
  end)

  it("says to check the user name and password when the password is wrong", function()
    local sess, err = login.password(with{ username = "alice@example.com", password = "wrong-pw-9" })
    assert.is_nil(sess)
    assert.equal("auth", err.kind)
    assert.equal(401, err.status)
    assert.equal("unauthorized", err.code)
    assert.equal("login to " .. s.urls.api .. " failed: check the user name and password for " .. s.urls.api ..
      " (UAA unauthorized: Bad credentials, HTTP 401)", err.message)
    assert.equal(err.message, tostring(err))
  end)

  it("says the same for an unknown user (UAA does not tell them apart)", function()
    local _, err = login.password(with{ username = "mallory@example.com", password = "alice-pw-1" })
    assert.equal("auth", err.kind)
    assert.matches("check the user name and password for", err.message, 1, true)
  end)

  it("says to check the API key when it is refused", function()
    local _, err = login.apikey(with{ apikey = "not-a-key-123" })
    assert.equal("auth", err.kind)
    assert.matches("check the API key for " .. s.urls.api, err.message, 1, true)
  end)

  it("refuses missing credentials before sending anything", function()
    local before = #s:state("login").requests
    local _, err = login.password(with{ username = "alice@example.com" })
    assert.equal("input", err.kind)
    assert.equal("password", err.field)
    _, err = login.password{ username = "a", password = "b" }
    assert.equal("input", err.kind)
    assert.equal("api", err.field)
    assert.equal(before, #s:state("login").requests)
    assert.has_error(function() login.password("api.example.com") end)
  end)

  it("uses an explicit authorization_endpoint without discovery", function()
    local before = #s:state("api").requests
    local sess = assert(login.password(with{ authorization_endpoint = s.urls.login .. "/UAALoginServerWAR/",
      username = "alice@example.com", password = "alice-pw-1" }))
    assert.equal(before, #s:state("api").requests)
    assert.equal(s.urls.login .. "/UAALoginServerWAR/oauth/token", sess.token_url)
    sess:close()
  end)

  it("reports a token endpoint that is not one (404) as an http error naming the URL", function()
    local _, err = login.password(with{ token_url = s.urls.login .. "/oauth/token",
      username = "alice@example.com", password = "alice-pw-1" })
    assert.equal(404, err.status)
    assert.matches("the token endpoint " .. s.urls.login .. "/oauth/token is wrong", err.message, 1, true)
  end)

  it("reports a refused refresh token as 'log in again', without echoing the token", function()
    local rt = "zz-not-a-valid-refresh-token-0123456789"
    local _, err = login.refresh(with{ refresh_token = rt })
    assert.equal("auth", err.kind)
    assert.equal("invalid_token", err.code)
    assert.matches("the session expired: log in again", err.message, 1, true)
    assert.falsy(err.message:find(rt, 1, true))
    assert.matches("<redacted>", err.description, 1, true)   -- the UAA echoed it; it was scrubbed
  end)
end)

describe("the session's OAuth token (step 2)", function()
  it("refreshes itself when the token expires within 60 s", function()
    local s = start{ token_lifetime = 30 }
    local ok, e = pcall(function()
      local sess = assert(login.password{ api = s.urls.api, ca_file = s.ca_file,
        username = "alice@example.com", password = "alice-pw-1" })
      assert.near(30, sess:expires_in(), 2)
      local t1 = sess:oauth_token()          -- 30 s left: refreshed before use
      local t2 = sess:oauth_token()
      assert.matches("^bearer ", t1)
      assert.are_not.equal(t1, t2)
      assert.same({ "password", "refresh", "refresh" }, grants(s))
      sess:close()
    end)
    s:stop()
    assert(ok, e)
  end)

  it("keeps a token that is good for longer than the margin, and refreshes once it is not", function()
    local s = start{ token_lifetime = 3 }
    local ok, e = pcall(function()
      local sess = assert(login.password{ api = s.urls.api, ca_file = s.ca_file, refresh_margin = 1,
        username = "alice@example.com", password = "alice-pw-1" })
      local t1 = sess:oauth_token()
      assert.equal(t1, sess:oauth_token())
      assert.same({ "password" }, grants(s))
      require("socket").sleep(2.2)
      local t2 = sess:oauth_token()
      assert.are_not.equal(t1, t2)
      assert.same({ "password", "refresh" }, grants(s))
      assert.matches("^session alice@example%.com@127%.0%.0%.1:%d+ %(expires in 0 min%)$", tostring(sess))
      sess:close()
    end)
    s:stop()
    assert(ok, e)
  end)

  it("takes the expiry from the JWT's exp, or the earlier of exp and expires_in", function()
    local jwt = require "pullsecret.sim.jwt"
    local tok = jwt.sign({ exp = os.time() + 600, user_name = "dave@example.com" }, "k")
    local sess = session.from_token({ access_token = tok, token_type = "bearer" },
      { kind = "uaa", api = "https://api.example.com" })
    assert.near(600, sess:expires_in(), 2)
    assert.equal("bearer " .. tok, sess:oauth_token())          -- good for longer than 60 s: as is
    assert.matches("^session dave@example%.com@api%.example%.com %(expires in %d+ min%)$", tostring(sess))
    assert.is_nil(tostring(sess):find(tok, 1, true))
    sess:close()
    sess = session.from_token({ access_token = tok, token_type = "bearer", expires_in = 120 },
      { kind = "uaa", api = "https://api.example.com" })
    assert.near(120, sess:expires_in(), 2)
    sess:close()
    local short = jwt.sign({ exp = os.time() + 90 }, "k")
    sess = session.from_token({ access_token = short, token_type = "bearer", expires_in = 3600 },
      { kind = "uaa", api = "https://api.example.com" })
    assert.near(90, sess:expires_in(), 2)
    sess:close()
  end)

  it("retries a request once with a fresh token after a 401", function()
    local s = start()
    local ok, e = pcall(function()
      local sess = assert(login.password{ api = s.urls.api, ca_file = s.ca_file,
        username = "alice@example.com", password = "alice-pw-1" })
      local before = sess:oauth_token()
      s:fault{ listener = "api", method = "GET", path = "/v2/organizations", status = 401, times = 1 }
      local guid = assert(org.guid(sess, "alpha"))
      assert.matches("^%x+%-", guid)
      assert.same({ "password", "refresh" }, grants(s))
      assert.are_not.equal(before, sess:oauth_token())
      local reqs = s:state("api").requests
      assert.equal(2, #reqs)                       -- the refused one and its retry
      -- a 401 that persists is reported after exactly one retry
      s:fault{ listener = "api", method = "GET", path = "/v2/organizations", status = 401, times = 2 }
      local none, err = org.guid(sess, "alpha")
      assert.is_nil(none)
      assert.equal("auth", err.kind)
      assert.equal(401, err.status)
      assert.matches("log in again", err.message)
      assert.same({ "password", "refresh", "refresh" }, grants(s))
      sess:close()
    end)
    s:stop()
    assert(ok, e)
  end)

  it("says the session expired when it cannot be refreshed", function()
    local s = start{ token_lifetime = 1 }
    local ok, e = pcall(function()
      local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -m 700 " .. dir)
      local sess = assert(login.password{ api = s.urls.api, ca_file = s.ca_file,
        username = "alice@example.com", password = "alice-pw-1", refresh_margin = 0 })
      assert(sess:save(dir .. "/s.json"))
      local f = assert(io.open(dir .. "/s.json")); local doc = cjson.decode(f:read("a")); f:close()
      doc.refresh_token = nil
      f = assert(io.open(dir .. "/s.json", "w")); f:write(cjson.encode(doc)); f:close()
      local loaded = assert(session.load(dir .. "/s.json", { ca_file = s.ca_file, refresh_margin = 0 }))
      require("socket").sleep(1.1)
      local tok, err = loaded:oauth_token()
      assert.is_nil(tok)
      assert.equal("auth", err.kind)
      assert.equal("the session for " .. loaded.host .. " expired: log in again", err.message)
      assert.matches("%(expired%)$", tostring(loaded))
      sess:close(); loaded:close()
      os.execute("rm -rf " .. dir)
    end)
    s:stop()
    assert(ok, e)
  end)
end)

describe("saved sessions", function()
  local s, dir
  setup(function()
    s = start()
    dir = os.tmpname(); os.remove(dir); os.execute("mkdir -m 700 " .. dir)
  end)
  teardown(function()
    if s then s:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("are written with mode 0600, atomically, and load back to the same token", function()
    local sess = assert(login.password{ api = s.urls.api, ca_file = s.ca_file,
      username = "alice@example.com", password = "alice-pw-1" })
    local path = dir .. "/session.json"
    local f = assert(io.open(path, "w")); f:write("old"); f:close()
    os.execute("chmod 644 " .. path)
    assert.is_true(sess:save(path))
    assert.equal("600", mode_of(path))
    local p = io.popen("ls -A " .. dir); local listing = p:read("a"); p:close()
    assert.equal("session.json\n", listing)                 -- no temp file left behind
    local loaded = assert(session.load(path, { ca_file = s.ca_file }))
    assert.equal(sess:oauth_token(), loaded:oauth_token())
    assert.equal(tostring(sess), tostring(loaded))
    assert.same({ "uaa", "alice@example.com", s.urls.api, sess.token_url, sess.expires_at },
      { loaded.kind, loaded.user, loaded.api, loaded.token_url, loaded.expires_at })
    assert(org.guid(loaded, "alpha"))                        -- usable for the next steps
    sess:close(); loaded:close()
  end)

  it("refuses a session file other users can read, and a missing or foreign file", function()
    local path = dir .. "/open.json"
    local sess = assert(login.password{ api = s.urls.api, ca_file = s.ca_file,
      username = "alice@example.com", password = "alice-pw-1" })
    assert(sess:save(path))
    os.execute("chmod 644 " .. path)
    local none, err = session.load(path, { ca_file = s.ca_file })
    assert.is_nil(none)
    assert.equal("input", err.kind)
    assert.matches("chmod 600", err.message)
    none, err = session.load(dir .. "/missing.json")
    assert.is_nil(none)
    assert.matches("log in first", err.message)
    local f = assert(io.open(dir .. "/foreign.json", "w")); f:write("{}"); f:close()
    os.execute("chmod 600 " .. dir .. "/foreign.json")
    none, err = session.load(dir .. "/foreign.json")
    assert.is_nil(none)
    assert.matches("is not a pullsecret session", err.message)
    none, err = sess:save(dir .. "/no/such/dir/s.json")
    assert.is_nil(none)
    assert.equal("input", err.kind)
    sess:close()
  end)
end)

describe("IAM API-key login (the modern path)", function()
  local s
  setup(function() s = start() end)
  teardown(function() if s then s:stop() end end)

  it("gives a session of the same shape with a Bearer token and the account id", function()
    local sess = assert(login.iam{ iam = s.urls.iam, ca_file = s.ca_file, apikey = "alice-apikey-1" })
    assert.equal("iam", sess.kind)
    assert.equal("alice@example.com", sess.user)
    assert.matches("^Bearer eyJ", sess:oauth_token())
    assert.matches("^%x+$", sess.account)
    assert.matches("^session alice@example%.com@127%.0%.0%.1:%d+ %(expires in [56]%d min%)$", tostring(sess))
    local g = s:state("iam").grants
    assert.same({ "grant_type", "apikey", "response_type" }, g[#g].fields)
    assert(sess:refresh())
    g = s:state("iam").grants
    assert.same({ "grant_type", "refresh_token" }, g[#g].fields)
    sess:close()
  end)

  it("login.login{iam = true} asks IAM even with an api given, at iam.<domain> of that api", function()
    local g0 = #s:state("iam").grants
    local sess = assert(login.login{ iam = s.urls.iam, api = s.urls.api, ca_file = s.ca_file,
                                     apikey = "alice-apikey-1" })
    assert.equal("iam", sess.kind)
    assert.equal(g0 + 1, #s:state("iam").grants)
    sess:close()
    -- iam = true: the endpoint comes from the api's domain (nothing listens there: the error names it)
    local _, err = login.login{ iam = true, api = "api.sim.example", apikey = "alice-apikey-1",
      connect_to = { "iam.sim.example:443:127.0.0.1:1" }, retry = { attempts = 1 } }
    assert.equal("transport", err.kind)
    assert.matches("^IAM login at https://iam%.sim%.example", err.message)
    assert.is_nil(err.message:find("alice-apikey-1", 1, true))
    assert.equal(g0 + 1, #s:state("iam").grants)
  end)

  it("says the API key was not found, with IAM's code", function()
    local sess, err = login.iam{ iam = s.urls.iam, ca_file = s.ca_file, apikey = "bogus-key-77" }
    assert.is_nil(sess)
    assert.equal("auth", err.kind)
    assert.equal("BXNIM0415E", err.code)
    assert.equal(400, err.status)
    assert.is_string(err.request_id)
    assert.matches("^IAM login at " .. s.urls.iam:gsub("%p", "%%%0") ..
      " failed: the API key was not found: check the API key %(IAM BXNIM0415E", err.message)
  end)
end)
