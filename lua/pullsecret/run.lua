--- The whole procedure, steps 1 to 7, end to end, idempotent.
--
--     local pullsecret = require "pullsecret"
--     local result, err = pullsecret.run({
--       api = "api.example.com", username = "me@example.com", password = os.getenv("PULLSECRET_PASSWORD"),
--       org = "myorg", namespace = "apps", secret_name = "registry-token", docker_email = "a@b.c",
--       pods = { { template = io.open("mypod.yaml"):read("a"), values = { pod_name = "web", ... } } },
--     }, function(ev) io.stderr:write(ev.step, "/", ev.total, " ", ev.name, " ", ev.phase, "\n") end)
--     --> result = { namespace = "apps", namespaces = { "apps" }, secret_name = "registry-token",
--     --             registry = "registry.example.com", token_id = "637b3d8c-...", token = "new",
--     --             secrets = { { namespace = "apps", action = "created" } }, pods = { { name = "web", ... } } }
--
-- Options
--   Step 1 (Dedicated login): api ("api.<domain>" or URL), username + password | passcode | apikey |
--     refresh_token, or session (an existing pullsecret.session); ca_file / ca_pem / insecure for the
--     IBM hosts; authorization_endpoint to skip discovery. Or, the modern path instead of steps 1-4:
--     icr = { region = "uk", apikey = KEY } (secret for <region>.icr.io, user "iamapikey").
--   Step 3: org (name) or org_guid; account (sent as "Account").
--   Step 4: registry (host or URL, default https://registry.<domain>), description, write (read-write
--     token), permanent (default true), rotate (mint a new token, write it, check it, then revoke the
--     one it replaced).
--   Steps 5-7: namespace (default: the kubeconfig's) or namespaces = {...}, secret_name (required),
--     docker_server (the secret's server key; default the registry's host[:port]), docker_username
--     (default "token"), docker_email, replace_type (a secret of another type is deleted and created
--     again), force (take over fields another field manager owns, e.g. kubectl-create's),
--     service_accounts = { "default", ... } (the secret is added to their imagePullSecrets),
--     pods = { { template = text, values = {...} } | { name =, image =, container = } ... },
--     kube (a pullsecret.kube client) or kubeconfig / context; concurrency (default 16): how many
--     Kubernetes requests are in flight at once. Each step does its work in every namespace as one
--     batch (pullsecret.kube's *_many: the reads together, then the writes, then the read-backs), so
--     a namespace that fails does not stop the others.
--   dry_run: log in and read, but mint nothing and write nothing; result.manifests holds what would
--     be applied (the token replaced by "<token>").
--   log: function(line) receiving one redacted line per HTTP request.
-- Events: on_event{ step = 4, total = 7, name = "registry token", phase = "start"|"done"|"skip"|
--   "retry"|"fail", detail = "id 637b3d8c…" } — never a secret. Steps 5 to 7 give a 'start' for
--   every namespace (or pod) first, then, once the batch is done, a 'done' for each that succeeded
--   and one 'fail' for the step.
-- Errors: the step's error with `step`, `step_name` and a message "step N (name): cause"; kinds as the
-- step's module gives them. When namespaces failed, the message names them ("3 of 30 namespaces
-- failed (ns-7, ...); the first: cause", the first 50) and err.failed lists them all. A token minted
-- by this run that no secret holds is revoked before the error is returned (err.revoked = id); one
-- that some secret holds is kept (err.kept = id) and the message says so; a token that could not be
-- revoked, or whose use could not be read back, is err.orphan. A pod failure leaves the (valid)
-- secret in place and says so. Rotation revokes the replaced tokens only after every namespace's
-- secret was read back holding the new one (after a failure: those no secret holds any more,
-- err.replaced_revoked). When the secrets are brought onto a token one of them already held, the
-- still-valid tokens the others held are named in result.unheld, not revoked (a secret elsewhere
-- may use them). A token held under another server key of the same registry is reused; a replaced token
-- that could not be revoked fails the run after step 7 with step 4's error (err.orphans = its ids,
-- err.result = the result), whose message says how to revoke it. An invalid secret_name is an
-- input error before step 1. An error raised after a token was minted (an interruption) is raised
-- again once the token is settled the same way, its text saying what became of the token.
local cjson = require "cjson.safe"
local core = require "pullsecret.core"
local errors = require "pullsecret.errors"

local run = {}

run.STEPS = { "login", "oauth token", "org guid", "registry token", "describe secrets", "pull secret", "pods" }
run.TOKEN_PLACEHOLDER = "<token>"

local function short_id(id)
  if type(id) ~= "string" then return "?" end
  return #id > 8 and (id:sub(1, 8) .. "…") or id
end

--- The key a docker config uses for a registry given as a host or URL: host[:port], path kept.
function run.server_key(registry)
  if type(registry) ~= "string" then return nil end
  local scheme, rest = registry:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then rest = registry end
  rest = rest:gsub("/+$", "")
  local host, port, path = rest:match("^([^/:]+):(%d+)(.*)$")
  if host and ((scheme == "https" and port == "443") or (scheme == "http" and port == "80")) then
    rest = host .. path
  end
  return rest
end

local function registry_url(registry)
  if registry:find("^%a[%w+.-]*://") then return (registry:gsub("/+$", "")) end
  return "https://" .. registry:gsub("/+$", "")
end

-- The `auths` table of a dockerconfigjson secret, or nil.
local function auths_of(secret)
  if type(secret) ~= "table" or type(secret.data) ~= "table" then return nil end
  local b64 = secret.data[".dockerconfigjson"]
  local text = type(b64) == "string" and core.b64decode(b64)
  local doc = text and cjson.decode(text)
  local auths = type(doc) == "table" and doc.auths
  return type(auths) == "table" and auths or nil
end

-- The login of one auths entry: user, password | nil (`auth`, when present, wins).
local function entry_login(entry)
  if type(entry) ~= "table" then return nil end
  local user, pass = entry.username, entry.password
  if type(entry.auth) == "string" then
    local raw = core.b64decode(entry.auth)
    if raw then user, pass = raw:match("^([^:]*):(.*)$") end
  end
  if type(pass) ~= "string" or pass == "" then return nil end
  return user, pass
end

-- The token (or password) a dockerconfigjson secret holds for `server`: user, password | nil.
function run.secret_login(secret, server)
  local auths = auths_of(secret)
  return entry_login(auths and auths[server])
end

--- Every registry token (a JWT) a dockerconfigjson secret holds: the login under `server` first
-- (whatever its password), then JWTs under other keys (a secret written with another server key):
-- { { user =, token =, server = true | nil }, ... }.
function run.held_tokens(secret, server)
  local out = {}
  local auths = auths_of(secret) or {}
  local u, tok = entry_login(auths[server])
  if tok then out[1] = { user = u, token = tok, server = true } end
  local keys = {}
  for key in pairs(auths) do
    if type(key) == "string" and key ~= server then keys[#keys + 1] = key end
  end
  table.sort(keys)
  for _, key in ipairs(keys) do
    u, tok = entry_login(auths[key])
    if tok and tok:find("^eyJ[%w_-]*%.[%w_-]+%.[%w_-]*$") then out[#out + 1] = { user = u, token = tok } end
  end
  return out
end

local Run = {}
Run.__index = Run

function Run:event(step, phase, detail)
  if self.on_event then
    local ok, err = pcall(self.on_event, { step = step, total = #run.STEPS, name = run.STEPS[step],
                                           phase = phase, detail = detail })
    if not ok then self.event_error = err end
  end
end

function Run:fail(step, err)
  if type(err) ~= "table" then err = errors.new("protocol", tostring(err)) end
  local e = errors.wrap(err, string.format("step %d (%s)", step, run.STEPS[step]))
  e.step, e.step_name = step, run.STEPS[step]
  self:event(step, "fail", err.kind)
  return e
end

-- Forwards the HTTP layer's retry events under the current step.
function Run:http_events()
  return function(ev)
    if ev.type == "retry" then
      self:event(self.step or 0, "retry", string.format("attempt %s in %.1f s (%s)", tostring(ev.attempt),
        tonumber(ev.delay) or 0, tostring(ev.reason)))
    end
    if self.user_http_event then pcall(self.user_http_event, ev) end
  end
end

local function check(opts)
  if type(opts) ~= "table" then error("pullsecret.run: expects an option table", 3) end
  local function str(field)
    if opts[field] ~= nil and type(opts[field]) ~= "string" then
      error("pullsecret.run: option '" .. field .. "' must be a string, got " .. type(opts[field]), 3)
    end
  end
  for _, f in ipairs{ "api", "username", "password", "passcode", "apikey", "org", "org_guid", "registry",
                      "namespace", "secret_name", "docker_email", "docker_server", "docker_username",
                      "description", "kubeconfig", "context" } do
    str(f)
  end
  local n = opts.concurrency
  if n ~= nil and (math.type(n) ~= "integer" or n < 1 or n > 1024) then
    error("pullsecret.run: option 'concurrency' must be an integer from 1 to 1024", 3)
  end
  if opts.namespaces ~= nil then
    local nss = opts.namespaces
    if type(nss) ~= "table" or #nss == 0 then
      return nil, errors.new("input", "namespaces is empty: name at least one namespace (or give namespace)",
        { field = "namespaces" })
    end
    for i, ns in ipairs(nss) do
      if type(ns) ~= "string" or ns == "" then
        error("pullsecret.run: namespaces[" .. i .. "] must be a non-empty string", 3)
      end
    end
  end
  if type(opts.secret_name) ~= "string" or opts.secret_name == "" then
    return nil, errors.new("input", "secret_name is missing: name the image pull secret to write (--secret-name)",
      { field = "secret_name" })
  end
  -- A name the API server would refuse is refused now, before a token is minted for it.
  local ok, err = require("pullsecret.manifest").check_name("secret_name", opts.secret_name, "subdomain")
  if not ok then return nil, err end
  if opts.icr then
    if type(opts.icr) ~= "table" then error("pullsecret.run: option 'icr' must be a table", 3) end
  elseif not opts.session and not opts.api then
    return nil, errors.new("input", "api is missing: give the API endpoint api.<domain> of the Dedicated " ..
      "environment (--api), or use the icr.io API-key path (icr = { region =, apikey = })", { field = "api" })
  elseif not opts.org and not opts.org_guid and not opts.account then
    return nil, errors.new("input", "org is missing: name the Cloud Foundry org whose images the token reads (--org)",
      { field = "org" })
  end
  return true
end

-- Step 1 and 2: a session and its OAuth token.
function Run:login()
  local o = self.opts
  self.step = 1
  self:event(1, "start", o.session and "existing session" or o.api)
  local s = o.session
  if not s then
    local lo = {}
    for _, k in ipairs{ "api", "username", "password", "passcode", "apikey", "refresh_token",
                        "authorization_endpoint", "token_url", "domain", "registry", "ca_file", "ca_pem",
                        "insecure", "proxy", "retry", "timeout_ms", "grant" } do
      lo[k] = o[k]
    end
    if o.registry then lo.registry = registry_url(o.registry) end
    lo.log, lo.on_event = o.log, self:http_events()
    local err
    s, err = require("pullsecret.login").login(lo)
    if not s then return nil, self:fail(1, err) end
    self.owned_session = s
  end
  self.session = s
  self:event(1, "done", tostring(s))
  self.step = 2
  self:event(2, "start")
  local tok, err = s:oauth_token()
  if not tok then return nil, self:fail(2, err) end
  self:event(2, "done", (tok:match("^(%S+)") or "?") .. " token")
  return true
end

function Run:org()
  local o = self.opts
  self.step = 3
  if o.org_guid or (o.account and not o.org) then
    self.org_guid = o.org_guid
    self:event(3, "skip", o.org_guid and ("given: " .. o.org_guid) or "account given")
    return true
  end
  self:event(3, "start", o.org)
  local guid, err = require("pullsecret.org").guid(self.session, o.org)
  if not guid then return nil, self:fail(3, err) end
  self.org_guid = guid
  self:event(3, "done", guid)
  return true
end

function Run:kube_client()
  local o = self.opts
  if o.kube then self.kube = o.kube; return true end
  local k, err = require("pullsecret.kube").new{ kubeconfig = o.kubeconfig, context = o.context,
    namespace = o.namespace, log = o.log, on_event = self:http_events(), retry = o.retry,
    concurrency = o.concurrency }
  if not k then return nil, err end
  self.kube, self.owned_kube = k, k
  return true
end

-- The per-call options of the kube client's batches.
function Run:batch_opts(extra)
  local o = extra or {}
  o.concurrency = self.opts.concurrency
  return o
end

function Run:secret_ref(ns)
  return { api_version = "v1", kind = "Secret", namespace = ns, name = self.opts.secret_name }
end

-- One error for what failed in several places (`failures`: { { where =, ns =, err = }, ... }, in
-- order) out of `total`: the first failure's kind and fields, a message naming every place (the
-- first 50) and the first failure's cause, and err.failed = the names of them all.
local function failures_error(failures, total, noun)
  local first = failures[1]
  local names = {}
  for i, f in ipairs(failures) do names[i] = f.where end
  local msg = tostring(first.err.message)
  if not msg:find('"' .. (first.ns or first.where) .. '"', 1, true) then
    msg = string.format('%s "%s": %s', noun, first.where, msg)
  end
  local e
  if #failures == 1 then
    e = errors.new(first.err.kind, msg, first.err)
  else
    local shown = { table.unpack(names, 1, math.min(#names, 50)) }
    if #names > 50 then shown[#shown + 1] = string.format("and %d more", #names - 50) end
    e = errors.new(first.err.kind, string.format("%d of %d %ss failed (%s); the first: %s", #failures, total,
      noun, table.concat(shown, ", "), msg), first.err)
    e.failures = failures
  end
  e.cause, e.failed = first.err, names
  return e
end

-- The existing secret in every target namespace: { [ns] = obj | false }, read together.
function Run:read_secrets()
  local refs = {}
  for i, ns in ipairs(self.namespaces) do refs[i] = self:secret_ref(ns) end
  local got = self.kube:get_many(refs, self:batch_opts())
  self.existing = {}
  local failed = {}
  for i, ns in ipairs(self.namespaces) do
    local x = got[i]
    if x.err and x.err.code ~= 404 then failed[#failed + 1] = { where = ns, err = x.err } end
    self.existing[ns] = x.obj or false
  end
  if #failed > 0 then return nil, failures_error(failed, #self.namespaces, "namespace") end
  return self:check_namespaces()
end

-- Where the secret is missing, the namespace may be missing too: say so before a token is minted.
-- A namespace we may not read (403) is given the benefit of the doubt.
function Run:check_namespaces()
  local unknown, refs = {}, {}
  for _, ns in ipairs(self.namespaces) do
    if not self.existing[ns] then
      unknown[#unknown + 1] = ns
      refs[#refs + 1] = { api_version = "v1", kind = "Namespace", name = ns }
    end
  end
  if #refs == 0 then return true end
  local got = self.kube:get_many(refs, self:batch_opts())
  local missing = {}
  for i, ns in ipairs(unknown) do
    if got[i].err and got[i].err.code == 404 then missing[#missing + 1] = ns end
  end
  if #missing == 0 then return true end
  return nil, errors.new("kube", string.format("namespace%s %s do%s not exist: create %s first " ..
    "(kubectl create namespace NAME) or correct -n/namespaces", #missing == 1 and "" or "s",
    table.concat(missing, ", "), #missing == 1 and "es" or "", #missing == 1 and "it" or "them"),
    { reason = "NotFound", code = 404, status = 404, namespaces = missing })
end

-- Step 4: reuse the token a secret already holds when the registry still lists it as valid.
function Run:registry_token()
  local o = self.opts
  self.step = 4
  local registry = require "pullsecret.registry"
  local url = o.registry and registry_url(o.registry) or self.session.registry
  if not url then
    return nil, self:fail(4, errors.new("input", "the registry is unknown: give it (--registry registry.<domain>)",
      { field = "registry" }))
  end
  self.server = o.docker_server or run.server_key(url)
  self:event(4, "start", self.server)
  local reg, err = registry.new{ session = self.session, url = url, org_guid = self.org_guid, account = o.account }
  if not reg then return nil, self:fail(4, err) end
  self.reg = reg
  local ok
  ok, err = self:read_secrets()
  if not ok then
    return nil, self:fail(4, errors.wrap(err, "reading the target namespaces before a token is minted"))
  end
  -- Tokens the secrets hold now (held_by: namespace -> their ids), the server key's first.
  local user = o.docker_username or "token"
  local held, held_ids = {}, {}
  self.held_by = {}
  for _, ns in ipairs(self.namespaces) do
    for _, login in ipairs(run.held_tokens(self.existing[ns], self.server)) do
      local info = registry.token_info(login.token)
      if info then
        self.held_by[ns] = self.held_by[ns] or {}
        table.insert(self.held_by[ns], info.id)
        local h = held_ids[info.id]
        if not h then
          h = { token = login.token, id = info.id, user = login.user }
          held_ids[info.id], held[#held + 1] = h, h
        end
        -- any namespace holding it under the wanted user makes it reusable
        if login.user == user then h.user = user end
        if login.server and login.user == user then h.under_server = true end
      end
    end
  end
  local valid
  self.listed = {}
  if #held > 0 then
    local list
    list, err = reg:list()
    if not list then return nil, self:fail(4, err) end
    local live = {}
    local now = os.time()
    for _, t in ipairs(list) do
      if t.id then self.listed[t.id] = t end
      if not t.revoked and (t.expires == nil or t.expires > now + 3600) then live[t.id] = t end
    end
    -- a token under another server key counts only when this registry lists it
    local ours = {}
    for _, h in ipairs(held) do
      if h.under_server or self.listed[h.id] then ours[#ours + 1] = h end
    end
    held = ours
    for _, h in ipairs(held) do
      if h.user == user and live[h.id] and (live[h.id].readonly == not o.write) then valid = h; break end
    end
  end
  self.replaced = held
  if valid and not o.rotate then
    self.token, self.token_id, self.token_state = valid.token, valid.id, "reused"
    self:event(4, "done", "reused (id " .. short_id(valid.id) .. ")")
    return true
  end
  if o.dry_run then
    self.token, self.token_id = run.TOKEN_PLACEHOLDER, nil
    self.token_state = #held > 0 and "rotated" or "new"
    self:event(4, "skip", "dry run: no token minted")
    return true
  end
  local t
  t, err = reg:create{ permanent = o.permanent ~= false, write = o.write and true or false,
                       description = o.description }
  if not t then return nil, self:fail(4, err) end
  self.token, self.token_id, self.minted = t.token, t.id, t.id
  self.token_state = (#held > 0) and "rotated" or "new"
  self:event(4, "done", self.token_state .. " (id " .. short_id(t.id) .. ")")
  return true
end

-- The modern path: no login, no token minting.
function Run:icr()
  local o = self.opts
  local c, err = require("pullsecret.icr").credentials(o.icr)
  if not c then return nil, self:fail(1, err) end
  for step = 1, 3 do self:event(step, "skip", "icr.io API-key path") end
  self.step = 4
  self.server = o.docker_server or c.server
  self.token, self.username, self.token_state = c.password, c.username, "apikey"
  self:event(4, "skip", "user iamapikey for " .. c.server)
  local ok
  ok, err = self:read_secrets()
  if not ok then
    return nil, self:fail(4, errors.wrap(err, "reading the target namespaces before a token is minted"))
  end
  return true
end

function Run:describe()
  self.step = 5
  for _, ns in ipairs(self.namespaces) do self:event(5, "start", ns) end
  local got = self.kube:describe_secrets_many(self.namespaces, self:batch_opts())
  local failed = {}
  for i, ns in ipairs(self.namespaces) do
    local list = got[i].obj
    if list then
      self.described[ns] = list
      self:event(5, "done", string.format("%s: %d secret%s", ns, #list, #list == 1 and "" or "s"))
    else
      failed[#failed + 1] = { where = ns, err = got[i].err }
    end
  end
  if #failed > 0 then return nil, self:fail(5, failures_error(failed, #self.namespaces, "namespace")) end
  return true
end

local function same_secret(a, b)
  if not a or not b then return false end
  if a.type ~= b.type then return false end
  local da, db = a.data or {}, b.data or {}
  for k, v in pairs(da) do if db[k] ~= v then return false end end
  for k, v in pairs(db) do if da[k] ~= v then return false end end
  return true
end

-- Whether a secret read back (a get_many result) holds our login: true | nil, err.
function Run:holds(ns, x)
  if x.err then return nil, x.err end
  local user, pass = run.secret_login(x.obj, self.server)
  if user ~= self.username or pass ~= self.token then
    return nil, errors.new("protocol", string.format('secret "%s" in namespace "%s" does not hold the %s login for %s '
      .. "after writing it: something else changed it", self.opts.secret_name, ns, self.username, self.server))
  end
  return true
end

-- Step 6 in every namespace: the secrets that differ are written together (upsert_secret_many),
-- then read back together; then the service accounts of the namespaces whose secret is in place.
-- A namespace that fails does not stop the others; the error names every one that failed.
function Run:write_secrets()
  local o = self.opts
  local manifest = require "pullsecret.manifest"
  self.step = 6
  local wanted, action, failed = {}, {}, {}
  for i, ns in ipairs(self.namespaces) do
    self:event(6, "start", ns .. "/" .. o.secret_name)
    local secret, text = manifest.pull_secret{ name = o.secret_name, namespace = ns, server = self.server,
      username = self.username, password = self.token, email = o.docker_email }
    if not secret then return nil, self:fail(6, text) end
    wanted[i] = secret
  end
  local todo, secrets = {}, {}
  for i, ns in ipairs(self.namespaces) do
    if same_secret(self.existing[ns], wanted[i]) then
      action[i], self.verified[ns] = "unchanged", true
    elseif o.dry_run then
      action[i] = self.existing[ns] and "would update" or "would create"
    else
      todo[#todo + 1], secrets[#secrets + 1] = i, wanted[i]
    end
  end
  if #todo > 0 then
    self.writing = true
    local up = self.kube:upsert_secret_many(secrets, self:batch_opts{ replace_type = o.replace_type,
                                                                      force = o.force })
    local verify, refs = {}, {}
    for j, i in ipairs(todo) do
      if up[j].err then
        failed[i] = up[j].err
      else
        action[i] = up[j].obj.action
        verify[#verify + 1], refs[#refs + 1] = i, self:secret_ref(self.namespaces[i])
      end
    end
    local back = self.kube:get_many(refs, self:batch_opts())
    for k, i in ipairs(verify) do
      local ok, err = self:holds(self.namespaces[i], back[k])
      if ok then
        self.written, self.verified[self.namespaces[i]] = true, true
      else
        failed[i] = err
      end
    end
  end
  local sas = {}
  for i, ns in ipairs(self.namespaces) do
    if not failed[i] then
      if o.dry_run then
        -- what would be applied, with the secret itself replaced by the placeholder
        local shown = manifest.pull_secret{ name = o.secret_name, namespace = ns, server = self.server,
          username = self.username, password = run.TOKEN_PLACEHOLDER, email = o.docker_email }
        self.manifests[#self.manifests + 1] = shown
      end
      self.secrets[#self.secrets + 1] = { namespace = ns, action = action[i] }
      self:event(6, "done", ns .. "/" .. o.secret_name .. " " .. action[i])
      for _, sa in ipairs(o.service_accounts or {}) do
        if o.dry_run then
          self:event(6, "skip", "dry run: service account " .. ns .. "/" .. sa .. " not patched")
        else
          sas[#sas + 1] = { namespace = ns, service_account = sa, secret_name = o.secret_name, index = i }
        end
      end
    end
  end
  if #sas > 0 then
    local added = self.kube:add_pull_secret_many(sas, self:batch_opts())
    for j, e in ipairs(sas) do
      local x = added[j]
      if x.err then
        failed[e.index] = failed[e.index] or x.err
      else
        self.service_accounts[#self.service_accounts + 1] = { namespace = e.namespace, name = e.service_account,
                                                              action = x.obj.action }
        self:event(6, "done", "service account " .. e.namespace .. "/" .. e.service_account .. " " .. x.obj.action)
      end
    end
  end
  local list = {}
  for i, ns in ipairs(self.namespaces) do
    if failed[i] then list[#list + 1] = { where = ns, err = failed[i] } end
  end
  if #list > 0 then return nil, self:fail(6, failures_error(list, #self.namespaces, "namespace")) end
  return true
end

-- The values every template may use without the caller naming them.
function Run:template_values(template, values, ns)
  local v = {}
  for k, x in pairs(values or {}) do v[k] = x end
  local function default(name, value)
    if v[name] == nil and value ~= nil and template:find("<" .. name .. ">", 1, true) then v[name] = value end
  end
  default("secret_name", self.opts.secret_name)
  default("kubernetes_namespace", ns)
  default("dedicated_domain", self.session and self.session.domain or (self.server or ""):match("^registry%.(.+)$"))
  default("registry_url", self.server)
  default("docker_email", self.opts.docker_email)
  return v
end

-- True when every field of `want` is in `have` with the same value (the server adds its own).
local function contains(have, want)
  if type(want) ~= "table" then
    if type(want) == "number" and type(have) == "number" then return want == have end
    return want == have
  end
  if type(have) ~= "table" then return false end
  if #want > 0 then
    if #have ~= #want then return false end
    for i = 1, #want do if not contains(have[i], want[i]) then return false end end
    return true
  end
  for k, v in pairs(want) do
    if not contains(have[k], v) then return false end
  end
  return true
end
run.contains = contains

-- Step 7 in every namespace: every pod rendered first, then read together, then the ones not
-- already as wanted applied together.
function Run:pods()
  local o = self.opts
  local manifest = require "pullsecret.manifest"
  self.step = 7
  if not o.pods or #o.pods == 0 then
    self:event(7, "skip", "no pod template")
    return true
  end
  local objs = {}
  for _, ns in ipairs(self.namespaces) do
    for i, p in ipairs(o.pods) do
      local obj, err
      if p.template then
        obj, err = manifest.render(p.template, self:template_values(p.template, p.values, ns))
      else
        obj, err = manifest.pod{ name = p.name, namespace = ns, container = p.container, image = p.image,
                                 pull_secrets = p.pull_secrets or { o.secret_name } }
      end
      if not obj then return nil, self:fail(7, errors.wrap(err, "pod " .. i)) end
      obj.metadata = obj.metadata or {}
      obj.metadata.namespace = obj.metadata.namespace or ns
      objs[#objs + 1] = obj
    end
  end
  local function what(obj)
    return (obj.kind or "object") .. " " .. obj.metadata.namespace .. "/" .. tostring(obj.metadata.name)
  end
  for _, obj in ipairs(objs) do self:event(7, "start", what(obj)) end
  local action, result, failed = {}, {}, {}
  if o.dry_run then
    for i, obj in ipairs(objs) do
      self.manifests[#self.manifests + 1] = obj
      action[i], result[i] = "would apply", obj
    end
  else
    local got = self.kube:get_many(objs, self:batch_opts())
    local todo, apply = {}, {}
    for i, obj in ipairs(objs) do
      local x = got[i]
      if x.obj and contains(x.obj, obj) then
        action[i], result[i] = "unchanged", x.obj
      elseif x.obj or x.err.code == 404 then
        todo[#todo + 1], apply[#apply + 1] = i, obj
      else
        failed[i] = x.err
      end
    end
    local applied = self.kube:apply_many(apply, self:batch_opts())
    for j, i in ipairs(todo) do
      local x = applied[j]
      if x.err then failed[i] = x.err
      else action[i], result[i] = x.status == 201 and "created" or "applied", x.obj end
    end
  end
  local list = {}
  for i, obj in ipairs(objs) do
    if failed[i] then
      list[#list + 1] = { where = obj.metadata.namespace .. "/" .. tostring(obj.metadata.name),
                          ns = obj.metadata.namespace, err = failed[i] }
    else
      local r = result[i]
      self.applied[#self.applied + 1] = { kind = r.kind, namespace = r.metadata.namespace,
                                          name = tostring(obj.metadata.name), action = action[i], object = r }
      self:event(7, "done", what(r) .. " " .. action[i])
    end
  end
  if #list > 0 then
    local e = self:fail(7, failures_error(list, #objs, "object"))
    if self.written or self.token_state == "reused" or self.token_state == "apikey" then
      e.message = e.message .. string.format(' (the pull secret "%s" was written and is valid)', o.secret_name)
    end
    return nil, e
  end
  return true
end

-- Revokes what must go: the replaced tokens after a rotation, or our own token after a failure.
function Run:revoke(ids, why)
  local failed = {}
  for _, id in ipairs(ids) do
    local ok, err = self.reg:revoke(id)
    if not ok and err.status ~= 404 then failed[#failed + 1] = { id = id, err = err } end
    self:event(4, ok and "done" or "fail", why .. " token " .. short_id(id) .. (ok and " revoked" or " not revoked"))
  end
  return failed
end

--- The tokens the target secrets held before this run that none of them holds now (`holding`: the
-- namespaces whose secret holds this run's token) and that the registry lists as not revoked: the
-- ones a rotation, or a secret rewritten to another token, leaves behind. { id, ... }.
function Run:displaced(holding)
  local out = {}
  if self.opts.dry_run or not self.reg then return out end
  for _, h in ipairs(self.replaced or {}) do
    local t = self.listed and self.listed[h.id]
    local free = h.id ~= self.token_id and t ~= nil and not t.revoked
    for ns, ids in pairs(self.held_by or {}) do
      for _, id in ipairs(ids) do
        if id == h.id and not holding[ns] then free = false end
      end
    end
    if free then out[#out + 1] = h.id end
  end
  return out
end

--- No orphans: after a failure, the token this run minted is revoked when no secret holds it, and
-- kept (and said so) when one does; a token it replaced that no target secret holds now is revoked
-- (rotation's promise, kept in the namespaces that were done). Secrets not verified in step 6 are
-- read back to know.
function Run:settle(err)
  local id = self.minted
  self.settled = true
  local holders, unsure, refs, idx = {}, {}, {}, {}
  for _, ns in ipairs(self.namespaces) do
    if self.verified[ns] then holders[#holders + 1] = ns
    elseif self.writing then refs[#refs + 1], idx[#idx + 1] = self:secret_ref(ns), ns end
  end
  local back = self.kube:get_many(refs, self:batch_opts())
  for i, ns in ipairs(idx) do
    local x = back[i]
    if x.obj then
      if self:holds(ns, x) then holders[#holders + 1] = ns end
    elseif x.err.code ~= 404 then
      unsure[#unsure + 1] = ns
    end
  end
  self:settle_minted(err, id, holders, unsure)
  -- what the token this run minted replaced, in the namespaces that hold it now
  local holding = {}
  for _, ns in ipairs(holders) do holding[ns] = true end
  local gone = self:displaced(holding)
  if #gone > 0 then
    local failed = self:revoke(gone, "replaced")
    local bad = {}
    for _, f in ipairs(failed) do bad[f.id] = true end
    local done, kept = {}, {}
    for _, g in ipairs(gone) do
      if bad[g] then kept[#kept + 1] = g else done[#done + 1] = g end
    end
    if #done > 0 then
      err.message = err.message .. string.format(" (the replaced token%s %s %s revoked: no secret holds %s now)",
        #done == 1 and "" or "s", table.concat(done, ", "), #done == 1 and "is" or "are", #done == 1 and "it" or "them")
      err.replaced_revoked = done
    end
    if #kept > 0 then
      err.message = err.message .. string.format(" (the replaced token%s %s could not be revoked: revoke with "
        .. "`pullsecret token rm %s`)", #kept == 1 and "" or "s", table.concat(kept, ", "), table.concat(kept, " "))
      err.orphans = kept
    end
  end
end

-- settle's part for the token this run minted (`id`): kept, revoked, or an orphan.
function Run:settle_minted(err, id, holders, unsure)
  if #holders > 0 then
    err.message = err.message .. string.format(" (the token %s minted by this run is kept: the secret in %d "
      .. "namespace%s holds it)", short_id(id), #holders, #holders == 1 and "" or "s")
    err.kept = id
  elseif #unsure > 0 then
    err.message = err.message .. string.format(" (the token %s minted by this run is kept: the secret in "
      .. "namespace%s %s could not be read back; if none holds it, revoke it with `pullsecret token rm %s`)",
      short_id(id), #unsure == 1 and "" or "s", table.concat(unsure, ", "), id)
    err.orphan = id
  else
    local failed = self:revoke({ id }, "unused")
    if #failed > 0 then
      err.message = err.message .. string.format(" (and the token %s minted by this run could not be revoked: "
        .. "revoke it with `pullsecret token rm %s`)", short_id(id), id)
      err.orphan = id
    else
      err.revoked = id
    end
  end
end

function Run:cleanup()
  if self.owned_kube then self.owned_kube:close() end
  if self.owned_session then self.owned_session:close() end
end

function Run:result()
  return {
    namespace = self.namespaces[1], namespaces = self.namespaces, secret_name = self.opts.secret_name,
    registry = self.server, token_id = self.token_id, token = self.token_state, username = self.username,
    secrets = self.secrets, service_accounts = self.service_accounts, pods = self.applied,
    described = self.described, dry_run = self.opts.dry_run or false,
    manifests = self.opts.dry_run and self.manifests or nil, revoked = self.revoked, unheld = self.unheld,
  }
end

--- The domain step 7 fills <dedicated_domain> with, as far as the options tell before step 1: the
-- session's, `domain`, the api host's (api.<domain>), or the secret's server (registry.<domain>).
function run.known_domain(o)
  local d
  if type(o.session) == "table" then d = o.session.domain
  elseif not o.icr then
    d = o.domain
    if not d and type(o.api) == "string" then d = o.api:gsub("^%a[%w+.-]*://", ""):match("^api%.([^:/]+)") end
  end
  if d then return d end
  local server = o.docker_server or (type(o.registry) == "string" and run.server_key(registry_url(o.registry)))
  return type(server) == "string" and server:match("^registry%.(.+)$") or nil
end

-- Pod templates are checked before step 1, so a missing value never costs a minted token. The
-- values the later steps find (the registry, the domain when it can be known) get a stand-in.
function Run:check_pods()
  local manifest = require "pullsecret.manifest"
  for i, p in ipairs(self.opts.pods or {}) do
    if p.template then
      local v = self:template_values(p.template, p.values, "default")
      if v.registry_url == nil and p.template:find("<registry_url>", 1, true) then v.registry_url = "registry" end
      if v.dedicated_domain == nil and p.template:find("<dedicated_domain>", 1, true) then
        v.dedicated_domain = run.known_domain(self.opts)
      end
      local obj, err = manifest.render(p.template, v)
      if not obj and v.dedicated_domain == nil and p.template:find("<dedicated_domain>", 1, true) then
        err = errors.new(err.kind, err.message .. " (the domain cannot be derived: the API endpoint is not "
          .. "api.<domain> and the registry is not registry.<domain>)", err)
      end
      if not obj then return nil, self:fail(7, errors.wrap(err, "pod " .. i)) end
    end
  end
  return true
end

function Run:go()
  local o = self.opts
  local ok, err = self:check_pods()
  if not ok then return nil, err end
  ok, err = self:kube_client()
  if not ok then return nil, self:fail(5, err) end
  self.namespaces = o.namespaces or { o.namespace or self.kube.namespace or "default" }
  if o.icr then
    ok, err = self:icr()
    if not ok then return nil, err end
  else
    self.username = o.docker_username or "token"
    ok, err = self:login()
    if ok then ok, err = self:org() end
    if ok then ok, err = self:registry_token() end
    if not ok then return nil, err end
  end
  ok, err = self:describe()
  if ok then ok, err = self:write_secrets() end
  if not ok then
    if self.minted then self:settle(err) end
    return nil, err
  end
  local unrevoked = {}
  local every = {}
  for _, ns in ipairs(self.namespaces) do every[ns] = true end
  local gone = self:displaced(every)
  if not self.minted then
    -- Brought onto a token the secrets already had: the others may still serve secrets elsewhere
    -- (other namespaces, other clusters), so they are named, not revoked.
    self.unheld, gone = #gone > 0 and gone or nil, {}
  end
  if #gone > 0 then
    local failed = self:revoke(gone, "replaced")
    local bad = {}
    for _, f in ipairs(failed) do bad[f.id] = true; unrevoked[#unrevoked + 1] = f end
    self.revoked = {}
    for _, id in ipairs(gone) do if not bad[id] then self.revoked[#self.revoked + 1] = id end end
  end
  -- The secrets hold the new token: a replaced token that could not be revoked does not stop the
  -- pods, but the run fails at the end, naming it and how to revoke it (a re-run would not: no
  -- secret holds it any more).
  ok, err = self:pods()
  if #unrevoked > 0 then
    local ids = {}
    for i, f in ipairs(unrevoked) do ids[i] = f.id end
    local note = string.format("the secrets hold the new token %s, but the replaced token%s %s could not be "
      .. "revoked (%s): revoke %s with `pullsecret token rm %s`", short_id(self.token_id), #ids == 1 and "" or "s",
      table.concat(ids, ", "), tostring(unrevoked[1].err.message), #ids == 1 and "it" or "them",
      table.concat(ids, " "))
    if ok then
      err = self:fail(4, errors.new(unrevoked[1].err.kind, note, unrevoked[1].err))
      err.cause, err.result = unrevoked[1].err, self:result()
    else
      err.message = err.message .. " (and " .. note .. ")"
    end
    err.orphan, err.orphans = ids[1], ids
    return nil, err
  end
  if not ok then return nil, err end
  return self:result()
end

--- Runs the procedure: result | nil, err. See the module header.
function run.run(opts, on_event)
  local ok, err = check(opts)
  if not ok then return nil, err end
  if on_event ~= nil and type(on_event) ~= "function" then error("pullsecret.run: on_event must be a function", 2) end
  local self = setmetatable({ opts = opts, on_event = on_event, user_http_event = opts.on_event, described = {},
                              secrets = {}, service_accounts = {}, applied = {}, manifests = {},
                              verified = {} }, Run)
  local res
  ok, res, err = pcall(Run.go, self)
  if not ok and self.minted and not self.settled then
    -- An error raised after minting (Ctrl-C among them): the token is settled as after a failure,
    -- and the error says what became of it.
    local note = errors.new("protocol", "")
    if pcall(self.settle, self, note) then
      res = tostring(res) .. (note.revoked and string.format(" (the token %s minted by this run is revoked)",
        short_id(note.revoked)) or note.message)
    end
  end
  self:cleanup()
  if not ok then error(res, 0) end
  return res, err
end

return setmetatable(run, { __call = function(_, ...) return run.run(...) end })
