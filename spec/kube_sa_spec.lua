-- add_pull_secret and the ServiceAccount admission rule, against the simulator over TLS, with
-- kubectl as the independent reader.
local sim = require "pullsecret.sim"
local kube = require "pullsecret.kube"
local json = kube.json

local q = require("spec.helpers.host").q

local function kubectl_json(s, args)
  local p = assert(io.popen("kubectl --kubeconfig " .. q(s.kubeconfig) .. " --cache-dir " .. q(s.dir .. "/kcache")
    .. " " .. args .. " -o json 2>/dev/null"))
  local out = p:read("a")
  p:close()
  return assert(json.decode(out), "kubectl " .. args .. " printed no JSON")
end

-- A fault path is a Lua pattern: escape the magic characters of a literal path.
local function literal(path) return (path:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

local function names(list)
  local out = {}
  for i, e in ipairs(list or {}) do out[i] = e.name end
  return table.concat(out, ",")
end

describe("add_pull_secret", function()
  local s, k
  local n = 0
  local ns
  setup(function() s = sim.start{ services = { kube = {} } } end)
  teardown(function() if s then s:stop() end end)
  before_each(function()
    s:clear_faults()
    k = assert(kube.new{ kubeconfig = s.kubeconfig, retry = { attempts = 2, base_ms = 10 } })
    n = n + 1
    ns = "sa-test-" .. n
    assert(k:create{ apiVersion = "v1", kind = "Namespace", metadata = { name = ns } })
  end)
  after_each(function() if k then k:close() end end)

  local function set_list(list)
    local sa = assert(k:get{ kind = "ServiceAccount", namespace = ns, name = "default" })
    sa.imagePullSecrets = json.array(list)
    return assert(k:replace(sa))
  end

  it("appends to the list and keeps everyone else's entries", function()
    set_list({ { name = "theirs-1" }, { name = "theirs-2" } })
    local r = assert(k:add_pull_secret(ns, "default", "regcred"))
    assert.equal("added", r.action)
    assert.equal(1, r.attempts)
    assert.equal("theirs-1,theirs-2,regcred", names(r.object.imagePullSecrets))
    local sa = kubectl_json(s, "-n " .. ns .. " get sa default")
    assert.equal("theirs-1,theirs-2,regcred", names(sa.imagePullSecrets))
  end)

  it("adds to a service account that has no list yet", function()
    local r = assert(k:add_pull_secret(ns, "default", "regcred"))
    assert.equal("added", r.action)
    assert.equal("regcred", names(kubectl_json(s, "-n " .. ns .. " get sa default").imagePullSecrets))
  end)

  it("does nothing when the secret is already listed", function()
    set_list({ { name = "regcred" } })
    local before = s:state("kube").writes
    local r = assert(k:add_pull_secret(ns, "default", "regcred"))
    assert.equal("present", r.action)
    assert.equal(before, s:state("kube").writes)
  end)

  it("survives a 409 Conflict on the PUT", function()
    s:fault{ listener = "kube", method = "PUT",
             path = literal("/api/v1/namespaces/" .. ns .. "/serviceaccounts/default"),
             status = 409, times = 1 }
    local r = assert(k:add_pull_secret(ns, "default", "regcred"))
    assert.equal("added", r.action)
    assert.equal(2, r.attempts)
    assert.equal("regcred", names(kubectl_json(s, "-n " .. ns .. " get sa default").imagePullSecrets))
  end)

  it("survives a concurrent update between its GET and its PUT, keeping the other writer's entry", function()
    local other = assert(kube.new{ kubeconfig = s.kubeconfig })
    local interfered = false
    local c = assert(kube.new{ kubeconfig = s.kubeconfig, log = function(line)
      if not interfered and line:match("^GET .*/serviceaccounts/default") then
        interfered = true
        local sa = assert(other:get{ kind = "ServiceAccount", namespace = ns, name = "default" })
        sa.imagePullSecrets = json.array({ { name = "concurrent" } })
        assert(other:replace(sa))
      end
    end })
    local r = assert(c:add_pull_secret(ns, "default", "regcred"))
    assert.is_true(interfered)
    assert.equal("added", r.action)
    assert.equal(2, r.attempts)
    assert.equal("concurrent,regcred", names(kubectl_json(s, "-n " .. ns .. " get sa default").imagePullSecrets))
    c:close()
    other:close()
  end)

  it("gives up after a bounded number of conflicts", function()
    s:fault{ listener = "kube", method = "PUT",
             path = literal("/api/v1/namespaces/" .. ns .. "/serviceaccounts/default"),
             status = 409 }
    local none, err = k:add_pull_secret(ns, "default", "regcred")
    assert.is_nil(none)
    assert.equal("conflict", err.kind)
    assert.matches("gave up after 5 attempts", err.message, 1, true)
    local puts = 0
    for _, l in ipairs(s:stats().log) do
      if l.method == "PUT" and l.path == "/api/v1/namespaces/" .. ns .. "/serviceaccounts/default" then
        puts = puts + 1
      end
    end
    assert.equal(5, puts)
  end)

  it("reports a missing service account as NotFound", function()
    local none, err = k:add_pull_secret(ns, "builder", "regcred")
    assert.is_nil(none)
    assert.equal("NotFound", err.reason)
    assert.matches('serviceaccounts "builder" not found', err.message, 1, true)
  end)

  it("makes new pods inherit the secret; existing pods keep what they had", function()
    local function pod(name)
      return { apiVersion = "v1", kind = "Pod", metadata = { name = name, namespace = ns },
               spec = { containers = json.array({ { name = "c", image = "registry.example.com/t/app:1" } }) } }
    end
    local before = assert(k:create(pod("before")))
    assert.is_nil(before.spec.imagePullSecrets)
    assert(k:add_pull_secret(ns, "default", "regcred"))
    local after = assert(k:create(pod("after")))
    assert.equal("regcred", names(after.spec.imagePullSecrets))
    assert.is_nil(kubectl_json(s, "-n " .. ns .. " get pod before").spec.imagePullSecrets)
    -- the same through kubectl create -f
    local file = s.dir .. "/kpod.json"
    local f = assert(io.open(file, "w"))
    f:write((assert(json.encode(pod("via-kubectl")))))
    f:close()
    local p = assert(io.popen("kubectl --kubeconfig " .. q(s.kubeconfig) .. " --cache-dir " .. q(s.dir .. "/kcache")
      .. " create -f " .. q(file) .. " 2>&1"))
    assert.equal("pod/via-kubectl created\n", p:read("a"))
    p:close()
    assert.equal("regcred", names(kubectl_json(s, "-n " .. ns .. " get pod via-kubectl").spec.imagePullSecrets))
    local missing = pod("orphan")
    missing.spec.serviceAccountName = "nobody"
    local none, err = k:create(missing)
    assert.is_nil(none)
    assert.equal("Forbidden", err.reason)
    assert.equal(403, err.code)
  end)
end)
