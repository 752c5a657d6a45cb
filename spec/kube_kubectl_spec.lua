-- Real kubectl (/usr/bin/kubectl) as the independent side: it talks to the simulator over TLS with
-- the kubeconfig sim.start writes, and must see what pullsecret.kube wrote (and the reverse).
-- kubectl flags used: --kubeconfig, --cache-dir (a per-sim directory), -o json, -l, --field-selector,
-- --chunk-size, --server-side, --field-manager, --force-conflicts, --token. No --validate=false is
-- needed: the simulator's /openapi/v3 tells kubectl to leave field validation to the server.
local sim = require "pullsecret.sim"
local kube = require "pullsecret.kube"
local manifest = require "pullsecret.manifest"
local json = kube.json
local host = require "spec.helpers.host"

local q, write, read = host.q, host.write, host.read

-- Runs kubectl against the simulator; returns stdout, stderr, exit code.
local function kubectl(s, args)
  local errf = s.dir .. "/kubectl.err"
  local p = assert(io.popen("kubectl --kubeconfig " .. q(s.kubeconfig) .. " --cache-dir " .. q(s.dir .. "/kcache")
    .. " " .. args .. " 2>" .. q(errf)))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, read(errf) or "", code
end

local function kubectl_json(s, args)
  local out, err, code = kubectl(s, args .. " -o json")
  assert(code == 0, "kubectl " .. args .. " failed: " .. err)
  return assert(json.decode(out))
end

local function b64(s) return require("pullsecret.sim.kube").b64encode(s) end

local function pull_secret(name, password, ns)
  return (assert(manifest.pull_secret{ name = name, namespace = ns or "default",
    server = "registry.example.com", username = "token", password = password, email = "a@b.c" }))
end

