-- pullsecret.kube against the simulated API server over TLS: the generic verbs, errors as a user
-- reads them, authentication (tokens, client certificates), 429 handling, dry runs, selectors,
-- paging, and the pull-secret upsert of step 6.
local sim = require "pullsecret.sim"
local kube = require "pullsecret.kube"
local write = require("spec.helpers.host").write

local function b64(s) return require("pullsecret.sim.kube").b64encode(s) end

-- A kubeconfig for the simulator with the given user entry (YAML written by hand).
local function kubeconfig(s, file, user_name, user_lines)
  return write(s.dir .. "/" .. file, table.concat({
    "apiVersion: v1", "kind: Config",
    "clusters:", "- name: sim", "  cluster:", '    server: "' .. s.urls.kube .. '"',
    '    certificate-authority: "' .. s.ca_file .. '"',
    "users:", "- name: " .. user_name, "  user:", user_lines,
    "contexts:", "- name: sim", "  context:", "    cluster: sim", "    user: " .. user_name,
    "    namespace: default", "current-context: sim", "" }, "\n"))
end

local function secret(name, data, typ, labels)
  return { apiVersion = "v1", kind = "Secret", metadata = { name = name, namespace = "default", labels = labels },
           data = data, type = typ }
end

local function pull_secret(name, password)
  return (assert(require("pullsecret.manifest").pull_secret{ name = name, namespace = "default",
    server = "registry.example.com", username = "token", password = password, email = "a@b.c" }))
end

describe("kube.json", function()
  local json = kube.json
  it("keeps empty arrays as arrays and objects as objects through a round trip", function()
    local v = assert(json.decode('{"items":[],"metadata":{},"list":[1,2],"n":null,"t":true}'))
    assert.is_true(json.is_array(v.items))
    assert.is_false(json.is_array(v.metadata))
    assert.equal(json.null, v.n)
    assert.equal('{"metadata":{},"items":[],"list":[1,2],"n":null,"t":true}', json.encode(v))
  end)

  it("writes kind, apiVersion and metadata first, does not escape '/', escapes control characters", function()
    assert.equal('{"kind":"Secret","apiVersion":"v1","metadata":{"name":"a/b"},"data":{"k":"\\n\\u0001\\"x"}}',
      json.encode({ data = { k = "\n\1\"x" }, metadata = { name = "a/b" }, apiVersion = "v1", kind = "Secret" }))
  end)

  it("decodes escapes, surrogate pairs and numbers", function()
    local v = assert(json.decode('["\\u00e9\\ud83d\\ude00\\/", 12, -1.5, 1e3]'))
    assert.equal("\195\169\240\159\152\128/", v[1])
    assert.equal(12, v[2])
    assert.equal("integer", math.type(v[2]))
    assert.equal(-1.5, v[3])
    assert.equal(1000, v[4])
    assert.is_nil(json.decode("{"))
    assert.is_nil(json.decode('{"a":1} x'))
  end)
end)

