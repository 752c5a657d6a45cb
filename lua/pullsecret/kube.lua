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
--           identity = nil } -> client | nil, err
--   The configuration is `config`, else pullsecret.kubeconfig.load{ kubeconfig =, context =, namespace = }.
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
  local cfg = opts.config
  if not cfg then
    local kubeconfig = require "pullsecret.kubeconfig"
    local err
    cfg, err = kubeconfig.load{ kubeconfig = opts.kubeconfig, context = opts.context, namespace = opts.namespace }
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

--- A raw request. opts: method, path ("/api/v1/..."), query (table), body (table or string),
-- content_type, idempotent (passed to pullsecret.http), ctx (for messages: { verb =, resource =,
-- name =, namespace = }).
-- Returns the decoded body (or the raw body when it is not JSON) and the response.
function Client:request(opts)
  opts = check_opts("client:request", opts)
  if type(opts.path) ~= "string" then error("client:request: path must be a string", 2) end
  if not self.http then error("client is closed", 2) end
  local body = opts.body
  if type(body) == "table" then
    local err
    body, err = json.encode(body)
    if not body then return nil, errors.new("input", "cannot encode the request body: " .. tostring(err)) end
  end
  local method = opts.method or "GET"
  local url = self.base_url .. opts.path .. query_string(opts.query)
  local ctx = opts.ctx or { verb = method:lower(), path = opts.path }
  local res, err
  for attempt = 1, 2 do
    if self.own_http and self.config.generation ~= self.generation then
      -- an exec plugin handed out a new credential (maybe a client certificate): new TLS client
      local ok, cerr = self:connect()
      if not ok then return nil, cerr end
    end
    local headers = { ["Accept"] = "application/json" }
    if body then headers["Content-Type"] = opts.content_type or "application/json" end
    local auth, aerr = self.config:auth_header()
    if aerr then return nil, aerr end
    if auth then headers["Authorization"] = auth end
    res, err = self.http:request{ method = method, url = url, headers = headers, body = body,
                                  idempotent = opts.idempotent }
    if not res then return nil, err end
    if res.status ~= 401 or attempt == 2 then break end
    -- credentials may have expired or rotated: forget cached ones and try once more
    if self.config.invalidate then self.config:invalidate() end
    if self.own_http and type(self.config.auth) == "table" and self.config.auth.method == "exec" then
      local ok, cerr = self:connect()     -- the plugin may hand out a new client certificate
      if not ok then return nil, cerr end
    end
  end
  local decoded = json.decode(res.body or "")
  if res.status >= 400 then return nil, status_error(self, res, decoded, ctx) end
  if decoded == nil then
    if (res.body or "") == "" then return {}, res end
    return nil, errors.new("protocol", string.format("%s: the API server answered %d with a body that is not JSON",
      describe_op(ctx), res.status), { status = res.status })
  end
  return decoded, res
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
local function item_ref(self, ref, fn, verb)
  local r, err = ref_of(self, ref, fn, 4)
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

-- What client:request answered about `r`, with kind and apiVersion filled in: obj | nil, err.
local function typed(r, obj, err)
  if not obj then return nil, err end
  return with_type(obj, r)
end

--- GET one object.
function Client:get(ref)
  local r, path = item_ref(self, ref, "client:get", "get")
  if not r then return nil, path end
  return typed(r, self:request{ path = path, ctx = ctx_of(r, "get") })
end

