--- Simulated Kubernetes API server: a faithful subset that real kubectl (1.32) and pullsecret.kube use.
--
--     local sim = require "pullsecret.sim"
--     local s = sim.start{ services = { kube = {
--       users = { { name = "admin", token = "sim-admin-token" },
--                 { name = "viewer", token = "sim-viewer-token", read_only = true },
--                 { name = "basic", password = "pw" } },        -- basic auth: user name + password
--       client_cert = true,                      -- a client cert signed by the sim CA logs in as its CN
--       namespaces = { "default", "kube-system" },
--       rate_limit = nil,                        -- or { qps = 5, burst = 10, retry_after = 1 } -> 429
--       objects = nil,                           -- or a list of objects to create at start
--     } } }
--     os.execute("kubectl --kubeconfig " .. s.kubeconfig .. " get secrets -o json")
--     local st = s:state("kube")
--     -- { resource_version =, writes =, requests =, last_user =, objects = { secrets = { ["ns/name"] = obj } } }
--     s:stop()
--
-- Served: /version, /api, /api/v1, /apis, /healthz; namespaces, secrets, serviceaccounts, pods,
-- configmaps, events (list/get/create/update/patch/delete/deletecollection), with resourceVersion from a
-- global counter, uid, creationTimestamp, managedFields (simplified: leaf field paths per manager),
-- Status errors (AlreadyExists, Conflict, NotFound, Invalid, Forbidden, Unauthorized, TooManyRequests,
-- UnsupportedMediaType, BadRequest, MethodNotAllowed), server-side apply, merge/strategic/JSON
-- patches, label/field selectors, limit/continue, dryRun=All, the ServiceAccount admission rule.
-- JSON only: a protobuf body gets 415 (kubectl's typed generators, e.g. `create secret docker-registry`
-- without --dry-run=client, cannot be used against it; use `create -f`/`apply -f`).
-- /openapi/v3 serves a small index saying the server validates fields itself, so kubectl sends
-- fieldValidation=Strict (unknown top-level and metadata fields -> 400 "strict decoding error") and
-- needs no `--validate=false`; /openapi/v2 is not served (kubectl's client-side apply copes).
-- A pod's spec cannot be changed after creation except images and a few scheduling fields (422).
-- Tables (Accept: ...;as=Table) are served for `kubectl get` without -o.
--
-- The service can also be driven without sockets: svc:handle{ method =, path =, query =, headers =, body = }.
local json = require "pullsecret.json"
local P = require "pullsecret.sim.kube_patch"
local S = require "pullsecret.sim.kube_select"
local util = require "pullsecret.sim.util"

local M = {}
local Svc = {}
Svc.__index = Svc

local ok_socket, socket = pcall(require, "socket")
local now = ok_socket and socket.gettime or os.time

---------------------------------------------------------------------------------------------------
-- base64 (standard alphabet; decoding is strict about padding, as Go's encoding/json is for []byte)
---------------------------------------------------------------------------------------------------
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_INDEX = {}
for i = 1, 64 do B64_INDEX[B64:byte(i)] = i - 1 end

local b64encode = util.b64

local function b64decode(s)
  s = s:gsub("[\r\n]", "")
  if #s % 4 ~= 0 then return nil end
  local out = {}
  for i = 1, #s, 4 do
    local chunk = s:sub(i, i + 3)
    local pad = chunk:match("=*$")
    if #pad > 2 or (#pad > 0 and i + 3 < #s) then return nil end
    local n = 0
    for j = 1, 4 - #pad do
      local v = B64_INDEX[chunk:byte(j)]
      if not v then return nil end
      n = n * 64 + v
    end
    for _ = 1, #pad do n = n * 64 end
    local bytes = string.char((n >> 16) & 255, (n >> 8) & 255, n & 255)
    out[#out + 1] = bytes:sub(1, 3 - #pad)
  end
  return table.concat(out)
end
M.b64encode, M.b64decode = b64encode, b64decode

---------------------------------------------------------------------------------------------------
-- resources
---------------------------------------------------------------------------------------------------
local ALL_VERBS = { "create", "delete", "deletecollection", "get", "list", "patch", "update", "watch" }

local RESOURCES = {
  namespaces = { kind = "Namespace", singular = "namespace", namespaced = false, short = { "ns" },
                 verbs = { "create", "delete", "get", "list", "patch", "update", "watch" },
                 fields = { ["status.phase"] = true } },
  secrets = { kind = "Secret", singular = "secret", namespaced = true, fields = { type = true } },
  serviceaccounts = { kind = "ServiceAccount", singular = "serviceaccount", namespaced = true, short = { "sa" } },
  pods = { kind = "Pod", singular = "pod", namespaced = true, short = { "po" }, categories = { "all" },
           fields = { ["spec.nodeName"] = true, ["spec.serviceAccountName"] = true, ["status.phase"] = true,
                      ["spec.restartPolicy"] = true, ["spec.schedulerName"] = true, ["status.podIP"] = true } },
  configmaps = { kind = "ConfigMap", singular = "configmap", namespaced = true, short = { "cm" } },
  events = { kind = "Event", singular = "event", namespaced = true, short = { "ev" },
             fields = { ["involvedObject."] = true, reason = true, type = true, ["source"] = true,
                        reportingComponent = true } },
}
local RESOURCE_ORDER = { "configmaps", "events", "namespaces", "pods", "secrets", "serviceaccounts" }
M.RESOURCES = RESOURCES

local function rfc3339(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t) end

local uuid = util.uuid

---------------------------------------------------------------------------------------------------
-- responses
---------------------------------------------------------------------------------------------------
-- JSON in the API server's key order (kind, apiVersion, metadata first).
local function respond(code, tbl, headers)
  return util.response(code, "application/json", assert(json.encode(tbl)), headers)
end

local function status(code, reason, message, details, headers)
  if details then
    details = json.ordered(details, { "name", "group", "kind", "causes", "retryAfterSeconds" })
    for _, c in ipairs(details.causes or {}) do json.ordered(c, { "reason", "message", "field" }) end
  end
  local st = json.ordered({ kind = "Status", apiVersion = "v1", metadata = {}, status = "Failure",
               message = message, reason = reason, details = details, code = code },
               { "kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code" })
  return respond(code, st, headers)
end
M.status = status

local function not_found(resource, name)
  return status(404, "NotFound", string.format('%s "%s" not found', resource, name),
    { name = name, kind = resource })
end

local function bad_request(message)
  return status(400, "BadRequest", message)
end

local function invalid(kind, name, causes)
  local parts = {}
  for i, c in ipairs(causes) do parts[i] = c.field .. ": " .. c.message end
  local what = #parts == 1 and parts[1] or "[" .. table.concat(parts, ", ") .. "]"
  return status(422, "Invalid", string.format('%s "%s" is invalid: %s', kind, name or "", what),
    { name = name, group = "", kind = kind, causes = json.array(causes) })
end

local function cause_invalid(field, shown, detail)
  return { reason = "FieldValueInvalid", field = field,
           message = string.format('Invalid value: "%s": %s', shown, detail) }
end
local function cause_required(field)
  return { reason = "FieldValueRequired", field = field, message = "Required value" }
end

---------------------------------------------------------------------------------------------------
-- validation
---------------------------------------------------------------------------------------------------
local DNS1123_SUBDOMAIN = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
  .. "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
  .. "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
local DNS1123_LABEL = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
  .. "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
  .. "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"

local function is_label(s)
  return type(s) == "string" and #s >= 1 and #s <= 63 and s:match("^[a-z0-9]$") ~= nil
    or (type(s) == "string" and #s <= 63 and s:match("^[a-z0-9][-a-z0-9]*[a-z0-9]$") ~= nil)
end

local function is_subdomain(s)
  if type(s) ~= "string" or #s == 0 or #s > 253 then return false end
  for part in (s .. "."):gmatch("(.-)%.") do
    if not is_label(part) then return false end
  end
  return true
end
M.is_subdomain, M.is_label = is_subdomain, is_label

local function name_cause(res, name)
  if res == "namespaces" then
    if not is_label(name) then return cause_invalid("metadata.name", name, DNS1123_LABEL) end
  elseif not is_subdomain(name) then
    return cause_invalid("metadata.name", name, DNS1123_SUBDOMAIN)
  end
end

local function validate(res, obj, old)
  local kind, name = RESOURCES[res].kind, obj.metadata.name
  local causes = {}
  local c = name_cause(res, name)
  if c then causes[#causes + 1] = c end
  if res == "secrets" then
    local data = obj.data
    if data ~= nil and not P.is_map(data) then
      causes[#causes + 1] = cause_invalid("data", "<redacted>", "must be an object")
      data = {}
    end
    for k, v in pairs(data or {}) do
      if not k:match("^[-._a-zA-Z0-9]+$") then
        causes[#causes + 1] = cause_invalid("data[" .. k .. "]", k,
          "a valid config key must consist of alphanumeric characters, '-', '_' or '.'")
      elseif type(v) ~= "string" or not b64decode(v) then
        causes[#causes + 1] = cause_invalid("data[" .. k .. "]", "<redacted>", "illegal base64 data")
      end
    end
    if obj.type == "kubernetes.io/dockerconfigjson" then
      local v = data and data[".dockerconfigjson"]
      if v == nil then
        causes[#causes + 1] = cause_required("data[.dockerconfigjson]")
      elseif type(v) == "string" and b64decode(v) then
        local doc = json.decode(b64decode(v))
        if not P.is_map(doc) then
          causes[#causes + 1] = cause_invalid("data[.dockerconfigjson]", "<secret contents redacted>",
            "must be a JSON object")
        end
      end
    end
    if old and old.type ~= obj.type then
      causes[#causes + 1] = cause_invalid("type", tostring(obj.type), "field is immutable")
    end
    if old and old.immutable == true then
      if not P.equal(old.data or {}, obj.data or {}) then
        causes[#causes + 1] = { reason = "FieldValueForbidden", field = "data",
                                message = "Forbidden: field is immutable when `immutable` is set" }
      end
      if obj.immutable ~= true then
        causes[#causes + 1] = { reason = "FieldValueForbidden", field = "immutable",
                                message = "Forbidden: field is immutable when `immutable` is set" }
      end
    end
  elseif res == "pods" and old then
    -- a pod's spec is immutable but for images and a few scheduling fields
    local function mutable_cleared(spec)
      local sc = P.copy(P.is_map(spec) and spec or {})
      for _, list in ipairs({ sc.containers, sc.initContainers }) do
        if json.is_array(list) then
          for _, ct in ipairs(list) do if P.is_map(ct) then ct.image = nil end end
        end
      end
      sc.activeDeadlineSeconds, sc.terminationGracePeriodSeconds, sc.tolerations = nil, nil, nil
      return sc
    end
    if not P.equal(mutable_cleared(old.spec), mutable_cleared(obj.spec)) then
      causes[#causes + 1] = { reason = "FieldValueForbidden", field = "spec",
        message = "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
          .. "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
          .. "(only additions to existing tolerations), `spec.terminationGracePeriodSeconds`" }
    end
  elseif res == "pods" then
    local spec = obj.spec
    if not P.is_map(spec) or not json.is_array(spec.containers) or #spec.containers == 0 then
      causes[#causes + 1] = cause_required("spec.containers")
    else
      for i, ct in ipairs(spec.containers) do
        if not P.is_map(ct) or not is_label(ct.name) then
          causes[#causes + 1] = cause_invalid(string.format("spec.containers[%d].name", i - 1),
            tostring(P.is_map(ct) and ct.name or ""), DNS1123_LABEL)
        elseif type(ct.image) ~= "string" or ct.image == "" then
          causes[#causes + 1] = cause_required(string.format("spec.containers[%d].image", i - 1))
        end
      end
    end
  end
  if #causes > 0 then return invalid(kind, name, causes) end
end

-- Fields a body may carry, for fieldValidation=Strict (what kubectl sends by default).
local KNOWN_FIELDS = {
  common = { apiVersion = true, kind = true, metadata = true },
  secrets = { data = true, stringData = true, type = true, immutable = true },
  serviceaccounts = { secrets = true, imagePullSecrets = true, automountServiceAccountToken = true },
  pods = { spec = true, status = true },
  namespaces = { spec = true, status = true },
  configmaps = { data = true, binaryData = true, immutable = true },
}
local KNOWN_METADATA = { name = true, generateName = true, namespace = true, selfLink = true, uid = true,
  resourceVersion = true, generation = true, creationTimestamp = true, deletionTimestamp = true,
  deletionGracePeriodSeconds = true, labels = true, annotations = true, ownerReferences = true,
  finalizers = true, managedFields = true }

-- nil, or a 400 BadRequest naming the first unknown fields (sorted), as the API server does.
local function strict_check(res, obj)
  local known = KNOWN_FIELDS[res]
  if not known then return nil end
  local unknown = {}
  for k in pairs(obj) do
    if not KNOWN_FIELDS.common[k] and not known[k] then
      unknown[#unknown + 1] = string.format('unknown field "%s"', k)
    end
  end
  for k in pairs(P.is_map(obj.metadata) and obj.metadata or {}) do
    if not KNOWN_METADATA[k] then unknown[#unknown + 1] = string.format('unknown field "metadata.%s"', k) end
  end
  if #unknown == 0 then return nil end
  table.sort(unknown)
  return "strict decoding error: " .. table.concat(unknown, ", ")
end
M.strict_check = strict_check

-- Defaults and normalisation applied to every incoming object.
local function normalise(res, obj)
  if res == "secrets" then
    if obj.type == nil or obj.type == "" then obj.type = "Opaque" end
    if P.is_map(obj.stringData) then
      obj.data = P.is_map(obj.data) and obj.data or {}
      for k, v in pairs(obj.stringData) do obj.data[k] = b64encode(tostring(v)) end
    end
    obj.stringData = nil
  elseif res == "pods" then
    obj.spec = P.is_map(obj.spec) and obj.spec or {}
    local sa = obj.spec.serviceAccountName or obj.spec.serviceAccount
    if sa == nil or sa == "" then sa = "default" end
    obj.spec.serviceAccountName, obj.spec.serviceAccount = sa, sa
    obj.spec.restartPolicy = obj.spec.restartPolicy or "Always"
    obj.spec.dnsPolicy = obj.spec.dnsPolicy or "ClusterFirst"
    obj.spec.schedulerName = obj.spec.schedulerName or "default-scheduler"
    obj.status = P.is_map(obj.status) and obj.status or {}
    obj.status.phase = obj.status.phase or "Pending"
    obj.status.qosClass = obj.status.qosClass or "BestEffort"
  elseif res == "namespaces" then
    obj.spec = P.is_map(obj.spec) and obj.spec or {}
    obj.spec.finalizers = obj.spec.finalizers or json.array({ "kubernetes" })
    obj.status = { phase = "Active" }
    obj.metadata.labels = obj.metadata.labels or {}
    obj.metadata.labels["kubernetes.io/metadata.name"] = obj.metadata.name
  end
end

---------------------------------------------------------------------------------------------------
-- service
---------------------------------------------------------------------------------------------------
function M.new(config, shared)
  config = config or {}
  local self = setmetatable({
    config = config,
    shared = shared or {},
    users = config.users or { { name = "admin", token = "sim-admin-token" },
                              { name = "viewer", token = "sim-viewer-token", read_only = true } },
    client_cert = config.client_cert ~= false,
    rate_limit = config.rate_limit,
    rv = 0, writes = 0, requests = 0,
    objects = {},
  }, Svc)
  for res in pairs(RESOURCES) do self.objects[res] = {} end
  if self.rate_limit then
    self.bucket = { tokens = self.rate_limit.burst or self.rate_limit.qps or 1, at = now() }
  end
  for _, ns in ipairs(config.namespaces or { "default", "kube-system" }) do
    self:create_internal("namespaces", nil, { metadata = { name = ns } }, "kube-apiserver")
  end
  for _, obj in ipairs(config.objects or {}) do
    local res = self:resource_for_kind(obj.kind)
    if res then self:create_internal(res, obj.metadata and obj.metadata.namespace or "default", P.copy(obj), "sim") end
  end
  self.writes = 0
  return self
end

function Svc.resource_for_kind(_, kind)
  for res, r in pairs(RESOURCES) do if r.kind == kind then return res end end
end

local function key_of(res, ns, name)
  if RESOURCES[res].namespaced then return ns .. "/" .. name end
  return name
end

function Svc:entry(res, ns, name)
  return self.objects[res][key_of(res, ns, name)]
end

-- The object as served: a copy with managedFields rendered.
function Svc.render(_, entry, with_type)
  local obj = P.copy(entry.obj)
  local mf = {}
  local names = {}
  for m in pairs(entry.managers or {}) do names[#names + 1] = m end
  table.sort(names)
  for _, m in ipairs(names) do
    local info = entry.managers[m]
    local paths = {}
    for _, leaf in pairs(info.fields) do paths[#paths + 1] = leaf end
    mf[#mf + 1] = { manager = m, operation = info.operation, apiVersion = "v1", time = info.time,
                    fieldsType = "FieldsV1", fieldsV1 = P.fields_v1(paths) }
  end
  if #mf > 0 then obj.metadata.managedFields = json.array(mf) end
  if not with_type then obj.kind, obj.apiVersion = nil, nil end
  return obj
end

function Svc:bump(obj)
  self.rv = self.rv + 1
  obj.metadata.resourceVersion = tostring(self.rv)
end

-- Field ownership after a non-apply write by `manager`.
local function update_managers(managers, old, new, manager)
  local out = P.copy(managers or {})
  local old_leaves = old and P.leaves(old) or {}
  local new_leaves = P.leaves(new)
  for _, info in pairs(out) do
    for k in pairs(info.fields) do
      if not new_leaves[k] then info.fields[k] = nil end
    end
  end
  local mine = out[manager] or { operation = "Update", fields = {} }
  mine.operation = (out[manager] and out[manager].operation == "Apply") and "Apply" or "Update"
  for k, leaf in pairs(new_leaves) do
    local before = old_leaves[k]
    if not before or not P.equal(before.value, leaf.value) then
      for m, info in pairs(out) do
        if m ~= manager then info.fields[k] = nil end
      end
      mine.fields[k] = leaf.path
    end
  end
  if out[manager] and out[manager].operation == "Apply" and next(mine.fields) ~= nil then
    -- an applier that now writes with Update keeps its Apply entry; the update gets its own
    mine.operation = "Apply"
  end
  out[manager] = mine
  mine.time = rfc3339()
  for m, info in pairs(out) do
    if next(info.fields) == nil then out[m] = nil end
  end
  return out
end

local function managers_equal(a, b)
  for m, info in pairs(a) do
    local o = b[m]
    if not o or o.operation ~= info.operation then return false end
    for k in pairs(info.fields) do if not o.fields[k] then return false end end
    for k in pairs(o.fields) do if not info.fields[k] then return false end end
  end
  for m in pairs(b) do if not a[m] then return false end end
  return true
end

-- Persists (or, with dry, only renders) an object.
function Svc:store(res, entry, dry)
  if not dry then
    self:bump(entry.obj)
    self.objects[res][key_of(res, entry.obj.metadata.namespace, entry.obj.metadata.name)] = entry
    self.writes = self.writes + 1
  end
  return entry
end

local function new_metadata(obj, res, ns)
  obj.metadata.uid = uuid()
  obj.metadata.creationTimestamp = rfc3339()
  obj.metadata.resourceVersion = nil
  obj.metadata.managedFields = nil
  obj.metadata.generation = nil
  if RESOURCES[res].namespaced then obj.metadata.namespace = ns else obj.metadata.namespace = nil end
  obj.apiVersion, obj.kind = "v1", RESOURCES[res].kind
end

-- Creates an object (used by POST and by apply on a missing object). Returns entry or nil, response.
function Svc:create_internal(res, ns, obj, manager, opts)
  opts = opts or {}
  local meta = obj.metadata
  if RESOURCES[res].namespaced then
    if not self:entry("namespaces", nil, ns) then return nil, not_found("namespaces", ns) end
  end
  if (meta.name == nil or meta.name == "") and type(meta.generateName) == "string" then
    local sfx = {}
    for i = 1, 5 do sfx[i] = string.char(("bcdfghjklmnpqrstvwxz2456789"):byte(math.random(1, 27))) end
    meta.name = meta.generateName .. table.concat(sfx)
  end
  if meta.name == nil or meta.name == "" then
    return nil, invalid(RESOURCES[res].kind, "", { cause_required("metadata.name") })
  end
  if self:entry(res, ns, meta.name) then
    return nil, status(409, "AlreadyExists", string.format('%s "%s" already exists', res, meta.name),
      { name = meta.name, kind = res })
  end
  new_metadata(obj, res, ns)
  normalise(res, obj)
  local bad = validate(res, obj, nil)
  if bad then return nil, bad end
  if res == "pods" then
    local sa_name = obj.spec.serviceAccountName
    local sa = self:entry("serviceaccounts", ns, sa_name)
    if not sa then
      return nil, status(403, "Forbidden", string.format(
        'pods "%s" is forbidden: error looking up service account %s/%s: serviceaccount "%s" not found',
        meta.name, ns, sa_name, sa_name), { name = meta.name, kind = "pods" })
    end
    local ips = obj.spec.imagePullSecrets
    if (ips == nil or (type(ips) == "table" and #ips == 0)) and json.is_array(sa.obj.imagePullSecrets)
      and #sa.obj.imagePullSecrets > 0 then
      obj.spec.imagePullSecrets = P.copy(sa.obj.imagePullSecrets)
    end
  end
  local managers
  if opts.apply_fields then
    managers = { [manager] = { operation = "Apply", fields = opts.apply_fields, time = rfc3339() } }
  else
    managers = update_managers({}, nil, obj, manager)
  end
  local entry = self:store(res, { obj = obj, managers = managers }, opts.dry)
  if res == "namespaces" and not opts.dry then
    self:create_internal("serviceaccounts", meta.name, { metadata = { name = "default" } }, "kube-controller-manager")
  end
  return entry
end

---------------------------------------------------------------------------------------------------
-- request handling
---------------------------------------------------------------------------------------------------
local function header(req, name)
  return req.headers and req.headers[name]
end

-- Decoded from the raw query string as Go's url.ParseQuery does ("+" is a space; kubectl sends
-- "parity+in+(odd)"), the last value of a repeated name winning.
local function parse_params(req)
  if req.query == nil then return req.params or {} end
  return (util.parse_form(req.query))
end

local function cn_of(cert)
  if type(cert) ~= "table" then return nil end
  if type(cert.cn) == "string" then return cert.cn end
  local subj = cert.subject
  if type(subj) == "table" then
    for _, e in ipairs(subj) do
      if e.name == "commonName" or e.name == "CN" then return e.value end
    end
    return subj.CN or subj.commonName
  end
  if type(subj) == "string" then return subj:match("CN%s*=%s*([^,/]+)") end
end

function Svc:authenticate(req)
  if self.client_cert and req.client_cert then
    local cn = cn_of(req.client_cert)
    if cn then
      for _, u in ipairs(self.users) do if u.name == cn then return u end end
      return { name = cn }
    end
  end
  local auth = header(req, "authorization")
  if type(auth) ~= "string" then return nil end
  local tok = util.bearer(req)
  if tok then
    for _, u in ipairs(self.users) do if u.token and u.token == tok then return u end end
    return nil
  end
  local basic = auth:match("^[Bb][Aa][Ss][Ii][Cc]%s+(%S+)%s*$")
  if basic then
    local pair = b64decode(basic)
    local user, pw = (pair or ""):match("^([^:]*):(.*)$")
    for _, u in ipairs(self.users) do
      if user and u.password and u.name == user and u.password == pw then return u end
    end
  end
  return nil
end

function Svc:rate_limited()
  local rl = self.rate_limit
  if not rl then return false end
  local b, t = self.bucket, now()
  local qps, burst = rl.qps or 1, rl.burst or rl.qps or 1
  b.tokens = math.min(burst, b.tokens + (t - b.at) * qps)
  b.at = t
  if b.tokens >= 1 then b.tokens = b.tokens - 1; return false end
  return true
end

local function discovery_resources()
  local list = {}
  for _, res in ipairs(RESOURCE_ORDER) do
    local r = RESOURCES[res]
    list[#list + 1] = { name = res, singularName = r.singular, namespaced = r.namespaced, kind = r.kind,
                        verbs = json.array(P.copy(r.verbs or ALL_VERBS)),
                        shortNames = r.short and json.array(P.copy(r.short)) or nil,
                        categories = r.categories and json.array(P.copy(r.categories)) or nil }
  end
  return json.array(list)
end

-- A minimal OpenAPI v3 document: enough for kubectl's check that the server validates fields itself
-- (fieldValidation=Strict), so that `kubectl create -f` and `kubectl apply` need no client-side schema.
local function openapi_v3_root()
  return { paths = { ["api/v1"] = { serverRelativeURL = "/openapi/v3/api/v1?hash=" .. "0001" } } }
end

local function openapi_v3_core()
  local paths = {}
  local param = json.array({ { name = "fieldValidation", ["in"] = "query", schema = { type = "string" },
                               description = "Strict, Warn or Ignore" },
                             { name = "dryRun", ["in"] = "query", schema = { type = "string" } },
                             { name = "fieldManager", ["in"] = "query", schema = { type = "string" } } })
  for _, res in ipairs(RESOURCE_ORDER) do
    local r = RESOURCES[res]
    local gvk = { group = "", version = "v1", kind = r.kind }
    local function op(action)
      return { operationId = action .. r.kind, ["x-kubernetes-action"] = action,
               ["x-kubernetes-group-version-kind"] = gvk, parameters = param,
               responses = { ["200"] = { description = "OK" } } }
    end
    local coll = r.namespaced and ("/api/v1/namespaces/{namespace}/" .. res) or ("/api/v1/" .. res)
    paths[coll] = { get = op("list"), post = op("post") }
    paths[coll .. "/{name}"] = { get = op("get"), put = op("put"), patch = op("patch"), delete = op("delete") }
  end
  return { openapi = "3.0.0", info = { title = "Kubernetes (pullsecret simulator)", version = "v1.32.0" },
           paths = paths, components = { schemas = {} } }
end

local function wants_table(req)
  local accept = header(req, "accept") or ""
  return accept:find("as=Table", 1, true) ~= nil
end

local function split_path(path)
  local parts = {}
  for seg in path:gmatch("[^/]+") do parts[#parts + 1] = seg end
  return parts
end

local as_table

local VERB_OF = { GET = "get", POST = "create", PUT = "update", PATCH = "patch", DELETE = "delete" }

function Svc:handle(req)
  self.requests = self.requests + 1
  local path = (req.path or "/"):gsub("%?.*$", "")
  local params = parse_params(req)

  local ctype = (header(req, "content-type") or ""):lower()
  if ctype:find("protobuf", 1, true) then
    return status(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
      .. "accepted media types include: application/json, application/yaml, application/apply-patch+yaml, "
      .. "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json")
  end
  local accept = (header(req, "accept") or ""):lower()
  if accept ~= "" and not accept:find("json", 1, true) and not accept:find("*/*", 1, true)
    and not accept:find("yaml", 1, true) then
    return status(406, "NotAcceptable", "only the following media types are accepted: application/json")
  end

  if self:rate_limited() then
    local ra = tostring(self.rate_limit.retry_after or 1)
    return status(429, "TooManyRequests", "Too many requests, please try again later.",
      { retryAfterSeconds = tonumber(ra) }, { ["Retry-After"] = ra })
  end

  local user = self:authenticate(req)
  if not user then
    return status(401, "Unauthorized", "Unauthorized")
  end
  self.last_user = user.name

  if path == "/version" then
    return respond(200, { major = "1", minor = "32", gitVersion = "v1.32.0-pullsecret-sim",
      gitCommit = "0000000000000000000000000000000000000000", gitTreeState = "clean",
      buildDate = "2026-01-01T00:00:00Z", goVersion = "go1.23.0", compiler = "gc", platform = "linux/amd64" })
  elseif path == "/healthz" or path == "/livez" or path == "/readyz" then
    return util.response(200, "text/plain", "ok")
  elseif path == "/api" then
    return respond(200, { kind = "APIVersions", versions = json.array({ "v1" }),
      serverAddressByClientCIDRs = json.array({ { clientCIDR = "0.0.0.0/0",
        serverAddress = (req.base_url or ""):gsub("^https?://", "") } }) })
  elseif path == "/apis" then
    return respond(200, { kind = "APIGroupList", apiVersion = "v1", groups = json.array({}) })
  elseif path == "/openapi/v3" then
    return respond(200, openapi_v3_root())
  elseif path == "/openapi/v3/api/v1" then
    return respond(200, openapi_v3_core())
  elseif path == "/api/v1" then
    return respond(200, { kind = "APIResourceList", groupVersion = "v1", resources = discovery_resources() })
  end

  local parts = split_path(path)
  if parts[1] ~= "api" or parts[2] ~= "v1" then
    return status(404, "NotFound", "the server could not find the requested resource", {})
  end
  local ns, res, name, sub
  if parts[3] == "namespaces" and #parts >= 5 then
    ns, res, name, sub = parts[4], parts[5], parts[6], parts[7]
  else
    res, name, sub = parts[3], parts[4], parts[5]
  end
  local r = RESOURCES[res]
  if not r or sub or #parts > 7 then
    return status(404, "NotFound", "the server could not find the requested resource", {})
  end
  if not r.namespaced and ns then
    return status(404, "NotFound", "the server could not find the requested resource", {})
  end

  local verb = VERB_OF[req.method]
  local not_allowed = "the server does not allow this method on the requested resource"
  if not verb then return status(405, "MethodNotAllowed", not_allowed) end
  if req.method == "GET" and not name then verb = "list" end
  if req.method == "DELETE" and not name then verb = "deletecollection" end
  if req.method == "POST" and name then
    return status(405, "MethodNotAllowed", not_allowed)
  end
  if (req.method == "PUT" or req.method == "PATCH") and not name then
    return status(405, "MethodNotAllowed", not_allowed)
  end
  if params.watch == "true" or params.watch == "1" then
    return status(405, "MethodNotAllowed", "watch is not supported by the simulator")
  end

  if user.read_only and verb ~= "get" and verb ~= "list" then
    local scope = r.namespaced and string.format('in the namespace "%s"', ns or "") or "at the cluster scope"
    local subject = (name and verb ~= "create") and string.format('%s "%s"', res, name) or res
    return status(403, "Forbidden", string.format(
      '%s is forbidden: User "%s" cannot %s resource "%s" in API group "" %s', subject, user.name, verb, res, scope),
      { name = name, kind = res })
  end

  local dry = params.dryRun == "All"
  if params.dryRun and params.dryRun ~= "All" and params.dryRun ~= "" then
    return bad_request("Invalid dry run value: " .. params.dryRun)
  end
  local manager = params.fieldManager
  if manager == nil or manager == "" then
    manager = (header(req, "user-agent") or "unknown"):match("^([^/%s]+)") or "unknown"
  end

  if verb == "list" then return self:list(req, res, ns, params) end
  if verb == "get" then
    local e = self:entry(res, ns, name)
    if not e then return not_found(res, name) end
    if wants_table(req) then
      local meta = { resourceVersion = e.obj.metadata.resourceVersion }
      return respond(200, as_table(res, { self:render(e, false) }, meta))
    end
    return respond(200, self:render(e, true))
  end
  if verb == "deletecollection" then return self:delete_collection(res, ns, params, dry) end
  if verb == "delete" then return self:delete(res, ns, name, dry) end

  local body = req.body or ""
  local strict = params.fieldValidation == "Strict"
  if verb == "create" then
    local obj, bad = self:decode_object(body, ctype, res, strict)
    if not obj then return bad end
    if obj.metadata.namespace and r.namespaced and obj.metadata.namespace ~= ns then
      return bad_request("the namespace of the provided object does not match the namespace sent on the request")
    end
    local e, resp = self:create_internal(res, ns, obj, manager, { dry = dry })
    if not e then return resp end
    return respond(201, self:render(e, true))
  elseif verb == "update" then
    local obj, bad = self:decode_object(body, ctype, res, strict)
    if not obj then return bad end
    return self:update(res, ns, name, obj, manager, dry, nil)
  else
    return self:patch(res, ns, name, ctype, body, manager, dry, params)
  end
end

local function decode_yaml(body)
  local ok, lyaml = pcall(require, "lyaml")
  if not ok then return nil, "YAML is not supported (lyaml missing)" end
  local ok2, doc = pcall(lyaml.load, body)
  if not ok2 then return nil, tostring(doc) end
  local function conv(v)
    if v == lyaml.null then return json.null end
    if type(v) ~= "table" then return v end
    local n, count = #v, 0
    for _ in pairs(v) do count = count + 1 end
    local out = {}
    for k, x in pairs(v) do out[k] = conv(x) end
    if n > 0 and n == count then return json.array(out) end
    return out
  end
  return conv(doc)
end

local function decode_body(body, ctype)
  local doc, why = json.decode(body)
  if doc == nil and (ctype:find("yaml", 1, true)) then doc, why = decode_yaml(body) end
  return doc, why
end

-- The object of a create or update body: obj | nil, a 400 response (`strict`: unknown fields too).
function Svc.decode_object(_, body, ctype, res, strict)
  local obj, why = decode_body(body, ctype)
  if not P.is_map(obj) then
    return nil, bad_request("the object provided is unrecognized: " .. tostring(why or "not a JSON object"))
  end
  P.strip_nulls(obj)
  local kind = RESOURCES[res].kind
  if obj.kind ~= nil and obj.kind ~= kind then
    return nil, bad_request(string.format("the kind in the data (%s) does not match the expected kind (%s)",
      tostring(obj.kind), kind))
  end
  if obj.apiVersion ~= nil and obj.apiVersion ~= "v1" then
    return nil, bad_request(string.format(
      "the API version in the data (%s) does not match the expected API version (v1)", tostring(obj.apiVersion)))
  end
  obj.metadata = P.is_map(obj.metadata) and obj.metadata or {}
  local unknown = strict and strict_check(res, obj)
  if unknown then return nil, bad_request(unknown) end
  return obj
end

function Svc:update(res, ns, name, obj, manager, dry, old_entry)
  local e = old_entry or self:entry(res, ns, name)
  if not e then return not_found(res, name) end
  local meta = obj.metadata
  if meta.name ~= nil and meta.name ~= name then
    return bad_request(string.format("the name of the object (%s) does not match the name on the URL (%s)",
      meta.name, name))
  end
  if RESOURCES[res].namespaced and meta.namespace ~= nil and meta.namespace ~= ns then
    return bad_request("the namespace of the provided object does not match the namespace sent on the request")
  end
  local rv = meta.resourceVersion
  if rv ~= nil and rv ~= "" and rv ~= e.obj.metadata.resourceVersion then
    return status(409, "Conflict", string.format('Operation cannot be fulfilled on %s "%s": '
      .. 'the object has been modified; please apply your changes to the latest version and try again', res, name),
      { name = name, kind = res })
  end
  meta.name, meta.uid, meta.creationTimestamp = name, e.obj.metadata.uid, e.obj.metadata.creationTimestamp
  meta.managedFields, meta.resourceVersion = nil, e.obj.metadata.resourceVersion
  if RESOURCES[res].namespaced then meta.namespace = ns end
  obj.apiVersion, obj.kind = "v1", RESOURCES[res].kind
  if res == "namespaces" or res == "pods" then obj.status = P.copy(e.obj.status) end
  normalise(res, obj)
  local bad = validate(res, obj, e.obj)
  if bad then return bad end
  local managers = update_managers(e.managers, e.obj, obj, manager)
  if P.equal(obj, e.obj) then
    return respond(200, self:render(e, true))   -- no-op update: nothing written
  end
  local ne = self:store(res, { obj = obj, managers = managers }, dry)
  return respond(200, self:render(ne, true))
end

local PATCH_TYPES = {
  ["application/apply-patch+yaml"] = "apply",
  ["application/merge-patch+json"] = "merge",
  ["application/strategic-merge-patch+json"] = "strategic",
  ["application/json-patch+json"] = "json",
}

function Svc:patch(res, ns, name, ctype, body, manager, dry, params)
  local ptype = PATCH_TYPES[ctype:match("^[^;%s]+") or ""]
  if not ptype then
    return status(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
      .. "accepted media types include: application/json-patch+json, application/merge-patch+json, "
      .. "application/apply-patch+yaml, application/strategic-merge-patch+json")
  end
  local doc, why = decode_body(body, ptype == "apply" and "yaml" or "json")
  if doc == nil then return bad_request("error decoding patch: " .. tostring(why)) end
  local strict = params.fieldValidation == "Strict"
  if ptype == "apply" then
    local unknown = strict and P.is_map(doc) and strict_check(res, doc)
    if unknown then return bad_request(unknown) end
    if params.fieldManager == nil or params.fieldManager == "" then
      return bad_request("PATCH requests with apply-patch+yaml content type require a fieldManager")
    end
    return self:apply(res, ns, name, doc, params.fieldManager, params.force == "true", dry)
  end
  local e = self:entry(res, ns, name)
  if not e then return not_found(res, name) end
  local current = self:render(e, true)
  current.metadata.managedFields = nil
  local new
  if ptype == "merge" then new, why = P.merge_patch(current, doc)
  elseif ptype == "strategic" then new, why = P.strategic_patch(current, doc, RESOURCES[res].kind)
  else new, why = P.json_patch(current, doc) end
  if not new then
    if ptype == "json" then return status(422, "Invalid", tostring(why)) end
    return bad_request(tostring(why))
  end
  P.strip_nulls(new)
  local unknown = strict and strict_check(res, new)
  if unknown then return bad_request(unknown) end
  new.metadata = P.is_map(new.metadata) and new.metadata or {}
  if new.metadata.name ~= nil and new.metadata.name ~= name then
    return bad_request(string.format("the name of the object (%s) does not match the name on the URL (%s)",
      tostring(new.metadata.name), name))
  end
  return self:update(res, ns, name, new, manager, dry, e)
end

function Svc:apply(res, ns, name, doc, manager, force, dry)
  local kind = RESOURCES[res].kind
  if not P.is_map(doc) then return bad_request("an apply patch must be an object") end
  P.strip_nulls(doc)
  if doc.kind ~= kind or doc.apiVersion ~= "v1" then
    return bad_request(string.format("the apply patch must name apiVersion v1 and kind %s (got %s %s)",
      kind, tostring(doc.apiVersion), tostring(doc.kind)))
  end
  doc.metadata = P.is_map(doc.metadata) and doc.metadata or {}
  if doc.metadata.managedFields ~= nil then
    return bad_request("metadata.managedFields must be nil")
  end
  if doc.metadata.name ~= nil and doc.metadata.name ~= name then
    return bad_request(string.format("the name of the object (%s) does not match the name on the URL (%s)",
      tostring(doc.metadata.name), name))
  end
  if RESOURCES[res].namespaced and doc.metadata.namespace ~= nil and doc.metadata.namespace ~= ns then
    return bad_request("the namespace of the provided object does not match the namespace sent on the request")
  end
  if res == "secrets" and P.is_map(doc.stringData) then normalise(res, doc); doc.type = doc.type end
  local leaves = P.leaves(doc)
  local fields = {}
  for k, leaf in pairs(leaves) do fields[k] = leaf.path end

  local e = self:entry(res, ns, name)
  if not e then
    local obj = P.copy(doc)
    obj.metadata.name = name
    local ne, resp = self:create_internal(res, ns, obj, manager, { dry = dry, apply_fields = fields })
    if not ne then return resp end
    return respond(201, self:render(ne, true))
  end

  local old = e.obj
  local managers = P.copy(e.managers or {})
  local conflicts = {}
  for k, leaf in pairs(leaves) do
    for m, info in pairs(managers) do
      if m ~= manager and info.fields[k] and not P.equal(P.get_path(old, leaf.path), leaf.value) then
        conflicts[#conflicts + 1] = { manager = m, field = P.display(leaf.path) }
      end
    end
  end
  if #conflicts > 0 and not force then
    table.sort(conflicts, function(a, b) return a.field < b.field end)
    local causes, parts = {}, {}
    for i, c in ipairs(conflicts) do
      causes[i] = { reason = "FieldManagerConflict", message = string.format('conflict with "%s" using v1', c.manager),
                    field = c.field }
      parts[i] = string.format('conflict with "%s" using v1: %s', c.manager, c.field)
    end
    return status(409, "Conflict", string.format("Apply failed with %d conflict%s: %s", #conflicts,
      #conflicts == 1 and "" or "s", table.concat(parts, "; ")),
      { name = name, kind = res, causes = json.array(causes) })
  end
  if force then
    for _, c in ipairs(conflicts) do
      for k in pairs(leaves) do
        if P.display(leaves[k].path) == c.field then managers[c.manager].fields[k] = nil end
      end
    end
  end
  local new = P.copy(old)
  local mine = managers[manager]
  if mine then
    for k, path in pairs(mine.fields) do
      local owned_by_other = false
      for m, info in pairs(managers) do
        if m ~= manager and info.fields[k] then owned_by_other = true end
      end
      if not leaves[k] and not owned_by_other then P.del_path(new, path) end
    end
  end
  for _, leaf in pairs(leaves) do P.set_path(new, leaf.path, leaf.value) end
  local changed_any = not P.equal(new, old)
  local same_fields = mine and managers_equal({ x = mine }, { x = { operation = "Apply", fields = fields } })
  managers[manager] = { operation = "Apply", fields = fields,
                        time = (same_fields and not changed_any) and mine.time or rfc3339() }
  for m, info in pairs(managers) do
    if next(info.fields) == nil then managers[m] = nil end
  end
  normalise(res, new)
  local bad = validate(res, new, old)
  if bad then return bad end
  if P.equal(new, old) and managers_equal(managers, e.managers or {}) then
    return respond(200, self:render(e, true))          -- nothing changed: no write, same resourceVersion
  end
  local ne = self:store(res, { obj = new, managers = managers }, dry)
  return respond(200, self:render(ne, true))
end

function Svc:delete_object(res, ns, name)
  self.objects[res][key_of(res, ns, name)] = nil
  if res == "namespaces" then
    for r, store in pairs(self.objects) do
      if RESOURCES[r].namespaced then
        for k in pairs(store) do
          if k:sub(1, #name + 1) == name .. "/" then store[k] = nil end
        end
      end
    end
  end
  self.rv = self.rv + 1
  self.writes = self.writes + 1
end

function Svc:delete(res, ns, name, dry)
  local e = self:entry(res, ns, name)
  if not e then return not_found(res, name) end
  local obj = self:render(e, true)
  if not dry then self:delete_object(res, ns, name) end
  if res == "namespaces" then
    obj.status = { phase = "Terminating" }
    obj.metadata.deletionTimestamp = rfc3339()
  end
  return respond(200, obj)
end

function Svc:select(res, ns, params)
  local lmatch, why = S.labels(params.labelSelector)
  if not lmatch then return nil, bad_request("unable to parse requirement: " .. why) end
  local fmatch
  fmatch, why = S.fields(params.fieldSelector, RESOURCES[res].fields or {})
  if not fmatch then return nil, bad_request(why) end
  local keys = {}
  for k, e in pairs(self.objects[res]) do
    if (ns == nil or e.obj.metadata.namespace == ns) and lmatch(e.obj.metadata.labels) and fmatch(e.obj) then
      keys[#keys + 1] = k
    end
  end
  table.sort(keys)
  return keys
end

function Svc:delete_collection(res, ns, params, dry)
  local keys, bad = self:select(res, ns, params)
  if not keys then return bad end
  local items = {}
  for _, k in ipairs(keys) do
    local e = self.objects[res][k]
    items[#items + 1] = self:render(e, false)
    if not dry then self:delete_object(res, e.obj.metadata.namespace, e.obj.metadata.name) end
  end
  return respond(200, { kind = RESOURCES[res].kind .. "List", apiVersion = "v1",
    metadata = { resourceVersion = tostring(self.rv) }, items = json.array(items) })
end

local function age(ts)
  if type(ts) ~= "string" then return "<unknown>" end
  local y, mo, d, h, mi, s = ts:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)Z$")
  if not y then return "<unknown>" end
  local t = os.time({ year = y, month = mo, day = d, hour = h, min = mi, sec = s, isdst = false })
  local offset = os.time(os.date("!*t", 0)) -- local/UTC skew
  local secs = math.max(0, os.time() - (t - offset))
  if secs < 120 then return secs .. "s" end
  if secs < 7200 then return (secs // 60) .. "m" end
  return (secs // 3600) .. "h"
end

local function table_row(res, obj)
  local name, created = obj.metadata.name, obj.metadata.creationTimestamp
  if res == "secrets" then
    local n = 0
    for _ in pairs(obj.data or {}) do n = n + 1 end
    return { name, obj.type, n, age(created) }
  elseif res == "serviceaccounts" then
    return { name, 0, age(created) }
  elseif res == "pods" then
    local n = json.is_array(obj.spec and obj.spec.containers) and #obj.spec.containers or 0
    return { name, "0/" .. n, obj.status and obj.status.phase or "Pending", 0, age(created) }
  elseif res == "namespaces" then
    return { name, obj.status and obj.status.phase or "Active", age(created) }
  end
  return { name, age(created) }
end

local TABLE_COLUMNS = {
  secrets = { { "Name", "string" }, { "Type", "string" }, { "Data", "integer" }, { "Age", "string" } },
  serviceaccounts = { { "Name", "string" }, { "Secrets", "integer" }, { "Age", "string" } },
  pods = { { "Name", "string" }, { "Ready", "string" }, { "Status", "string" }, { "Restarts", "integer" },
           { "Age", "string" } },
  namespaces = { { "Name", "string" }, { "Status", "string" }, { "Age", "string" } },
}

function as_table(res, objs, meta)
  local cols = {}
  for i, c in ipairs(TABLE_COLUMNS[res] or { { "Name", "string" }, { "Age", "string" } }) do
    cols[i] = { name = c[1], type = c[2], format = c[1] == "Name" and "name" or "", description = c[1], priority = 0 }
  end
  local rows = {}
  for i, o in ipairs(objs) do
    rows[i] = { cells = json.array(table_row(res, o)),
                object = { kind = "PartialObjectMetadata", apiVersion = "meta.k8s.io/v1", metadata = o.metadata } }
  end
  return { kind = "Table", apiVersion = "meta.k8s.io/v1", metadata = meta,
           columnDefinitions = json.array(cols), rows = json.array(rows) }
end

function Svc:list(req, res, ns, params)
  local keys, bad = self:select(res, ns, params)
  if not keys then return bad end
  local start = 1
  if params.continue and params.continue ~= "" then
    local after = b64decode(params.continue)
    if not after then
      return status(400, "BadRequest", "continue key is not valid: illegal base64 data")
    end
    start = #keys + 1
    for i, k in ipairs(keys) do
      if k > after then start = i; break end
    end
  end
  local limit = tonumber(params.limit)
  if limit and limit <= 0 then limit = nil end
  local stop = limit and math.min(#keys, start + limit - 1) or #keys
  local items = {}
  for i = start, stop do items[#items + 1] = self:render(self.objects[res][keys[i]], false) end
  local meta = { resourceVersion = tostring(self.rv) }
  if stop < #keys then
    meta.continue = b64encode(keys[stop])
    meta.remainingItemCount = #keys - stop
  end
  if wants_table(req) then return respond(200, as_table(res, items, meta)) end
  return respond(200, { kind = RESOURCES[res].kind .. "List", apiVersion = "v1", metadata = meta,
                        items = json.array(items) })
end

--- A JSON-able snapshot for specs.
function Svc:state()
  local objects = {}
  for res, store in pairs(self.objects) do
    objects[res] = {}
    for k, e in pairs(store) do objects[res][k] = self:render(e, true) end
  end
  return { resource_version = self.rv, writes = self.writes, requests = self.requests,
           last_user = self.last_user, objects = objects }
end

return M
