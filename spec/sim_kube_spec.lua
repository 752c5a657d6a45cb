-- The simulated Kubernetes API, driven directly through svc:handle (no sockets): what a client
-- sees for each request, status codes and Status bodies as the real API server writes them.
local K = require "pullsecret.sim.kube"
local json = require("pullsecret.kube").json

local ADMIN = "Bearer sim-admin-token"

local function b64(s) return K.b64encode(s) end

local svc
local function call(method, path, body, opts)
  opts = opts or {}
  local headers = { authorization = opts.auth == nil and ADMIN or opts.auth or nil,
                    ["content-type"] = opts.ctype or (body and "application/json" or nil),
                    accept = opts.accept, ["user-agent"] = opts.ua }
  local resp = svc:handle{ method = method, path = path, query = opts.query or "", headers = headers,
                           body = type(body) == "table" and assert(json.encode(body)) or body or "",
                           client_cert = opts.client_cert }
  local decoded = json.decode(resp.body)
  return resp.status, decoded, resp
end

local function secret(name, data, typ, labels)
  return { apiVersion = "v1", kind = "Secret", metadata = { name = name, labels = labels }, data = data, type = typ }
end

local function dockercfg(server)
  return b64('{"auths":{"' .. server .. '":{"username":"u","password":"p","auth":"dTpw"}}}')
end

local APPLY = "application/apply-patch+yaml"
local SECRETS = "/api/v1/namespaces/default/secrets"

