--- Where the Kubernetes API is and who we are there: kubeconfig files and in-cluster
-- configuration, read the way client-go (and so kubectl) reads them.
--
--     local kubeconfig = require "pullsecret.kubeconfig"
--     local cfg = assert(kubeconfig.load{ context = "prod" })   -- $KUBECONFIG or ~/.kube/config
--     local c = require("pullsecret.core").client(assert(cfg:client_options()))
--     local header = assert(cfg:auth_header())                  -- "Bearer ..." (or nil: cert only)
--     local res = c:request{ url = cfg:url("/api/v1/namespaces/" .. cfg.namespace .. "/secrets"),
--                            headers = { Authorization = header } }
--     if res.status == 401 then cfg:invalidate() end           -- the exec plugin runs again
--
-- kubeconfig.load{ kubeconfig = path, context = name, namespace = ns, env = os.getenv, home = dir,
--                  now = os.time, in_cluster_root = "" }
--   Files: `kubeconfig` alone when given; else every file of the ":"-separated `KUBECONFIG`
--   (empty and missing entries ignored, unreadable or malformed ones are errors), merged so
--   that the first file to set a value or a named cluster/user/context wins; else
--   `~/.kube/config`; else, when `KUBERNETES_SERVICE_HOST` is set, the in-cluster config.
--   Context: `context`, else `current-context`. Namespace: `namespace`, else the context's,
--   else "default". Relative paths (certificate-authority, client-certificate, client-key,
--   tokenFile, an exec command containing "/") are resolved against the file that held them.
--   `*-data` wins over the file form (kubectl refuses a file that sets both; here it is a
--   warning in cfg.warnings), `token` over `tokenFile`.
-- kubeconfig.in_cluster{ root = "" (prefix for /var/run/secrets/...), env = os.getenv, namespace = }
--   https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the service-account token
--   (re-read on every call), ca.crt, namespace from $POD_NAMESPACE, else the namespace file,
--   else "default".
--
-- The result `cfg`:
--   cfg.server, cfg.base_url (where to send requests; differs from server only with
--   tls-server-name), cfg:url(path), cfg.namespace, cfg.context_name, cfg.cluster_name,
--   cfg.user_name, cfg.source_files, cfg.in_cluster, cfg.insecure, cfg.ca_pem | cfg.ca_file,
--   cfg.tls_server_name, cfg.proxy, cfg.warnings (list of strings),
--   cfg.auth = { method = "token" | "token_file" | "basic" | "exec" | "client_cert" | "none", ... },
--   cfg.generation (bumped when an exec plugin hands out a new client certificate: rebuild TLS
--   clients when it changes).
--   cfg:client_options() -> options for core.client / http.new (runs an exec plugin that may
--     return a client certificate) | nil, err
--   cfg:auth_header() -> "Bearer <token>" | "Basic <base64>" | nil (no header) | nil, err
--   cfg:invalidate() -> forget the exec credential (call after a 401)
--   cfg:identity() -> 'user "admin" (context "prod")' for messages
-- Errors: kind "config", message "<file>: context \"x\": cluster \"y\" has no server", fields
-- file, entry, field. Tokens, passwords, keys and plugin output never appear in them.
local core = require "pullsecret.core"
local errors = require "pullsecret.errors"
local yaml = require "pullsecret.yaml"
local cjson = require "cjson.safe"

local M = {}

local EXEC_VERSIONS = {
  ["client.authentication.k8s.io/v1"] = true,
  ["client.authentication.k8s.io/v1beta1"] = true,
}
M.SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

---------------------------------------------------------------------------------------------
-- small helpers
---------------------------------------------------------------------------------------------

local function config_error(file, entry, field, message)
  local prefix = ""
  if file then prefix = file .. ": " end
  return errors.new("config", prefix .. message, { file = file, entry = entry, field = field })
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, (tostring(err):gsub("^[^:]*: ", "")) end
  local data, rerr = f:read("a")
  f:close()
  if not data then return nil, tostring(rerr) end
  return data
end

-- True unless `path` is missing (ENOENT, ENOTDIR): a file that cannot be read for another reason
-- (permission denied) is not skipped, as with client-go, and parsing it reports why.
local function exists(path)
  local f, _, code = io.open(path, "rb")
  if f then f:close() return true end
  return code ~= 2 and code ~= 20
end

local function dirname(path)
  local d = path:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