describe("pullsecret.kube against the simulator", function()
  local s, k
  setup(function()
    s = sim.start{ services = { kube = {
      users = { { name = "admin", token = "sim-admin-token" },
                { name = "viewer", token = "sim-viewer-token", read_only = true } } } } }
  end)
  teardown(function() if s then s:stop() end end)
  before_each(function()
    k = assert(kube.new{ kubeconfig = s.kubeconfig, retry = { attempts = 3, base_ms = 10, max_ms = 2000 } })
    s:clear_faults()
  end)
  after_each(function()
    if k then k:close() end
    -- leave the namespace empty of secrets for the next test
    local c = assert(kube.new{ kubeconfig = s.kubeconfig })
    for _, it in ipairs(assert(c:list{ kind = "Secret", namespace = "default" })) do assert(c:delete(it)) end
    c:close()
  end)

  describe("generic verbs", function()
    it("creates, gets, replaces, patches and deletes, with the server's resourceVersions", function()
      assert.equal("default", k.namespace)
      local a = assert(k:create(secret("a", { k = b64("1") })))
      assert.equal("Secret", a.kind)
      assert.equal("v1", a.apiVersion)
      assert.matches("^%d+$", a.metadata.resourceVersion)
      local got = assert(k:get{ kind = "Secret", name = "a" })
      assert.equal(a.metadata.uid, got.metadata.uid)
      got.data.k = b64("2")
      local b = assert(k:replace(got))
      assert.is_true(tonumber(b.metadata.resourceVersion) > tonumber(a.metadata.resourceVersion))
      -- replacing with the now stale resourceVersion is a Conflict
      local none, err = k:replace(got)
      assert.is_nil(none)
      assert.equal("kube", err.kind)
      assert.equal("Conflict", err.reason)
      assert.equal(409, err.code)
      local p = assert(k:patch(b, { metadata = { labels = { app = "x" } } }))
      assert.equal("x", p.metadata.labels.app)
      p = assert(k:patch(b, { { op = "add", path = "/data/j", value = b64("3") } }, { type = "json" }))
      assert.equal(b64("3"), p.data.j)
      p = assert(k:patch(b, { data = { j = b64("4") } }, { type = "strategic" }))
      assert.equal(b64("4"), p.data.j)
      assert(k:delete(p))
      local gone, gerr = k:get{ kind = "Secret", name = "a" }
      assert.is_nil(gone)
      assert.equal("NotFound", gerr.reason)
      assert.equal(404, gerr.code)
      assert.matches('get secrets "a" in namespace "default"', gerr.message, 1, true)
    end)

    it("reports AlreadyExists and Invalid as Status errors", function()
      assert(k:create(secret("dup", {})))
      local _, err = k:create(secret("dup", {}))
      assert.equal("AlreadyExists", err.reason)
      assert.equal("dup", err.details.name)
      assert.equal('create secrets "dup" in namespace "default": secrets "dup" already exists (409 AlreadyExists)',
        err.message)
      _, err = k:create(secret("Not_Valid", {}))
      assert.equal("Invalid", err.reason)
      assert.equal(422, err.code)
      assert.equal("metadata.name", err.details.causes[1].field)
    end)

    it("builds paths for cluster-scoped kinds and named groups", function()
      local ns = assert(k:create{ apiVersion = "v1", kind = "Namespace", metadata = { name = "team-a" } })
      assert.equal("team-a", ns.metadata.name)
      assert.is_nil(ns.metadata.namespace)
      local sa = assert(k:get{ kind = "ServiceAccount", namespace = "team-a", name = "default" })
      assert.equal("team-a", sa.metadata.namespace)
      -- apps/v1 is not served by the simulator: the path is /apis/apps/v1/..., answered 404
      local _, err = k:get{ api_version = "apps/v1", kind = "Deployment", name = "web" }
      assert.equal(404, err.code)
      local log = s:stats().log
      assert.equal("/apis/apps/v1/namespaces/default/deployments/web", log[#log].path)
      assert(k:delete(ns))
    end)

    it("finds an unknown kind through discovery", function()
      local cm = assert(k:create{ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "c" },
                                  data = { x = "y" } })
      assert.equal("c", cm.metadata.name)
      local _, err = k:get{ api_version = "v1", kind = "Gadget", name = "g" }
      assert.equal("kube", err.kind)
      assert.matches("does not serve kind Gadget", err.message)
      assert(k:delete(cm))
    end)

    it("lists with label and field selectors, following continue", function()
      for i = 1, 7 do
        assert(k:create(secret(string.format("s%d", i), {}, nil, { app = i % 2 == 0 and "even" or "odd" })))
      end
      s:reset_stats()
      local all = assert(k:list{ kind = "Secret", limit = 3 })
      assert.equal(7, #all)
      assert.equal("s1", all[1].metadata.name)
      assert.equal("s7", all[7].metadata.name)
      assert.equal("Secret", all[1].kind)
      local pages = 0
      for _, l in ipairs(s:stats().log) do
        if l.path == "/api/v1/namespaces/default/secrets" then pages = pages + 1 end
      end
      assert.equal(3, pages)
      local even = assert(k:list{ kind = "Secret", label_selector = "app=even" })
      assert.equal(3, #even)
      local odd = assert(k:list{ kind = "Secret", label_selector = "app in (odd),app!=even" })
      assert.equal(4, #odd)
      local one = assert(k:list{ kind = "Secret", field_selector = "metadata.name=s5" })
      assert.equal(1, #one)
      assert.equal("s5", one[1].metadata.name)
      local _, err = k:list{ kind = "Secret", field_selector = "spec.nope=1" }
      assert.equal("BadRequest", err.reason)
      local everywhere = assert(k:list{ kind = "ServiceAccount", namespace = false })
      assert.is_true(#everywhere >= 2)
    end)

    it("writes nothing with dry_run", function()
      assert(k:create(secret("keep", { k = b64("1") })))
      local before = s:state("kube").writes
      local made = assert(k:create(secret("ghost", {}), { dry_run = true }))
      assert.equal("ghost", made.metadata.name)
      assert(k:replace(secret("keep", { k = b64("2") }), { dry_run = true }))
      assert(k:apply(secret("keep", { k = b64("3") }), { dry_run = true }))
      assert(k:patch(secret("keep"), { data = { k = b64("4") } }, { dry_run = true }))
      assert(k:delete(secret("keep"), { dry_run = true }))
      local r = assert(k:upsert_secret(pull_secret("dry", "tok"), { dry_run = true }))
      assert.equal("created", r.action)
      assert.equal(before, s:state("kube").writes)
      assert.equal(b64("1"), assert(k:get(secret("keep"))).data.k)
      local _, err = k:get(secret("ghost"))
      assert.equal(404, err.code)
    end)
  end)

  describe("authentication", function()
    it("names the identity, verb and resource on 403 for a read-only token", function()
      local kc = kubeconfig(s, "viewer.yaml", "viewer", "    token: sim-viewer-token")
      local v = assert(kube.new{ kubeconfig = kc })
      assert.equal(0, #assert(v:list{ kind = "Secret" }))
      local _, err = v:create(secret("x", {}))
      assert.equal("kube", err.kind)
      assert.equal("Forbidden", err.reason)
      assert.equal(403, err.code)
      assert.matches('user "viewer" (context "sim") may not create secrets "x" in namespace "default"',
        err.message, 1, true)
      assert.matches('User "viewer" cannot create resource "secrets"', err.message, 1, true)
      assert.not_matches("sim-viewer-token", err.message, 1, true)
      v:close()
    end)

    it("answers a wrong token with a 401 that names the user and never the token", function()
      local kc = kubeconfig(s, "wrong.yaml", "mallory", "    token: not-the-token-1234")
      local w = assert(kube.new{ kubeconfig = kc })
      s:reset_stats()
      local _, err = w:list{ kind = "Secret" }
      assert.equal("Unauthorized", err.reason)
      assert.equal(401, err.code)
      assert.matches('user "mallory"', err.message, 1, true)
      assert.matches("list secrets", err.message, 1, true)
      assert.not_matches("not-the-token-1234", err.message, 1, true)
      assert.equal(2, #s:stats().log)        -- retried once after invalidating the credentials
      w:close()
    end)

    it("re-runs an exec credential plugin once after a 401", function()
      local plugin = write(s.dir .. "/plugin.sh", table.concat({
        "#!/bin/sh",
        "echo run >> '" .. s.dir .. "/exec-runs'",
        "printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
          .. "\"status\":{\"token\":\"%s\"}}' \"$(cat '" .. s.dir .. "/exec-token')\"", "" }, "\n"))
      os.execute("chmod +x '" .. plugin .. "'")
      write(s.dir .. "/exec-token", "stale-exec-token")
      local kc = kubeconfig(s, "exec.yaml", "exec-user", table.concat({
        "    exec:", "      apiVersion: client.authentication.k8s.io/v1", "      command: " .. plugin,
        "      interactiveMode: Never" }, "\n"))
      local function runs()
        local n = 0
        for _ in io.lines(s.dir .. "/exec-runs") do n = n + 1 end
        return n
      end
      local c = assert(kube.new{ kubeconfig = kc })
      local _, err = c:list{ kind = "Secret" }
      assert.equal(401, err.code)
      assert.equal(2, runs())                  -- the first run, and one re-run after the 401
      write(s.dir .. "/exec-token", "sim-admin-token")
      assert(c:list{ kind = "Secret" })        -- cached stale token -> 401 -> re-run -> accepted
      assert.equal(3, runs())
      assert(c:list{ kind = "Secret" })        -- cached good token: no run
      assert.equal(3, runs())
      c:close()
    end)

    it("never writes the token into its log lines", function()
      local lines = {}
      local c = assert(kube.new{ kubeconfig = s.kubeconfig, log = function(l) lines[#lines + 1] = l end })
      assert(c:list{ kind = "Secret", label_selector = "a=b" })
      assert(c:upsert_secret(pull_secret("logged", "tok-in-body")))
      c:close()
      assert.is_true(#lines >= 3)
      assert.matches("^GET https://127%.0%.0%.1:%d+/api/v1/namespaces/default/secrets", lines[1])
      for _, l in ipairs(lines) do
        assert.not_matches("sim-admin-token", l, 1, true)
        assert.not_matches("tok-in-body", l, 1, true)
      end
    end)

    it("re-reads a token file after a 401", function()
      local tf = write(s.dir .. "/token", "stale-token\n")
      local kc = kubeconfig(s, "tokenfile.yaml", "rotating", "    tokenFile: " .. tf)
      local c = assert(kube.new{ kubeconfig = kc })
      local _, err = c:list{ kind = "Secret" }
      assert.equal(401, err.code)
      write(tf, "sim-admin-token\n")
      assert.equal(0, #assert(c:list{ kind = "Secret" }))
      c:close()
    end)
  end)

  describe("429 Too Many Requests", function()
    it("waits for Retry-After and succeeds", function()
      local events = {}
      local c = assert(kube.new{ kubeconfig = s.kubeconfig, on_event = function(ev) events[#events + 1] = ev end,
                                 retry = { attempts = 3, base_ms = 10, max_ms = 3000 } })
      s:fault{ listener = "kube", method = "GET", path = "/api/v1/namespaces/default/secrets", status = 429,
               retry_after = "1", times = 1 }
      assert.equal(0, #assert(c:list{ kind = "Secret" }))
      assert.equal(1, #events)
      assert.equal("retry", events[1].type)
      assert.is_true(events[1].delay >= 1)
      c:close()
    end)
  end)

  describe("upsert_secret", function()
    it("creates, then leaves an identical secret untouched, then updates a changed one", function()
      local r1 = assert(k:upsert_secret(pull_secret("regcred", "tok-1")))
      assert.equal("created", r1.action)
      assert.equal("kubernetes.io/dockerconfigjson", r1.object.type)
      local writes = s:state("kube").writes
      local r2 = assert(k:upsert_secret(pull_secret("regcred", "tok-1")))
      assert.equal("unchanged", r2.action)
      assert.equal(r1.object.metadata.resourceVersion, r2.object.metadata.resourceVersion)
      assert.equal(writes, s:state("kube").writes)
      local r3 = assert(k:upsert_secret(pull_secret("regcred", "tok-2")))
      assert.equal("updated", r3.action)
      assert.are_not.equal(r1.object.data[".dockerconfigjson"], r3.object.data[".dockerconfigjson"])
      assert.equal(1, #assert(k:list{ kind = "Secret", field_selector = "metadata.name=regcred" }))
    end)

    it("reports another manager's field as a conflict unless forced", function()
      assert(k:apply(secret("shared", { [".dockerconfigjson"] = b64('{"auths":{}}') },
        "kubernetes.io/dockerconfigjson"), { field_manager = "someone-else" }))
      local none, err = k:upsert_secret(pull_secret("shared", "tok"))
      assert.is_nil(none)
      assert.equal("conflict", err.kind)
      assert.equal("FieldManagerConflict", err.reason)
      assert.matches("someone-else", err.message, 1, true)
      assert.matches(".data..dockerconfigjson", err.message, 1, true)
      assert.matches("force = true", err.message, 1, true)
      assert.not_matches("tok", err.message:gsub("token", ""), 1, true)
      local r = assert(k:upsert_secret(pull_secret("shared", "tok"), { force = true }))
      assert.equal("updated", r.action)
      local owners = {}
      for _, m in ipairs(r.object.metadata.managedFields) do owners[m.manager] = true end
      assert.is_true(owners.pullsecret)
    end)

    it("refuses to change a secret's type unless replace_type", function()
      assert(k:create(secret("typed", { a = b64("x") }, "Opaque")))
      local none, err = k:upsert_secret(pull_secret("typed", "tok"))
      assert.is_nil(none)
      assert.equal("conflict", err.kind)
      assert.equal("Opaque", err.existing_type)
      assert.equal('secret "typed" in namespace "default" already exists with type Opaque, not '
        .. "kubernetes.io/dockerconfigjson; a secret's type cannot be changed: replace_type = true deletes it "
        .. "and creates it again", err.message)
      assert.equal("Opaque", assert(k:get(secret("typed"))).type)
      local r = assert(k:upsert_secret(pull_secret("typed", "tok"), { replace_type = true }))
      assert.equal("created", r.action)
      assert.is_true(r.replaced)
      assert.equal("kubernetes.io/dockerconfigjson", assert(k:get(secret("typed"))).type)
    end)
  end)

  describe("describe_secrets", function()
    it("lists names, types and key sizes in bytes, sorted, never values", function()
      assert(k:create(secret("zeta", { b = b64("12345"), a = b64("") })))
      assert(k:upsert_secret(pull_secret("alpha", "tok")))
      local d = assert(k:describe_secrets("default"))
      assert.equal(2, #d)
      assert.equal("alpha", d[1].name)
      assert.equal("kubernetes.io/dockerconfigjson", d[1].type)
      assert.equal(".dockerconfigjson", d[1].data[1].key)
      local bytes = require("pullsecret.manifest").dockerconfigjson{ server = "registry.example.com",
        username = "token", password = "tok", email = "a@b.c" }
      assert.equal(#bytes, d[1].data[1].bytes)
      assert.equal("zeta", d[2].name)
      assert.equal("Opaque", d[2].type)
      assert.same({ { key = "a", bytes = 0 }, { key = "b", bytes = 5 } }, d[2].data)
      for _, e in ipairs(d) do assert.is_nil(e.value) end
    end)

    it("leaves out kubectl's last-applied-configuration annotation, which holds the data", function()
      local obj = secret("applied", { p = b64("SECRET-VALUE") })
      obj.metadata.annotations = { ["kubectl.kubernetes.io/last-applied-configuration"] =
        '{"data":{"p":"' .. b64("SECRET-VALUE") .. '"}}', team = "a" }
      assert(k:create(obj))
      local d = assert(k:describe_secrets("default"))
      local got
      for _, e in ipairs(d) do if e.name == "applied" then got = e end end
      assert.same({ team = "a" }, got.annotations)
      assert.same({ { key = "p", bytes = 12 } }, got.data)
    end)

    it("computes decoded sizes from base64 lengths", function()
      for _, n in ipairs({ 0, 1, 2, 3, 4, 5, 100, 101, 102 }) do
        assert.equal(n, kube.b64_size(b64(string.rep("x", n))))
      end
    end)
  end)
end)

describe("pullsecret.kube against a rate-limited simulator", function()
  local s
  setup(function()
    s = sim.start{ services = { kube = { rate_limit = { qps = 4, burst = 2, retry_after = 1 } } } }
  end)
  teardown(function() if s then s:stop() end end)

  it("gets 429 with Retry-After when it goes too fast, waits, and completes every call", function()
    local events = {}
    local c = assert(kube.new{ kubeconfig = s.kubeconfig, on_event = function(ev) events[#events + 1] = ev end,
                               retry = { attempts = 5, base_ms = 10, max_ms = 3000 } })
    for i = 1, 4 do
      local sa = assert(c:get{ kind = "ServiceAccount", name = "default" })
      assert.equal("default", sa.metadata.name, "call " .. i)
    end
    assert.is_true(#events >= 1)
    assert.equal("retry", events[1].type)
    assert.is_true(events[1].delay >= 1)
    local limited = 0
    for _, l in ipairs(s:stats().log) do if l.status == 429 then limited = limited + 1 end end
    assert.equal(#events, limited)
    c:close()
  end)
end)

describe("pullsecret.kube with client-certificate authentication", function()
  local s
  setup(function()
    s = sim.start{ client_ca = "required", client_cert = { cn = "cert-user" },
                   services = { kube = { users = { { name = "admin", token = "sim-admin-token" } } } } }
  end)
  teardown(function() if s then s:stop() end end)

  it("authenticates as the certificate's CN against a server that requires one", function()
    local kc = kubeconfig(s, "cert.yaml", "cert-user", table.concat({
      "    client-certificate-data: " .. b64(s.client_cert_pem),
      "    client-key-data: " .. b64(s.client_key_pem) }, "\n"))
    local c = assert(kube.new{ kubeconfig = kc })
    local r = assert(c:upsert_secret(pull_secret("via-cert", "tok")))
    assert.equal("created", r.action)
    assert.equal("cert-user", s:state("kube").last_user)
    c:close()
    -- kubectl, with the same kubeconfig, sees it
    local p = assert(io.popen("kubectl --kubeconfig '" .. kc .. "' --cache-dir '" .. s.dir
      .. "/kcache' get secret via-cert -o jsonpath='{.type}' 2>&1"))
    local out = p:read("a")
    p:close()
    assert.equal("kubernetes.io/dockerconfigjson", out)
  end)

  it("fails cleanly without a certificate", function()
    local kc = kubeconfig(s, "nocert.yaml", "admin", "    token: sim-admin-token")
    local c = assert(kube.new{ kubeconfig = kc, retry = { attempts = 1 } })
    local none, err = c:list{ kind = "Secret" }
    assert.is_nil(none)
    assert.is_truthy(err.kind == "tls" or err.kind == "transport")
    c:close()
  end)
end)

describe("kube.new with env and home", function()
  it("finds the kubeconfig through the given KUBECONFIG, not the process environment", function()
    local s = require("pullsecret.sim").start{ services = { kube = {} } }
    local ok, err = pcall(function()
      local k = assert(require("pullsecret.kube").new{
        env = function(name) if name == "KUBECONFIG" then return s.kubeconfig end end, home = "/nonexistent" })
      local list = assert(k:list{ kind = "ServiceAccount", namespace = "default" })
      assert.equal("default", list[1].metadata.name)
      k:close()
      local k2, kerr = require("pullsecret.kube").new{ env = function() return nil end, home = "/nonexistent" }
      assert.is_nil(k2)
      assert.equal("config", kerr.kind)
    end)
    s:stop()
    assert(ok, err)
  end)
end)