-- `kubectl describe secrets` output -> { {name=, type=, data = { {key=, bytes=} } } }
local function parse_describe(text)
  local out, cur = {}, nil
  for line in (text .. "\n"):gmatch("(.-)\n") do
    local name = line:match("^Name:%s+(%S+)")
    if name then
      cur = { name = name, data = {} }
      out[#out + 1] = cur
    elseif cur then
      local typ = line:match("^Type:%s+(%S+)")
      if typ then cur.type = typ end
      local key, n = line:match("^([^%s:][^:]*):%s+(%d+) bytes$")
      if key then cur.data[#cur.data + 1] = { key = key, bytes = tonumber(n) } end
    end
  end
  for _, e in ipairs(out) do table.sort(e.data, function(a, b) return a.key < b.key end) end
  return out
end

describe("kubectl against the simulator", function()
  local s, k
  setup(function()
    s = sim.start{ services = { kube = {} } }
    k = assert(kube.new{ kubeconfig = s.kubeconfig })
  end)
  teardown(function()
    if k then k:close() end
    if s then s:stop() end
  end)

  it("discovers the API and lists namespaces and service accounts as tables", function()
    local out, err, code = kubectl(s, "get namespaces")
    assert.equal(0, code, err)
    assert.matches("NAME%s+STATUS%s+AGE", out)
    assert.matches("\ndefault%s+Active", out)
    assert.matches("\nkube%-system%s+Active", out)
    out = kubectl(s, "get sa")
    assert.matches("\ndefault%s+0", out)
    out = kubectl(s, "version -o json")
    assert.equal("v1.32.0-pullsecret-sim", json.decode(out).serverVersion.gitVersion)
  end)

  it("reads back the pull secret we applied, with the same data", function()
    local secret = pull_secret("regcred", "tok<&>\226\128\168")
    local r = assert(k:upsert_secret(secret))
    assert.equal("created", r.action)
    local got = kubectl_json(s, "get secret regcred")
    assert.equal("Secret", got.kind)
    assert.equal("kubernetes.io/dockerconfigjson", got.type)
    assert.equal(secret.data[".dockerconfigjson"], got.data[".dockerconfigjson"])
    assert.equal(r.object.metadata.resourceVersion, got.metadata.resourceVersion)
    local out = kubectl(s, "get secret regcred -o " .. q("jsonpath={.data.\\.dockerconfigjson}"))
    assert.equal(secret.data[".dockerconfigjson"], out)
  end)

  it("creates a pod from the seed template that our client reads back", function()
    local pod, text = assert(manifest.render(manifest.SEED_POD_TEMPLATE, {
      pod_name = "mypod", container_name = "app", dedicated_domain = "example.com",
      my_namespace = "team", my_image = "web", secret_name = "regcred" }))
    assert.equal("mypod", pod.metadata.name)
    local file = write(s.dir .. "/mypod.yaml", text)
    local out, err, code = kubectl(s, "create -f " .. q(file))
    assert.equal(0, code, err)
    assert.equal("pod/mypod created\n", out)
    local _
    local got = assert(k:get{ kind = "Pod", name = "mypod" })
    assert.equal("registry.example.com/team/web:latest", got.spec.containers[1].image)
    assert.equal("app", got.spec.containers[1].name)
    assert.equal("regcred", got.spec.imagePullSecrets[1].name)
    assert.equal("Pending", got.status.phase)
    _, err, code = kubectl(s, "create -f " .. q(file))
    assert.are_not.equal(0, code)
    assert.matches('pods "mypod" already exists', err, 1, true)
  end)

  it("applies the seed's pod with `kubectl apply -f` as the seed does, and again without a change", function()
    local _, text = assert(manifest.render(manifest.SEED_POD_TEMPLATE, {
      pod_name = "seedpod", container_name = "app", dedicated_domain = "example.com",
      my_namespace = "team", my_image = "web", tag = "1.0", secret_name = "regcred" }))
    local file = write(s.dir .. "/seedpod.yaml", text)
    local out, err, code = kubectl(s, "apply -f " .. q(file))
    assert.equal(0, code, err)
    assert.equal("pod/seedpod created\n", out)
    local writes = s:state("kube").writes
    out, err, code = kubectl(s, "apply -f " .. q(file))
    assert.equal(0, code, err)
    assert.equal("pod/seedpod unchanged\n", out)
    assert.equal(writes, s:state("kube").writes)
    local got = assert(k:get{ kind = "Pod", name = "seedpod" })
    assert.equal("registry.example.com/team/web:1.0", got.spec.containers[1].image)
    assert.is_string(got.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"])
  end)

  it("sees the pod our client applied", function()
    local pod = assert(manifest.pod{ name = "ours", namespace = "default", container = "app",
      image = "registry.example.com/team/web:2", pull_secrets = { "regcred" } })
    local obj, status = assert(k:apply(pod))
    assert.equal(201, status)
    assert.equal("ours", obj.metadata.name)
    local got = kubectl_json(s, "get pod ours")
    assert.equal("registry.example.com/team/web:2", got.spec.containers[1].image)
    assert.equal("regcred", got.spec.imagePullSecrets[1].name)
    local managers = {}
    for _, m in ipairs(kubectl_json(s, "get pod ours --show-managed-fields").metadata.managedFields) do
      managers[m.manager] = m.operation
    end
    assert.equal("Apply", managers.pullsecret)
  end)

  it("has its typos caught by the server's strict field validation", function()
    local file = write(s.dir .. "/typo.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: typo\n"
      .. "tpye: Opaque\n")
    local _, err, code = kubectl(s, "create -f " .. q(file))
    assert.are_not.equal(0, code)
    assert.matches('strict decoding error: unknown field "tpye"', err, 1, true)
    local _, gerr = k:get{ kind = "Secret", name = "typo" }
    assert.equal(404, gerr.code)
  end)

  it("describes the same names, types and sizes as describe_secrets", function()
    assert(k:create{ apiVersion = "v1", kind = "Secret", metadata = { name = "opaque-one" },
                     data = { ["b.txt"] = b64("12345"), a = b64("") } })
    assert(k:upsert_secret(pull_secret("zz-reg", "a-much-longer-token-value")))
    local out, err, code = kubectl(s, "describe secrets")
    assert.equal(0, code, err)
    local theirs = parse_describe(out)
    local ours = assert(k:describe_secrets("default"))
    assert.is_true(#ours >= 3)
    assert.equal(#ours, #theirs)
    for i, e in ipairs(ours) do
      assert.equal(e.name, theirs[i].name)
      assert.equal(e.type, theirs[i].type)
      assert.same(e.data, theirs[i].data)
    end
  end)

  it("sees conflicts between kubectl's server-side apply and ours", function()
    assert(k:upsert_secret(pull_secret("owned", "tok-1")))
    local other = pull_secret("owned", "tok-from-kubectl")
    local file = write(s.dir .. "/owned.json", assert(json.encode(other)))
    local _, err, code = kubectl(s, "apply --server-side --field-manager=ops -f " .. q(file))
    assert.are_not.equal(0, code)
    assert.matches("conflict", err)
    assert.matches("pullsecret", err)
    local out
    out, err, code = kubectl(s, "apply --server-side --field-manager=ops --force-conflicts -f " .. q(file))
    assert.equal(0, code, err)
    assert.matches("serverside%-applied", out)
    local none, uerr = k:upsert_secret(pull_secret("owned", "tok-1"))
    assert.is_nil(none)
    assert.equal("conflict", uerr.kind)
    assert.matches('"ops"', uerr.message, 1, true)
    assert.equal(other.data[".dockerconfigjson"], kubectl_json(s, "get secret owned").data[".dockerconfigjson"])
  end)

  it("agrees on label selectors, field selectors and paging", function()
    for i = 1, 5 do
      assert(k:create{ apiVersion = "v1", kind = "Secret",
        metadata = { name = "sel-" .. i, labels = { group = "sel", parity = i % 2 == 0 and "even" or "odd" } } })
    end
    local function names(list)
      local n = {}
      for i, it in ipairs(list) do n[i] = it.metadata.name end
      return table.concat(n, ",")
    end
    local theirs = kubectl_json(s, "get secrets -l " .. q("group=sel,parity in (odd)"))
    local ours = assert(k:list{ kind = "Secret", label_selector = "group=sel,parity in (odd)" })
    assert.equal("sel-1,sel-3,sel-5", names(theirs.items))
    assert.equal(names(theirs.items), names(ours))
    theirs = kubectl_json(s, "get secrets -l group=sel --field-selector metadata.name!=sel-2")
    assert.equal("sel-1,sel-3,sel-4,sel-5", names(theirs.items))
    s:reset_stats()
    theirs = kubectl_json(s, "get secrets -l group=sel --chunk-size=2")
    assert.equal("sel-1,sel-2,sel-3,sel-4,sel-5", names(theirs.items))
    local pages = 0
    for _, l in ipairs(s:stats().log) do
      if l.path == "/api/v1/namespaces/default/secrets" then pages = pages + 1 end
    end
    assert.equal(3, pages)
  end)

  it("is forbidden to write with a read-only token, and unauthorized with a wrong one", function()
    local file = write(s.dir .. "/ro.json", assert(json.encode({ apiVersion = "v1", kind = "Secret",
      metadata = { name = "ro" } })))
    local _, err, code = kubectl(s, "--token sim-viewer-token create -f " .. q(file))
    assert.are_not.equal(0, code)
    assert.matches('User "viewer" cannot create resource "secrets"', err, 1, true)
    _, err, code = kubectl(s, "--token wrong-token get secrets")
    assert.are_not.equal(0, code)
    assert.matches("Unauthorized", err)
  end)

  it("is refused with 415 when it sends protobuf (typed generators)", function()
    local _, err, code = kubectl(s, "create namespace proto-ns")
    assert.are_not.equal(0, code)
    assert.matches("unknown format", err)
    local out
    out, err, code = kubectl(s, "create secret generic gen --from-literal=a=b --dry-run=client -o json")
    assert.equal(0, code, err)
    assert.equal("gen", json.decode(out).metadata.name)
  end)
end)
