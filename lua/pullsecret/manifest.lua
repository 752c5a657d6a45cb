--- Steps 6 and 7 of the procedure: the docker-registry pull secret, byte for byte as kubectl
-- builds it, and pod manifests rendered from templates with `<placeholder>` fields.
--
--     local manifest = require "pullsecret.manifest"
--
--     -- step 6: kubectl --namespace apps create secret docker-registry regcred
--     --           --docker-server=registry.example.com --docker-username=token ...
--     local secret, json = manifest.pull_secret{ name = "regcred", namespace = "apps",
--       server = "registry.example.com", username = "token", password = token, email = "a@b.c" }
--     -- secret: the Secret as a Lua table (apply it); json: what `--dry-run=client -o json` prints
--     local bytes = manifest.dockerconfigjson{ server = "registry.example.com",
--       username = "token", password = token }      -- the .dockerconfigjson value, not base64'd
--
--     -- step 7: the seed's mypod.yaml
--     local pod, yaml_text = manifest.render(manifest.SEED_POD_TEMPLATE, {
--       pod_name = "mypod", container_name = "app", dedicated_domain = "example.com",
--       my_namespace = "team", my_image = "web", secret_name = "regcred" })  -- tag: latest
--     print(manifest.to_yaml(pod))          -- apiVersion, kind, metadata, then the rest
--     local body = manifest.json_encode(pod) -- compact JSON for API request bodies
--
-- Every function returns `nil, err` (err.kind == "input", err.field names the culprit) on
-- bad input, and raises only on programming errors (a non-table option argument...).
-- No password or token ever appears in an error message.
--
-- JSON: `json_encode(v [, {indent = "    "}])` is pullsecret.json's encoder writing strings the
-- way Go's encoding/json does (`<>&` U+2028 U+2029 as \u escapes, "/" unescaped, invalid UTF-8
-- as \ufffd), integers as integers, `yaml.null` as null, keys in `pullsecret.yaml.keys` order
-- (an order set with `manifest.object(t, keys)`, else apiVersion/kind/metadata first, then name,
-- namespace, labels, annotations, spec, data, ... then sorted). Mark empty lists with
-- `manifest.array{}`.
local core = require "pullsecret.core"
local errors = require "pullsecret.errors"
local json = require "pullsecret.json"
local yaml = require "pullsecret.yaml"

local M = {}

M.DEFAULT_SERVER = "https://index.docker.io/v1/"
M.SECRET_TYPE = "kubernetes.io/dockerconfigjson"
M.null = yaml.null
M.array = yaml.array
M.object = yaml.object

--- The seed's mypod.yaml (step 7), placeholders and all.
M.SEED_POD_TEMPLATE = [[
apiVersion: v1
kind: Pod
metadata:
  name: <pod_name>
spec:
  containers:
    - name: <container_name>
      image: registry.<dedicated_domain>/<my_namespace>/<my_image>:<tag>
  imagePullSecrets:
    - name: <secret_name>
]]

local function input(field, message)
  return errors.new("input", message, { field = field })
end

local function check_type(fname, opts, field, want)
  local v = opts[field]
  if v ~= nil and type(v) ~= want then
    error(string.format("%s: %s must be a %s, got %s", fname, field, want, type(v)), 3)
  end
end

---------------------------------------------------------------------------------------------
-- Names
---------------------------------------------------------------------------------------------

local function dns_label_ok(s, max)
  if #s == 0 or #s > (max or 63) then return false end
  return s:find("^[a-z0-9]$") ~= nil or s:find("^[a-z0-9][-a-z0-9]*[a-z0-9]$") ~= nil
end

--- True when `s` is a DNS-1123 label (namespaces, container names): at most 63 of a-z 0-9 -,
-- starting and ending with a letter or digit.
function M.is_dns1123_label(s)
  return type(s) == "string" and dns_label_ok(s)
end

--- True when `s` is a DNS-1123 subdomain (secret, pod names): at most 253 characters,
-- dot-separated parts of a-z 0-9 - each starting and ending with a letter or digit.
function M.is_dns1123_subdomain(s)
  if type(s) ~= "string" or #s == 0 or #s > 253 then return false end
  for part in (s .. "."):gmatch("([^.]*)%.") do
    if not dns_label_ok(part, 253) then return false end
  end
  return true