--- LIST with selectors, following `continue` until the end. Returns an array of objects.
function Client:list(opts)
  opts = check_opts("client:list", opts)
  local ref = { api_version = opts.api_version, kind = opts.kind, namespace = opts.namespace or nil }
  local r, err = ref_of(self, ref, "client:list")
  if not r then return nil, err end
  local all = opts.namespace == false
  local path = collection_path(r, all)
  local items = json.array({})
  local cont
  local ctx = { verb = "list", resource = r.resource, namespace = (not all) and r.namespace or nil }
  for _ = 1, 100000 do
    local page, perr = self:request{ path = path, ctx = ctx, query = {
      labelSelector = opts.label_selector, fieldSelector = opts.field_selector,
      limit = tostring(opts.limit or 500), ["continue"] = cont } }
    if not page then return nil, perr end
    for _, item in ipairs(type(page.items) == "table" and page.items or {}) do
      items[#items + 1] = with_type(item, r)
    end
    local meta = type(page.metadata) == "table" and page.metadata or {}
    items.resource_version = meta.resourceVersion
    cont = meta["continue"]
    if type(cont) ~= "string" or cont == "" then break end
  end
  return items
end

--- POST an object.
function Client:create(obj, opts)
  opts = check_opts("client:create", opts)
  local r, err = ref_of(self, obj, "client:create")
  if not r then return nil, err end
  local body = with_type(json.copy(obj), r)
  if r.namespaced then body.metadata = body.metadata or {}; body.metadata.namespace = r.namespace end
  return typed(r, self:request{ method = "POST", path = collection_path(r), body = body,
    query = write_query(self, opts), ctx = ctx_of(r, "create") })
end

--- PUT an object (a metadata.resourceVersion makes it conditional: 409 Conflict when stale).
function Client:replace(obj, opts)
  opts = check_opts("client:replace", opts)
  local r, path = item_ref(self, obj, "client:replace", "replace")
  if not r then return nil, path end
  local body = with_type(json.copy(obj), r)
  return typed(r, self:request{ method = "PUT", path = path, body = body,
    query = write_query(self, opts), ctx = ctx_of(r, "update") })
end

local SERVER_SET = { "uid", "resourceVersion", "creationTimestamp", "managedFields", "generation",
                     "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds" }

--- Server-side apply. Returns the object and the HTTP status (201 when it was created).
function Client:apply(obj, opts)
  opts = check_opts("client:apply", opts)
  local r, path = item_ref(self, obj, "client:apply", "apply")
  if not r then return nil, path end
  local body = with_type(json.copy(obj), r)
  body.metadata = body.metadata or {}
  for _, k in ipairs(SERVER_SET) do body.metadata[k] = nil end
  body.status = nil
  if r.namespaced then body.metadata.namespace = r.namespace end
  local res_obj, res = self:request{ method = "PATCH", path = path, body = body,
    content_type = "application/apply-patch+yaml", idempotent = true,
    query = write_query(self, opts, { force = opts.force and "true" or nil }), ctx = ctx_of(r, "apply") }
  if not res_obj then return nil, res end
  return with_type(res_obj, r), res.status
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
  local r, path = item_ref(self, ref, "client:patch", "patch")
  if not r then return nil, path end
  if opts.type == "json" and type(patch) == "table" then patch = json.array(patch) end
  return typed(r, self:request{ method = "PATCH", path = path, body = patch, content_type = ctype,
    query = write_query(self, opts), ctx = ctx_of(r, "patch") })
end

--- DELETE one object. Returns what the server answered (the object or a Status).
function Client:delete(ref, opts)
  opts = check_opts("client:delete", opts)
  local r, path = item_ref(self, ref, "client:delete", "delete")
  if not r then return nil, path end
  return self:request{ method = "DELETE", path = path, query = { dryRun = dry(opts) }, ctx = ctx_of(r, "delete") }
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

--- Step 5: the namespace's secrets like `kubectl describe secrets`: names, types, key sizes.
function Client:describe_secrets(namespace)
  if namespace ~= nil and type(namespace) ~= "string" then error("describe_secrets: namespace must be a string", 2) end
  local items, err = self:list{ kind = "Secret", namespace = namespace or self.namespace }
  if not items then return nil, err end
  local out = {}
  for _, s in ipairs(items) do
    local data = {}
    for k, v in pairs(type(s.data) == "table" and s.data or {}) do
      data[#data + 1] = { key = k, bytes = b64_size(v) }
    end
    table.sort(data, function(a, b) return a.key < b.key end)
    local meta = s.metadata or {}
    out[#out + 1] = { name = meta.name, namespace = meta.namespace, type = s.type or "Opaque", data = data,
                      labels = meta.labels, annotations = meta.annotations }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local function same_content(a, b)
  local function pick(o)
    local m = type(o.metadata) == "table" and o.metadata or {}
    return json.encode({ type = o.type, data = o.data, labels = m.labels, annotations = m.annotations })
  end
  return pick(a) == pick(b)
end

--- Step 6: create or update a secret with server-side apply (see the module header).
function Client:upsert_secret(secret, opts)
  opts = check_opts("upsert_secret", opts)
  if type(secret) ~= "table" or type(secret.metadata) ~= "table" or type(secret.metadata.name) ~= "string" then
    error("upsert_secret: expected a Secret object with metadata.name", 2)
  end
  local ref = { api_version = "v1", kind = "Secret", name = secret.metadata.name,
                namespace = secret.metadata.namespace or self.namespace }
  local wanted_type = secret.type or "Opaque"
  local current, err = self:get(ref)
  if not current and err.code ~= 404 then return nil, err end
  local replaced = false
  if current and (current.type or "Opaque") ~= wanted_type then
    if not opts.replace_type then
      return nil, errors.new("conflict", string.format(
        'secret "%s" in namespace "%s" already exists with type %s, not %s; a secret\'s type cannot be changed: '
        .. "replace_type = true deletes it and creates it again", ref.name, ref.namespace,
        tostring(current.type), wanted_type),
        { reason = "TypeMismatch", name = ref.name, namespace = ref.namespace,
          existing_type = current.type, wanted_type = wanted_type })
    end
    local gone, derr = self:delete(ref, { dry_run = opts.dry_run })
    if not gone then return nil, derr end
    if opts.dry_run then
      return { action = "created", replaced = true, object = with_type(json.copy(secret), ref) }
    end
    current, replaced = nil, true
  end
  local body = json.copy(secret)
  body.apiVersion, body.kind = "v1", "Secret"
  body.metadata.namespace = ref.namespace
  body.type = wanted_type
  local obj, code = self:apply(body, { force = opts.force, dry_run = opts.dry_run,
                                       field_manager = opts.field_manager })
  if not obj then
    err = code
    local causes = type(err.details) == "table" and err.details.causes or nil
    if err.code == 409 and type(causes) == "table" and causes[1] and causes[1].reason == "FieldManagerConflict" then
      local parts = {}
      for _, c in ipairs(causes) do
        parts[#parts + 1] = string.format("%s (%s)", tostring(c.field), tostring(c.message))
      end
      return nil, errors.new("conflict", string.format(
        'secret "%s" in namespace "%s": fields owned by another manager would change: %s; '
        .. "force = true takes them over", ref.name, ref.namespace, table.concat(parts, ", ")),
        { reason = "FieldManagerConflict", code = 409, details = err.details, name = ref.name,
          namespace = ref.namespace, cause = err })
    end
    return nil, err
  end
  local action
  if code == 201 or not current then action = "created"
  elseif (obj.metadata or {}).resourceVersion ~= (current.metadata or {}).resourceVersion
    or not same_content(obj, current) then action = "updated"
  else action = "unchanged" end
  return { action = action, replaced = replaced, object = obj }
end

--- Appends a pull secret to a service account's imagePullSecrets, keeping everyone else's entries:
-- GET, append if absent, PUT with the resourceVersion, retried on 409 Conflict (5 attempts).
function Client:add_pull_secret(namespace, service_account, secret_name, opts)
  if type(namespace) ~= "string" or type(service_account) ~= "string" or type(secret_name) ~= "string" then
    error("add_pull_secret: namespace, service_account and secret_name must be strings", 2)
  end
  opts = check_opts("add_pull_secret", opts)
  local attempts = opts.attempts or 5
  local ref = { api_version = "v1", kind = "ServiceAccount", namespace = namespace, name = service_account }
  local last
  for attempt = 1, attempts do
    local sa, err = self:get(ref)
    if not sa then return nil, err end
    local list = json.is_array(sa.imagePullSecrets) and sa.imagePullSecrets
      or (type(sa.imagePullSecrets) == "table" and #sa.imagePullSecrets > 0 and json.array(sa.imagePullSecrets))
      or json.array({})
    for _, entry in ipairs(list) do
      if type(entry) == "table" and entry.name == secret_name then
        return { action = "present", object = sa, attempts = attempt }
      end
    end
    list[#list + 1] = { name = secret_name }
    sa.imagePullSecrets = list
    local updated, perr = self:replace(sa, { dry_run = opts.dry_run })
    if updated then return { action = "added", object = updated, attempts = attempt } end
    if perr.code ~= 409 then return nil, perr end
    last = perr
  end
  return nil, errors.new("conflict", string.format(
    'serviceaccount "%s" in namespace "%s" kept changing while adding pull secret "%s"; gave up after %d attempts',
    service_account, namespace, secret_name, attempts), { reason = "Conflict", code = 409, cause = last })
end

return kube
