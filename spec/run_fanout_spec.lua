-- pullsecret.run into many namespaces at once: one token, every secret written and read back,
-- the Kubernetes requests of each step sent together (pullsecret.kube's batches), against the
-- simulator over TLS.
local sim = require "pullsecret.sim"
local manifest = require "pullsecret.manifest"
local core = require "pullsecret.core"
local cjson = require "cjson.safe"

local PASSWORD = "demo-password"
local SERVER = "registry.sim.example"
local K = 30

local NAMESPACES = {}
for i = 1, K do NAMESPACES[i] = "ns-" .. i end

-- The kube log entries that are not reads.
local function kube_writes(stats)
  local out = {}
  for _, l in ipairs(stats.log or {}) do
    if l.listener == "kube" and l.method ~= "GET" and l.method ~= "HEAD" then out[#out + 1] = l end
  end
  return out
end

local function live_tokens(s)
  local out = {}
  for _, t in ipairs(s:state("registry").tokens) do
    if not t.revoked then out[#out + 1] = t end
  end
  return out
end

-- The password the secret `name` in `ns` holds for SERVER (nil when there is no such secret).
local function secret_token(objects, ns, name)
  local obj = objects.secrets[ns .. "/" .. name]
  if not obj then return nil end
  local doc = cjson.decode(core.b64decode(obj.data[".dockerconfigjson"]))
  local entry = doc.auths[SERVER]
  return entry and entry.password
end

local function count(events, step, phase, pattern)
  local n = 0
  for _, ev in ipairs(events) do
    if ev.step == step and ev.phase == phase and (pattern == nil or tostring(ev.detail):find(pattern)) then
      n = n + 1
    end
  end
  return n
end

describe("pullsecret.run into 30 namespaces", function()
  local s
  local events

  local function opts(extra)
    local o = { api = s.urls.api, username = "demo@example.com", password = PASSWORD, org = "demo-org",
      registry = s.urls.registry, docker_server = SERVER, ca_file = s.ca_file,
      kubeconfig = s.kubeconfig, namespaces = NAMESPACES, secret_name = "regtok", docker_email = "a@b.c",
      retry = { attempts = 3, base_ms = 10, max_ms = 20, max_seconds = 5 } }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  local function go(extra)
    events = {}
    return require("pullsecret").run(opts(extra), function(ev) events[#events + 1] = ev end)
  end

  before_each(function()
    s = sim.start{ services = { api = true, login = true, iam = true, registry = true,
                                kube = { namespaces = NAMESPACES } } }
  end)
  after_each(function() s:stop() end)

  it("mints one token, writes and reads back 30 secrets, service accounts and pods; a second run writes nothing",
    function()
    local pods = { { template = manifest.SEED_POD_TEMPLATE, values = { pod_name = "web", container_name = "app",
      my_namespace = "team", my_image = "api", tag = "1.2" } } }
    local r, err = go{ service_accounts = { "default" }, pods = pods }
    assert.is_nil(err)
    assert.equal("new", r.token)
    local live = live_tokens(s)
    assert.equal(1, #live)
    assert.equal(r.token_id, live[1]._id)
    local objects = s:state("kube").objects
    assert.equal(K, #r.secrets)
    for i, ns in ipairs(NAMESPACES) do
      assert.same({ namespace = ns, action = "created" }, r.secrets[i])
      assert.equal(live[1].token, secret_token(objects, ns, "regtok"), ns)
      assert.equal("regtok", objects.serviceaccounts[ns .. "/default"].imagePullSecrets[1].name, ns)
      assert.equal("regtok", objects.pods[ns .. "/web"].spec.imagePullSecrets[1].name, ns)
    end
    -- every secret was read back after it was written
    local log = s:stats().log
    for _, ns in ipairs(NAMESPACES) do
      local path = "/api/v1/namespaces/" .. ns .. "/secrets/regtok"
      local patched, read_back = nil, false
      for i, l in ipairs(log) do
        if l.path == path and l.method == "PATCH" and l.status == 201 then patched = i end
        if patched and i > patched and l.path == path and l.method == "GET" and l.status == 200 then
          read_back = true
        end
      end
      assert.truthy(patched, ns)
      assert.is_true(read_back, ns)
    end
    -- one 'done' per namespace and step
    assert.equal(K, count(events, 5, "done"))
    assert.equal(K, count(events, 6, "done", "/regtok created$"))
    assert.equal(K, count(events, 6, "done", "^service account ns%-%d+/default added$"))
    assert.equal(K, count(events, 7, "done", "^Pod ns%-%d+/web created$"))

    s:reset_stats()
    local r2, err2 = go{ service_accounts = { "default" }, pods = pods }
    assert.is_nil(err2)
    assert.equal("reused", r2.token)
    assert.equal(r.token_id, r2.token_id)
    assert.same({}, kube_writes(s:stats()))
    for i = 1, K do
      assert.equal("unchanged", r2.secrets[i].action)
      assert.equal("present", r2.service_accounts[i].action)
      assert.equal("unchanged", r2.pods[i].action)
    end
    assert.equal(1, #live_tokens(s))
  end)

  it("keeps up to `concurrency` requests in flight on several connections, and one at a time with 1", function()
    s:fault{ listener = "kube", path = ".*", delay_ms = 10 }    -- every answer a little late, still a 200
    s:reset_stats()
    local r = assert(go{ concurrency = 8 })
    assert.equal(K, #r.secrets)
    local st = s:stats()
    assert.is_true(st.max_in_flight.kube > 1, "max in flight " .. tostring(st.max_in_flight.kube))
    assert.is_true(st.max_in_flight.kube <= 8, "max in flight " .. tostring(st.max_in_flight.kube))
    assert.is_true(st.connections.kube > 1)

    s:reset_stats()
    r = assert(go{ concurrency = 1, secret_name = "other" })
    assert.equal("created", r.secrets[K].action)
    st = s:stats()
    assert.equal(1, st.max_in_flight.kube)
    assert.equal(1, st.connections.kube)
  end)

  it("a write failing in ns-7 names ns-7, leaves the 29 others written, keeps the token; a re-run writes only ns-7",
    function()
    s:fault{ listener = "kube", method = "PATCH", path = "/api/v1/namespaces/ns%-7/secrets/.*", status = 500 }
    local r, err = go()
    assert.is_nil(r)
    assert.equal(6, err.step)
    assert.matches("^step 6 %(pull secret%): ", err.message)
    assert.matches('namespace "ns-7"', err.message, 1, true)
    assert.same({ "ns-7" }, err.failed)
    assert.equal(500, err.code)
    local live = live_tokens(s)
    assert.equal(1, #live)                          -- in use: not revoked
    assert.equal(live[1]._id, err.kept)
    assert.is_nil(err.revoked)
    assert.matches("kept: the secret in 29 namespaces holds it", err.message, 1, true)
    local objects = s:state("kube").objects
    for _, ns in ipairs(NAMESPACES) do
      if ns == "ns-7" then
        assert.is_nil(objects.secrets["ns-7/regtok"])
      else
        assert.equal(live[1].token, secret_token(objects, ns, "regtok"), ns)
      end
    end
    assert.equal(1, count(events, 6, "fail"))
    assert.equal(K - 1, count(events, 6, "done"))

    s:clear_faults()
    s:reset_stats()
    local r2 = assert(go())
    assert.equal("reused", r2.token)
    assert.equal(live[1]._id, r2.token_id)
    local w = kube_writes(s:stats())
    assert.equal(1, #w)
    assert.equal("PATCH", w[1].method)
    assert.equal("/api/v1/namespaces/ns-7/secrets/regtok", w[1].path)
    assert.equal("created", r2.secrets[7].action)
    assert.equal("unchanged", r2.secrets[8].action)
    assert.equal(live[1].token, secret_token(s:state("kube").objects, "ns-7", "regtok"))
    assert.equal(1, #live_tokens(s))
  end)

  it("when every namespace fails, the error names them all and the token nobody holds is revoked", function()
    s:fault{ listener = "kube", method = "PATCH", path = "/api/v1/namespaces/ns%-%d+/secrets/.*", status = 500 }
    local r, err = go()
    assert.is_nil(r)
    assert.equal(6, err.step)
    assert.equal(K, #err.failed)
    assert.matches("30 of 30 namespaces failed (ns-1, ns-2, ", err.message, 1, true)
    assert.matches("ns-30)", err.message, 1, true)
    assert.equal(0, #live_tokens(s))
    assert.equal(1, #s:state("registry").tokens)
    assert.equal(s:state("registry").tokens[1]._id, err.revoked)
  end)

  it("a 429 with Retry-After is retried after the wait, and the run succeeds", function()
    s:fault{ listener = "kube", method = "PATCH", path = "/api/v1/namespaces/ns%-1%d/secrets/.*", status = 429,
             retry_after = "1", times = 3 }
    local r, err = go()
    assert.is_nil(err)
    assert.equal(K, #r.secrets)
    local limited, after = {}, {}
    for _, l in ipairs(s:stats().log) do
      if l.listener == "kube" and l.method == "PATCH" then
        if l.status == 429 then limited[#limited + 1] = l.path
        elseif limited[1] then after[l.path] = l.status end
      end
    end
    assert.equal(3, #limited)
    for _, path in ipairs(limited) do assert.equal(201, after[path], path) end
    assert.equal(3, count(events, 6, "retry", "status 429"))
    local token = live_tokens(s)[1].token
    local objects = s:state("kube").objects
    for _, ns in ipairs(NAMESPACES) do assert.equal(token, secret_token(objects, ns, "regtok"), ns) end
  end)

  it("rejects a concurrency that is not a positive integer", function()
    assert.has_error(function() go{ concurrency = 0 } end,
      "pullsecret.run: option 'concurrency' must be an integer from 1 to 1024")
  end)
end)