describe("simulated Kubernetes API (direct)", function()
  before_each(function() svc = K.new({}) end)

  describe("discovery", function()
    it("serves /version, /api, /apis and /api/v1 with short names, verbs and scopes", function()
      local code, v = call("GET", "/version")
      assert.equal(200, code)
      assert.equal("1", v.major)
      assert.equal("32", v.minor)
      local _, api = call("GET", "/api")
      assert.equal("APIVersions", api.kind)
      assert.same({ "v1" }, { table.unpack(api.versions) })
      local _, apis = call("GET", "/apis")
      assert.equal("APIGroupList", apis.kind)
      assert.equal(0, #apis.groups)
      local _, list = call("GET", "/api/v1")
      assert.equal("APIResourceList", list.kind)
      local by = {}
      for _, r in ipairs(list.resources) do by[r.name] = r end
      assert.equal("Secret", by.secrets.kind)
      assert.is_true(by.secrets.namespaced)
      assert.equal("sa", by.serviceaccounts.shortNames[1])
      assert.equal("po", by.pods.shortNames[1])
      assert.equal("ns", by.namespaces.shortNames[1])
      assert.is_false(by.namespaces.namespaced)
      local verbs = table.concat(by.secrets.verbs, ",")
      assert.equal("create,delete,deletecollection,get,list,patch,update,watch", verbs)
    end)

    it("serves an OpenAPI v3 index that lets kubectl delegate validation to the server", function()
      local code, root = call("GET", "/openapi/v3")
      assert.equal(200, code)
      local url = root.paths["api/v1"].serverRelativeURL
      assert.matches("^/openapi/v3/api/v1", url)
      local _, doc = call("GET", "/openapi/v3/api/v1")
      local post = doc.paths["/api/v1/namespaces/{namespace}/pods"].post
      assert.equal("Pod", post["x-kubernetes-group-version-kind"].kind)
      assert.equal("fieldValidation", post.parameters[1].name)
    end)
  end)

  describe("objects", function()
    it("creates with uid, creationTimestamp and a resourceVersion from one global counter", function()
      local code, a = call("POST", SECRETS, secret("a", { k = b64("v") }))
      assert.equal(201, code)
      assert.equal("Secret", a.kind)
      assert.equal("Opaque", a.type)
      assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+$", a.metadata.uid)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", a.metadata.creationTimestamp)
      local _, b = call("POST", SECRETS, secret("b", {}))
      assert.equal(tonumber(a.metadata.resourceVersion) + 1, tonumber(b.metadata.resourceVersion))
      local _, list = call("GET", SECRETS)
      assert.equal("SecretList", list.kind)
      assert.equal(b.metadata.resourceVersion, list.metadata.resourceVersion)
      assert.equal(2, #list.items)
      assert.equal("a", list.items[1].metadata.name)
    end)

    it("answers an existing name with the exact AlreadyExists Status", function()
      call("POST", SECRETS, secret("x", {}))
      local code, _, resp = call("POST", SECRETS, secret("x", {}))
      assert.equal(409, code)
      assert.equal('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":'
        .. '"secrets \\"x\\" already exists","reason":"AlreadyExists","details":{"name":"x","kind":"secrets"},'
        .. '"code":409}', resp.body)
    end)

    it("answers 404 NotFound for a missing object and a missing namespace", function()
      local code, st = call("GET", SECRETS .. "/nope")
      assert.equal(404, code)
      assert.equal("NotFound", st.reason)
      assert.equal('secrets "nope" not found', st.message)
      code, st = call("POST", "/api/v1/namespaces/ghost/secrets", secret("a", {}))
      assert.equal(404, code)
      assert.equal('namespaces "ghost" not found', st.message)
    end)

    it("refuses bad names, bad base64 and bad docker config with 422 Invalid, never echoing values", function()
      local code, st = call("POST", SECRETS, secret("Bad_Name", {}))
      assert.equal(422, code)
      assert.equal("Invalid", st.reason)
      assert.equal("metadata.name", st.details.causes[1].field)
      assert.matches("RFC 1123 subdomain", st.message)
      code, st = call("POST", SECRETS, secret("s", { k = "not base64!" }))
      assert.equal(422, code)
      assert.equal("data[k]", st.details.causes[1].field)
      assert.not_matches("not base64", st.message, 1, true)
      code, st = call("POST", SECRETS, secret("s", {}, "kubernetes.io/dockerconfigjson"))
      assert.equal(422, code)
      assert.equal("FieldValueRequired", st.details.causes[1].reason)
      assert.equal("data[.dockerconfigjson]", st.details.causes[1].field)
      code, st = call("POST", SECRETS, secret("s", { [".dockerconfigjson"] = b64('["hunter2"]') },
        "kubernetes.io/dockerconfigjson"))
      assert.equal(422, code)
      assert.not_matches("hunter2", st.message, 1, true)
      code = call("POST", SECRETS, secret("s", { [".dockerconfigjson"] = dockercfg("r.io") },
        "kubernetes.io/dockerconfigjson"))
      assert.equal(201, code)
      code, st = call("POST", "/api/v1/namespaces", { metadata = { name = "a.b" } })
      assert.equal(422, code)
      assert.matches("RFC 1123 label", st.message)
    end)

    it("rejects unknown fields when kubectl asks for strict validation, accepts them otherwise", function()
      local body = { metadata = { name = "u", lables = { a = "b" } }, data = {}, tpye = "Opaque" }
      local code, st = call("POST", SECRETS, body, { query = "fieldValidation=Strict" })
      assert.equal(400, code)
      assert.equal('strict decoding error: unknown field "metadata.lables", unknown field "tpye"', st.message)
      assert.equal(201, (call("POST", SECRETS, body)))
    end)

    it("keeps an immutable secret's data", function()
      call("POST", SECRETS, { metadata = { name = "frozen" }, data = { k = b64("1") }, immutable = true })
      local code, st = call("PUT", SECRETS .. "/frozen", { metadata = { name = "frozen" }, data = { k = b64("2") },
        immutable = true })
      assert.equal(422, code)
      assert.matches("field is immutable when `immutable` is set", st.message, 1, true)
    end)

    it("starts with the configured namespaces and objects, counting no writes", function()
      svc = K.new({ namespaces = { "default", "apps" }, objects = {
        { apiVersion = "v1", kind = "Secret", metadata = { name = "seeded", namespace = "apps" }, data = {} } } })
      assert.equal(200, (call("GET", "/api/v1/namespaces/apps/secrets/seeded")))
      assert.equal(200, (call("GET", "/api/v1/namespaces/apps/serviceaccounts/default")))
      assert.equal(404, (call("GET", "/api/v1/namespaces/kube-system")))
      assert.equal(0, svc:state().writes)
    end)

    it("turns stringData into data", function()
      local _, s = call("POST", SECRETS, { metadata = { name = "sd" }, stringData = { user = "me" } })
      assert.equal(b64("me"), s.data.user)
      assert.is_nil(s.stringData)
    end)

    it("replaces with PUT: stale resourceVersion -> 409 Conflict, none -> overwrite, type change -> 422", function()
      local _, a = call("POST", SECRETS, secret("a", { k = b64("1") }))
      local upd = secret("a", { k = b64("2") })
      upd.metadata.resourceVersion = a.metadata.resourceVersion
      local code, b = call("PUT", SECRETS .. "/a", upd)
      assert.equal(200, code)
      assert.equal(b64("2"), b.data.k)
      local st
      code, st = call("PUT", SECRETS .. "/a", upd)      -- the same, now stale, resourceVersion
      assert.equal(409, code)
      assert.equal("Conflict", st.reason)
      assert.matches("the object has been modified", st.message)
      code = call("PUT", SECRETS .. "/a", secret("a", { k = b64("3") }))
      assert.equal(200, code)
      code, st = call("PUT", SECRETS .. "/a", secret("a", { [".dockerconfigjson"] = dockercfg("r") },
        "kubernetes.io/dockerconfigjson"))
      assert.equal(422, code)
      assert.equal("type", st.details.causes[1].field)
      assert.matches("field is immutable", st.message)
      code = call("PUT", SECRETS .. "/zzz", secret("zzz", {}))
      assert.equal(404, code)
    end)

    it("deletes and then answers 404", function()
      call("POST", SECRETS, secret("a", {}))
      local code, obj = call("DELETE", SECRETS .. "/a")
      assert.equal(200, code)
      assert.equal("a", obj.metadata.name)
      assert.equal(404, (call("GET", SECRETS .. "/a")))
    end)

    it("gives every new namespace a default service account, and removes its objects with it", function()
      assert.equal(201, (call("POST", "/api/v1/namespaces", { metadata = { name = "team" } })))
      local code, sa = call("GET", "/api/v1/namespaces/team/serviceaccounts/default")
      assert.equal(200, code)
      assert.equal("ServiceAccount", sa.kind)
      assert.equal(200, (call("DELETE", "/api/v1/namespaces/team")))
      assert.equal(404, (call("GET", "/api/v1/namespaces/team/serviceaccounts/default")))
    end)
  end)

  describe("server-side apply", function()
    local function apply(name, body, manager, query)
      return call("PATCH", SECRETS .. "/" .. name, body, { ctype = APPLY,
        query = "fieldManager=" .. manager .. (query or "") })
    end

    it("creates, then does nothing when applied again (same resourceVersion, no write)", function()
      local s = secret("reg", { [".dockerconfigjson"] = dockercfg("r.io") }, "kubernetes.io/dockerconfigjson")
      local code, a = apply("reg", s, "pullsecret")
      assert.equal(201, code)
      assert.equal("pullsecret", a.metadata.managedFields[1].manager)
      assert.equal("Apply", a.metadata.managedFields[1].operation)
      local writes = svc:state().writes
      local code2, b = apply("reg", s, "pullsecret")
      assert.equal(200, code2)
      assert.equal(a.metadata.resourceVersion, b.metadata.resourceVersion)
      assert.equal(writes, svc:state().writes)
    end)

    it("accepts a YAML body", function()
      local yaml = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: y\ndata:\n  k: " .. b64("v") .. "\n"
      local code, obj = apply("y", yaml, "kubectl")
      assert.equal(201, code)
      assert.equal(b64("v"), obj.data.k)
    end)

    it("reports another manager's field as a FieldManagerConflict unless forced", function()
      apply("reg", secret("reg", { k = b64("1") }), "pullsecret")
      local code, st = apply("reg", secret("reg", { k = b64("2") }), "other")
      assert.equal(409, code)
      assert.equal("Conflict", st.reason)
      assert.equal("FieldManagerConflict", st.details.causes[1].reason)
      assert.equal(".data.k", st.details.causes[1].field)
      assert.matches('conflict with "pullsecret"', st.message, 1, true)
      -- the same value is no conflict: shared ownership
      assert.equal(200, (apply("reg", secret("reg", { k = b64("1") }), "third")))
      code, st = apply("reg", secret("reg", { k = b64("2") }), "other", "&force=true")
      assert.equal(200, code)
      assert.equal(b64("2"), st.data.k)
      -- the field now belongs to "other": pullsecret's old value conflicts in turn
      code = apply("reg", secret("reg", { k = b64("1") }), "pullsecret")
      assert.equal(409, code)
    end)

    it("removes a field its manager stopped applying, keeps fields of others", function()
      apply("m", secret("m", { a = b64("1"), b = b64("2") }), "one")
      apply("m", secret("m", { c = b64("3") }), "two")
      local _, obj = apply("m", secret("m", { a = b64("1") }), "one")
      assert.equal(b64("1"), obj.data.a)
      assert.is_nil(obj.data.b)
      assert.equal(b64("3"), obj.data.c)
    end)

    it("refuses a type change and a body with managedFields", function()
      apply("t", secret("t", { [".dockerconfigjson"] = dockercfg("r") }, "kubernetes.io/dockerconfigjson"), "p")
      local code, st = apply("t", secret("t", { a = b64("1") }, "Opaque"), "p")
      assert.equal(422, code)
      assert.matches("type: Invalid value", st.message, 1, true)
      local s = secret("t", {})
      s.metadata.managedFields = { { manager = "x" } }
      assert.equal(400, (apply("t", s, "p")))
      assert.equal(400, (call("PATCH", SECRETS .. "/t", secret("t", {}), { ctype = APPLY })))  -- no fieldManager
    end)
  end)

  describe("patches", function()
    it("merge patch sets and removes keys", function()
      call("POST", SECRETS, secret("a", { k = b64("1"), j = b64("2") }, nil, { app = "x" }))
      local code, obj = call("PATCH", SECRETS .. "/a", '{"data":{"j":null},"metadata":{"labels":{"tier":"db"}}}',
        { ctype = "application/merge-patch+json" })
      assert.equal(200, code)
      assert.is_nil(obj.data.j)
      assert.equal(b64("1"), obj.data.k)
      assert.same({ app = "x", tier = "db" }, obj.metadata.labels)
    end)

    it("strategic merge: pod imagePullSecrets merge by name, a service account's list is atomic", function()
      local P = require "pullsecret.sim.kube_patch"
      local pod = { spec = { imagePullSecrets = json.array({ { name = "one" }, { name = "two" } }) } }
      local merged = assert(P.strategic_patch(pod, { spec = { imagePullSecrets = json.array({
        { name = "two", extra = "x" }, { name = "three" } }) } }, "Pod"))
      assert.equal("one,two,three", merged.spec.imagePullSecrets[1].name .. "," .. merged.spec.imagePullSecrets[2].name
        .. "," .. merged.spec.imagePullSecrets[3].name)
      assert.equal("x", merged.spec.imagePullSecrets[2].extra)
      local deleted = assert(P.strategic_patch(pod, { spec = { imagePullSecrets = json.array({
        { name = "one", ["$patch"] = "delete" } }) } }, "Pod"))
      assert.equal(1, #deleted.spec.imagePullSecrets)
      assert.equal("two", deleted.spec.imagePullSecrets[1].name)
      call("PUT", "/api/v1/namespaces/default/serviceaccounts/default",
        { metadata = { name = "default" }, imagePullSecrets = { { name = "one" } } })
      local _, sa = call("PATCH", "/api/v1/namespaces/default/serviceaccounts/default",
        { imagePullSecrets = { { name = "two" } } }, { ctype = "application/strategic-merge-patch+json" })
      assert.equal(1, #sa.imagePullSecrets)
      assert.equal("two", sa.imagePullSecrets[1].name)
    end)

    it("refuses to change a pod's spec other than its images", function()
      local PODS = "/api/v1/namespaces/default/pods"
      call("POST", PODS, { metadata = { name = "p" }, spec = { containers = { { name = "c", image = "i:1" } } } })
      local code, st = call("PATCH", PODS .. "/p", { spec = { imagePullSecrets = { { name = "late" } } } },
        { ctype = "application/strategic-merge-patch+json" })
      assert.equal(422, code)
      assert.equal("spec", st.details.causes[1].field)
      assert.matches("pod updates may not change fields", st.message, 1, true)
      local pod
      code, pod = call("PATCH", PODS .. "/p", { spec = { containers = { { name = "c", image = "i:2" } } } },
        { ctype = "application/strategic-merge-patch+json" })
      assert.equal(200, code)
      assert.equal("i:2", pod.spec.containers[1].image)
    end)

    it("JSON patch: add, replace, remove, and a test of resourceVersion", function()
      local _, a = call("POST", SECRETS, secret("a", { k = b64("1") }))
      local rv = a.metadata.resourceVersion
      local ops = json.array({
        { op = "test", path = "/metadata/resourceVersion", value = rv },
        { op = "add", path = "/data/n", value = b64("new") },
        { op = "replace", path = "/data/k", value = b64("2") },
        { op = "add", path = "/metadata/labels", value = { x = "y" } },
        { op = "remove", path = "/metadata/labels/x" },
      })
      local code, obj = call("PATCH", SECRETS .. "/a", ops, { ctype = "application/json-patch+json" })
      assert.equal(200, code)
      assert.equal(b64("new"), obj.data.n)
      assert.equal(b64("2"), obj.data.k)
      code = call("PATCH", SECRETS .. "/a", ops, { ctype = "application/json-patch+json" })   -- rv now stale
      assert.equal(422, code)
      local _, now = call("GET", SECRETS .. "/a")
      assert.equal(obj.metadata.resourceVersion, now.metadata.resourceVersion)
    end)

    it("answers an unknown patch type and protobuf bodies with 415", function()
      call("POST", SECRETS, secret("a", {}))
      assert.equal(415, (call("PATCH", SECRETS .. "/a", "{}", { ctype = "text/plain" })))
      local code, st = call("POST", SECRETS, "\107\56\115\0", { ctype = "application/vnd.kubernetes.protobuf" })
      assert.equal(415, code)
      assert.equal("UnsupportedMediaType", st.reason)
    end)
  end)

  describe("selectors and paging", function()
    before_each(function()
      call("POST", SECRETS, secret("a", {}, nil, { app = "web", tier = "fe" }))
      call("POST", SECRETS, secret("b", {}, nil, { app = "db" }))
      call("POST", SECRETS, secret("c", { [".dockerconfigjson"] = dockercfg("r") }, "kubernetes.io/dockerconfigjson"))
    end)

    local function names(query)
      local code, list = call("GET", SECRETS, nil, { query = query })
      assert.equal(200, code)
      local out = {}
      for i, it in ipairs(list.items) do out[i] = it.metadata.name end
      return table.concat(out, ",")
    end

    it("filters by label selector", function()
      assert.equal("a", names("labelSelector=app%3Dweb"))
      assert.equal("a", names("labelSelector=app%3D%3Dweb"))
      assert.equal("b,c", names("labelSelector=app!%3Dweb"))
      assert.equal("a,b", names("labelSelector=app%20in%20(web,db)"))
      assert.equal("b,c", names("labelSelector=app%20notin%20(web)"))
      assert.equal("a,b", names("labelSelector=app"))
      assert.equal("c", names("labelSelector=!app"))
      assert.equal("a", names("labelSelector=app,tier%3Dfe"))
      local code, st = call("GET", SECRETS, nil, { query = "labelSelector=a%20in%20b" })
      assert.equal(400, code)
      assert.equal("BadRequest", st.reason)
    end)

    it("filters by field selector", function()
      assert.equal("b", names("fieldSelector=metadata.name%3Db"))
      assert.equal("a,c", names("fieldSelector=metadata.name!%3Db"))
      assert.equal("c", names("fieldSelector=type%3Dkubernetes.io/dockerconfigjson"))
      assert.equal("a,b,c", names("fieldSelector=metadata.namespace%3Ddefault"))
      local code, st = call("GET", SECRETS, nil, { query = "fieldSelector=spec.bogus%3D1" })
      assert.equal(400, code)
      assert.matches("field label not supported", st.message)
    end)

    it("pages with limit and continue", function()
      local _, p1 = call("GET", SECRETS, nil, { query = "limit=2" })
      assert.equal(2, #p1.items)
      assert.equal(1, p1.metadata.remainingItemCount)
      local cont = p1.metadata["continue"]
      assert.is_string(cont)
      local _, p2 = call("GET", SECRETS, nil, { query = "limit=2&continue=" .. cont })
      assert.equal(1, #p2.items)
      assert.equal("c", p2.items[1].metadata.name)
      assert.is_nil(p2.metadata["continue"])
    end)

    it("lists across namespaces", function()
      call("POST", "/api/v1/namespaces/kube-system/secrets", secret("k", {}))
      local _, list = call("GET", "/api/v1/secrets")
      assert.equal(4, #list.items)
    end)

    it("serves a Table when kubectl asks for one", function()
      local _, t = call("GET", SECRETS, nil,
        { accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json" })
      assert.equal("Table", t.kind)
      assert.equal("Type", t.columnDefinitions[2].name)
      assert.equal("kubernetes.io/dockerconfigjson", t.rows[3].cells[2])
    end)
  end)

  describe("dryRun=All", function()
    it("validates every write and persists nothing", function()
      call("POST", SECRETS, secret("keep", {}))
      local before = svc:state()
      local q = { query = "dryRun=All" }
      assert.equal(201, (call("POST", SECRETS, secret("new", {}), q)))
      assert.equal(422, (call("POST", SECRETS, secret("Bad", {}), q)))
      assert.equal(200, (call("PUT", SECRETS .. "/keep", secret("keep", { k = b64("x") }), q)))
      assert.equal(201, (call("PATCH", SECRETS .. "/other", secret("other", {}),
        { ctype = APPLY, query = "dryRun=All&fieldManager=p" })))
      assert.equal(200, (call("DELETE", SECRETS .. "/keep", nil, q)))
      local after = svc:state()
      assert.equal(before.writes, after.writes)
      assert.equal(before.resource_version, after.resource_version)
      assert.is_nil(after.objects.secrets["default/new"])
      assert.is_nil((after.objects.secrets["default/keep"].data or {}).k)
    end)
  end)

  describe("ServiceAccount admission", function()
    local PODS = "/api/v1/namespaces/default/pods"
    local function pod(name, sa, ips)
      return { metadata = { name = name }, spec = { serviceAccountName = sa, imagePullSecrets = ips,
               containers = { { name = "c", image = "registry.example.com/a/b:latest" } } } }
    end

    it("copies the service account's pull secrets into a pod that lists none, only then", function()
      call("PUT", "/api/v1/namespaces/default/serviceaccounts/default",
        { metadata = { name = "default" }, imagePullSecrets = { { name = "from-sa" } } })
      local _, p1 = call("POST", PODS, pod("p1"))
      assert.equal("default", p1.spec.serviceAccountName)
      assert.equal("from-sa", p1.spec.imagePullSecrets[1].name)
      local _, p2 = call("POST", PODS, pod("p2", nil, { { name = "own" } }))
      assert.equal(1, #p2.spec.imagePullSecrets)
      assert.equal("own", p2.spec.imagePullSecrets[1].name)
    end)

    it("refuses a pod naming a missing service account with 403", function()
      local code, st = call("POST", PODS, pod("p", "builder"))
      assert.equal(403, code)
      assert.equal("Forbidden", st.reason)
      assert.matches('serviceaccount "builder" not found', st.message, 1, true)
    end)
  end)

  describe("authentication and limits", function()
    it("answers 401 without credentials and with a wrong token", function()
      local code, st = call("GET", SECRETS, nil, { auth = false })
      assert.equal(401, code)
      assert.equal("Unauthorized", st.reason)
      assert.equal(401, (call("GET", SECRETS, nil, { auth = "Bearer wrong" })))
    end)

    it("lets a read-only user read, and forbids writes naming user, verb and resource", function()
      local viewer = { auth = "Bearer sim-viewer-token" }
      assert.equal(200, (call("GET", SECRETS, nil, viewer)))
      local code, st = call("POST", SECRETS, secret("a", {}), viewer)
      assert.equal(403, code)
      assert.equal('secrets is forbidden: User "viewer" cannot create resource "secrets" in API group "" '
        .. 'in the namespace "default"', st.message)
      code, st = call("DELETE", "/api/v1/namespaces/default", nil, viewer)
      assert.equal(403, code)
      assert.matches('User "viewer" cannot delete resource "namespaces" in API group "" at the cluster scope',
        st.message, 1, true)
    end)

    it("accepts a client certificate as its CN, unless client_cert = false", function()
      local code = call("POST", SECRETS, secret("a", {}),
        { auth = false, client_cert = { subject = "CN=ops", cn = "ops" } })
      assert.equal(201, code)
      assert.equal("ops", svc:state().last_user)
      svc = K.new({ client_cert = false })
      assert.equal(401, (call("GET", SECRETS, nil, { auth = false, client_cert = { subject = "CN=ops" } })))
    end)

    it("accepts basic auth for a user with a password", function()
      svc = K.new({ users = { { name = "bob", password = "pw" } } })
      assert.equal(200, (call("GET", SECRETS, nil, { auth = "Basic " .. b64("bob:pw") })))
      assert.equal(401, (call("GET", SECRETS, nil, { auth = "Basic " .. b64("bob:no") })))
    end)

    it("rate-limits with 429 and Retry-After", function()
      svc = K.new({ rate_limit = { qps = 0.001, burst = 2, retry_after = 3 } })
      assert.equal(200, (call("GET", SECRETS)))
      assert.equal(200, (call("GET", SECRETS)))
      local code, st, resp = call("GET", SECRETS)
      assert.equal(429, code)
      assert.equal("TooManyRequests", st.reason)
      assert.equal("3", resp.headers["Retry-After"])
      assert.equal(3, st.details.retryAfterSeconds)
    end)
  end)
end)