local function resolve(base_file, p)
  if p == nil or p == "" or p:sub(1, 1) == "/" then return p end
  local dir = dirname(base_file)
  if dir == "." and base_file:sub(1, 2) ~= "./" then return p end
  return dir .. "/" .. p
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- RFC 3339 ("2026-12-03T19:28:06Z", "...06.5+02:00") -> seconds since the epoch (UTC)
local function parse_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, frac, tz =
    s:match("^(%d%d%d%d)-(%d%d)-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y then return nil end
  local offset = 0
  if tz ~= "Z" and tz ~= "z" then
    local sign, oh, om = tz:match("^([+-])(%d%d):(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(oh) * 60 + tonumber(om)) * 60 * (sign == "+" and 1 or -1)
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  -- days from civil (Howard Hinnant's algorithm)
  y = (mo <= 2) and (y - 1) or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (mo + (mo > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  local t = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec) - offset
  if frac ~= "" and frac ~= "." then t = t + tonumber("0" .. frac) end
  return t
end
M.parse_time = parse_time

---------------------------------------------------------------------------------------------
-- reading one file
---------------------------------------------------------------------------------------------

local function describe(kind, name) return string.format('%s "%s"', kind, tostring(name)) end

-- type-checks the fields of `tbl` against `spec` {field = "string"|"boolean"|"table"|"list"}
local function check_fields(file, entry, tbl, spec)
  for k, v in pairs(tbl) do
    local want = spec[k]
    if want and v ~= yaml.null then
      local ok
      if want == "list" then ok = type(v) == "table" and (next(v) == nil or yaml.is_array(v))
      elseif want == "table" then ok = type(v) == "table" and not yaml.is_array(v)
      else ok = type(v) == want end
      if not ok then
        local what = ({ string = "a string (quote it)", boolean = "true or false", table = "a mapping",
                        list = "a list" })[want]
        return nil, config_error(file, entry, k, string.format("%s: %s must be %s", entry, k, what))
      end
    end
  end
  return true
end

local function value(v) if v == yaml.null then return nil end return v end

local CLUSTER_FIELDS = { server = "string", ["certificate-authority"] = "string",
  ["certificate-authority-data"] = "string", ["insecure-skip-tls-verify"] = "boolean",
  ["tls-server-name"] = "string", ["proxy-url"] = "string", ["disable-compression"] = "boolean",
  extensions = "list" }
local USER_FIELDS = { token = "string", tokenFile = "string", ["client-certificate"] = "string",
  ["client-certificate-data"] = "string", ["client-key"] = "string", ["client-key-data"] = "string",
  username = "string", password = "string", exec = "table", ["auth-provider"] = "table",
  as = "string", ["as-uid"] = "string", ["as-groups"] = "list", ["as-user-extra"] = "table",
  extensions = "list" }
local CONTEXT_FIELDS = { cluster = "string", user = "string", namespace = "string", extensions = "list" }
local EXEC_FIELDS = { apiVersion = "string", command = "string", args = "list", env = "list",
  installHint = "string", provideClusterInfo = "boolean", interactiveMode = "string" }

local function decode_data(file, entry, field, b64)
  local s = value(b64)
  if s == nil or s == "" then return nil end
  local bytes = core.b64decode((s:gsub("%s", "")))
  if not bytes then
    return nil, config_error(file, entry, field, string.format("%s: %s is not valid base64", entry, field))
  end
  return bytes
end

-- parses one kubeconfig file into { clusters = {name = entry}, users =, contexts =,
-- current_context =, file = } where each entry is { file =, fields... }
local function parse_file(path)
  local text, rerr = read_file(path)
  if not text then return nil, config_error(path, nil, nil, "cannot read: " .. rerr) end
  local out = { file = path, clusters = {}, users = {}, contexts = {} }
  if text:match("^%s*$") then return out end
  local docs, msg, line = yaml.load(text)
  if not docs then
    local err = config_error(path, nil, nil, "not valid YAML: " .. msg)
    err.line = line
    return nil, err
  end
  local doc = docs[1]
  if doc == nil or doc == yaml.null then return out end
  if type(doc) ~= "table" or yaml.is_array(doc) then
    return nil, config_error(path, nil, nil, "is not a kubeconfig (expected a mapping with clusters, users, contexts)")
  end
  if doc.kind ~= nil and doc.kind ~= yaml.null and doc.kind ~= "Config" then
    return nil, config_error(path, nil, "kind", string.format("kind is %q, expected \"Config\"", tostring(doc.kind)))
  end
  local cc = value(doc["current-context"])
  if cc ~= nil and type(cc) ~= "string" then
    return nil, config_error(path, nil, "current-context", "current-context must be a string")
  end
  out.current_context = cc ~= "" and cc or nil

  for _, section in ipairs { { "clusters", "cluster", CLUSTER_FIELDS }, { "users", "user", USER_FIELDS },
                             { "contexts", "context", CONTEXT_FIELDS } } do
    local list_name, item_key, spec = section[1], section[2], section[3]
    local list = value(doc[list_name])
    if list ~= nil and (type(list) ~= "table" or (next(list) ~= nil and not yaml.is_array(list))) then
      return nil, config_error(path, nil, list_name, list_name .. " must be a list")
    end
    for i, item in ipairs(list or {}) do
      local where = string.format("%s[%d]", list_name, i)
      if type(item) ~= "table" or yaml.is_array(item) then
        return nil, config_error(path, where, list_name, where .. " must be a mapping with name and " .. item_key)
      end
      local name = value(item.name)
      if type(name) ~= "string" or name == "" then
        return nil, config_error(path, where, "name", where .. " has no name (a non-empty string)")
      end
      local entry = describe(item_key, name)
      if out[list_name][name] then
        return nil, config_error(path, entry, "name", string.format("%s is defined twice", entry))
      end
      local body = value(item[item_key])
      if body == nil then body = {} end
      if type(body) ~= "table" or (next(body) ~= nil and yaml.is_array(body)) then
        return nil, config_error(path, entry, item_key, string.format("%s: %s must be a mapping", entry, item_key))
      end
      local ok, err = check_fields(path, entry, body, spec)
      if not ok then return nil, err end
      local e = { file = path, name = name, raw = body }
      if item_key == "cluster" then
        e.ca_data, err = decode_data(path, entry, "certificate-authority-data", body["certificate-authority-data"])
        if err then return nil, err end
      elseif item_key == "user" then
        e.cert_data, err = decode_data(path, entry, "client-certificate-data", body["client-certificate-data"])
        if err then return nil, err end
        e.key_data, err = decode_data(path, entry, "client-key-data", body["client-key-data"])
        if err then return nil, err end
        local ex = value(body.exec)
        if ex then
          ok, err = check_fields(path, entry .. ": exec", ex, EXEC_FIELDS)
          if not ok then return nil, err end
        end
      end
      out[list_name][name] = e
    end
  end
  return out
end

---------------------------------------------------------------------------------------------
-- the resolved configuration
---------------------------------------------------------------------------------------------

local Config = {}
Config.__index = Config
Config.__name = "pullsecret.kubeconfig"
function Config.__tostring(self)
  return string.format("kubeconfig: server %s, namespace %s, %s", tostring(self.server), tostring(self.namespace),
                       self:identity())
end

function Config:url(path)
  return self.base_url .. (path or "")
end

function Config:identity()
  if self.in_cluster then return "the pod's service account (in-cluster)" end
  local who = self.user_name and describe("user", self.user_name) or "anonymous"
  if self.context_name then who = who .. " (" .. describe("context", self.context_name) .. ")" end
  return who
end

function Config:invalidate()
  self._exec_cred = nil
end

local function exec_json_info(self)
  local manifest = require "pullsecret.manifest"
  local ex = self.auth.exec
  local spec = yaml.object({ interactive = false }, { "cluster", "interactive" })
  if ex.provide_cluster_info then
    local c = yaml.object({}, { "server", "tls-server-name", "insecure-skip-tls-verify",
                                "certificate-authority-data", "proxy-url", "config" })
    c.server = self.server
    c["tls-server-name"] = self.tls_server_name
    if self.insecure then c["insecure-skip-tls-verify"] = true end
    local ca = self.ca_pem or (self.ca_file and read_file(self.ca_file))
    if ca then c["certificate-authority-data"] = core.b64encode(ca) end
    c["proxy-url"] = self.proxy
    c.config = ex.cluster_config
    spec.cluster = c
  end
  return assert(manifest.json_encode(yaml.object({ kind = "ExecCredential", apiVersion = ex.api_version,
                                                   spec = spec }, { "kind", "apiVersion", "spec" })))
end

-- runs the exec plugin; returns the credential { token=, cert_pem=, key_pem=, expires= }
local function run_exec(self)
  local ex = self.auth.exec
  local label = string.format('exec plugin "%s" (%s in %s)', ex.command, describe("user", self.user_name),
                              ex.file)
  local function fail(msg, field)
    return nil, config_error(ex.file, describe("user", self.user_name), field or "exec", label .. ": " .. msg)
  end
  if ex.interactive_mode == "Always" then
    return fail("interactiveMode is Always, but pullsecret never runs plugins on a terminal", "interactiveMode")
  end
  -- The environment (the kubeconfig's env values may be secrets; KUBERNETES_EXEC_INFO can be
  -- larger than one argument may be) goes through a private file the shell sources, never
  -- through a command line, which every user of the machine can read in /proc/*/cmdline.
  local made, envfile = pcall(os.tmpname)        -- mkstemp: created with mode 0600
  if not made then return fail("cannot be started: cannot create a temporary file (" .. tostring(envfile) .. ")") end
  local lines = {}
  for _, kv in ipairs(ex.env) do lines[#lines + 1] = "export " .. kv[1] .. "=" .. sh_quote(kv[2]) end
  lines[#lines + 1] = "export KUBERNETES_EXEC_INFO=" .. sh_quote(exec_json_info(self))
  local ef = io.open(envfile, "wb")
  local written = ef and ef:write(table.concat(lines, "\n"), "\n")
  if ef then written = ef:close() and written end
  if not written then
    os.remove(envfile)
    return fail("cannot be started: cannot write its environment to " .. envfile)
  end
  -- a missing command exits 127 without the shell's own message (the error below says it)
  local parts = { ". " .. sh_quote(envfile) .. " && { command -v " .. sh_quote(ex.command) ..
    " >/dev/null 2>&1 || exit 127; } && exec", sh_quote(ex.command) }
  for _, a in ipairs(ex.args) do parts[#parts + 1] = sh_quote(a) end
  local cmd = table.concat(parts, " ") .. " </dev/null"
  local p = io.popen(cmd, "r")
  if not p then
    os.remove(envfile)
    return fail("cannot be started")
  end
  local out = p:read("a") or ""
  local ok, how, code = p:close()
  os.remove(envfile)
  if not ok then
    local why = how == "signal" and ("was killed by signal " .. tostring(code))
                or ("exited with status " .. tostring(code))
    if code == 127 and how == "exit" then
      why = why .. " (command not found?)" .. (ex.install_hint and (" " .. ex.install_hint:gsub("%s+", " ")) or "")
    end
    return fail(why)
  end
  local cred = cjson.decode(out)
  if type(cred) ~= "table" then return fail("did not print an ExecCredential as JSON") end
  if cred.kind ~= "ExecCredential" then return fail("printed an object that is not an ExecCredential") end
  if cred.apiVersion ~= ex.api_version then
    return fail(string.format("is configured for %s but returned apiVersion %s", ex.api_version,
                              tostring(cred.apiVersion)))
  end
  local st = cred.status
  if type(st) ~= "table" then return fail("returned no status") end
  local res = {}
  if type(st.token) == "string" and st.token ~= "" then res.token = st.token end
  local cert, key = st.clientCertificateData, st.clientKeyData
  if type(cert) == "string" and cert ~= "" then res.cert_pem = cert end
  if type(key) == "string" and key ~= "" then res.key_pem = key end
  if (res.cert_pem == nil) ~= (res.key_pem == nil) then
    return fail("returned clientCertificateData without clientKeyData, or the reverse")
  end
  if not res.token and not res.cert_pem then return fail("returned neither a token nor a client certificate") end
  if st.expirationTimestamp ~= nil and st.expirationTimestamp ~= cjson.null then
    res.expires = parse_time(st.expirationTimestamp)
    if not res.expires then return fail("returned an expirationTimestamp that is not RFC 3339") end
  end
  return res
end

local function exec_credential(self)
  local c = self._exec_cred
  if c and (c.expires == nil or self.now() < c.expires) then return c end
  local err
  c, err = run_exec(self)
  if not c then return nil, err end
  self._exec_cred = c
  self.exec_runs = (self.exec_runs or 0) + 1
  if c.cert_pem then
    local prev = self._exec_cert
    if not prev or prev.cert_pem ~= c.cert_pem or prev.key_pem ~= c.key_pem then
      self._exec_cert = { cert_pem = c.cert_pem, key_pem = c.key_pem }
      self.generation = self.generation + 1
    end
  end
  return c
end

function Config:auth_header()
  local a = self.auth
  if a.method == "token" then return "Bearer " .. a.token
  elseif a.method == "token_file" then
    local text, rerr = read_file(a.token_file)
    if not text then
      return nil, config_error(a.file, a.entry, "tokenFile", string.format("token file %s: %s", a.token_file, rerr))
    end
    local tok = trim(text)
    if tok == "" then
      return nil, config_error(a.file, a.entry, "tokenFile", string.format("token file %s is empty", a.token_file))
    end
    return "Bearer " .. tok
  elseif a.method == "basic" then
    return "Basic " .. core.b64encode(a.username .. ":" .. a.password)
  elseif a.method == "exec" then
    local c, err = exec_credential(self)
    if not c then return nil, err end
    if c.token then return "Bearer " .. c.token end
    return nil
  end
  return nil
end

function Config:client_options()
  local o = { insecure = self.insecure or false, proxy = self.proxy }
  if self.ca_pem then o.ca_pem = self.ca_pem elseif self.ca_file then o.ca_file = self.ca_file end
  local a = self.auth
  if a.cert_pem then o.cert_pem = a.cert_pem elseif a.cert_file then o.cert_file = a.cert_file end
  if a.key_pem then o.key_pem = a.key_pem elseif a.key_file then o.key_file = a.key_file end
  if a.method == "exec" then
    local _, err = exec_credential(self)
    if err then return nil, err end
    if self._exec_cert then
      o.cert_file, o.key_file = nil, nil
      o.cert_pem, o.key_pem = self._exec_cert.cert_pem, self._exec_cert.key_pem
    end
  end
  if self.connect_to then o.connect_to = { self.connect_to } end
  return o
end

-- "https://host:port/path" -> scheme, host, port, rest
local function split_url(url)
  local scheme, hostport, rest = url:match("^(%a[%w+.-]*)://([^/?#]*)(.*)$")
  if not scheme then return nil end
  local host, port = hostport:match("^(%[[^%]]*%]):?(%d*)$")
  if not host then host, port = hostport:match("^([^:]*):?(%d*)$") end
  if not host or host == "" then return nil end
  if port == "" then port = (scheme:lower() == "https") and "443" or "80" end
  return scheme:lower(), host, port, rest
end

local function new_config(t)
  t.generation = 1
  t.now = t.now or os.time
  return setmetatable(t, Config)
end

-- server URL checks and tls-server-name, shared by load and in_cluster
local function finish_server(cfg, file, entry)
  local server = cfg.server:gsub("/+$", "")
  if not server:find("^%a[%w+.-]*://") then
    -- client-go: https when any TLS setting is present, else http
    local tls = cfg.ca_pem or cfg.ca_file or cfg.insecure or cfg.auth.cert_pem or cfg.auth.cert_file
    server = (tls and "https://" or "http://") .. server
  end
  local scheme, host, port, rest = split_url(server)
  if not scheme or (scheme ~= "https" and scheme ~= "http") then
    return nil, config_error(file, entry, "server", string.format("%s: server %q is not an http(s) URL", entry,
                                                                  cfg.server))
  end
  cfg.server, cfg.base_url = server, server
  if cfg.tls_server_name then
    if scheme ~= "https" then
      return nil, config_error(file, entry, "tls-server-name", entry .. ": tls-server-name needs an https server")
    end
    local name = cfg.tls_server_name
    if name:find("[%s/:%[%]@]") then
      return nil, config_error(file, entry, "tls-server-name", entry .. ": tls-server-name must be a host name")
    end
    -- connect to the server's address, but speak TLS (SNI, certificate check) for `name`
    cfg.connect_to = string.format("%s:%s:%s:%s", name, port, host, port)
    cfg.base_url = string.format("https://%s:%s%s", name, port, rest)
  end
  return true
end

local function check_proxy(file, entry, proxy)
  if proxy == nil then return true end
  local scheme = proxy:match("^(%a[%w+.-]*)://")
  if not scheme or not ({ http = true, https = true, socks5 = true, socks5h = true })[scheme:lower()] then
    return nil, config_error(file, entry, "proxy-url",
      entry .. ": proxy-url must be an http, https or socks5 URL")
  end
  return true
end

local function build_user(user_entry, context_desc)
  local auth = { method = "none" }
  if not user_entry then return auth end
  local u, file = user_entry.raw, user_entry.file
  local entry = describe("user", user_entry.name)
  auth.file, auth.entry = file, entry
  local function uerr(field, msg)
    return nil, config_error(file, entry, field, context_desc .. ": " .. entry .. " " .. msg)
  end
  if value(u["auth-provider"]) then
    return uerr("auth-provider", "uses an auth-provider, which pullsecret does not support: use an exec plugin")
  end
  for _, f in ipairs { "as", "as-uid", "as-groups", "as-user-extra" } do
    if value(u[f]) then return uerr(f, "asks for impersonation (" .. f .. "), which pullsecret does not support") end
  end
  -- client certificate (data wins over file)
  local cert_file = resolve(file, value(u["client-certificate"]))
  local key_file = resolve(file, value(u["client-key"]))
  if user_entry.cert_data then auth.cert_pem = user_entry.cert_data
  elseif cert_file and cert_file ~= "" then auth.cert_file = cert_file end
  if user_entry.key_data then auth.key_pem = user_entry.key_data
  elseif key_file and key_file ~= "" then auth.key_file = key_file end
  if (auth.cert_pem or auth.cert_file) and not (auth.key_pem or auth.key_file) then
    return uerr("client-key", "has a client certificate but no client-key")
  end
  if (auth.key_pem or auth.key_file) and not (auth.cert_pem or auth.cert_file) then
    return uerr("client-certificate", "has a client-key but no client certificate")
  end
  for _, f in ipairs { "cert_file", "key_file" } do
    if auth[f] and not exists(auth[f]) then
      return uerr(f == "cert_file" and "client-certificate" or "client-key",
                  string.format("names %s, which cannot be read", auth[f]))
    end
  end

  local token, token_file = value(u.token), resolve(file, value(u.tokenFile))
  local username, password = value(u.username), value(u.password)
  local has_token = (token and token ~= "") or (token_file and token_file ~= "")
  local has_basic = (username and username ~= "") or (password and password ~= "")
  if has_token and has_basic then
    return uerr("token", "has both a token and a username/password: only one authentication method is allowed")
  end
  if token and token ~= "" then
    auth.method, auth.token = "token", token
  elseif token_file and token_file ~= "" then
    auth.method, auth.token_file = "token_file", token_file
  elseif has_basic then
    auth.method, auth.username, auth.password = "basic", username or "", password or ""
  end
  local ex = value(u.exec)
  if ex and auth.method == "none" then
    local function xerr(field, msg) return uerr(field, "exec: " .. msg) end
    local api = value(ex.apiVersion)
    if not api or api == "" then return xerr("apiVersion", "apiVersion is missing") end
    if not EXEC_VERSIONS[api] then
      return xerr("apiVersion", string.format("apiVersion %q is not supported (use client.authentication.k8s.io/v1 "
        .. "or v1beta1)", api))
    end
    local command = value(ex.command)
    if not command or command == "" then return xerr("command", "command is missing") end
    if command:find("=", 1, true) then return xerr("command", "a command containing '=' is not supported") end
    if command:find("/", 1, true) then command = resolve(file, command) end
    local mode = value(ex.interactiveMode)
    if mode == nil and api == "client.authentication.k8s.io/v1" then
      return xerr("interactiveMode", "interactiveMode must be set (Never, IfAvailable or Always) for apiVersion "
        .. api)
    end
    if mode and mode ~= "Never" and mode ~= "IfAvailable" and mode ~= "Always" then
      return xerr("interactiveMode", "interactiveMode must be Never, IfAvailable or Always")
    end
    local args = {}
    for i, a in ipairs(value(ex.args) or {}) do
      if type(a) ~= "string" then return xerr("args", string.format("args[%d] must be a string", i)) end
      args[i] = a
    end
    local env = {}
    for i, kv in ipairs(value(ex.env) or {}) do
      local n, v = type(kv) == "table" and value(kv.name), type(kv) == "table" and value(kv.value)
      if type(n) ~= "string" or not n:find("^[%a_][%w_]*$") or type(v) ~= "string" then
        return xerr("env", string.format("env[%d] must have a name (letters, digits and '_', not starting "
          .. "with a digit) and a string value", i))
      end
      env[#env + 1] = { n, v }
    end
    auth.method = "exec"
    auth.exec = { api_version = api, command = command, args = args, env = env, file = file,
                  interactive_mode = mode or "IfAvailable", provide_cluster_info = value(ex.provideClusterInfo),
                  install_hint = value(ex.installHint) }
  end
  if auth.method == "none" and (auth.cert_pem or auth.cert_file) then auth.method = "client_cert" end
  return auth
end

-- merges parsed files, first wins
local function merge(files)
  local m = { clusters = {}, users = {}, contexts = {}, files = {} }
  for _, f in ipairs(files) do
    m.files[#m.files + 1] = f.file
    if not m.current_context and f.current_context then
      m.current_context, m.current_context_file = f.current_context, f.file
    end
    for _, section in ipairs { "clusters", "users", "contexts" } do
      for name, e in pairs(f[section]) do
        if m[section][name] == nil then m[section][name] = e end
      end
    end
  end
  return m
end

local function split_list(s)
  local out = {}
  for p in (s .. ":"):gmatch("([^:]*):") do
    if p ~= "" then out[#out + 1] = p end
  end
  return out
end

--- Loads the configuration. See the module header.
function M.load(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("kubeconfig.load: expected an option table", 2) end
  local env = opts.env or os.getenv
  local paths, explicit = {}, false
  if opts.kubeconfig ~= nil and opts.kubeconfig ~= "" then
    if type(opts.kubeconfig) ~= "string" then error("kubeconfig.load: kubeconfig must be a path", 2) end
    paths, explicit = { opts.kubeconfig }, true
    if not exists(opts.kubeconfig) then
      return nil, config_error(opts.kubeconfig, nil, nil, "no such kubeconfig file")
    end
  else
    local list = env("KUBECONFIG")
    if list and list ~= "" then
      for _, p in ipairs(split_list(list)) do
        if exists(p) then paths[#paths + 1] = p end
      end
    else
      local home = opts.home or env("HOME")
      if home and home ~= "" then
        local p = home .. "/.kube/config"
        if exists(p) then paths[1] = p end
      end
    end
  end
  if #paths == 0 then
    local host = env("KUBERNETES_SERVICE_HOST")
    if not explicit and host and host ~= "" then
      return M.in_cluster { env = env, root = opts.in_cluster_root, namespace = opts.namespace, now = opts.now }
    end
    local list = not explicit and env("KUBECONFIG") or ""
    if list ~= "" then
      return nil, config_error(list, nil, "KUBECONFIG", "no kubeconfig found: none of the files KUBECONFIG "
        .. "lists exists; fix KUBECONFIG or pass a kubeconfig file")
    end
    local home = opts.home or env("HOME")
    local default = (home and home ~= "") and (home .. "/.kube/config") or "~/.kube/config"
    return nil, config_error(default, nil, nil, "no kubeconfig found: set KUBECONFIG, pass a kubeconfig file, "
      .. "or create " .. default)
  end

  local parsed = {}
  for i, p in ipairs(paths) do
    local f, err = parse_file(p)
    if not f then return nil, err end
    parsed[i] = f
  end
  local m = merge(parsed)
  local files_desc = table.concat(m.files, ":")

  local ctx_name, ctx_file, ctx_field = opts.context, files_desc, "context"
  if ctx_name == nil or ctx_name == "" then
    ctx_name, ctx_file, ctx_field = m.current_context, m.current_context_file, "current-context"
  end
  if not ctx_name then
    return nil, config_error(files_desc, nil, "current-context",
      "no current-context is set: pass a context, or run kubectl config use-context NAME")
  end
  local ctx = m.contexts[ctx_name]
  local cdesc = describe("context", ctx_name)
  if not ctx then
    return nil, config_error(ctx_file, cdesc, ctx_field, cdesc .. " is not defined")
  end
  local craw = ctx.raw
  local cluster_name = value(craw.cluster)
  if not cluster_name or cluster_name == "" then
    return nil, config_error(ctx.file, cdesc, "cluster", cdesc .. " names no cluster")
  end
  local cl = m.clusters[cluster_name]
  local cldesc = describe("cluster", cluster_name)
  if not cl then
    return nil, config_error(ctx.file, cdesc, "cluster", cdesc .. ": " .. cldesc .. " is not defined")
  end
  local user_name = value(craw.user)
  local user
  if user_name and user_name ~= "" then
    user = m.users[user_name]
    if not user then
      return nil, config_error(ctx.file, cdesc, "user",
                               cdesc .. ": " .. describe("user", user_name) .. " is not defined")
    end
  end

  local c = cl.raw
  local where = cdesc .. ": " .. cldesc
  local server = value(c.server)
  if not server or server == "" then
    return nil, config_error(cl.file, cldesc, "server", where .. " has no server")
  end
  local cfg = {
    server = server, context_name = ctx_name, cluster_name = cluster_name, user_name = user_name,
    source_files = m.files, in_cluster = false, now = opts.now,
    insecure = value(c["insecure-skip-tls-verify"]) or false,
    tls_server_name = value(c["tls-server-name"]), proxy = value(c["proxy-url"]),
  }
  if cfg.tls_server_name == "" then cfg.tls_server_name = nil end
  if cfg.proxy == "" then cfg.proxy = nil end
  cfg.warnings = {}
  if cl.ca_data then
    cfg.ca_pem = cl.ca_data
    if value(c["certificate-authority"]) then
      cfg.warnings[#cfg.warnings + 1] = string.format("%s: %s: both certificate-authority-data and "
        .. "certificate-authority are set; using certificate-authority-data (kubectl refuses this)", cl.file, where)
    end
  else
    local ca_file = resolve(cl.file, value(c["certificate-authority"]))
    if ca_file and ca_file ~= "" then
      if not exists(ca_file) then
        return nil, config_error(cl.file, cldesc, "certificate-authority",
          string.format("%s: certificate-authority %s cannot be read", where, ca_file))
      end
      cfg.ca_file = ca_file
    end
  end
  if cfg.insecure and (cfg.ca_pem or cfg.ca_file) then
    return nil, config_error(cl.file, cldesc, "insecure-skip-tls-verify",
      where .. ": insecure-skip-tls-verify together with a certificate authority is not allowed")
  end
  local ok, err = check_proxy(cl.file, where, cfg.proxy)
  if not ok then return nil, err end

  cfg.auth, err = build_user(user, cdesc)
  if not cfg.auth then return nil, err end
  if user then
    for _, pair in ipairs { { "cert_data", "client-certificate" }, { "key_data", "client-key" } } do
      if user[pair[1]] and value(user.raw[pair[2]]) then
        cfg.warnings[#cfg.warnings + 1] = string.format("%s: %s: both %s-data and %s are set; using %s-data "
          .. "(kubectl refuses this)", user.file, describe("user", user_name), pair[2], pair[2], pair[2])
      end
    end
  end

  -- an exec plugin that asks for cluster info also gets the cluster's exec extension as "config"
  if cfg.auth.exec and cfg.auth.exec.provide_cluster_info then
    for _, ext in ipairs(value(c.extensions) or {}) do
      if type(ext) == "table" and ext.name == "client.authentication.k8s.io/exec" then
        cfg.auth.exec.cluster_config = value(ext.extension)
      end
    end
  end

  local ns = opts.namespace
  if ns == nil or ns == "" then ns = value(craw.namespace) end
  if ns == nil or ns == "" then ns = "default" end
  cfg.namespace = ns

  cfg = new_config(cfg)
  ok, err = finish_server(cfg, cl.file, where)
  if not ok then return nil, err end
  return cfg
end

--- In-cluster configuration (a pod's service account). See the module header.
function M.in_cluster(opts)
  opts = opts or {}
  local env = opts.env or os.getenv
  local root = opts.root or ""
  local host, port = env("KUBERNETES_SERVICE_HOST"), env("KUBERNETES_SERVICE_PORT")
  if not host or host == "" or not port or port == "" then
    return nil, config_error(nil, nil, "KUBERNETES_SERVICE_HOST",
      "not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set")
  end
  if not port:find("^%d+$") then
    return nil, config_error(nil, nil, "KUBERNETES_SERVICE_PORT", "KUBERNETES_SERVICE_PORT is not a port number")
  end
  if host:find(":", 1, true) and host:sub(1, 1) ~= "[" then host = "[" .. host .. "]" end
  local dir = root .. M.SERVICE_ACCOUNT_DIR
  local token_file = dir .. "/token"
  local tok, rerr = read_file(token_file)
  if not tok then
    return nil, config_error(token_file, "service account", "token", "cannot read the service-account token: " .. rerr)
  end
  local cfg = {
    server = "https://" .. host .. ":" .. port, in_cluster = true, insecure = false,
    source_files = { token_file }, now = opts.now,
    auth = { method = "token_file", token_file = token_file, file = token_file, entry = "service account" },
  }
  local ca = dir .. "/ca.crt"
  if exists(ca) then cfg.ca_file = ca end
  local ns = opts.namespace
  if ns == nil or ns == "" then ns = env("POD_NAMESPACE") end
  if ns == nil or ns == "" then
    local text = read_file(dir .. "/namespace")
    ns = text and trim(text) or nil
  end
  if ns == nil or ns == "" then ns = "default" end
  cfg.namespace = ns
  cfg = new_config(cfg)
  local ok, err = finish_server(cfg, nil, "in-cluster")
  if not ok then return nil, err end
  return cfg
end

return M