end

local function shown(s)
  if #s > 80 then s = s:sub(1, 77) .. "..." end
  return string.format("%q", s):gsub("\\\n", "\\n")
end

--- Checks a name the API server will check; returns nil, err (input) naming `field`.
-- @param what "subdomain" | "label"
function M.check_name(field, value, what)
  if type(value) ~= "string" or value == "" then
    return nil, input(field, field .. " is missing: pass " .. field .. " = \"...\"")
  end
  if what == "label" then
    if dns_label_ok(value) then return true end
    return nil, input(field, string.format("%s %s is not a valid DNS-1123 label: use at most 63 "
      .. "lowercase letters, digits and '-', starting and ending with a letter or digit", field, shown(value)))
  end
  if M.is_dns1123_subdomain(value) then return true end
  return nil, input(field, string.format("%s %s is not a valid DNS-1123 subdomain: use at most 253 "
    .. "lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit",
    field, shown(value)))
end

-- opts.name as a DNS-1123 subdomain and opts.namespace, when given, as a label: true | nil, err.
local function check_name_and_namespace(opts)
  local ok, err = M.check_name("name", opts.name, "subdomain")
  if ok and opts.namespace ~= nil then ok, err = M.check_name("namespace", opts.namespace, "label") end
  return ok, err
end

---------------------------------------------------------------------------------------------
-- JSON
---------------------------------------------------------------------------------------------

--- Deterministic JSON text for `v`.
-- @param opts optional { indent = "    " } for Go MarshalIndent-style output (no final newline)
-- @return text | nil, err (input: a function, NaN, a self-containing table...)
function M.json_encode(v, opts)
  local indent = opts and opts.indent
  if indent ~= nil and type(indent) ~= "string" then error("json_encode: indent must be a string", 2) end
  local text, why = json.encode(v, { indent = indent, order = yaml.keys, quote = core.go_json_string })
  if not text then return nil, input("json", "cannot encode as JSON: " .. why:gsub("^value%.?", "")) end
  return text
end

---------------------------------------------------------------------------------------------
-- Step 6: the docker-registry secret
---------------------------------------------------------------------------------------------

local function registry_fields(fname, opts)
  if type(opts) ~= "table" then error(fname .. ": expected an option table", 3) end
  for _, f in ipairs { "server", "username", "password", "email" } do check_type(fname, opts, f, "string") end
  local server = opts.server
  if server == nil then server = M.DEFAULT_SERVER end
  if server == "" then
    return nil, input("server", "server is empty: pass the registry host (e.g. registry.example.com) "
      .. "or leave it out for Docker Hub (" .. M.DEFAULT_SERVER .. ")")
  end
  if opts.username == nil or opts.username == "" then
    return nil, input("username", "username is missing: pass username = \"token\" (registry token), "
      .. "\"iamapikey\" (IBM Cloud API key) or the registry user")
  end
  if opts.password == nil or opts.password == "" then
    return nil, input("password", "password is missing or empty: pass the registry token, API key or password")
  end
  return server
end

