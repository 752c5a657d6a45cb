-- No secret leaks: every IBM step, successful or failing, is run against the simulator with
-- distinctive credentials; every log line, error (message and text fields) and tostring
-- produced is then scanned for every password, passcode, API key, OAuth access/refresh token
-- and registry token involved.
local cjson = require "cjson.safe"
local sim = require "pullsecret.sim"
local login = require "pullsecret.login"
local session = require "pullsecret.session"
local org = require "pullsecret.org"
local registry = require "pullsecret.registry"
local icr = require "pullsecret.icr"

local PASSWORD, PASSCODE, APIKEY = "Pw-7f3a9c-secret", "Pc-51d0e2-secret", "Ak-90b7aa-secret"
local WRONG = { "Wrong-pw-3e1f", "Wrong-pc-77aa", "Wrong-ak-c0de", "Wrong-rt-0123456789abcdef0123" }

describe("secrets never appear in errors, log lines or tostring", function()
  local s, dir
  local texts, secrets = {}, {}
  local function seen(x)
    if x == nil then return end
    if type(x) == "table" then
      for k, v in pairs(x) do
        if type(v) == "string" and k ~= "token" then texts[#texts + 1] = "field " .. tostring(k) .. ": " .. v end
      end
    end
    texts[#texts + 1] = tostring(x)
  end
  local function secret(v) if type(v) == "string" and v ~= "" then secrets[#secrets + 1] = v end end
  local function opts(t)
    local o = { api = s.urls.api, ca_file = s.ca_file, registry = s.urls.registry,
      log = function(line) texts[#texts + 1] = "log: " .. line end,
      on_event = function(ev) texts[#texts + 1] = "event: " .. (cjson.encode(ev) or "?") end }
    for k, v in pairs(t or {}) do o[k] = v end
    return o
  end

  setup(function()
    s = sim.start{ services = { api = true, login = true, iam = true, registry = true },
      dedicated = { token_lifetime = 30, users = { { name = "eve@example.com", password = PASSWORD,
        passcode = PASSCODE, apikey = APIKEY, orgs = { "eve-org" } } } } }
    dir = os.tmpname(); os.remove(dir); os.execute("mkdir -m 700 " .. dir)
    for _, v in ipairs({ PASSWORD, PASSCODE, APIKEY }) do secret(v) end
    for _, v in ipairs(WRONG) do secret(v) end
  end)
  teardown(function()
    if s then s:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("holds for every step of the Dedicated procedure and the IAM path", function()
    -- step 1: every grant, good and bad
    local sess = assert(login.password(opts{ username = "eve@example.com", password = PASSWORD }))
    seen(sess)
    seen(select(2, login.password(opts{ username = "eve@example.com", password = WRONG[1] })))
    seen(select(2, login.password(opts{ username = "nobody@example.com", password = PASSWORD })))
    local p = assert(login.passcode(opts{ passcode = PASSCODE }))
    seen(p); p:close()
    seen(select(2, login.passcode(opts{ passcode = PASSCODE })))         -- used up
    seen(select(2, login.passcode(opts{ passcode = WRONG[2] })))
    local k = assert(login.apikey(opts{ apikey = APIKEY }))
    seen(k); k:close()
    seen(select(2, login.apikey(opts{ apikey = WRONG[3] })))
    seen(select(2, login.refresh(opts{ refresh_token = WRONG[4] })))    -- UAA echoes it back
    -- step 2: the token, its refreshes (lifetime 30 s: every use refreshes), save and load
    secret(sess:oauth_token()); secret(sess:oauth_token():match(" (.*)$"))
    assert(sess:refresh())
    secret(sess:oauth_token():match(" (.*)$"))
    seen(sess)
    local path = dir .. "/session.json"
    assert(sess:save(path))
    local f = assert(io.open(path)); local doc = cjson.decode(f:read("a")); f:close()
    secret(doc.access_token); secret(doc.refresh_token)
    local r = assert(login.refresh(opts{ refresh_token = doc.refresh_token }))
    secret(r:oauth_token():match(" (.*)$")); seen(r); r:close()
    local loaded = assert(session.load(path, opts()))
    seen(loaded)
    os.execute("chmod 644 " .. path)
    seen(select(2, session.load(path, opts())))
    -- IAM
    local iam = assert(login.iam(opts{ iam = s.urls.iam, apikey = APIKEY }))
    secret(iam:oauth_token():match(" (.*)$"))
    seen(iam)
    assert(iam:refresh())
    secret(iam:oauth_token():match(" (.*)$"))
    seen(select(2, login.iam(opts{ iam = s.urls.iam, apikey = WRONG[3] })))
    seen(select(2, icr.credentials{ apikey = APIKEY, region = "nowhere" }))
    -- step 3
    local guid = assert(org.guid(sess, "eve-org"))
    seen(select(2, org.guid(sess, "no-such-org")))
    -- step 4
    local reg = assert(registry.new{ session = sess, org_guid = guid })
    seen(reg)
    local t1 = assert(reg:create{ description = "scan one" })
    local t2 = assert(reg:create{ permanent = false, write = true, description = "scan two" })
    seen(t1.id); assert(reg:list()); assert(reg:get(t1.id))
    assert(reg:revoke(t2.token))
    local none, rerr = reg:revoke(t2.token .. "x")      -- a revoked token: the registry answers 204
    assert.is_true(none, rerr and rerr.message)
    seen(select(2, reg:revoke(t2.token:gsub("%.[^.]*$", ".s*g"))))   -- malformed: refused, never echoed
    seen(select(2, reg:get(t2.token)))                              -- revoked: 404 naming the id
    seen(select(2, reg:get(t2.id)))
    seen(select(2, registry.token_info(t1.token .. ".extra")))
    seen(select(2, registry.token_info(t1.token:match("^[^.]+%.[^.]+"))))
    assert(reg:revoke_by_description("scan one"))
    local foreign = assert(registry.new{ session = sess, org_guid = "00000000-0000-4000-8000-00000000dead" })
    seen(select(2, foreign:create()))
    seen(select(2, login.password(opts{ api = "https://127.0.0.1:1", username = "eve@example.com",
      password = PASSWORD, retry = { attempts = 1 } })))
    for _, t in ipairs(s:state("registry").tokens) do secret(t.token) end
    -- every access token the automatic refreshes of steps 3-4 got, and every refresh token
    local issued = 0
    for _, host in ipairs{ "login", "iam" } do
      for _, t in ipairs(s:state(host).issued) do secret(t); issued = issued + 1 end
    end
    assert.is_true(issued > 8, "tokens issued: " .. issued)
    sess:close(); loaded:close(); iam:close()

    -- the scan
    assert.is_true(#texts > 30)
    local logged = 0
    for _, line in ipairs(texts) do if line:find("^log: ") then logged = logged + 1 end end
    assert.is_true(logged > 20, "the log callback received the requests' lines")
    local leaks = {}
    for _, text in ipairs(texts) do
      for _, v in ipairs(secrets) do
        if text:find(v, 1, true) then leaks[#leaks + 1] = text end
      end
    end
    assert.same({}, leaks)
  end)
end)
