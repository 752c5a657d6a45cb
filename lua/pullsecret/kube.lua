--- Kubernetes API client: steps 5 to 7 of the procedure (describe, upsert the pull secret,
-- service accounts), over `pullsecret.http` and `pullsecret.kubeconfig`.
--
--     local kube = require "pullsecret.kube"
--     local k = assert(kube.new{ kubeconfig = "/home/me/.kube/config", context = nil, namespace = "apps" })
--     for _, s in ipairs(assert(k:describe_secrets("apps"))) do
--       print(s.name, s.type)                      -- s.data = { {key = ".dockerconfigjson", bytes = 153} }
--     end
--     local secret = require("pullsecret.manifest").pull_secret{ name = "icr", namespace = "apps",
--       server = "registry.example.com", username = "token", password = tok }
--     local r = assert(k:upsert_secret(secret, { replace_type = false }))   -- r.action: created|updated|unchanged
--     assert(k:add_pull_secret("apps", "default", "icr"))                   -- -> { action = "added"|"present" }
--     k:close()
--
-- kube.new{ kubeconfig =, context =, namespace =, config = <a loaded kubeconfig object>,
--           log = function(line) end, on_event = function(ev) end, retry = { attempts = 4, ... },
--           http = <an existing pullsecret.http object>, field_manager = "pullsecret",
--           identity = nil, concurrency = 16 } -> client | nil, err
--   The configuration is `config`, else pullsecret.kubeconfig.load{ kubeconfig =, context =, namespace =,
--   env =, home = } (env: a getenv-like function, home: the directory holding .kube/config).
--   client.namespace     the default namespace (option, else the kubeconfig context's, else "default")
--   Messages name who we are with `identity`, else cfg:identity() ('user "admin" (context "prod")'),
--   never a credential. Every request carries cfg:auth_header() (re-evaluated each time, so token
--   files and exec plugins refresh); after a 401 the client calls cfg:invalidate() and retries once.
--   429 and 5xx are retried by pullsecret.http (honouring Retry-After), as its `retry` option says.
--
-- Objects are plain Lua tables in the shape of the API's JSON. A reference to an object is either
-- the object itself or { api_version = "v1", kind = "Secret", namespace = "apps", name = "icr" }.
--   client:get(ref)                               -> obj
--   client:list{ kind =, api_version =, namespace = (nil: client.namespace; false: all namespaces),
--                label_selector =, field_selector =, limit = 500 }  -> array of objects (follows continue)
--   client:create(obj, { dry_run = false })       -> obj
--   client:replace(obj, { dry_run = false })      -> obj   (PUT; metadata.resourceVersion guards it if set)
--   client:apply(obj, { force = false, dry_run = false, field_manager = "pullsecret" })
--                                                 -> obj, status (201 created, 200 otherwise)
--   client:patch(ref, patch, { type = "merge"|"strategic"|"json", dry_run = false }) -> obj
--   client:delete(ref, { dry_run = false })       -> obj or Status
--   client:request{ method =, path =, query = { k = v }, body = tbl|string, content_type = }
--                                                 -> decoded body, response
--   client:describe_secrets(namespace)            -> { { name =, type =, data = { {key =, bytes =}, ... } }, ... }
--   client:upsert_secret(secret, { replace_type = false, force = false, dry_run = false })
--                                                 -> { action = "created"|"updated"|"unchanged", object = obj,
--                                                      replaced = true when the type changed (delete + create) }
--   client:add_pull_secret(namespace, service_account, secret_name, { dry_run = false })
--                                                 -> { action = "added"|"present", object = sa, attempts = n }
--   kube.b64_size(b64_text) -> the decoded size in bytes (describe_secrets never decodes values)
--   client:close()
--
-- Batches: many requests at once over the C core's one connection cache (HTTP/2 streams on one
-- connection when the server speaks it, else parallel HTTP/1.1 connections kept alive), at most
-- `concurrency` in flight (the per-call option, else kube.new's, else kube.CONCURRENCY = 16).
--   client:batch({ spec, ... }, { concurrency = 16 })   each spec what client:request takes
--   client:get_many(refs, opts)    client:list_many({ list_opts, ... }, opts)
--   client:apply_many(objs, opts)  client:replace_many(objs, opts)   client:delete_many(refs, opts)
--   client:describe_secrets_many(namespaces, opts)
--   client:upsert_secret_many(secrets, opts)        opts: upsert_secret's
--   client:add_pull_secret_many({ { namespace =, service_account =, secret_name = }, ... }, opts)
-- All answer a list in input order: results[i] = { obj = <what the one-object method answers first>,
-- res = <the response>, status = <apply_many: the HTTP status> } or { err = err }. A failure never
-- stops the others. Each request is the one the one-object method sends, with the same errors,
-- the same 401 -> cfg:invalidate() -> one more try (the 401 ones, together), and pullsecret.http's
-- retries in rounds (429 and 503 for every method, honouring Retry-After). Steps that need a read
-- before a write (upsert_secret: GET, then apply; add_pull_secret: GET, then PUT, 409 -> again) do
-- each phase as one batch. The one-object methods are these with a list of one.
--
--     local got = k:get_many({ { kind = "Secret", namespace = "a", name = "icr" },
--                              { kind = "Secret", namespace = "b", name = "icr" } }, { concurrency = 8 })
--     for i, x in ipairs(got) do
--       if x.err then print(x.err.code, x.err) else print(x.obj.metadata.namespace, x.res.status) end
--     end
--     local secrets = {}
--     for i, ns in ipairs(namespaces) do secrets[i] = manifest.pull_secret{ namespace = ns, ... } end
--     for i, x in ipairs(k:upsert_secret_many(secrets)) do print(namespaces[i], x.obj and x.obj.action or x.err) end
-- Failures are `nil, err` (pullsecret.errors): Status answers give kind "kube" with `reason`
-- ("NotFound", "Conflict", "Forbidden"...), `code` (= `status`, the HTTP status), `details`,
-- `server_message`, `verb`, `resource`, `name`, `namespace`; transport problems keep the kinds of
-- pullsecret.http. upsert_secret answers kind "conflict" (reason "TypeMismatch" or
-- "FieldManagerConflict") when the secret exists with another type or another manager owns a field
-- it would change; add_pull_secret answers kind "conflict" after 5 lost races.
--
-- kube.json: pullsecret.json, the JSON codec used on the wire (arrays stay arrays, even empty
--   ones; keys kind, apiVersion, metadata first): decode(s), encode(v), array(t), is_array(t),
--   ordered(t, {key, ...}), null.
local core = require "pullsecret.core"
local errors = require "pullsecret.errors"
local json = require "pullsecret.json"

local kube = {}

kube.json = json

--- How many requests a batch keeps in flight unless told otherwise.
kube.CONCURRENCY = 16

---------------------------------------------------------------------------------------------------
-- kinds and paths
---------------------------------------------------------------------------------------------------
-- kind -> { apiVersion, resource, namespaced }
local KINDS = {
  Namespace = { "v1", "namespaces", false }, Node = { "v1", "nodes", false },
  PersistentVolume = { "v1", "persistentvolumes", false },
  Secret = { "v1", "secrets", true }, ServiceAccount = { "v1", "serviceaccounts", true },
  Pod = { "v1", "pods", true }, ConfigMap = { "v1", "configmaps", true }, Service = { "v1", "services", true },
  Event = { "v1", "events", true }, Endpoints = { "v1", "endpoints", true },
  PersistentVolumeClaim = { "v1", "persistentvolumeclaims", true }, LimitRange = { "v1", "limitranges", true },
  ResourceQuota = { "v1", "resourcequotas", true },
  ReplicationController = { "v1", "replicationcontrollers", true },
  Deployment = { "apps/v1", "deployments", true }, StatefulSet = { "apps/v1", "statefulsets", true },
  DaemonSet = { "apps/v1", "daemonsets", true }, ReplicaSet = { "apps/v1", "replicasets", true },
  Job = { "batch/v1", "jobs", true }, CronJob = { "batch/v1", "cronjobs", true },
  Ingress = { "networking.k8s.io/v1", "ingresses", true },
  NetworkPolicy = { "networking.k8s.io/v1", "networkpolicies", true },
  Role = { "rbac.authorization.k8s.io/v1", "roles", true },
  RoleBinding = { "rbac.authorization.k8s.io/v1", "rolebindings", true },
  ClusterRole = { "rbac.authorization.k8s.io/v1", "clusterroles", false },
  ClusterRoleBinding = { "rbac.authorization.k8s.io/v1", "clusterrolebindings", false },
}
kube.KINDS = KINDS

local function pct(s) return core.urlencode(tostring(s)) end

local function query_string(q)
  local keys = {}
  for k, v in pairs(q or {}) do if v ~= nil and v ~= false then keys[#keys + 1] = k end end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = pct(k) .. "=" .. pct(q[k]) end
  return #parts > 0 and "?" .. table.concat(parts, "&") or ""
end

---------------------------------------------------------------------------------------------------
-- client
---------------------------------------------------------------------------------------------------
local Client = {}
Client.__index = Client
Client.__name = "pullsecret.kube"
function Client.__tostring(self) return "pullsecret.kube client for " .. tostring(self.server) end

local function check_opts(fn, opts)
  if opts ~= nil and type(opts) ~= "table" then error(fn .. ": options must be a table", 3) end
  return opts or {}
end

--- A client. See the module header for the options.
function kube.new(opts)
  opts = check_opts("kube.new", opts)
  local n = opts.concurrency
  if n ~= nil and (math.type(n) ~= "integer" or n < 1 or n > 1024) then
    error("kube.new: concurrency must be an integer from 1 to 1024", 2)
  end
  local cfg = opts.config
  if not cfg then
    local kubeconfig = require "pullsecret.kubeconfig"
    local err
    cfg, err = kubeconfig.load{ kubeconfig = opts.kubeconfig, context = opts.context, namespace = opts.namespace,
                                env = opts.env, home = opts.home }
    if not cfg then return nil, err end
  end
  if type(cfg.server) ~= "string" or cfg.server == "" then
    return nil, errors.new("config", "the kubeconfig names no API server", { field = "server" })
  end
  local self = setmetatable({
    config = cfg,
    server = cfg.server:gsub("/+$", ""),
    base_url = (cfg.base_url or cfg.server):gsub("/+$", ""),
    generation = cfg.generation,
    namespace = opts.namespace or cfg.namespace or "default",
    identity = opts.identity,
    field_manager = opts.field_manager or "pullsecret",
    log = opts.log, on_event = opts.on_event, retry = opts.retry,
    own_http = opts.http == nil,
    http = opts.http,
    concurrency = opts.concurrency or kube.CONCURRENCY,
    discovered = {},
  }, Client)
  if not self.http then
    local ok, err = self:connect()
    if not ok then return nil, err end
  end
  return self
end

-- (Re)builds the HTTP client from the configuration's TLS options (they can change after a
-- credential plugin re-run, e.g. a new client certificate).
function Client:connect()
  local http = require "pullsecret.http"
  local copts, err = self.config:client_options()
  if not copts then return nil, err end
  local o = {}
  for k, v in pairs(copts) do o[k] = v end
  o.retry = self.retry or o.retry
  o.on_event = self.on_event or o.on_event
  o.log = self.log or o.log
  if self.http and self.own_http then self.http:close() end
  local ok, h = pcall(http.new, o)
  if not ok or not h then
    return nil, errors.new("config", "cannot set up the HTTP client: " .. tostring(h))
  end
  self.http, self.own_http = h, true
  self.generation = self.config.generation
  return true
end

function Client:close()
  if self.http and self.own_http then self.http:close() end
  self.http = nil
end
Client.__close = Client.close

local function who(self)
  if self.identity then return string.format('user "%s"', self.identity) end
  if type(self.config.identity) == "function" then
    local ok, id = pcall(self.config.identity, self.config)
    if ok and type(id) == "string" and id ~= "" then return id end
  end
  if self.config.user_name then return string.format('user "%s"', self.config.user_name) end
  return "the configured credentials"
end

-- What a request was about, for messages: "create secrets \"x\" in namespace \"ns\"".
local function describe_op(ctx)
  local s = ctx.verb .. " " .. (ctx.resource or ctx.path)
  if ctx.name then s = s .. string.format(' "%s"', ctx.name) end
  if ctx.namespace then s = s .. string.format(' in namespace "%s"', ctx.namespace) end
  return s
end

local REASONS = { [400] = "BadRequest", [401] = "Unauthorized", [403] = "Forbidden", [404] = "NotFound",
                  [405] = "MethodNotAllowed", [406] = "NotAcceptable", [409] = "Conflict", [410] = "Expired",
                  [415] = "UnsupportedMediaType", [422] = "Invalid", [429] = "TooManyRequests",
                  [500] = "InternalError", [503] = "ServiceUnavailable", [504] = "Timeout" }

local function status_error(self, res, body, ctx)
  local st = type(body) == "table" and body.kind == "Status" and body or nil
  local code = res.status
  local reason = st and st.reason or REASONS[code] or ("HTTP" .. code)
  local server_msg = st and st.message or nil
  local msg
  if code == 401 then
    msg = string.format("the API server at %s did not accept %s (401 Unauthorized) for %s",
      self.server, who(self), describe_op(ctx))
  elseif code == 403 then
    msg = string.format("%s may not %s (403 Forbidden)", who(self), describe_op(ctx))
    if server_msg then msg = msg .. ": " .. server_msg end
  else
    msg = string.format("%s: %s (%d %s)", describe_op(ctx), server_msg or ("HTTP " .. code), code, reason)
  end
  return errors.new("kube", msg, { reason = reason, code = code, status = code,
    details = st and st.details or nil, server_message = server_msg, verb = ctx.verb,
    resource = ctx.resource, name = ctx.name, namespace = ctx.namespace,
    retry_after = res.headers and res.headers["retry-after"] or nil })
end

-- Batches. The helpers below that take `level` raise argument errors at that level as their
-- caller sees it (2 from a public method: the user's call).

-- The concurrency of a batch: opts.concurrency, else the client's.
local function concurrency_of(self, fn, opts, level)
  local n = opts and opts.concurrency
  if n == nil then return self.concurrency end
  if math.type(n) ~= "integer" or n < 1 or n > 1024 then
    error(fn .. ": concurrency must be an integer from 1 to 1024", level + 1)
  end
  return n
end

-- One request made ready to send: { method, url, body, content_type, idempotent, ctx }, or
-- { err = err } when its body cannot be encoded.
local function prepare(self, spec, fn, level)
  if type(spec) ~= "table" then error(fn .. ": expected a request table", level + 1) end
  if type(spec.path) ~= "string" then error(fn .. ": path must be a string", level + 1) end
  local body = spec.body
  if type(body) == "table" then
    local err
    body, err = json.encode(body)
    if not body then return { err = errors.new("input", "cannot encode the request body: " .. tostring(err)) } end
  end
  local method = spec.method or "GET"
  return { method = method, url = self.base_url .. spec.path .. query_string(spec.query), body = body,
           content_type = spec.content_type, idempotent = spec.idempotent,
           ctx = spec.ctx or { verb = method:lower(), path = spec.path } }
end

-- Sends prepared requests, all at once when there are several (pullsecret.http's batch: 429 and
-- 5xx retried there), each with the current credentials; the ones answered 401 are sent once
-- more after cfg:invalidate(). Returns, in order, the response or { error = err } of each.
function Client:_send(preps, concurrency)
  local out, todo = {}, {}
  for i = 1, #preps do todo[i] = i end
  local function fail_all(err)
    for _, i in ipairs(todo) do out[i] = { error = err } end
    return out
  end
  for attempt = 1, 2 do
    if #todo == 0 then break end
    if self.own_http and self.config.generation ~= self.generation then
      -- an exec plugin handed out a new credential (maybe a client certificate): new TLS client
      local ok, cerr = self:connect()
      if not ok then return fail_all(cerr) end
    end
    local auth, aerr = self.config:auth_header()
    if aerr then return fail_all(aerr) end
    local reqs = {}
    for j, i in ipairs(todo) do
      local p = preps[i]
      local headers = { ["Accept"] = "application/json" }
      if p.body then headers["Content-Type"] = p.content_type or "application/json" end
      if auth then headers["Authorization"] = auth end
      reqs[j] = { method = p.method, url = p.url, headers = headers, body = p.body, idempotent = p.idempotent }
    end
    local results
    if #reqs == 1 then
      local res, err = self.http:request(reqs[1])
      results = { res or { error = err } }
    else
      results = self.http:batch(reqs, { concurrency = concurrency })
    end
    local again = {}
    for j, i in ipairs(todo) do
      local r = results[j] or { error = errors.new("transport", "no result") }
      out[i] = r
      if attempt == 1 and r.error == nil and r.status == 401 then again[#again + 1] = i end
    end
    todo = again
    if #todo > 0 then
      -- credentials may have expired or rotated: forget cached ones and try once more
      if self.config.invalidate then self.config:invalidate() end
      if self.own_http and type(self.config.auth) == "table" and self.config.auth.method == "exec" then
        local ok, cerr = self:connect()     -- the plugin may hand out a new client certificate
        if not ok then return fail_all(cerr) end
      end
    end
  end
  return out
end

-- What one answer means: decoded body (or {} for an empty one), res | nil, err.
local function answer(self, p, r)
  if r.error then return nil, r.error end
  local decoded = json.decode(r.body or "")
  if r.status >= 400 then return nil, status_error(self, r, decoded, p.ctx) end
  if decoded == nil then
    if (r.body or "") == "" then return {}, r end
    return nil, errors.new("protocol", string.format("%s: the API server answered %d with a body that is not JSON",
      describe_op(p.ctx), r.status), { status = r.status })
  end
  return decoded, r
end

-- Runs prepared requests (an entry { err = err } is a request that failed before it was sent):
-- results in order, { obj = decoded, res = response } or { err = err }.
function Client:_perform(preps, concurrency)
  local out, idx, send = {}, {}, {}
  for i, p in ipairs(preps) do
    if p.err then out[i] = { err = p.err } else idx[#idx + 1] = i; send[#send + 1] = p end
  end
  if #send == 0 then return out end
  local raw = self:_send(send, concurrency)
  for j, i in ipairs(idx) do
    local obj, res = answer(self, send[j], raw[j])
    out[i] = obj and { obj = obj, res = res } or { err = res }
  end
  return out
end

-- The first result of a list of results as a method's return values: obj, res | nil, err.
local function one(results)
  local x = results[1]
  if x.err then return nil, x.err end
  return x.obj, x.res
end

--- A raw request. opts: method, path ("/api/v1/..."), query (table), body (table or string),
-- content_type, idempotent (passed to pullsecret.http), ctx (for messages: { verb =, resource =,
-- name =, namespace = }).
-- Returns the decoded body ({} for an empty one) and the response; a body that is not JSON is a
-- kind "protocol" error.
function Client:request(opts)
  opts = check_opts("client:request", opts)
  if type(opts.path) ~= "string" then error("client:request: path must be a string", 2) end
  if not self.http then error("client is closed", 2) end
  return one(self:_perform({ prepare(self, opts, "client:request", 2) }, 1))
end

--- Many raw requests at once (see the module header): results in input order, each
-- { obj = decoded, res = response } or { err = err }.
function Client:batch(specs, opts)
  if type(specs) ~= "table" then error("client:batch: expected a list of requests", 2) end
  opts = check_opts("client:batch", opts)
  if not self.http then error("client is closed", 2) end
  local n = concurrency_of(self, "client:batch", opts, 2)
  local preps = {}
  for i, spec in ipairs(specs) do preps[i] = prepare(self, spec, "client:batch", 2) end
  return self:_perform(preps, n)
end

-- Resolves { api_version, kind } to { api_version, resource, namespaced }.
function Client:resolve(api_version, kind)
  local known = KINDS[kind]
  if known and (api_version == nil or api_version == known[1]) then
    return { api_version = known[1], resource = known[2], namespaced = known[3] }
  end
  if api_version == nil then
    return nil, errors.new("input", string.format("kind %s needs an apiVersion", tostring(kind)))
  end
  local key = api_version .. "/" .. kind
  if self.discovered[key] then return self.discovered[key] end
  local path = api_version == "v1" and "/api/v1" or "/apis/" .. api_version
  local doc, err = self:request{ path = path, ctx = { verb = "discover", resource = api_version } }
  if not doc then return nil, err end
  for _, r in ipairs(type(doc.resources) == "table" and doc.resources or {}) do
    if r.kind == kind and type(r.name) == "string" and not r.name:find("/", 1, true) then
      local info = { api_version = api_version, resource = r.name, namespaced = r.namespaced == true }
      self.discovered[key] = info
      return info
    end
  end
  return nil, errors.new("kube", string.format("the API server does not serve kind %s in %s", kind, api_version),
    { reason = "NotFound", code = 404 })
end

-- A reference from an object or a { api_version, kind, namespace, name } table. `level` is
-- error's level for a bad argument (default 3: the caller of the method calling ref_of).
local function ref_of(self, ref, fn, level)
  level = level or 3
  if type(ref) ~= "table" then error(fn .. ": expected an object or a reference table", level) end
  local meta = type(ref.metadata) == "table" and ref.metadata or {}
  local r = { api_version = ref.api_version or ref.apiVersion, kind = ref.kind,
              name = ref.name or meta.name, namespace = ref.namespace or meta.namespace }
  if type(r.kind) ~= "string" then error(fn .. ": the object has no kind", level) end
  local info, err = self:resolve(r.api_version, r.kind)
  if not info then return nil, err end
  r.api_version, r.resource, r.namespaced = info.api_version, info.resource, info.namespaced
  if r.namespaced then
    if r.namespace == nil then r.namespace = self.namespace end
  else
    r.namespace = nil
  end
  return r
end

local function collection_path(r, all_namespaces)
  local base = r.api_version == "v1" and "/api/v1" or "/apis/" .. r.api_version
  if r.namespaced and not all_namespaces then
    return base .. "/namespaces/" .. pct(r.namespace) .. "/" .. r.resource
  end
  return base .. "/" .. r.resource
end

local function item_path(r)
  if type(r.name) ~= "string" or r.name == "" then return nil end
  return collection_path(r) .. "/" .. pct(r.name)
end

local function dry(opts) return opts.dry_run and "All" or nil end

local function need_name(r, verb)
  return errors.new("input", string.format("%s %s: the object has no metadata.name", verb, r.resource))
end

-- The reference and the path of one named object, for method `fn` doing `verb`: r, path | nil, err.
local function item_ref(self, ref, fn, verb, level)
  local r, err = ref_of(self, ref, fn, level + 2)
  if not r then return nil, err end
  local path = item_path(r)
  if not path then return nil, need_name(r, verb) end
  return r, path
end

-- What a request on object `r` says about itself in messages.
local function ctx_of(r, verb)
  return { verb = verb, resource = r.resource, name = r.name, namespace = r.namespace }
end

-- The query of a write: dryRun and fieldManager (and `extra`).
local function write_query(self, opts, extra)
  local q = extra or {}
  q.dryRun, q.fieldManager = dry(opts), opts.field_manager or self.field_manager
  return q
end

local function with_type(obj, r)
  if type(obj) == "table" and obj.kind == nil then obj.kind = r.kind end
  if type(obj) == "table" and obj.apiVersion == nil then obj.apiVersion = r.api_version end
  return obj
end

-- One request per named object (or reference) of `items`, sent together: results as client:batch,
-- each obj with kind and apiVersion filled in unless raw. build(r, path, item) -> request spec.
local function per_object(self, items, fn, verb, level, concurrency, build, raw)
  if type(items) ~= "table" then error(fn .. ": expected a list", level + 1) end
  if not self.http then error("client is closed", level + 1) end
  local preps, refs = {}, {}
  for i, item in ipairs(items) do
    local r, path = item_ref(self, item, fn, verb, level + 1)
    if r then
      refs[i] = r
      preps[i] = prepare(self, build(r, path, item), fn, level + 1)
    else
      preps[i] = { err = path }
    end
  end
  local out = self:_perform(preps, concurrency)
  if not raw then
    for i, x in ipairs(out) do if x.obj then with_type(x.obj, refs[i]) end end
  end
  return out
end

-- one() for methods that answer the object alone: obj | nil, err.
local function one_obj(results)
  local obj, err = one(results)
  if not obj then return nil, err end
  return obj
end

local function get_spec(r, path) return { path = path, ctx = ctx_of(r, "get") } end

--- GET one object.
function Client:get(ref)
  return one_obj(per_object(self, { ref }, "client:get", "get", 2, 1, get_spec))
end

--- GET many objects at once: results as client:batch.
function Client:get_many(refs, opts)
  opts = check_opts("client:get_many", opts)
  return per_object(self, refs, "client:get_many", "get", 2, concurrency_of(self, "client:get_many", opts, 2),
    get_spec)
end

-- LIST every option table of `lists`, following `continue` until the end; the pages of all the
-- lists are fetched together, round after round. Results as client:batch; obj = the array of objects.
local function list_all(self, lists, fn, level, concurrency)
  if type(lists) ~= "table" then error(fn .. ": expected a list of option tables", level + 1) end
  if not self.http then error("client is closed", level + 1) end
  local out, state, pending = {}, {}, {}
  for i, o in ipairs(lists) do
    if type(o) ~= "table" then error(fn .. ": options must be a table", level + 1) end
    local ref = { api_version = o.api_version, kind = o.kind, namespace = o.namespace or nil }
    local r, err = ref_of(self, ref, fn, level + 2)
    if r then
      local all = o.namespace == false
      state[i] = { r = r, o = o, path = collection_path(r, all), items = json.array({}),
                   ctx = { verb = "list", resource = r.resource, namespace = (not all) and r.namespace or nil } }
      pending[#pending + 1] = i
    else
      out[i] = { err = err }
    end
  end
  for _ = 1, 100000 do
    if #pending == 0 then break end
    local preps = {}
    for j, i in ipairs(pending) do
      local st = state[i]
      preps[j] = prepare(self, { path = st.path, ctx = st.ctx, query = {
        labelSelector = st.o.label_selector, fieldSelector = st.o.field_selector,
        limit = tostring(st.o.limit or 500), ["continue"] = st.cont } }, fn, level + 1)
    end
    local pages = self:_perform(preps, concurrency)
    local again = {}
    for j, i in ipairs(pending) do
      local x, st = pages[j], state[i]
      if x.err then
        out[i] = { err = x.err }
      else
        local page = x.obj
        for _, item in ipairs(type(page.items) == "table" and page.items or {}) do
          st.items[#st.items + 1] = with_type(item, st.r)
        end
        local meta = type(page.metadata) == "table" and page.metadata or {}
        st.items.resource_version = meta.resourceVersion
        st.cont = meta["continue"]
        if type(st.cont) == "string" and st.cont ~= "" then again[#again + 1] = i end
        out[i] = { obj = st.items, res = x.res }
      end
    end
    pending = again
  end
  return out
end

--- LIST with selectors, following `continue` until the end. Returns an array of objects.
function Client:list(opts)
  opts = check_opts("client:list", opts)
  return one_obj(list_all(self, { opts }, "client:list", 2, 1))
end

--- Many LISTs at once (each an option table of client:list): results as client:batch.
function Client:list_many(lists, opts)
  opts = check_opts("client:list_many", opts)
  return list_all(self, lists, "client:list_many", 2, concurrency_of(self, "client:list_many", opts, 2))
end

--- POST an object.
function Client:create(obj, opts)
  opts = check_opts("client:create", opts)
  local r, err = ref_of(self, obj, "client:create")
  if not r then return nil, err end
  local body = with_type(json.copy(obj), r)
  if r.namespaced then body.metadata = body.metadata or {}; body.metadata.namespace = r.namespace end
  local res_obj, res = self:request{ method = "POST", path = collection_path(r), body = body,
    query = write_query(self, opts), ctx = ctx_of(r, "create") }
  if not res_obj then return nil, res end
  return with_type(res_obj, r)
end

-- PUTs of `objs`, together.
local function replace_all(self, objs, opts, fn, level, concurrency)
  return per_object(self, objs, fn, "replace", level + 1, concurrency, function(r, path, obj)
    return { method = "PUT", path = path, body = with_type(json.copy(obj), r),
             query = write_query(self, opts), ctx = ctx_of(r, "update") }
  end)
end

--- PUT an object (a metadata.resourceVersion makes it conditional: 409 Conflict when stale).
function Client:replace(obj, opts)
  opts = check_opts("client:replace", opts)
  return one_obj(replace_all(self, { obj }, opts, "client:replace", 2, 1))
end

--- PUT many objects at once: results as client:batch.
function Client:replace_many(objs, opts)
  opts = check_opts("client:replace_many", opts)
  return replace_all(self, objs, opts, "client:replace_many", 2,
    concurrency_of(self, "client:replace_many", opts, 2))
end

local SERVER_SET = { "uid", "resourceVersion", "creationTimestamp", "managedFields", "generation",
                     "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds" }

-- Server-side applies of `objs`, together; each result also has `status` (201 when created).
local function apply_all(self, objs, opts, fn, level, concurrency)
  local out = per_object(self, objs, fn, "apply", level + 1, concurrency, function(r, path, obj)
    local body = with_type(json.copy(obj), r)
    body.metadata = body.metadata or {}
    for _, k in ipairs(SERVER_SET) do body.metadata[k] = nil end
    body.status = nil
    if r.namespaced then body.metadata.namespace = r.namespace end
    return { method = "PATCH", path = path, body = body, content_type = "application/apply-patch+yaml",
             idempotent = true, query = write_query(self, opts, { force = opts.force and "true" or nil }),
             ctx = ctx_of(r, "apply") }
  end)
  for _, x in ipairs(out) do if x.res then x.status = x.res.status end end
  return out
end

--- Server-side apply. Returns the object and the HTTP status (201 when it was created).
function Client:apply(obj, opts)
  opts = check_opts("client:apply", opts)
  local x = apply_all(self, { obj }, opts, "client:apply", 2, 1)[1]
  if x.err then return nil, x.err end
  return x.obj, x.status
end

--- Server-side apply of many objects at once: results as client:batch, plus `status`.
function Client:apply_many(objs, opts)
  opts = check_opts("client:apply_many", opts)
  return apply_all(self, objs, opts, "client:apply_many", 2, concurrency_of(self, "client:apply_many", opts, 2))
end

local PATCH_TYPES = { merge = "application/merge-patch+json", strategic = "application/strategic-merge-patch+json",
                      json = "application/json-patch+json" }

--- PATCH with a merge (default), strategic merge or JSON patch (a table or JSON text).
function Client:patch(ref, patch, opts)
  opts = check_opts("client:patch", opts)
  local ctype = PATCH_TYPES[opts.type or "merge"]
  if not ctype then error("client:patch: type must be merge, strategic or json", 2) end
  if type(patch) ~= "table" and type(patch) ~= "string" then
    error("client:patch: patch must be a table or a string", 2)
  end
  if opts.type == "json" and type(patch) == "table" then patch = json.array(patch) end
  return one_obj(per_object(self, { ref }, "client:patch", "patch", 2, 1, function(r, path)
    return { method = "PATCH", path = path, body = patch, content_type = ctype,
             query = write_query(self, opts), ctx = ctx_of(r, "patch") }
  end))
end

-- DELETEs of `refs`, together; each obj is what the server answered (the object or a Status).
local function delete_all(self, refs, opts, fn, level, concurrency)
  return per_object(self, refs, fn, "delete", level + 1, concurrency, function(r, path)
    return { method = "DELETE", path = path, query = { dryRun = dry(opts) }, ctx = ctx_of(r, "delete") }
  end, true)
end

--- DELETE one object. Returns what the server answered (the object or a Status).
function Client:delete(ref, opts)
  opts = check_opts("client:delete", opts)
  return one(delete_all(self, { ref }, opts, "client:delete", 2, 1))
end

--- DELETE many objects at once: results as client:batch.
function Client:delete_many(refs, opts)
  opts = check_opts("client:delete_many", opts)
  return delete_all(self, refs, opts, "client:delete_many", 2, concurrency_of(self, "client:delete_many", opts, 2))
end

---------------------------------------------------------------------------------------------------
-- the procedure's steps
---------------------------------------------------------------------------------------------------
-- Bytes a base64 value decodes to, computed from its length (values are never decoded here).
local function b64_size(v)
  if type(v) ~= "string" then return 0 end
  v = v:gsub("%s", "")
  local pad = #(v:match("=*$"))
  return (#v // 4) * 3 - math.min(pad, 2) + ((#v % 4 > 1) and (#v % 4 - 1) or 0)
end
kube.b64_size = b64_size

local LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

-- What describe_secrets shows of a list of secrets.
local function described(items)
  local out = {}
  for _, s in ipairs(items) do
    local data = {}
    for k, v in pairs(type(s.data) == "table" and s.data or {}) do
      data[#data + 1] = { key = k, bytes = b64_size(v) }
    end
    table.sort(data, function(a, b) return a.key < b.key end)
    local meta = s.metadata or {}
    -- kubectl's last-applied-configuration holds the data itself: left out, as kubectl describe does
    local annotations
    for k, v in pairs(type(meta.annotations) == "table" and meta.annotations or {}) do
      if k ~= LAST_APPLIED then
        annotations = annotations or {}
        annotations[k] = v
      end
    end
    out[#out + 1] = { name = meta.name, namespace = meta.namespace, type = s.type or "Opaque", data = data,
                      labels = meta.labels, annotations = annotations }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local function describe_all(self, namespaces, fn, level, concurrency)
  if type(namespaces) ~= "table" then error(fn .. ": expected a list of namespaces", level + 1) end
  local lists = {}
  for i, ns in ipairs(namespaces) do
    if ns ~= nil and type(ns) ~= "string" then error(fn .. ": namespace must be a string", level + 1) end
    lists[i] = { kind = "Secret", namespace = ns }
  end
  local out = list_all(self, lists, fn, level + 1, concurrency)
  for _, x in ipairs(out) do if x.obj then x.obj = described(x.obj) end end
  return out
end

--- Step 5: the namespace's secrets like `kubectl describe secrets`: names, types, key sizes.
function Client:describe_secrets(namespace)
  if namespace ~= nil and type(namespace) ~= "string" then error("describe_secrets: namespace must be a string", 2) end
  return one_obj(describe_all(self, { namespace or self.namespace }, "describe_secrets", 2, 1))
end

--- Step 5 in many namespaces at once: results as client:batch, obj as describe_secrets answers.
function Client:describe_secrets_many(namespaces, opts)
  opts = check_opts("describe_secrets_many", opts)
  return describe_all(self, namespaces, "describe_secrets_many", 2,
    concurrency_of(self, "describe_secrets_many", opts, 2))
end

local function same_content(a, b)
  local function pick(o)
    local m = type(o.metadata) == "table" and o.metadata or {}
    return json.encode({ type = o.type, data = o.data, labels = m.labels, annotations = m.annotations })
  end
  return pick(a) == pick(b)
end

-- A failed apply of secret `ref`, in the words of upsert_secret.
local function apply_error(err, ref)
  local causes = type(err.details) == "table" and err.details.causes or nil
  if err.code == 409 and type(causes) == "table" and causes[1] and causes[1].reason == "FieldManagerConflict" then
    local parts = {}
    for _, c in ipairs(causes) do
      parts[#parts + 1] = string.format("%s (%s)", tostring(c.field), tostring(c.message))
    end
    return errors.new("conflict", string.format(
      'secret "%s" in namespace "%s": fields owned by another manager would change: %s; '
      .. "force = true takes them over", ref.name, ref.namespace, table.concat(parts, ", ")),
      { reason = "FieldManagerConflict", code = 409, details = err.details, name = ref.name,
        namespace = ref.namespace, cause = err })
  end
  return err
end

-- upsert_secret for every secret of `secrets`: the GETs together, then the DELETEs of secrets of
-- another type (replace_type), then the applies together. Results as client:batch, obj =
-- { action =, replaced =, object = }.
local function upsert_all(self, secrets, opts, fn, level, concurrency)
  if type(secrets) ~= "table" then error(fn .. ": expected a list of Secret objects", level + 1) end
  local refs, out, current, replaced = {}, {}, {}, {}
  for i, secret in ipairs(secrets) do
    if type(secret) ~= "table" or type(secret.metadata) ~= "table" or type(secret.metadata.name) ~= "string" then
      error(fn .. ": expected a Secret object with metadata.name", level + 1)
    end
    refs[i] = { api_version = "v1", kind = "Secret", name = secret.metadata.name,
                namespace = secret.metadata.namespace or self.namespace }
  end
  local got = per_object(self, refs, fn, "get", level + 1, concurrency, get_spec)
  local gone_refs, gone_idx = {}, {}
  for i, x in ipairs(got) do
    local ref, wanted_type = refs[i], secrets[i].type or "Opaque"
    if x.err and x.err.code ~= 404 then
      out[i] = { err = x.err }
    elseif x.obj and (x.obj.type or "Opaque") ~= wanted_type then
      if opts.replace_type then
        gone_refs[#gone_refs + 1], gone_idx[#gone_idx + 1] = ref, i
      else
        out[i] = { err = errors.new("conflict", string.format(
          'secret "%s" in namespace "%s" already exists with type %s, not %s; a secret\'s type cannot be changed: '
          .. "replace_type = true deletes it and creates it again", ref.name, ref.namespace,
          tostring(x.obj.type), wanted_type),
          { reason = "TypeMismatch", name = ref.name, namespace = ref.namespace,
            existing_type = x.obj.type, wanted_type = wanted_type }) }
      end
    else
      current[i] = x.obj
    end
  end
  local gone = delete_all(self, gone_refs, { dry_run = opts.dry_run }, fn, level + 1, concurrency)
  for j, i in ipairs(gone_idx) do
    if gone[j].err then
      out[i] = gone[j]
    elseif opts.dry_run then
      out[i] = { obj = { action = "created", replaced = true, object = with_type(json.copy(secrets[i]), refs[i]) } }
    else
      replaced[i] = true
    end
  end
  local bodies, idx = {}, {}
  for i, secret in ipairs(secrets) do
    if not out[i] then
      local body = json.copy(secret)
      body.apiVersion, body.kind = "v1", "Secret"
      body.metadata.namespace = refs[i].namespace
      body.type = secret.type or "Opaque"
      bodies[#bodies + 1], idx[#idx + 1] = body, i
    end
  end
  local applied = apply_all(self, bodies, { force = opts.force, dry_run = opts.dry_run,
                                            field_manager = opts.field_manager }, fn, level + 1, concurrency)
  for j, i in ipairs(idx) do
    local x, cur = applied[j], current[i]
    if x.err then
      out[i] = { err = apply_error(x.err, refs[i]) }
    else
      local obj, action = x.obj
      if x.status == 201 or not cur then action = "created"
      elseif (obj.metadata or {}).resourceVersion ~= (cur.metadata or {}).resourceVersion
        or not same_content(obj, cur) then action = "updated"
      else action = "unchanged" end
      out[i] = { obj = { action = action, replaced = replaced[i] or false, object = obj } }
    end
  end
  return out
end

--- Step 6: create or update a secret with server-side apply (see the module header).
function Client:upsert_secret(secret, opts)
  opts = check_opts("upsert_secret", opts)
  return one_obj(upsert_all(self, { secret }, opts, "upsert_secret", 2, 1))
end

--- Step 6 for many secrets at once: results as client:batch, obj as upsert_secret answers.
function Client:upsert_secret_many(secrets, opts)
  opts = check_opts("upsert_secret_many", opts)
  return upsert_all(self, secrets, opts, "upsert_secret_many", 2, concurrency_of(self, "upsert_secret_many", opts, 2))
end

-- add_pull_secret for every { namespace =, service_account =, secret_name = } of `entries`: each
-- round GETs the accounts still to do together, then PUTs the ones to change together; a 409
-- Conflict puts the account into the next round (opts.attempts rounds, default 5).
local function add_all(self, entries, opts, fn, level, concurrency)
  if type(entries) ~= "table" then error(fn .. ": expected a list of entries", level + 1) end
  for _, e in ipairs(entries) do
    if type(e) ~= "table" or type(e.namespace) ~= "string" or type(e.service_account) ~= "string"
       or type(e.secret_name) ~= "string" then
      error(fn .. ": namespace, service_account and secret_name must be strings", level + 1)
    end
  end
  local attempts = opts.attempts or 5
  local out, last, pending = {}, {}, {}
  for i = 1, #entries do pending[i] = i end
  for attempt = 1, attempts do
    if #pending == 0 then break end
    local refs = {}
    for j, i in ipairs(pending) do
      refs[j] = { api_version = "v1", kind = "ServiceAccount", namespace = entries[i].namespace,
                  name = entries[i].service_account }
    end
    local got = per_object(self, refs, fn, "get", level + 1, concurrency, get_spec)
    local changed, idx = {}, {}
    for j, i in ipairs(pending) do
      local sa, name = got[j].obj, entries[i].secret_name
      if not sa then
        out[i] = got[j]
      else
        local list = json.is_array(sa.imagePullSecrets) and sa.imagePullSecrets
          or (type(sa.imagePullSecrets) == "table" and #sa.imagePullSecrets > 0 and json.array(sa.imagePullSecrets))
          or json.array({})
        local present = false
        for _, entry in ipairs(list) do
          if type(entry) == "table" and entry.name == name then present = true; break end
        end
        if present then
          out[i] = { obj = { action = "present", object = sa, attempts = attempt } }
        else
          list[#list + 1] = { name = name }
          sa.imagePullSecrets = list
          changed[#changed + 1], idx[#idx + 1] = sa, i
        end
      end
    end
    local put = replace_all(self, changed, { dry_run = opts.dry_run }, fn, level + 1, concurrency)
    local again = {}
    for j, i in ipairs(idx) do
      local x = put[j]
      if x.obj then
        out[i] = { obj = { action = "added", object = x.obj, attempts = attempt } }
      elseif x.err.code ~= 409 then
        out[i] = x
      else
        last[i], again[#again + 1] = x.err, i
      end
    end
    pending = again
  end
  for _, i in ipairs(pending) do
    local e = entries[i]
    out[i] = { err = errors.new("conflict", string.format(
      'serviceaccount "%s" in namespace "%s" kept changing while adding pull secret "%s"; gave up after %d attempts',
      e.service_account, e.namespace, e.secret_name, attempts), { reason = "Conflict", code = 409, cause = last[i] }) }
  end
  return out
end

--- Appends a pull secret to a service account's imagePullSecrets, keeping everyone else's entries:
-- GET, append if absent, PUT with the resourceVersion, retried on 409 Conflict (5 attempts).
function Client:add_pull_secret(namespace, service_account, secret_name, opts)
  if type(namespace) ~= "string" or type(service_account) ~= "string" or type(secret_name) ~= "string" then
    error("add_pull_secret: namespace, service_account and secret_name must be strings", 2)
  end
  opts = check_opts("add_pull_secret", opts)
  return one_obj(add_all(self, { { namespace = namespace, service_account = service_account,
                                   secret_name = secret_name } }, opts, "add_pull_secret", 2, 1))
end

--- The same for many { namespace =, service_account =, secret_name = } at once: results as
-- client:batch, obj as add_pull_secret answers.
function Client:add_pull_secret_many(entries, opts)
  opts = check_opts("add_pull_secret_many", opts)
  return add_all(self, entries, opts, "add_pull_secret_many", 2, concurrency_of(self, "add_pull_secret_many", opts, 2))
end

return kube