--- The `.dockerconfigjson` bytes kubectl's `create secret docker-registry` builds:
-- {"auths":{SERVER:{"username":U,"password":P,"email":E,"auth":base64(U:P)}}}, empty email
-- left out, strings escaped as Go's encoding/json does.
-- @param opts { server = (default Docker Hub), username =, password =, email = }
-- @return string | nil, err
function M.dockerconfigjson(opts)
  local server, err = registry_fields("dockerconfigjson", opts)
  if not server then return nil, err end
  local parts = {
    '"username":' .. core.go_json_string(opts.username),
    '"password":' .. core.go_json_string(opts.password),
  }
  if opts.email and opts.email ~= "" then parts[#parts + 1] = '"email":' .. core.go_json_string(opts.email) end
  parts[#parts + 1] = '"auth":"' .. core.b64encode(opts.username .. ":" .. opts.password) .. '"'
  return '{"auths":{' .. core.go_json_string(server) .. ":{" .. table.concat(parts, ",") .. "}}}"
end

--- The Secret kubectl `--namespace NS create secret docker-registry NAME ... --dry-run=client
-- -o json` prints.
-- @param opts { name =, namespace = (optional, as kubectl without --namespace), server =,
--   username =, password =, email = }
-- @return secret (Lua table, for the API: no creationTimestamp), json_text (kubectl's exact
--   output, with "creationTimestamp": null and the final newline) | nil, err
function M.pull_secret(opts)
  if type(opts) ~= "table" then error("pull_secret: expected an option table", 2) end
  check_type("pull_secret", opts, "name", "string")
  check_type("pull_secret", opts, "namespace", "string")
  local ok, err = check_name_and_namespace(opts)
  if not ok then return nil, err end
  local config
  config, err = M.dockerconfigjson(opts)
  if not config then return nil, err end
  local data = core.b64encode(config)

  local function build(with_timestamp)
    local keys = { "name" }
    local md = { name = opts.name }
    if opts.namespace then md.namespace = opts.namespace; keys[#keys + 1] = "namespace" end
    if with_timestamp then md.creationTimestamp = yaml.null; keys[#keys + 1] = "creationTimestamp" end
    return yaml.object({
      kind = "Secret", apiVersion = "v1",
      metadata = yaml.object(md, keys),
      data = yaml.object({ [".dockerconfigjson"] = data }),
      type = M.SECRET_TYPE,
    }, { "kind", "apiVersion", "metadata", "data", "type" })
  end
  local text = assert(M.json_encode(build(true), { indent = "    " })) .. "\n"
  return build(false), text
end

---------------------------------------------------------------------------------------------
-- Step 7: pods
---------------------------------------------------------------------------------------------

local function has_tag_or_digest(image)
  if image:find("@", 1, true) then return true end
  local last = image:match("([^/]*)$")
  return last:find(":", 1, true) ~= nil
end

--- The seed's mypod.yaml as a table: one container, the given imagePullSecrets.
-- @param opts { name =, namespace = (optional), container = (default: name), image =,
--   pull_secrets = "name" | { "name", ... } }. An image without tag or digest gets ":latest".
-- @return pod | nil, err
function M.pod(opts)
  if type(opts) ~= "table" then error("pod: expected an option table", 2) end
  for _, f in ipairs { "name", "namespace", "container", "image" } do check_type("pod", opts, f, "string") end
  local ok, err = check_name_and_namespace(opts)
  if not ok then return nil, err end
  local container = opts.container or opts.name
  ok, err = M.check_name("container", container, "label")
  if not ok then return nil, err end
  local image = opts.image
  if image == nil or image == "" or image:find("%s") then
    return nil, input("image", "image is missing or holds white space: "
      .. "pass image = \"registry.example.com/ns/app:tag\"")
  end
  if not has_tag_or_digest(image) then image = image .. ":latest" end
  local secrets = opts.pull_secrets
  if type(secrets) == "string" then secrets = { secrets } end
  if secrets ~= nil and type(secrets) ~= "table" then error("pod: pull_secrets must be a string or a list", 2) end
  local refs = yaml.array {}
  for i, s in ipairs(secrets or {}) do
    ok, err = M.check_name("pull_secrets[" .. i .. "]", s, "subdomain")
    if not ok then return nil, err end
    refs[#refs + 1] = yaml.object({ name = s }, { "name" })
  end
  local md, mkeys = { name = opts.name }, { "name" }
  if opts.namespace then md.namespace = opts.namespace; mkeys[2] = "namespace" end
  local spec = yaml.object({
    containers = yaml.array { yaml.object({ name = container, image = image }, { "name", "image" }) },
  }, { "containers", "imagePullSecrets" })
  if #refs > 0 then spec.imagePullSecrets = refs end
  return yaml.object({ apiVersion = "v1", kind = "Pod", metadata = yaml.object(md, mkeys), spec = spec },
                     { "apiVersion", "kind", "metadata", "spec" })
end

---------------------------------------------------------------------------------------------
-- Templates
---------------------------------------------------------------------------------------------

local PLACEHOLDER = "<([%a_][%w_%-]*)>"

local function template_error(line, message, fields)
  fields = fields or {}
  fields.line = line
  fields.field = fields.field or "template"
  return errors.new("input", (line and ("template line " .. line .. ": ") or "template: ") .. message, fields)
end

-- byte offset (1-based) of each character index (0-based, as libyaml counts) of `s`
local function char_offsets(s)
  local offs, i = {}, 0
  for p in utf8.codes(s) do offs[i] = p; i = i + 1 end
  offs[i] = #s + 1
  return offs
end

--- Fills the `<placeholder>` fields of a YAML template and checks the result is one
-- Kubernetes object.
--
-- Each scalar holding a placeholder is rewritten as a whole, quoted as YAML needs so that it
-- reads back as exactly the filled-in string (`yes`, `1.0`, `: x`, `~`, quotes, newlines...
-- stay strings; `image: registry.<dedicated_domain>/<my_image>:<tag>` is one scalar). To get
-- a number instead, tag the scalar: `replicas: !!int <replicas>`. A missing or empty `tag`
-- means `latest`. Placeholders in comments are left alone.
-- @param template string
-- @param values { name = "value" | number, ... } (every placeholder needs one; no extras)
-- @param opts optional { allow_unused = false, keep = { "name", ... } (left as written) }
-- @return object (ordered table), yaml_text (the filled-in template) | nil, err (kind input,
--   err.field = "values.<name>" or "template", err.line when a line is to blame)
function M.render(template, values, opts)
  if type(template) ~= "string" then error("render: template must be a string", 2) end
  if type(values) ~= "table" then error("render: values must be a table", 2) end
  opts = opts or {}
  local keep = {}
  for _, k in ipairs(opts.keep or {}) do keep[k] = true end

  local vals = {}
  for k, v in pairs(values) do
    if type(k) ~= "string" then error("render: value names must be strings", 2) end
    if type(v) == "number" then v = json.number_text(v) or tostring(v) end
    if type(v) ~= "string" then
      return nil, input("values." .. k, string.format("value for <%s> must be a string, got a %s", k, type(v)))
    end
    local _, why = yaml.quote(v)
    if why then return nil, input("values." .. k, string.format("value for <%s> %s", k, why)) end
    vals[k] = v
  end
  local tag_defaulted = vals.tag == nil or vals.tag == ""
  if tag_defaulted then vals.tag = "latest" end

  if template:sub(1, 3) == "\239\187\191" then template = template:sub(4) end
  if not utf8.len(template) then return nil, template_error(nil, "not valid UTF-8") end
  local syntax_ok, msg, line = yaml.check_syntax(template)
  if not syntax_ok then return nil, template_error(line, "not valid YAML: " .. msg:gsub("^line %d+: ", "")) end

  -- walk the scalars, rewrite those holding placeholders
  local offs = char_offsets(template)
  local next_event = yaml.events(template)
  local pieces, pos = {}, 1
  local used, missing, missing_list = {}, {}, {}
  while true do
    local ev = next_event()
    if not ev or ev.type == "STREAM_END" then break end
    if ev.type == "SCALAR" and ev.value:find(PLACEHOLDER) then
      local names = {}
      local filled = ev.value:gsub(PLACEHOLDER, function(name)
        if keep[name] then return nil end
        names[#names + 1] = name
        used[name] = true
        local v = vals[name]
        if v == nil then
          if not missing[name] then
            missing[name] = ev.start_mark.line + 1
            missing_list[#missing_list + 1] = name
          end
          return nil
        end
        return v
      end)
      if #names > 0 then
        local first, stop = offs[ev.start_mark.index], offs[ev.end_mark.index]
        local raw = template:sub(first, stop - 1)
        local props = ""
        if ev.tag or ev.anchor then
          local p = raw:match("^([!&][^%s]*%s+)")
          while p do
            props = props .. p
            raw = raw:sub(#p + 1)
            p = raw:match("^([!&][^%s]*%s+)")
          end
        end
        local q, why
        if ev.style == "LITERAL" or ev.style == "FOLDED" then
          q, why = yaml.double_quote(filled)
          if q and raw:sub(-1) == "\n" then q = q .. "\n" end
        else
          q, why = yaml.quote(filled)
        end
        if not q then
          local list = {}
          for _, n in ipairs(names) do list[#list + 1] = "<" .. n .. ">" end
          return nil, template_error(ev.start_mark.line + 1, "value for " .. table.concat(list, ", ") .. " is "
            .. why, { field = "values." .. names[1] })
        end
        pieces[#pieces + 1] = template:sub(pos, first - 1)
        pieces[#pieces + 1] = props .. q
        pos = stop
      end
    end
  end
  pieces[#pieces + 1] = template:sub(pos)

  if #missing_list > 0 then
    local list = {}
    for _, n in ipairs(missing_list) do list[#list + 1] = "<" .. n .. ">" end
    local n1 = missing_list[1]
    return nil, template_error(missing[n1], "no value for placeholder " .. table.concat(list, ", ")
      .. ": pass " .. n1 .. " = \"...\" in the values", { field = "values." .. n1, placeholder = n1 })
  end
  if not opts.allow_unused then
    local extra = {}
    for k in pairs(vals) do
      if not used[k] and not (k == "tag" and tag_defaulted) then extra[#extra + 1] = k end
    end
    table.sort(extra)
    if #extra > 0 then
      return nil, input("values." .. extra[1], "value given for no placeholder: <" .. table.concat(extra, ">, <")
        .. "> does not appear in the template (check the spelling, or remove it)")
    end
  end

  local text = table.concat(pieces)
  local docs
  docs, msg, line = yaml.load(text)
  if not docs then return nil, template_error(line, "filled-in template is not valid YAML: " .. msg) end
  if #docs ~= 1 then
    return nil, template_error(nil, string.format("holds %d YAML documents; render one object per template", #docs))
  end
  local obj = docs[1]
  local ok, err = M.check_object(obj)
  if not ok then return nil, err end
  return obj, text
end

--- Checks that `obj` (as `render` or `pullsecret.yaml.load` made it) is a Kubernetes object:
-- a mapping with apiVersion, kind and metadata.name strings.
-- @return true | nil, err (input, with err.line when known)
function M.check_object(obj)
  if type(obj) ~= "table" or obj == yaml.null or yaml.is_array(obj) then
    return nil, template_error(type(obj) == "table" and yaml.line(obj) or 1,
      "is not a Kubernetes object (a mapping with apiVersion, kind and metadata.name)", { field = "object" })
  end
  local top = yaml.line(obj) or 1
  for _, f in ipairs { "apiVersion", "kind" } do
    local v = obj[f]
    if type(v) ~= "string" or v == "" then
      local what = v == nil and (f .. " is missing") or (f .. " is not a string")
      return nil, template_error(yaml.line(obj, f) or top, what
        .. ": every Kubernetes object needs apiVersion, kind and metadata.name", { field = f })
    end
  end
  local md = obj.metadata
  if type(md) ~= "table" or md == yaml.null or yaml.is_array(md) then
    return nil, template_error(yaml.line(obj, "metadata") or top,
      (md == nil and "metadata is missing" or "metadata is not a mapping")
      .. ": every Kubernetes object needs metadata.name", { field = "metadata" })
  end
  local name = md.name
  if type(name) ~= "string" or name == "" then
    return nil, template_error(yaml.line(md, "name") or yaml.line(obj, "metadata") or top,
      (name == nil and "metadata.name is missing" or "metadata.name is not a non-empty string")
      .. ": every Kubernetes object needs a name", { field = "metadata.name" })
  end
  return true
end

--- Block YAML for an object, keys in conventional order (apiVersion, kind, metadata, then the
-- rest in template order or conventionally).
-- @return text | nil, err
function M.to_yaml(obj)
  local text, why = yaml.dump(obj)
  if not text then return nil, input("object", "cannot write as YAML: " .. tostring(why)) end
  return text
end

--- JSON for an object as kubectl prints it with `-o json` (4-space indent, final newline).
-- @param opts optional { indent = "  " }
-- @return text | nil, err
function M.to_json(obj, opts)
  local text, err = M.json_encode(obj, { indent = opts and opts.indent or "    " })
  if not text then return nil, err end
  return text .. "\n"
end

return M
