-- pullsecret.kube's batches against the simulated API server over TLS: many requests at once,
-- answers in input order, each with the errors, the 401 retry and the 429 wait of one request.
local sim = require "pullsecret.sim"
local kube = require "pullsecret.kube"
local write = require("spec.helpers.host").write

local NAMESPACES = { "a", "b", "c", "d", "e", "f" }

local function pull_secret(ns, name, password, typ)
  local s = assert(require("pullsecret.manifest").pull_secret{ name = name, namespace = ns,
    server = "registry.example.com", username = "token", password = password, email = "a@b.c" })
  s.type = typ or s.type
  return s
end

local function refs(name)
  local out = {}
  for i, ns in ipairs(NAMESPACES) do out[i] = { kind = "Secret", namespace = ns, name = name } end
  return out
end

describe("pullsecret.kube batches", function()
  local s, k
  before_each(function()
    s = sim.start{ services = { kube = { namespaces = NAMESPACES } } }
    k = assert(kube.new{ kubeconfig = s.kubeconfig, retry = { attempts = 3, base_ms = 10, max_ms = 2000 } })
  end)
  after_each(function()
    k:close()
    s:stop()
  end)

  it("client:batch answers in input order: objects with their responses, Status errors as single requests do",
    function()
    local got = k:batch({
      { path = "/api/v1/namespaces/a/serviceaccounts/default" },
      { path = "/api/v1/namespaces/b/secrets/none", ctx = { verb = "get", resource = "secrets", name = "none",
                                                             namespace = "b" } },
      { method = "POST", path = "/api/v1/namespaces/c/configmaps",
        body = { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "m" }, data = { x = "1" } } },
      { path = "/api/v1/namespaces/d/serviceaccounts/default" },
    }, { concurrency = 2 })
    assert.equal(4, #got)
    assert.equal("a", got[1].obj.metadata.namespace)
    assert.equal(200, got[1].res.status)
    assert.is_nil(got[2].obj)
    assert.equal("kube", got[2].err.kind)
    assert.equal("NotFound", got[2].err.reason)
    assert.equal(404, got[2].err.code)
    assert.matches('get secrets "none" in namespace "b"', got[2].err.message, 1, true)
    assert.equal(201, got[3].res.status)
    assert.equal("1", s:state("kube").objects.configmaps["c/m"].data.x)
    assert.equal("d", got[4].obj.metadata.namespace)
  end)

  it("upsert_secret_many creates, leaves alone and updates, per namespace, and get_many reads them back", function()
    local first = {}
    for i, ns in ipairs(NAMESPACES) do first[i] = pull_secret(ns, "reg", "tok-1") end
    local r = k:upsert_secret_many(first)
    for i = 1, #NAMESPACES do assert.equal("created", r[i].obj.action) end
    local writes = s:state("kube").writes
    local second = {}
    for i, ns in ipairs(NAMESPACES) do second[i] = pull_secret(ns, "reg", i % 2 == 0 and "tok-2" or "tok-1") end
    r = k:upsert_secret_many(second, { concurrency = 3 })
    for i = 1, #NAMESPACES do
      assert.equal(i % 2 == 0 and "updated" or "unchanged", r[i].obj.action, NAMESPACES[i])
    end
    assert.equal(writes + #NAMESPACES // 2, s:state("kube").writes)   -- the unchanged ones change nothing
    local got = k:get_many(refs("reg"))
    for i, ns in ipairs(NAMESPACES) do
      assert.equal("Secret", got[i].obj.kind)
      assert.equal(ns, got[i].obj.metadata.namespace)
      assert.equal(second[i].data[".dockerconfigjson"], got[i].obj.data[".dockerconfigjson"])
    end
  end)

  it("one namespace's failure does not stop the others; a type mismatch is the same conflict as upsert_secret",
    function()
    assert(k:create{ apiVersion = "v1", kind = "Secret", metadata = { name = "reg", namespace = "c" },
                     type = "Opaque", data = {} })
    s:fault{ listener = "kube", method = "PATCH", path = "/api/v1/namespaces/e/secrets/reg", status = 403 }
    local secrets = {}
    for i, ns in ipairs(NAMESPACES) do secrets[i] = pull_secret(ns, "reg", "tok") end
    local r = k:upsert_secret_many(secrets)
    for i, ns in ipairs(NAMESPACES) do
      if ns == "c" then
        assert.equal("conflict", r[i].err.kind)
        assert.equal("TypeMismatch", r[i].err.reason)
      elseif ns == "e" then
        assert.equal(403, r[i].err.code)
        assert.matches('apply secrets "reg" in namespace "e"', r[i].err.message, 1, true)
      else
        assert.equal("created", r[i].obj.action, ns)
      end
    end
    local objects = s:state("kube").objects.secrets
    assert.equal("Opaque", objects["c/reg"].type)
    assert.is_nil(objects["e/reg"])
    s:clear_faults()
    r = k:upsert_secret_many(secrets, { replace_type = true })
    assert.is_true(r[3].obj.replaced)
    assert.equal("created", r[3].obj.action)
    assert.equal("kubernetes.io/dockerconfigjson", s:state("kube").objects.secrets["c/reg"].type)
  end)

  it("add_pull_secret_many adds to every account once and keeps the entries already there", function()
    local entries = {}
    for i, ns in ipairs(NAMESPACES) do
      entries[i] = { namespace = ns, service_account = "default", secret_name = "reg" }
    end
    assert(k:add_pull_secret("b", "default", "other"))
    local r = k:add_pull_secret_many(entries)
    for i = 1, #NAMESPACES do assert.equal("added", r[i].obj.action) end
    r = k:add_pull_secret_many(entries)
    for i = 1, #NAMESPACES do assert.equal("present", r[i].obj.action) end
    local sa = s:state("kube").objects.serviceaccounts["b/default"]
    assert.same({ { name = "other" }, { name = "reg" } }, sa.imagePullSecrets)
  end)

  it("list_many and describe_secrets_many follow continue for every list", function()
    for _, ns in ipairs{ "a", "b" } do
      for j = 1, 3 do assert(k:upsert_secret(pull_secret(ns, "s" .. j, "t"))) end
    end
    s:reset_stats()
    local lists = k:list_many({ { kind = "Secret", namespace = "a", limit = 1 },
                                { kind = "Secret", namespace = "b", limit = 2 },
                                { kind = "Secret", namespace = "f", limit = 1 } })
    assert.equal(3, #lists[1].obj)
    assert.equal(3, #lists[2].obj)
    assert.equal(0, #lists[3].obj)
    assert.equal("s3", lists[1].obj[3].metadata.name)
    assert.equal(3 + 2 + 1, s:stats().requests.kube)       -- pages
    local d = k:describe_secrets_many({ "a", "f" })
    assert.equal(3, #d[1].obj)
    assert.equal(".dockerconfigjson", d[1].obj[1].data[1].key)
    assert.equal(0, #d[2].obj)
  end)

  it("after a 401, invalidates the credentials once and sends the refused requests again, together", function()
    local plugin = write(s.dir .. "/plugin.sh", table.concat({
      "#!/bin/sh",
      "echo run >> '" .. s.dir .. "/exec-runs'",
      "printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
        .. "\"status\":{\"token\":\"%s\"}}' \"$(cat '" .. s.dir .. "/exec-token')\"", "" }, "\n"))
    os.execute("chmod +x '" .. plugin .. "'")
    write(s.dir .. "/exec-token", "stale-exec-token")
    local kc = write(s.dir .. "/exec.yaml", table.concat({
      "apiVersion: v1", "kind: Config",
      "clusters:", "- name: sim", "  cluster:", '    server: "' .. s.urls.kube .. '"',
      '    certificate-authority: "' .. s.ca_file .. '"',
      "users:", "- name: exec-user", "  user:", "    exec:", "      apiVersion: client.authentication.k8s.io/v1",
      "      command: " .. plugin, "      interactiveMode: Never",
      "contexts:", "- name: sim", "  context:", "    cluster: sim", "    user: exec-user",
      "current-context: sim", "" }, "\n"))
    local function runs()
      local n = 0
      for _ in io.lines(s.dir .. "/exec-runs") do n = n + 1 end
      return n
    end
    local c = assert(kube.new{ kubeconfig = kc })
    s:reset_stats()
    local r = c:get_many(refs("x"))                   -- a stale token: 401, one re-run, 401 again
    for i = 1, #NAMESPACES do assert.equal(401, r[i].err.code) end
    assert.equal(2, runs())
    assert.equal(2 * #NAMESPACES, s:stats().requests.kube)
    write(s.dir .. "/exec-token", "sim-admin-token")
    s:reset_stats()
    r = c:get_many(refs("x"))                         -- the cached stale token: 401, one re-run, accepted
    for i = 1, #NAMESPACES do assert.equal(404, r[i].err.code) end
    assert.equal(3, runs())
    local statuses = {}
    for _, l in ipairs(s:stats().log) do statuses[l.status] = (statuses[l.status] or 0) + 1 end
    assert.same({ [401] = #NAMESPACES, [404] = #NAMESPACES }, statuses)
    c:close()
  end)

  it("waits for a 429's Retry-After and sends only the refused requests again", function()
    local events = {}
    local c = assert(kube.new{ kubeconfig = s.kubeconfig, on_event = function(ev) events[#events + 1] = ev end,
                               retry = { attempts = 3, base_ms = 10, max_ms = 3000 } })
    s:fault{ listener = "kube", method = "GET", path = "/api/v1/namespaces/[bd]/serviceaccounts/default",
             status = 429, retry_after = "1" , times = 2 }
    local sas = {}
    for i, ns in ipairs(NAMESPACES) do sas[i] = { kind = "ServiceAccount", namespace = ns, name = "default" } end
    local r = c:get_many(sas)
    for i, ns in ipairs(NAMESPACES) do assert.equal(ns, r[i].obj.metadata.namespace) end
    assert.equal(2, #events)
    for _, ev in ipairs(events) do
      assert.equal("status 429", ev.reason)
      assert.is_true(ev.delay >= 1)
    end
    assert.equal(#NAMESPACES + 2, s:stats().requests.kube)
    c:close()
  end)

  it("honours concurrency, per call and per client, and refuses one out of range", function()
    s:fault{ listener = "kube", path = ".*", delay_ms = 50 }
    s:reset_stats()
    k:get_many(refs("x"), { concurrency = 2 })
    assert.equal(2, s:stats().max_in_flight.kube)
    local one = assert(kube.new{ kubeconfig = s.kubeconfig, concurrency = 1 })
    s:reset_stats()
    one:get_many(refs("x"))
    assert.equal(1, s:stats().max_in_flight.kube)
    one:close()
    s:reset_stats()
    k:get_many(refs("x"))                              -- default 16: more than 2 at once
    assert.is_true(s:stats().max_in_flight.kube > 2)
    assert.has_error(function() k:get_many(refs("x"), { concurrency = 0 }) end,
      "client:get_many: concurrency must be an integer from 1 to 1024")
    assert.has_error(function() kube.new{ kubeconfig = s.kubeconfig, concurrency = 2.5 } end,
      "kube.new: concurrency must be an integer from 1 to 1024")
  end)
end)
