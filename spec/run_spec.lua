-- pullsecret.run: the seven steps end to end against the simulator over TLS.
local sim = require "pullsecret.sim"
local manifest = require "pullsecret.manifest"
local core = require "pullsecret.core"
local cjson = require "cjson.safe"

local PASSWORD = "demo-password"

local function writes(stats, listener)
  local n = 0
  for _, l in ipairs(stats.log or {}) do
    if (listener == nil or l.listener == listener) and l.method ~= "GET" and l.method ~= "HEAD" then n = n + 1 end
  end
  return n
end

local function live_tokens(s)
  local out = {}
  for _, t in ipairs(s:state("registry").tokens) do
    if not t.revoked then out[#out + 1] = t end
  end
  return out
end

local function registry_id(token)
  return token and require("pullsecret.registry").token_info(token).id
end

local function secret_token(s, ns, name, server)
  local obj = s:state("kube").objects.secrets[ns .. "/" .. name]
  if not obj then return nil end
  local doc = cjson.decode(core.b64decode(obj.data[".dockerconfigjson"]))
  local entry = doc.auths[server]
  return entry and entry.password, entry and entry.username
end

describe("pullsecret.run", function()
  local s
  local events

  local function opts(extra)
    local o = { api = s.urls.api, username = "demo@example.com", password = PASSWORD, org = "demo-org",
      registry = s.urls.registry, docker_server = "registry.sim.example", ca_file = s.ca_file,
      kubeconfig = s.kubeconfig, namespace = "default",
      secret_name = "regtok", docker_email = "a@b.c",
      pods = { { template = manifest.SEED_POD_TEMPLATE, values = { pod_name = "web", container_name = "app",
        my_namespace = "team", my_image = "api", tag = "1.2" } } },
      retry = { attempts = 2, base_ms = 10, max_ms = 20, max_seconds = 2 } }
    for k, v in pairs(extra or {}) do
      if v == false then o[k] = nil else o[k] = v end
    end
    return o
  end

  local function go(extra)
    events = {}
    return require("pullsecret").run(opts(extra), function(ev) events[#events + 1] = ev end)
  end

  before_each(function()
    s = sim.start{ services = { api = true, login = true, iam = true, registry = true, kube = {} } }
  end)
  after_each(function() s:stop() end)

  it("first run mints one token, creates the secret and the pod; a second run mints and writes nothing", function()
    local r, err = go()
    assert.is_nil(err)
    assert.equal("new", r.token)
    assert.equal("default", r.namespace)
    local server = r.registry
    assert.equal("registry.sim.example", server)
    local live = live_tokens(s)
    assert.equal(1, #live)
    assert.equal(live[1]._id, r.token_id)
    local tok, user = secret_token(s, "default", "regtok", server)
    assert.equal("token", user)
    assert.equal(live[1].token, tok)
    assert.equal("permanent=true", s:state("registry").requests[1].query)
    local pod = s:state("kube").objects.pods["default/web"]
    assert.equal("regtok", pod.spec.imagePullSecrets[1].name)
    assert.equal("registry.sim.example/team/api:1.2", pod.spec.containers[1].image)
    assert.equal(1, #r.pods)
    -- one event per step start/finish, in order
    local seen = {}
    for _, ev in ipairs(events) do seen[#seen + 1] = ev.step .. ev.phase end
    assert.same({ "1start", "1done", "2start", "2done", "3start", "3done", "4start", "4done", "5start", "5done",
                  "6start", "6done", "7start", "7done" }, seen)
    assert.equal(7, events[1].total)

    s:reset_stats()
    local r2, err2 = go()
    assert.is_nil(err2)
    assert.equal("reused", r2.token)
    assert.equal(r.token_id, r2.token_id)
    local st = s:stats()
    assert.equal(0, writes(st, "registry"))
    assert.equal(1, writes(st, "login"))          -- the token grant itself (a POST), nothing else
    assert.equal(0, writes(st, "kube"))           -- the secret and the pod are already as wanted
    assert.equal(1, #live_tokens(s))
    assert.equal("unchanged", r2.secrets[1].action)
    assert.equal("unchanged", r2.pods[1].action)
  end)

  it("checks pod templates before step 1: a missing value mints nothing", function()
    local r, err = go{ pods = { { template = manifest.SEED_POD_TEMPLATE, values = { pod_name = "web" } } } }
    assert.is_nil(r)
    assert.equal(7, err.step)
    assert.equal("input", err.kind)
    assert.matches("<container_name>", err.message, 1, true)
    assert.equal(0, #s:state("registry").tokens)
    assert.equal(0, s:stats().requests.login or 0)
  end)

  it("dry-run manifests never hold the secret, also when a token is reused or on the icr path", function()
    assert(go{ pods = false })
    local r = assert(go{ pods = false, dry_run = true })
    assert.equal("reused", r.token)
    local doc = cjson.decode(core.b64decode(r.manifests[1].data[".dockerconfigjson"]))
    assert.equal("<token>", doc.auths["registry.sim.example"].password)
    r = assert(go{ api = false, docker_server = false, pods = false, dry_run = true,
                   icr = { region = "de", apikey = "sim-icr-key-456" } })
    local text = core.b64decode(r.manifests[1].data[".dockerconfigjson"])
    assert.falsy(text:find("sim-icr-key-456", 1, true))
    assert.equal("<token>", cjson.decode(text).auths["de.icr.io"].password)
  end)

  it("a re-run without pods writes nothing to Kubernetes or the registry", function()
    assert(go{ pods = false })
    s:reset_stats()
    local r = assert(go{ pods = false })
    assert.equal("reused", r.token)
    local st = s:stats()
    assert.equal(0, writes(st, "kube"))
    assert.equal(0, writes(st, "registry"))
  end)

  it("rotate leaves exactly one live token, the new one, in the secret", function()
    local r1 = assert(go{ pods = false })
    local r2 = assert(go{ pods = false, rotate = true })
    assert.equal("rotated", r2.token)
    assert.not_equal(r1.token_id, r2.token_id)
    local live = live_tokens(s)
    assert.equal(1, #live)
    assert.equal(r2.token_id, live[1]._id)
    assert.equal(live[1].token, (secret_token(s, "default", "regtok", r2.registry)))
    assert.same({ r1.token_id }, r2.revoked)
  end)

  it("dry_run logs in and reads but makes no write request and mints no token", function()
    local r = assert(go{ dry_run = true })
    local st = s:stats()
    assert.equal(0, writes(st, "kube"))
    assert.equal(0, writes(st, "registry"))
    assert.equal(0, #live_tokens(s))
    assert.is_true(r.dry_run)
    assert.equal(2, #r.manifests)
    assert.equal("Secret", r.manifests[1].kind)
    local doc = cjson.decode(core.b64decode(r.manifests[1].data[".dockerconfigjson"]))
    assert.equal("<token>", doc.auths["registry.sim.example"].password)
    assert.equal("Pod", r.manifests[2].kind)
  end)

  it("a failure to write the secret revokes the token it minted, and a re-run converges", function()
    s:fault{ listener = "kube", method = "PATCH", path = "/api/v1/namespaces/default/secrets/regtok", status = 500 }
    local r, err = go()
    assert.is_nil(r)
    assert.equal(6, err.step)
    assert.matches("^step 6 %(pull secret%): ", err.message)
    assert.equal(0, #live_tokens(s))              -- minted, then revoked: no orphan
    assert.equal(1, #s:state("registry").tokens)
    s:clear_faults()
    local r2 = assert(go())
    assert.equal("new", r2.token)
    assert.equal(1, #live_tokens(s))
  end)

  it("a fault at each step names that step; a re-run after each converges", function()
    local faults = {   -- step 4 first: later runs reuse the token and never POST again
      { step = 4, f = { listener = "registry", method = "POST", path = "/api/v1/tokens", status = 500 } },
      { step = 1, f = { listener = "login", path = "/.*oauth/token", status = 500 } },
      { step = 3, f = { listener = "api", path = "/v2/organizations", status = 500 } },
      { step = 5, f = { listener = "kube", path = "/api/v1/namespaces/default/secrets", status = 500 } },
      { step = 7, f = { listener = "kube", path = "/api/v1/namespaces/default/pods/web", status = 500 } },
    }
    for _, case in ipairs(faults) do
      s:fault(case.f)
      local r, err = go()
      assert.is_nil(r, "step " .. case.step)
      assert.equal(case.step, err.step)
      assert.matches("^step " .. case.step .. " %(", err.message)
      if case.step == 7 then
        assert.matches('the pull secret "regtok" was written and is valid', err.message, 1, true)
      end
      s:clear_faults()
      local ok, err2 = go()
      assert.is_nil(err2)
      assert.truthy(ok)
      assert.equal(1, #live_tokens(s))
    end
  end)

  it("wrong password fails at step 1 with the service's advice and no secret in the message", function()
    local r, err = go{ password = "not-the-password" }
    assert.is_nil(r)
    assert.equal(1, err.step)
    assert.equal("auth", err.kind)
    assert.matches("check the user name and password", err.message)
    assert.falsy(err.message:find("not-the-password", 1, true))
  end)

  it("fans out to several namespaces and service accounts with one token", function()
    local k = assert(require("pullsecret.kube").new{ kubeconfig = s.kubeconfig })
    for _, ns in ipairs{ "team-a", "team-b" } do
      assert(k:create{ apiVersion = "v1", kind = "Namespace", metadata = { name = ns } })
    end
    k:close()
    local r = assert(go{ namespaces = { "team-a", "team-b" }, service_accounts = { "default" }, pods = false })
    assert.equal(2, #r.secrets)
    local t1 = secret_token(s, "team-a", "regtok", r.registry)
    local t2 = secret_token(s, "team-b", "regtok", r.registry)
    assert.equal(t1, t2)
    assert.equal(1, #live_tokens(s))
    local sa = s:state("kube").objects.serviceaccounts["team-b/default"]
    assert.equal("regtok", sa.imagePullSecrets[1].name)
  end)

  it("the icr.io path writes an iamapikey secret for the region and mints nothing", function()
    local r = assert(go{ api = false, docker_server = false, icr = { region = "uk", apikey = "sim-icr-key-123" },
      pods = false })
    assert.equal("uk.icr.io", r.registry)
    local pass, user = secret_token(s, "default", "regtok", "uk.icr.io")
    assert.equal("iamapikey", user)
    assert.equal("sim-icr-key-123", pass)
    assert.equal(0, #s:state("registry").tokens)
    s:reset_stats()
    r = assert(go{ api = false, docker_server = false, icr = { region = "uk", apikey = "sim-icr-key-123" },
      pods = false })
    assert.equal(0, writes(s:stats(), "kube"))
    assert.equal("unchanged", r.secrets[1].action)
  end)

  it("a namespace that does not exist is reported before any token is minted", function()
    local r, err = go{ namespaces = { "default", "nowhere" }, pods = false }
    assert.is_nil(r)
    assert.equal(4, err.step)
    assert.equal("NotFound", err.reason)
    assert.matches('namespace nowhere does not exist', err.message, 1, true)
    assert.same({ "nowhere" }, err.namespaces)
    assert.equal(0, #s:state("registry").tokens)
    assert.equal(0, writes(s:stats(), "kube"))
  end)

  it("a replaced token that cannot be revoked: the pods are still applied, then step 4 fails naming the fix",
    function()
    local r1 = assert(go())
    s:fault{ listener = "registry", method = "DELETE", path = "/api/v1/tokens/.*", status = 403 }
    local r, err = go{ rotate = true }
    s:clear_faults()
    assert.is_nil(r)
    assert.equal(4, err.step)
    assert.matches("^step 4 %(registry token%): the secrets hold the new token ", err.message)
    assert.matches("replaced token " .. r1.token_id .. " could not be revoked", err.message, 1, true)
    assert.matches("revoke it with `pullsecret token rm " .. r1.token_id .. "`", err.message, 1, true)
    assert.equal(r1.token_id, err.orphan)
    assert.same({ r1.token_id }, err.orphans)
    -- everything else was done: the secret holds the new token, the pod was checked
    local res = err.result
    assert.equal("rotated", res.token)
    assert.same({}, res.revoked)
    assert.equal("unchanged", res.pods[1].action)
    local live = live_tokens(s)
    assert.equal(2, #live)
    assert.equal(res.token_id, live[2]._id)
    assert.equal(live[2].token, (secret_token(s, "default", "regtok", res.registry)))
    assert.equal("fail", events[#events].phase)
    assert.equal(4, events[#events].step)
    assert.equal(7, events[#events - 1].step)
  end)

  it("interrupted between minting and writing: the token is revoked before the error is raised again", function()
    local real = assert(require("pullsecret.kube").new{ kubeconfig = s.kubeconfig })
    local kube = setmetatable({ upsert_secret_many = function() error("interrupted!", 0) end }, { __index = real })
    local ok, raised = pcall(go, { kube = kube, kubeconfig = false })
    real:close()
    assert.is_false(ok)
    local tokens = s:state("registry").tokens
    assert.equal(1, #tokens)
    assert.is_true(tokens[1].revoked)
    assert.equal("interrupted! (the token " .. tokens[1]._id:sub(1, 8) .. "… minted by this run is revoked)", raised)
  end)

  it("a template's <dedicated_domain> that cannot be derived is an error before anything is sent", function()
    -- the api is https://127.0.0.1:PORT and the registry a bare address: no api.<domain>, no registry.<domain>
    local r, err = go{ docker_server = false }
    assert.is_nil(r)
    assert.equal(7, err.step)
    assert.matches("no value for placeholder <dedicated_domain>", err.message, 1, true)
    assert.matches("(the domain cannot be derived: the API endpoint is not api.<domain> and the registry is "
      .. "not registry.<domain>)", err.message, 1, true)
    assert.same({}, s:stats().log)
    assert.equal(0, #s:state("registry").tokens)
    -- a registry.<domain> server key, or a value given, is enough
    assert.equal("sim.example", require("pullsecret.run").known_domain(opts()))
    assert.equal("example.com", require("pullsecret.run").known_domain{ api = "https://api.example.com:443" })
    assert.is_nil(require("pullsecret.run").known_domain{ icr = {}, api = "api.example.com" })
  end)

  it("a secret another field manager owns (kubectl create) conflicts, and force = true takes it over", function()
    local k = assert(require("pullsecret.kube").new{ kubeconfig = s.kubeconfig })
    local by_hand = manifest.pull_secret{ name = "regtok", namespace = "default", server = "registry.sim.example",
      username = "token", password = "typed-by-hand", email = "a@b.c" }
    assert(k:request{ method = "POST", path = "/api/v1/namespaces/default/secrets",
      query = { fieldManager = "kubectl-create" }, body = by_hand })
    k:close()
    local r, err = go()
    assert.is_nil(r)
    assert.equal(6, err.step)
    assert.equal("conflict", err.kind)
    assert.matches("kubectl-create", err.message, 1, true)
    assert.equal("typed-by-hand", (secret_token(s, "default", "regtok", "registry.sim.example")))
    assert.equal(0, #live_tokens(s))                      -- the token minted for it was revoked
    r, err = go{ force = true }
    assert.is_nil(err)
    assert.equal("new", r.token)
    assert.equal(live_tokens(s)[1].token, (secret_token(s, "default", "regtok", "registry.sim.example")))
  end)

  it("a namespace that does not exist stops the run at step 4, before a token is minted, saying so", function()
    local r, err = go{ namespace = false, namespaces = { "default", "nosuch" } }
    assert.is_nil(r)
    assert.equal(4, err.step)
    assert.equal("step 4 (registry token): reading the target namespaces before a token is minted: namespace "
      .. "nosuch does not exist: create it first (kubectl create namespace NAME) or correct -n/namespaces",
      err.message)
    assert.equal(0, #s:state("registry").tokens)
  end)

  describe("in two namespaces", function()
    before_each(function()
      local k = assert(require("pullsecret.kube").new{ kubeconfig = s.kubeconfig })
      for _, ns in ipairs{ "ns-a", "ns-b" } do
        assert(k:create{ apiVersion = "v1", kind = "Namespace", metadata = { name = ns } })
      end
      k:close()
      s:reset_stats()
    end)
    local function both(extra)
      local o = { namespace = false, namespaces = { "ns-a", "ns-b" }, pods = false }
      for key, v in pairs(extra or {}) do o[key] = v end
      return o
    end

    it("a rotation that fails in one namespace revokes the old token of the one it finished", function()
      local a = assert(go{ namespace = "ns-a", pods = false })
      local b = assert(go{ namespace = "ns-b", pods = false, rotate = true })      -- each holds its own token
      assert.are_not.equal(a.token_id, b.token_id)
      s:fault{ listener = "kube", method = "PATCH", path = "/api/v1/namespaces/ns%-b/secrets/regtok", status = 500 }
      local r, err = go(both{ rotate = true })
      s:clear_faults()
      assert.is_nil(r)
      assert.equal(6, err.step)
      assert.same({ a.token_id }, err.replaced_revoked)
      assert.matches("(the replaced token " .. a.token_id .. " is revoked: no secret holds it now)", err.message,
        1, true)
      local live = {}
      for _, t in ipairs(live_tokens(s)) do live[t._id] = true end
      assert.is_nil(live[a.token_id])                 -- ns-a holds the new token now
      assert.is_true(live[b.token_id])                -- ns-b still holds its own
      assert.is_true(live[err.kept])
      -- the re-run converges: both namespaces on one token; ns-b's old one is named (a secret
      -- elsewhere may use it), and a rotation would revoke it
      r = assert(go(both()))
      assert.equal("reused", r.token)
      assert.equal(err.kept, r.token_id)
      assert.same({ b.token_id }, r.unheld)
      r = assert(go(both{ rotate = true }))
      assert.same({ err.kept }, r.revoked)
      live = {}
      for _, t in ipairs(live_tokens(s)) do live[t._id] = true end
      assert.same({ [r.token_id] = true, [b.token_id] = true }, live)   -- b's: in no secret here any more
      assert.equal(r.token_id, registry_id(secret_token(s, "ns-b", "regtok", "registry.sim.example")))
    end)

    it("namespaces holding different valid tokens end on one; the other is named, not revoked", function()
      local a = assert(go{ namespace = "ns-a", pods = false })
      local b = assert(go{ namespace = "ns-b", pods = false, rotate = true })
      local r = assert(go(both()))
      assert.equal("reused", r.token)
      assert.equal(a.token_id, r.token_id)
      assert.is_nil(r.revoked)
      assert.same({ b.token_id }, r.unheld)             -- a secret elsewhere may still use it
      assert.equal(2, #live_tokens(s))
      assert.equal(live_tokens(s)[1].token, (secret_token(s, "ns-b", "regtok", "registry.sim.example")))
    end)

    it("a token held under another user in one namespace is still reused from the next", function()
      local a = assert(go{ namespace = "ns-b", pods = false })
      local k = assert(require("pullsecret.kube").new{ kubeconfig = s.kubeconfig })
      local tok = live_tokens(s)[1].token
      assert(k:upsert_secret(manifest.pull_secret{ name = "regtok", namespace = "ns-a",
        server = "registry.sim.example", username = "robot", password = tok }, {}))
      k:close()
      local r = assert(go(both()))
      assert.equal("reused", r.token)
      assert.equal(a.token_id, r.token_id)
      assert.equal(1, #live_tokens(s))
      assert.equal(1, #s:state("registry").tokens)
    end)

    it("a secret written under another server key keeps its token: nothing minted", function()
      local a = assert(go(both()))
      local r = assert(go(both{ docker_server = "registry.sim.example:443" }))
      assert.equal("reused", r.token)
      assert.equal(a.token_id, r.token_id)
      assert.equal(1, #s:state("registry").tokens)
      assert.equal(live_tokens(s)[1].token, (secret_token(s, "ns-a", "regtok", "registry.sim.example:443")))
    end)

    it("an empty namespaces list is an input error before anything is sent", function()
      local r, err = go{ namespace = false, namespaces = {} }
      assert.is_nil(r)
      assert.same({ "input", "namespaces" }, { err.kind, err.field })
      assert.same({}, s:stats().log)
    end)
  end)

  it("an invalid secret_name is an input error before anything is sent", function()
    local r, err = go{ secret_name = "Bad_Name" }
    assert.is_nil(r)
    assert.equal("input", err.kind)
    assert.equal("secret_name", err.field)
    assert.matches('secret_name "Bad_Name" is not a valid DNS-1123 subdomain', err.message, 1, true)
    assert.same({}, s:stats().log)
    assert.equal(0, #s:state("registry").tokens)
  end)

  it("no secret in any event, log line, error or result, whatever happens", function()
    local texts = {}
    local function scan(v, where, seen)
      seen = seen or {}
      if type(v) == "string" then
        texts[#texts + 1] = where .. ": " .. v
        local raw = #v >= 8 and core.b64decode(v)
        if raw then texts[#texts + 1] = where .. " (base64-decoded): " .. raw end
      elseif type(v) == "table" and not seen[v] then
        seen[v] = true
        if getmetatable(v) and getmetatable(v).__tostring then texts[#texts + 1] = where .. ": " .. tostring(v) end
        for k, x in pairs(v) do scan(k, where, seen); scan(x, where .. "." .. tostring(k), seen) end
      end
    end
    local logs = {}
    local function case(extra)
      extra = extra or {}
      extra.log = function(line) logs[#logs + 1] = line end
      local r, err = go(extra)
      scan(r, "result"); scan(err, "error"); scan(events, "events")
      return r, err
    end
    local k = assert(require("pullsecret.kube").new{ kubeconfig = s.kubeconfig })
    assert(k:create{ apiVersion = "v1", kind = "Namespace", metadata = { name = "team-a" } })
    k:close()
    assert(case{ namespaces = { "default", "team-a" }, service_accounts = { "default" } })     -- new
    assert(case{ namespaces = { "default", "team-a" } })                                       -- reused
    assert(case{ rotate = true, dry_run = true })
    assert(case{ rotate = true })
    s:fault{ listener = "kube", method = "PATCH", path = "/api/v1/namespaces/default/secrets/other", status = 500 }
    local _, err = case{ secret_name = "other" }                     -- minted, not written, revoked
    s:clear_faults()
    assert.equal(6, err.step)
    assert.truthy(err.revoked)
    _, err = case{ password = "Wr0ng-pa55word" }
    assert.equal(1, err.step)
    assert(case{ api = false, docker_server = false, icr = { region = "uk", apikey = "sim-icr-key-789" },
      pods = false, dry_run = true })
    assert(case{ api = false, docker_server = false, icr = { region = "uk", apikey = "sim-icr-key-789" },
      pods = false })
    for _, line in ipairs(logs) do texts[#texts + 1] = "log: " .. line end
    assert.is_true(#logs > 50)
    local secrets = { PASSWORD, "Wr0ng-pa55word", "sim-icr-key-789" }
    local tokens = s:state("registry").tokens
    assert.equal(3, #tokens)                                  -- the first, the rotated one, the revoked one
    for _, t in ipairs(tokens) do secrets[#secrets + 1] = t.token end
    for _, text in ipairs(texts) do
      for _, secret in ipairs(secrets) do
        assert.falsy(text:find(secret, 1, true), text:sub(1, 200))
      end
      assert.falsy(text:find("eyJ[%w_%-]+%.[%w_%-]+%.[%w_%-]+"), text:sub(1, 200))
    end
  end)

  it("missing secret_name or api are input errors naming the option", function()
    local r, err = require("pullsecret").run{ api = "api.example.com", org = "o" }
    assert.is_nil(r)
    assert.equal("input", err.kind)
    assert.equal("secret_name", err.field)
    r, err = require("pullsecret").run{ secret_name = "x" }
    assert.is_nil(r)
    assert.equal("api", err.field)
  end)
end)
