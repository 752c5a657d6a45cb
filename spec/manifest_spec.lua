-- Step 7: pod manifests from the seed's template, values that must stay strings, and the JSON
-- and YAML writers. Real kubectl (go-yaml, offline: `kubectl label --local -f -`) reads what
-- we render, next to lyaml.
local manifest = require "pullsecret.manifest"
local yaml = require "pullsecret.yaml"
local cjson = require "cjson.safe"
local read = require("spec.helpers.host").read

-- the seed document, in the shared/ folder beside the checkout (CI lays a copy there too)
local SEED_NAME = "/seed/000_ced994e70dc758ee.txt"

-- kubectl parses `text` as a manifest file and prints the object as JSON; nil, stderr on failure
local function kubectl_reads(text)
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(text)
  f:close()
  local p = assert(io.popen("KUBECONFIG=/nonexistent kubectl label --local -f " .. tmp
                            .. " pullsecret-spec- -o json 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  os.remove(tmp)
  if not ok then return nil, out end
  local obj = assert(cjson.decode(out))
  -- `label NAME-` leaves an empty labels map behind
  if type(obj.metadata.labels) == "table" and next(obj.metadata.labels) == nil then obj.metadata.labels = nil end
  return obj
end

-- kubectl reads several documents at once (one process for many cases): list of objects.
-- Offline with `label --local`; with a kubeconfig (the simulator) as `create -f --dry-run=client`.
local function kubectl_reads_all(texts, kubeconfig_path)
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(table.concat(texts, "---\n"))
  f:close()
  local cmd = "KUBECONFIG=/nonexistent kubectl label --local -f " .. tmp .. " pullsecret-spec- -o json 2>&1"
  if kubeconfig_path then
    cmd = "kubectl --kubeconfig " .. kubeconfig_path .. " create -f " .. tmp .. " --dry-run=client -o json 2>&1"
  end
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok = p:close()
  os.remove(tmp)
  if not ok then return nil, out end
  local docs = {}
  for chunk in out:gmatch("(.-\n})\n") do
    local obj = assert(cjson.decode(chunk))
    if type(obj.metadata.labels) == "table" and next(obj.metadata.labels) == nil then obj.metadata.labels = nil end
    if kubeconfig_path and obj.metadata.namespace == "default" then obj.metadata.namespace = nil end
    docs[#docs + 1] = obj
  end
  return docs
end

-- a plain deep copy (drops ordering marks, yaml.null -> cjson.null) to compare with kubectl's JSON
local function plain(v)
  if v == yaml.null then return cjson.null end
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = plain(x) end
  return t
end

local VALUES = {
  pod_name = "mypod", container_name = "app", dedicated_domain = "cfsdedicated1.us-south.bluemix.net",
  my_namespace = "team", my_image = "web", secret_name = "regcred",
}

-- a pod whose strings all come from <v>, in every kind of YAML scalar
local TEMPLATE = [[
apiVersion: v1
kind: Pod
metadata:
  name: tricky
  annotations:
    plain: <v>
    middle: prefix-<v>-suffix
    double: "<v>"
    single: '<v>'
    anchored: &a <v>
    aliased: *a
spec:
  containers:
  - name: c
    image: registry.example.com/<v>:<tag>
    env: [{name: FLOW, value: <v>}, {name: OTHER, value: x}]
    args: [<v>, "<v> and <v>"]
    command:
    - |
      literal <v>
    - >-
      folded <v>
]]
local TRICKY = {
  "yes", "no", "on", "off", "y", "n", "Y", "true", "False", "NULL", "null", "~", "", "1.0", "0o17", "0x1F",
  "017", "1e3", "2001-12-14", "12:30:00", ".inf", "-.inf", ".nan", "+1", "-1", "1_000", ": x", "x: y",
  "a #b", "#c", "*star", "&anchor", "!tag", "!!str", "%pct", "@at", "`tick", "|pipe", ">gt", "-", "- dash",
  "? q", "[a]", "{a: b}", "'single'", '"double"', "it's", "back\\slash", " lead", "trail ", "two\nlines",
  "tab\tx", "cr\rx", "\u{2028}sep", "del\127", "\u{85}nel", "é😀", "<<", "<v>", "<other>", "=", "---", "...",
  ".dot", ".Inf", ".NaN", ".5", "._x", "_1", "_1.5", "_.5", "_1_000", "a:?b", "a:,b", "a:]b",
}

local function with(t, extra)
  local r = {}
  for k, v in pairs(t) do r[k] = v end
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

describe("manifest.SEED_POD_TEMPLATE", function()
  it("is the seed's mypod.yaml", function()
    local seed = read("../shared" .. SEED_NAME) or read("/work/shared" .. SEED_NAME)
    if not seed then pending("seed file not present") return end
    local block = seed:match("```\n(        apiVersion: v1\n.-)        ```")
    assert.is_string(block)
    local dedented = block:gsub("\n        ", "\n"):gsub("^        ", "")
    assert.are.equal(dedented, manifest.SEED_POD_TEMPLATE)
  end)
end)

describe("manifest.render", function()
  it("fills the seed's placeholders, tag defaulting to latest", function()
    local pod, text = manifest.render(manifest.SEED_POD_TEMPLATE, VALUES)
    assert.is_table(pod, tostring(text))
    assert.are.same({
      apiVersion = "v1", kind = "Pod", metadata = { name = "mypod" },
      spec = {
        containers = { { name = "app", image = "registry.cfsdedicated1.us-south.bluemix.net/team/web:latest" } },
        imagePullSecrets = { { name = "regcred" } },
      },
    }, plain(pod))
    -- the filled-in text keeps the template's layout
    assert.are.equal(manifest.SEED_POD_TEMPLATE:gsub("<pod_name>", "mypod"):gsub("<container_name>", "app")
      :gsub("registry.-<tag>", "registry.cfsdedicated1.us-south.bluemix.net/team/web:latest")
      :gsub("<secret_name>", "regcred"), text)
    -- and kubectl reads it as the same object
    assert.are.same(plain(pod), kubectl_reads(text))
  end)

  it("uses a given tag, and treats an empty tag as latest", function()
    local pod = assert(manifest.render(manifest.SEED_POD_TEMPLATE, with(VALUES, { tag = "1.0" })))
    assert.are.equal("registry.cfsdedicated1.us-south.bluemix.net/team/web:1.0", pod.spec.containers[1].image)
    pod = assert(manifest.render(manifest.SEED_POD_TEMPLATE, with(VALUES, { tag = "" })))
    assert.are.equal("registry.cfsdedicated1.us-south.bluemix.net/team/web:latest", pod.spec.containers[1].image)
  end)

  it("writes YAML in conventional order and kubectl-style JSON", function()
    local pod = assert(manifest.render(manifest.SEED_POD_TEMPLATE, VALUES))
    assert.are.equal(table.concat({
      "apiVersion: v1", "kind: Pod", "metadata:", "  name: mypod", "spec:", "  containers:", "  - name: app",
      "    image: registry.cfsdedicated1.us-south.bluemix.net/team/web:latest", "  imagePullSecrets:",
      "  - name: regcred", "" }, "\n"), manifest.to_yaml(pod))
    assert.are.equal('{"apiVersion":"v1","kind":"Pod","metadata":{"name":"mypod"},"spec":{"containers":'
      .. '[{"name":"app","image":"registry.cfsdedicated1.us-south.bluemix.net/team/web:latest"}],'
      .. '"imagePullSecrets":[{"name":"regcred"}]}}', manifest.json_encode(pod))
    local pretty = manifest.to_json(pod)
    assert.matches('^{\n    "apiVersion": "v1",\n    "kind": "Pod",\n', pretty)
    assert.matches('\n        "containers": %[\n            {\n                "name": "app",', pretty)
    assert.are.same(plain(pod), cjson.decode(pretty))
  end)

  it("puts apiVersion, kind and metadata first, then keeps the template's order", function()
    local obj = assert(manifest.render("spec:\n  z: <v>\n  a: 1\nmetadata:\n  name: n\nkind: K\napiVersion: x/v1\n",
                                       { v = "s" }))
    -- ("n" is quoted: go-yaml would read it as false)
    assert.are.equal("apiVersion: x/v1\nkind: K\nmetadata:\n  name: 'n'\nspec:\n  z: s\n  a: 1\n",
                     manifest.to_yaml(obj))
    assert.are.equal(1, math.tointeger(obj.spec.a))
    assert.are.equal('{"apiVersion":"x/v1","kind":"K","metadata":{"name":"n"},"spec":{"z":"s","a":1}}',
                     manifest.json_encode(obj))
  end)

  describe("keeps tricky values exactly as given (lyaml and kubectl agree)", function()
    -- kubectl reads all the rendered manifests in one run
    local by_kubectl
    local function kubectl_view_of(i)
      if not by_kubectl then
        local texts = {}
        for j, v in ipairs(TRICKY) do
          local _, text = manifest.render(TEMPLATE, { v = v })
          texts[j] = text or ""
        end
        by_kubectl = assert(kubectl_reads_all(texts))
        assert.are.equal(#TRICKY, #by_kubectl)
      end
      return by_kubectl[i]
    end

    for i, v in ipairs(TRICKY) do
      it(string.format("%q", v), function()
        local obj, text = manifest.render(TEMPLATE, { v = v })
        assert.is_table(obj, tostring(text))
        local a, c = obj.metadata.annotations, obj.spec.containers[1]
        assert.are.equal(v, a.plain)
        assert.are.equal("prefix-" .. v .. "-suffix", a.middle)
        assert.are.equal(v, a.double)
        assert.are.equal(v, a.single)
        assert.are.equal(v, c.env[1].value)
        assert.are.equal("x", c.env[2].value)
        assert.are.equal(v, a.anchored)
        assert.are.equal(v, a.aliased)
        assert.are.equal("registry.example.com/" .. v .. ":latest", c.image)
        assert.are.same({ v, v .. " and " .. v }, plain(c.args))
        assert.are.same({ "literal " .. v .. "\n", "folded " .. v }, plain(c.command))
        -- kubectl (go-yaml v2, YAML 1.1 rules) reads the very same strings
        assert.are.same(plain(obj), kubectl_view_of(i))
      end)
    end
  end)

  it("reads the same with `kubectl create -f --dry-run=client` (against the simulator)", function()
    local ok, sim = pcall(require, "pullsecret.sim")
    if not ok then pending("pullsecret.sim not available") return end
    local s = sim.start { services = { kube = {} } }
    local objs, texts = {}, {}
    local _, seed_text = manifest.render(manifest.SEED_POD_TEMPLATE, VALUES)
    objs[1], texts[1] = assert(manifest.render(manifest.SEED_POD_TEMPLATE, VALUES)), seed_text
    for _, v in ipairs(TRICKY) do
      local obj, text = manifest.render(TEMPLATE, { v = v })
      objs[#objs + 1], texts[#texts + 1] = obj, text
    end
    local got, err = kubectl_reads_all(texts, s.kubeconfig)
    s:stop()
    assert.is_table(got, err)
    assert.are.equal(#objs, #got)
    for i = 1, #objs do assert.are.same(plain(objs[i]), got[i]) end
  end)

  it("merges only with a plain <<: a quoted '<<' is an ordinary key, as kubectl reads it", function()
    local obj = assert(manifest.render("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: m\n"
      .. "base: &b {x: <v>}\ndata:\n  '<<': quoted\n  <<: *b\n", { v = "1" }))
    assert.are.same({ ["<<"] = "quoted", x = "1" }, plain(obj.data))
  end)

  it("fills a placeholder in a key, and tags a scalar to get a number", function()
    local obj, text = manifest.render([[
apiVersion: v1
kind: Pod
metadata:
  name: p
  labels:
    <key>: v
spec:
  containers:
  - name: c
    image: i
    ports:
    - containerPort: !!int <port>
]], { key = "yes", port = "8080" })
    assert.is_table(obj, tostring(text))
    assert.are.equal("v", obj.metadata.labels.yes)
    assert.are.equal(8080, obj.spec.containers[1].ports[1].containerPort)
    assert.are.equal("integer", math.type(obj.spec.containers[1].ports[1].containerPort))
    local k = assert(kubectl_reads(text))
    assert.are.equal("v", k.metadata.labels.yes)
    assert.are.equal(8080, k.spec.containers[1].ports[1].containerPort)
  end)

  it("copes with a BOM, CRLF line ends and multibyte text before a placeholder", function()
    local crlf = "\239\187\191" .. manifest.SEED_POD_TEMPLATE:gsub("\n", "\r\n")
    local pod = assert(manifest.render(crlf, with(VALUES, { tag = "yes" })))
    assert.are.equal("registry.cfsdedicated1.us-south.bluemix.net/team/web:yes", pod.spec.containers[1].image)
    local obj, text = manifest.render("apiVersion: v1\nkind: Pod\nmetadata:\n  name: \"é<a>ü\"   # ö <b>\n",
                                      { a = 'x"y' })
    assert.is_table(obj, tostring(text))
    assert.are.equal('éx"yü', obj.metadata.name)
    assert.matches("# ö <b>\n$", text)
  end)

  it("leaves placeholders in comments alone, and keeps listed ones", function()
    local obj, text = manifest.render("# set <tag> here\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: <n>\n"
      .. "data:\n  html: <br>\n", { n = "cm" }, { keep = { "br" } })
    assert.is_table(obj, tostring(text))
    assert.are.equal("<br>", obj.data.html)
    assert.matches("^# set <tag> here\n", text)
  end)

  describe("errors", function()
    local function fails(template, values, opts)
      local obj, err = manifest.render(template, values, opts)
      assert.is_nil(obj)
      assert.are.equal("input", err.kind)
      return err
    end

    it("names a placeholder with no value", function()
      local v = with(VALUES)
      v.secret_name = nil
      local err = fails(manifest.SEED_POD_TEMPLATE, v)
      assert.are.equal("values.secret_name", err.field)
      assert.are.equal(10, err.line)
      assert.matches("no value for placeholder <secret_name>", err.message, 1, true)
    end)

    it("names a value given for no placeholder", function()
      local err = fails(manifest.SEED_POD_TEMPLATE, with(VALUES, { secret_nmae = "typo" }))
      assert.are.equal("values.secret_nmae", err.field)
      assert.matches("<secret_nmae>", err.message, 1, true)
      assert.is_table((manifest.render(manifest.SEED_POD_TEMPLATE, with(VALUES, { extra = "x" }),
                                       { allow_unused = true })))
    end)

    it("refuses values YAML cannot hold, and values that are not strings", function()
      local err = fails(manifest.SEED_POD_TEMPLATE, with(VALUES, { my_image = "bad\255utf8" }))
      assert.are.equal("values.my_image", err.field)
      assert.matches("<my_image>", err.message, 1, true)
      err = fails(manifest.SEED_POD_TEMPLATE, with(VALUES, { my_image = true }))
      assert.are.equal("values.my_image", err.field)
    end)

    it("says which line breaks the object rules", function()
      local err = fails("apiVersion: v1\nkind: Pod\nmetadata:\n  labels: {a: <a>}\n", { a = "b" })
      assert.are.equal("metadata.name", err.field)
      assert.are.equal(3, err.line)
      assert.matches("^template line 3: metadata.name is missing", err.message)
      err = fails("apiVersion: v1\nmetadata:\n  name: <a>\n", { a = "b" })
      assert.are.equal("kind", err.field)
      assert.are.equal(1, err.line)
      err = fails("apiVersion: v1\nkind: [<a>]\nmetadata: {name: x}\n", { a = "b" })
      assert.are.equal("kind", err.field)
      assert.are.equal(2, err.line)
      err = fails("- <a>\n- b\n", { a = "x" })
      assert.are.equal(1, err.line)
      assert.matches("is not a Kubernetes object", err.message)
      err = fails("apiVersion: v1\nkind: Pod\nmetadata: {name: <a>}\n---\nkind: Other\n", { a = "x" })
      assert.matches("2 YAML documents", err.message)
    end)

    it("reports YAML syntax errors in the template with the line", function()
      local err = fails("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [<a>\n", { a = "x" })
      assert.are.equal("template", err.field)
      assert.is_number(err.line)
      assert.matches("^template line %d+: not valid YAML", err.message)
    end)
  end)
end)

describe("manifest.pod", function()
  it("builds the seed's mypod.yaml shape", function()
    local pod = assert(manifest.pod { name = "mypod", container = "app",
      image = "registry.cfsdedicated1.us-south.bluemix.net/team/web", pull_secrets = { "regcred" } })
    local rendered = assert(manifest.render(manifest.SEED_POD_TEMPLATE, VALUES))
    assert.are.same(plain(rendered), plain(pod))
    assert.are.equal(manifest.to_yaml(rendered), manifest.to_yaml(pod))
  end)

  it("keeps tags and digests, adds a namespace and several secrets", function()
    local pod = assert(manifest.pod { name = "p", namespace = "apps", image = "reg.example.com:5000/x/y:2.1",
                                      pull_secrets = { "a", "b.c" } })
    assert.are.equal("reg.example.com:5000/x/y:2.1", pod.spec.containers[1].image)
    assert.are.equal("p", pod.spec.containers[1].name)
    assert.are.equal("apps", pod.metadata.namespace)
    assert.are.same({ { name = "a" }, { name = "b.c" } }, plain(pod.spec.imagePullSecrets))
    pod = assert(manifest.pod { name = "p", image = "reg.example.com:5000/x@sha256:abc", pull_secrets = "s" })
    assert.are.equal("reg.example.com:5000/x@sha256:abc", pod.spec.containers[1].image)
    assert.are.equal("reg.example.com:5000/y:latest", manifest.pod { name = "p", image = "reg.example.com:5000/y" }
      .spec.containers[1].image)
    assert.is_nil(manifest.pod { name = "p", image = "i" }.spec.imagePullSecrets)
  end)

  it("checks names the API server would refuse", function()
    for _, c in ipairs {
      { { name = "My_Pod", image = "i" }, "name" },
      { { name = "p", namespace = "a.b", image = "i" }, "namespace" },
      { { name = "p", container = "-c", image = "i" }, "container" },
      { { name = "p", image = "" }, "image" },
      { { name = "p", image = "a b" }, "image" },
      { { name = "p", image = "i", pull_secrets = { "ok", "Not OK" } }, "pull_secrets[2]" },
    } do
      local pod, err = manifest.pod(c[1])
      assert.is_nil(pod)
      assert.are.equal("input", err.kind)
      assert.are.equal(c[2], err.field)
    end
  end)
end)

describe("manifest.pull_secret input checks", function()
  it("names the field and the fix, never the secret", function()
    local secret, err = manifest.pull_secret { name = "Bad_Name", username = "u", password = "hunter2" }
    assert.is_nil(secret)
    assert.are.equal("name", err.field)
    assert.matches("DNS%-1123 subdomain", err.message)
    secret, err = manifest.pull_secret { name = "s", namespace = "a.b", username = "u", password = "hunter2" }
    assert.is_nil(secret)
    assert.are.equal("namespace", err.field)
    assert.matches("DNS%-1123 label", err.message)
    secret, err = manifest.pull_secret { name = ("x"):rep(254), username = "u", password = "hunter2" }
    assert.is_nil(secret)
    assert.are.equal("name", err.field)
    secret, err = manifest.pull_secret { name = "s", username = "u" }
    assert.is_nil(secret)
    assert.are.equal("password", err.field)
    assert.is_nil(err.message:find("hunter2", 1, true))
    assert.has_error(function() manifest.pull_secret { name = "s", username = "u", password = 42 } end)
  end)

  it("accepts DNS-1123 names at their limits", function()
    assert.is_true(manifest.is_dns1123_subdomain(("a"):rep(253)))
    assert.is_false(manifest.is_dns1123_subdomain("a..b"))
    assert.is_false(manifest.is_dns1123_subdomain("a.-b"))
    assert.is_true(manifest.is_dns1123_label(("a"):rep(63)))
    assert.is_false(manifest.is_dns1123_label(("a"):rep(64)))
    assert.is_false(manifest.is_dns1123_label("A"))
  end)
end)

describe("manifest.json_encode", function()
  it("writes Go-style strings, integers as integers, and a stable key order", function()
    local t = manifest.object({ z = 1, a = "x/y<>&\u{2028}", m = 2.0, f = 0.5, n = manifest.null,
                                e = {}, l = manifest.array {}, b = false }, { "z", "a" })
    assert.are.equal('{"z":1,"a":"x/y\\u003c\\u003e\\u0026\\u2028","b":false,"e":{},"f":0.5,"l":[],"m":2,"n":null}',
                     manifest.json_encode(t))
    assert.are.equal('{"kind":"K","metadata":{"name":"n","namespace":"s","labels":{"a":"1","b":"2"}},"data":[1,2]}',
      manifest.json_encode { data = { 1, 2 }, kind = "K",
                             metadata = { labels = { b = "2", a = "1" }, namespace = "s", name = "n" } })
    assert.are.equal('{\n  "a": [\n    1\n  ],\n  "b": {}\n}',
                     manifest.json_encode({ a = { 1 }, b = {} }, { indent = "  " }))
  end)

  it("returns an input error for what JSON cannot hold", function()
    local cyclic = {}
    cyclic.self = cyclic
    for _, v in ipairs { { f = print }, { x = 0 / 0 }, { x = math.huge }, cyclic } do
      local s, err = manifest.json_encode(v)
      assert.is_nil(s)
      assert.are.equal("input", err.kind)
    end
  end)
end)

describe("pullsecret.yaml.quote", function()
  it("round-trips through lyaml for every byte-level oddity", function()
    for _, s in ipairs { "yes", "", " ", "a'b", 'a"b', "\1\2\31", "x\n", "\n\n", "\u{feff}", "\u{2029}",
                         "\u{fffe}", "ok", "ok value", "/path", "$VAR", "a:b", "a: b" } do
      local q = assert(yaml.quote(s))
      local docs = assert(yaml.load("k: " .. q .. "\n"))
      assert.are.equal(s, docs[1].k)
    end
    assert.are.equal("ok value", yaml.quote("ok value"))
    assert.are.equal("'yes'", yaml.quote("yes"))
    assert.is_nil(yaml.quote("\255"))
    assert.is_nil(yaml.quote("nul\0byte"))
  end)
end)

describe("manifest.to_yaml", function()
  it("writes the pull secret with apiVersion, kind, metadata first, and lyaml reads it back", function()
    local secret = assert(manifest.pull_secret { name = "regcred", namespace = "apps", server = "r.example.com",
                                                 username = "token", password = "p" })
    local text = assert(manifest.to_yaml(secret))
    assert.matches("^apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: apps\n", text)
    assert.matches("\ndata:\n  .dockerconfigjson: eyJ[%w+/=]+\ntype: kubernetes.io/dockerconfigjson\n$", text)
    assert.are.same(plain(secret), plain(assert(yaml.load(text))[1]))
    -- while JSON keeps kubectl's order
    assert.matches('^{"kind":"Secret","apiVersion":"v1",', manifest.json_encode(secret))
  end)
end)
