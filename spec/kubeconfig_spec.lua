-- Reading kubeconfig files and in-cluster configuration the way client-go does; kubectl's own
-- `config view --minify --flatten` is the independent reader for merge order and paths.
local core = require "pullsecret.core"
local kubeconfig = require "pullsecret.kubeconfig"
local cjson = require "cjson.safe"

local FIX = "spec/fixtures/kubeconfig"
local PLUGIN = "spec/fixtures/exec-plugin.sh"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function cwd()
  local p = assert(io.popen("pwd"))
  local d = p:read("l")
  p:close()
  return d
end

local function mktemp_dir()
  local p = assert(io.popen("mktemp -d"))
  local d = p:read("l")
  p:close()
  assert(d and d:find("^/tmp/"), "mktemp -d failed")
  return d
end

-- an env function over a table (nothing leaks in from the real environment)
local function env_of(t)
  return function(name) return t[name] end
end

local function kubectl_view(kubeconfig_list, context)
  local cmd = "KUBECONFIG=" .. sh_quote(kubeconfig_list) .. " kubectl config view --minify --flatten -o json"
  if context then cmd = cmd .. " --context " .. sh_quote(context) end
  local p = assert(io.popen(cmd .. " 2>/dev/null"))
  local out = p:read("a")
  p:close()
  return assert(cjson.decode(out), "kubectl config view failed")
end

local function load_list(list, extra)
  local opts = { env = env_of { KUBECONFIG = list } }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return kubeconfig.load(opts)
end

describe("kubeconfig.load", function()
  local first, second = FIX .. "/first.yaml", FIX .. "/second.yaml"
  local list = first .. ":/nonexistent/kubeconfig::" .. second

  describe("KUBECONFIG merge", function()
    it("takes current-context, clusters, users and contexts from the first file that sets them", function()
      local cfg = assert(load_list(list))
      assert.are.equal("one", cfg.context_name)          -- first.yaml's current-context
      assert.are.equal("c1", cfg.cluster_name)            -- first.yaml's context "one", not second's
      assert.are.equal("u1", cfg.user_name)
      assert.are.equal("https://one.example.com:6443", cfg.server)
      assert.are.equal("ns-one", cfg.namespace)
      assert.are.equal("token", cfg.auth.method)
      assert.are.equal("Bearer token-one", cfg:auth_header())
      assert.are.same({ first, second }, cfg.source_files)  -- empty and missing entries ignored
    end)

    it("takes a name only the second file defines from the second file", function()
      local cfg = assert(load_list(list, { context = "two" }))
      assert.are.equal("https://two.example.com", cfg.server)
      assert.are.equal("ns-two", cfg.namespace)
      assert.are.equal("http://proxy.example.com:3128", cfg.proxy)
    end)

    it("keeps the first file's entry whole when both define the same name", function()
      local cfg = assert(load_list(list, { context = "shared-ctx" }))
      assert.are.equal("https://first-shared.example.com", cfg.server)
      assert.is_true(cfg.insecure)
      assert.are.equal("token_file", cfg.auth.method)
      assert.are.equal("Bearer token-from-first-file", cfg:auth_header())
      assert.are.equal("default", cfg.namespace)
    end)

    it("reverses with the list order", function()
      local cfg = assert(load_list(second .. ":" .. first))
      assert.are.equal("two", cfg.context_name)
      cfg = assert(load_list(second .. ":" .. first, { context = "shared-ctx" }))
      assert.are.equal("https://second-shared.example.com", cfg.server)
      assert.are.equal("Bearer token-from-second-file", cfg:auth_header())
    end)

    it("agrees with kubectl config view --minify --flatten", function()
      local abs = cwd() .. "/"
      for _, case in ipairs {
        { abs .. first .. ":" .. abs .. second, nil }, { abs .. first .. ":" .. abs .. second, "two" },
        { abs .. second .. ":" .. abs .. first, nil }, { abs .. FIX .. "/sub/nested.yaml", nil },
      } do
        local view = kubectl_view(case[1], case[2])
        local cfg = assert(load_list(case[1], { context = case[2] }))
        local cl, user, ctx = view.clusters[1].cluster, view.users[1].user, view.contexts[1]
        assert.are.equal(ctx.name, cfg.context_name)
        assert.are.equal(cl.server:gsub("/+$", ""), cfg.server)
        assert.are.equal(ctx.context.namespace or "default", cfg.namespace)
        local ca = cfg.ca_pem or read(cfg.ca_file)
        assert.are.equal(core.b64decode(cl["certificate-authority-data"]), ca)
        if user.token then assert.are.equal("Bearer " .. user.token, cfg:auth_header()) end
        if user["client-certificate-data"] then
          local o = assert(cfg:client_options())
          assert.are.equal(core.b64decode(user["client-certificate-data"]), o.cert_pem or read(o.cert_file))
          assert.are.equal(core.b64decode(user["client-key-data"]), o.key_pem or read(o.key_file))
        end
      end
    end)

    it("falls back to ~/.kube/config, and an explicit file is read alone", function()
      local home = mktemp_dir()
      os.execute("mkdir -p " .. sh_quote(home .. "/.kube"))
      os.execute("cp -r " .. sh_quote(FIX .. "/certs") .. " " .. sh_quote(home .. "/.kube/"))
      write(home .. "/.kube/config", read(second))
      local cfg = assert(kubeconfig.load { env = env_of { HOME = home } })
      assert.are.equal("two", cfg.context_name)
      cfg = assert(kubeconfig.load { env = env_of {}, home = home })
      assert.are.same({ home .. "/.kube/config" }, cfg.source_files)
      -- KUBECONFIG set: ~/.kube/config is not read
      cfg = assert(kubeconfig.load { env = env_of { HOME = home, KUBECONFIG = first } })
      assert.are.equal("one", cfg.context_name)
      -- explicit file: neither
      cfg = assert(kubeconfig.load { kubeconfig = second, env = env_of { HOME = home, KUBECONFIG = first },
                                     context = "one" })
      assert.are.equal("c2", cfg.cluster_name)
      os.execute("rm -rf " .. sh_quote(home))
    end)

    it("says so when there is no kubeconfig at all", function()
      local cfg, err = kubeconfig.load { env = env_of { KUBECONFIG = "/nonexistent/a:/nonexistent/b" } }
      assert.is_nil(cfg)
      assert.are.equal("config", err.kind)
      assert.are.equal("/nonexistent/a:/nonexistent/b: no kubeconfig found: none of the files KUBECONFIG lists "
        .. "exists; fix KUBECONFIG or pass a kubeconfig file", err.message)
      assert.are.same({ "/nonexistent/a:/nonexistent/b", "KUBECONFIG" }, { err.file, err.field })
      cfg, err = kubeconfig.load { env = env_of { HOME = "/nonexistent/home" } }
      assert.is_nil(cfg)
      assert.are.equal("/nonexistent/home/.kube/config: no kubeconfig found: set KUBECONFIG, pass a kubeconfig "
        .. "file, or create /nonexistent/home/.kube/config", err.message)
      cfg, err = kubeconfig.load { kubeconfig = "/nonexistent/explicit", env = env_of {} }
      assert.is_nil(cfg)
      assert.are.equal("/nonexistent/explicit", err.file)
    end)

    it("does not skip a KUBECONFIG file it may not read, as client-go does not", function()
      local d = mktemp_dir()
      os.execute("chmod 755 " .. d)
      write(d .. "/unread.yaml", read(FIX .. "/first.yaml"))
      os.execute("chmod 000 " .. d .. "/unread.yaml")
      local code = "local k = require 'pullsecret.kubeconfig'; local c, e = k.load{ env = function(n) "
        .. "if n == 'KUBECONFIG' then return '" .. d .. "/unread.yaml:" .. cwd() .. "/" .. FIX .. "/second.yaml' end "
        .. "end }; io.write(c and 'loaded ' .. c.cluster_name or e.kind .. ' | ' .. e.file .. ' | ' .. e.message)"
      -- root reads any file: the check runs as nobody then
      local as = (os.getenv("USER") == "root" or io.popen("id -u"):read("l") == "0")
        and "setpriv --reuid=65534 --regid=65534 --clear-groups " or ""
      local p = io.popen(as .. "env LUA_PATH=" .. sh_quote(package.path) .. " LUA_CPATH=" .. sh_quote(package.cpath)
        .. " lua5.4 -e " .. sh_quote(code) .. " 2>&1")
      local out = p:read("a")
      p:close()
      os.execute("rm -rf " .. sh_quote(d))
      assert.are.equal("config | " .. d .. "/unread.yaml | " .. d .. "/unread.yaml: cannot read: Permission denied",
        out)
    end)

    it("lets options override the context and the namespace", function()
      local cfg = assert(load_list(list, { context = "two", namespace = "override" }))
      assert.are.equal("override", cfg.namespace)
    end)
  end)

  describe("paths and data", function()
    it("resolves relative paths against the file that holds them", function()
      local cfg = assert(kubeconfig.load { kubeconfig = FIX .. "/sub/nested.yaml", env = env_of {} })
      assert.are.equal(FIX .. "/sub/../certs/ca.pem", cfg.ca_file)
      assert.are.equal(read(FIX .. "/certs/ca.pem"), read(cfg.ca_file))
      local o = assert(cfg:client_options())
      assert.are.equal(FIX .. "/sub/../certs/client.pem", o.cert_file)
      assert.are.equal(FIX .. "/sub/../certs/client.key", o.key_file)
      assert.are.equal(cfg.ca_file, o.ca_file)
      assert.is_nil(cfg:auth_header())
      assert.are.equal("client_cert", cfg.auth.method)
      -- the tokenFile of first.yaml, read from another working directory's point of view
      cfg = assert(load_list(first, { context = "shared-ctx" }))
      assert.are.equal(FIX .. "/tokens/first-token", cfg.auth.token_file)
    end)

    it("mixes the file and data forms as given", function()
      local cfg = assert(load_list(second, { context = "two" }))
      assert.is_nil(cfg.ca_file)
      assert.matches("Zml4dHVyZSBDQSBmcm9tIGRhdGE=", cfg.ca_pem, 1, true)
      local o = assert(cfg:client_options())
      assert.are.equal(cfg.ca_pem, o.ca_pem)
      assert.is_nil(o.ca_file)
      assert.are.equal(FIX .. "/certs/client.pem", o.cert_file)      -- file form
      assert.matches("Zml4dHVyZSBrZXkgZGF0YQ==", o.key_pem, 1, true)  -- data form
      assert.is_nil(o.key_file)
      assert.are.equal("http://proxy.example.com:3128", o.proxy)
      assert.is_false(o.insecure)
      assert.are.same({}, cfg.warnings)
    end)

    it("prefers *-data over the file form when both are set, with a warning", function()
      local cfg = assert(kubeconfig.load { kubeconfig = FIX .. "/data-and-file.yaml", env = env_of {} })
      local o = assert(cfg:client_options())
      assert.matches("Zml4dHVyZSBDQSBmcm9tIGRhdGE=", o.ca_pem, 1, true)
      assert.matches("Zml4dHVyZSBjZXJ0IGRhdGE=", o.cert_pem, 1, true)
      assert.matches("Zml4dHVyZSBrZXkgZGF0YQ==", o.key_pem, 1, true)
      assert.is_nil(o.ca_file)
      assert.is_nil(o.cert_file)
      assert.is_nil(o.key_file)
      assert.are.equal(3, #cfg.warnings)
      assert.matches("using certificate-authority-data", cfg.warnings[1], 1, true)
      assert.matches("using client-certificate-data", cfg.warnings[2], 1, true)
      assert.matches("using client-key-data", cfg.warnings[3], 1, true)
    end)
  end)

  describe("users", function()
    local auth = FIX .. "/auth.yaml"

    it("prefers token over tokenFile", function()
      local cfg = assert(kubeconfig.load { kubeconfig = auth, env = env_of {} })
      assert.are.equal("token", cfg.auth.method)
      assert.are.equal("Bearer the-static-token", cfg:auth_header())
    end)

    it("sends basic auth for username/password", function()
      local cfg = assert(kubeconfig.load { kubeconfig = auth, context = "basic", env = env_of {} })
      assert.are.equal("Basic " .. core.b64encode("admin:s3cret: yes"), cfg:auth_header())
    end)

    it("refuses a token together with username/password, and auth-provider, without leaking them", function()
      local cfg, err = kubeconfig.load { kubeconfig = auth, context = "both", env = env_of {} }
      assert.is_nil(cfg)
      assert.are.equal("config", err.kind)
      assert.are.equal(auth, err.file)
      assert.are.equal('user "both"', err.entry)
      assert.matches("only one authentication method", err.message)
      cfg, err = kubeconfig.load { kubeconfig = auth, context = "provider", env = env_of {} }
      assert.is_nil(cfg)
      assert.are.equal("auth-provider", err.field)
      assert.matches("exec plugin", err.message)
    end)

    it("allows a context without user (anonymous)", function()
      local cfg = assert(kubeconfig.load { kubeconfig = auth, context = "anonymous", env = env_of {} })
      assert.are.equal("none", cfg.auth.method)
      assert.is_nil(cfg:auth_header())
      assert.are.equal("anonymous (context \"anonymous\")", cfg:identity())
    end)

    it("supports tls-server-name through CURLOPT_CONNECT_TO", function()
      local cfg = assert(kubeconfig.load { kubeconfig = auth, context = "tls-name", env = env_of {} })
      assert.are.equal("https://10.1.2.3:6443", cfg.server)
      assert.are.equal("https://api.internal.example.com:6443", cfg.base_url)
      assert.are.equal("https://api.internal.example.com:6443/api/v1", cfg:url("/api/v1"))
      assert.are.same({ "api.internal.example.com:6443:10.1.2.3:6443" }, cfg:client_options().connect_to)
    end)

    it("honours tls-server-name against the simulator, as kubectl does", function()
      local ok, sim = pcall(require, "pullsecret.sim")
      if not ok then pending("pullsecret.sim not available") return end
      local s = sim.start { services = { kube = {} } }
      local results = {}
      for _, name in ipairs { "localhost", "wrong.example.com" } do
        local path = s.dir .. "/kubeconfig-" .. name
        write(path, (read(s.kubeconfig):gsub("(\n%s+server: [^\n]+)", "%1\n    tls-server-name: " .. name)))
        local cfg = assert(kubeconfig.load { kubeconfig = path, env = env_of {} })
        local c = core.client(assert(cfg:client_options()))
        local res, err = c:request { url = cfg:url("/version"), headers = { Authorization = cfg:auth_header() } }
        c:close()
        local p = assert(io.popen("kubectl --kubeconfig " .. sh_quote(path) .. " get --raw /version 2>&1"))
        p:read("a")
        local kubectl_ok = p:close()
        results[name] = { status = res and res.status, kind = err and err.kind, kubectl = kubectl_ok or false }
      end
      s:stop()
      assert.are.same({ status = 200, kubectl = true }, results.localhost)
      assert.are.same({ kind = "tls", kubectl = false }, results["wrong.example.com"])
    end)

    it("adds a scheme to a bare host:port as client-go does", function()
      local cfg = assert(kubeconfig.load { kubeconfig = auth, context = "no-scheme", env = env_of {} })
      assert.are.equal("https://10.1.2.3:6443", cfg.server)
      assert.is_true(cfg:client_options().insecure)
    end)

    it("re-reads the token file when it changes", function()
      local dir = mktemp_dir()
      write(dir .. "/token", "first-token\n")
      write(dir .. "/config", table.concat({
        "apiVersion: v1", "kind: Config", "current-context: c",
        "clusters: [{name: c, cluster: {server: 'https://k.example.com'}}]",
        "users: [{name: u, user: {tokenFile: token}}]",
        "contexts: [{name: c, context: {cluster: c, user: u}}]", "" }, "\n"))
      local cfg = assert(kubeconfig.load { kubeconfig = dir .. "/config", env = env_of {} })
      assert.are.equal(dir .. "/token", cfg.auth.token_file)
      assert.are.equal("Bearer first-token", cfg:auth_header())
      write(dir .. "/token", "  rotated-token  \n")
      assert.are.equal("Bearer rotated-token", cfg:auth_header())
      write(dir .. "/token", "\n")
      local h, err = cfg:auth_header()
      assert.is_nil(h)
      assert.matches("is empty", err.message)
      os.remove(dir .. "/token")
      h, err = cfg:auth_header()
      assert.is_nil(h)
      assert.are.equal("tokenFile", err.field)
      os.execute("rm -rf " .. sh_quote(dir))
    end)
  end)

  describe("exec credential plugins", function()
    local dir, plugin

    before_each(function()
      dir = mktemp_dir()
      plugin = cwd() .. "/" .. PLUGIN
    end)
    after_each(function()
      os.execute("rm -rf " .. sh_quote(dir))
    end)

    local function runs() return tonumber((read(dir .. "/count"):gsub("%s", ""))) end

    -- writes a kubeconfig whose user runs the fixture plugin
    local function config_with_plugin(api, mode, expiry, extra)
      local lines = {
        "apiVersion: v1", "kind: Config", "current-context: c",
        "clusters:", "- name: c", "  cluster:", "    server: https://exec.example.com:6443",
        "    certificate-authority-data: " .. core.b64encode("CA PEM"),
        "    extensions:", "    - name: client.authentication.k8s.io/exec",
        "      extension: {audience: sim, port: 8443}",
        "users:", "- name: plugged", "  user:", "    exec:",
        "      apiVersion: " .. api, "      command: " .. plugin,
        "      args: [" .. table.concat({ "'" .. dir .. "'", api, mode, expiry and ("'" .. expiry .. "'") or nil },
                                        ", ") .. "]",
        "      env: [{name: FIXTURE_GREETING, value: \"hello 'plugin' $HOME\"}]",
      }
      for _, l in ipairs(extra or {}) do lines[#lines + 1] = l end
      lines[#lines + 1] = "contexts: [{name: c, context: {cluster: c, user: plugged}}]"
      write(dir .. "/config", table.concat(lines, "\n") .. "\n")
      return dir .. "/config"
    end

    local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t) end

    it("runs a v1 plugin with env and KUBERNETES_EXEC_INFO, and caches the token until it expires", function()
      local t0 = os.time()
      local clock = t0
      local path = config_with_plugin("client.authentication.k8s.io/v1", "token", iso(t0 + 100),
                                      { "      interactiveMode: Never", "      provideClusterInfo: true" })
      local cfg = assert(kubeconfig.load { kubeconfig = path, env = env_of {}, now = function() return clock end })
      assert.are.equal("exec", cfg.auth.method)
      assert.are.equal("Bearer exec-token-1", cfg:auth_header())
      assert.are.equal(1, runs())
      assert.are.equal("hello 'plugin' $HOME", read(dir .. "/greeting"))
      -- neither the env values nor KUBERNETES_EXEC_INFO were on any command line while it ran
      local cmdlines = read(dir .. "/cmdlines")
      assert.matches(plugin, cmdlines, 1, true)        -- the scan did see the plugin's own
      assert.is_nil(cmdlines:find("hello", 1, true))
      assert.is_nil(cmdlines:find("ExecCredential", 1, true))
      local info = assert(cjson.decode(read(dir .. "/exec-info.json")))
      assert.are.equal("ExecCredential", info.kind)
      assert.are.equal("client.authentication.k8s.io/v1", info.apiVersion)
      assert.is_false(info.spec.interactive)
      assert.are.equal("https://exec.example.com:6443", info.spec.cluster.server)
      assert.are.equal(core.b64encode("CA PEM"), info.spec.cluster["certificate-authority-data"])
      assert.are.same({ audience = "sim", port = 8443 }, info.spec.cluster.config)

      clock = t0 + 99                                   -- still valid: cached
      assert.are.equal("Bearer exec-token-1", cfg:auth_header())
      assert.are.equal("Bearer exec-token-1", cfg:auth_header())
      assert.are.equal(1, runs())
      clock = t0 + 101                                  -- expired: run again
      assert.are.equal("Bearer exec-token-2", cfg:auth_header())
      assert.are.equal(2, runs())
    end)

    it("caches a credential without expiry until invalidate (after a 401)", function()
      local path = config_with_plugin("client.authentication.k8s.io/v1beta1", "token")
      local cfg = assert(kubeconfig.load { kubeconfig = path, env = env_of {} })
      assert.are.equal("Bearer exec-token-1", cfg:auth_header())
      assert.are.equal("Bearer exec-token-1", cfg:auth_header())
      assert.are.equal(1, runs())
      cfg:invalidate()
      assert.are.equal("Bearer exec-token-2", cfg:auth_header())
      assert.are.equal(2, runs())
      -- v1beta1: no cluster info unless asked for, apiVersion passed through
      local info = assert(cjson.decode(read(dir .. "/exec-info.json")))
      assert.are.equal("client.authentication.k8s.io/v1beta1", info.apiVersion)
      assert.is_nil(info.spec.cluster)
    end)

    it("uses a client certificate from the plugin in client_options, bumping the generation", function()
      local path = config_with_plugin("client.authentication.k8s.io/v1beta1", "cert")
      local cfg = assert(kubeconfig.load { kubeconfig = path, env = env_of {} })
      local g0 = cfg.generation
      local o = assert(cfg:client_options())
      assert.are.equal("-----BEGIN CERTIFICATE-----\nexec cert 1\n-----END CERTIFICATE-----\n", o.cert_pem)
      assert.are.equal("-----BEGIN PRIVATE KEY-----\nexec key 1\n-----END PRIVATE KEY-----\n", o.key_pem)
      assert.are.equal("CA PEM", o.ca_pem)
      assert.is_nil(cfg:auth_header())                  -- certificate only: no Authorization header
      assert.are.equal(1, runs())
      assert.are.equal(g0 + 1, cfg.generation)
      cfg:invalidate()
      o = assert(cfg:client_options())
      assert.matches("exec cert 2", o.cert_pem, 1, true)
      assert.are.equal(g0 + 2, cfg.generation)
    end)

    it("fails with a config error naming the plugin but not its output", function()
      for mode, want in pairs {
        fail = "exited with status 3", garbage = "did not print an ExecCredential",
        ["wrong-version"] = "returned apiVersion client.authentication.k8s.io/v1alpha1",
        ["no-status"] = "returned no status",
      } do
        local path = config_with_plugin("client.authentication.k8s.io/v1beta1", mode)
        local cfg = assert(kubeconfig.load { kubeconfig = path, env = env_of {} })
        local h, err = cfg:auth_header()
        assert.is_nil(h)
        assert.are.equal("config", err.kind)
        assert.matches(want, err.message, 1, true)
        assert.matches(plugin, err.message, 1, true)
        assert.is_nil(err.message:find("hunter2", 1, true))
        assert.are.equal(path, err.file)
      end
    end)

    it("requires interactiveMode for v1, and reports a missing command with its install hint", function()
      local path = config_with_plugin("client.authentication.k8s.io/v1", "token")
      local cfg, err = kubeconfig.load { kubeconfig = path, env = env_of {} }
      assert.is_nil(cfg)
      assert.are.equal("interactiveMode", err.field)
      write(path, read(path):gsub("command: [^\n]*", "command: pullsecret-no-such-plugin")
                            :gsub("\ncontexts:", "\n      interactiveMode: IfAvailable\n"
                                  .. "      installHint: install it from example.com\ncontexts:"))
      cfg = assert(kubeconfig.load { kubeconfig = path, env = env_of {} })
      local h
      h, err = cfg:auth_header()
      assert.is_nil(h)
      assert.matches("command not found", err.message, 1, true)
      assert.matches("install it from example.com", err.message, 1, true)
    end)

    it("refuses an env entry whose name is not a variable name, naming the entry", function()
      local path = config_with_plugin("client.authentication.k8s.io/v1beta1", "token")
      write(path, read(path):gsub("name: FIXTURE_GREETING", "name: 'BAD NAME'"))
      local cfg, err = kubeconfig.load { kubeconfig = path, env = env_of {} }
      assert.is_nil(cfg)
      assert.are.same({ "config", path, 'user "plugged"', "env" }, { err.kind, err.file, err.entry, err.field })
      assert.matches("exec: env[1] must have a name (letters, digits and '_'", err.message, 1, true)
      assert.is_nil(err.message:find("hello", 1, true))
    end)

    it("resolves a relative command containing '/' against the kubeconfig's directory", function()
      os.execute("cp " .. sh_quote(plugin) .. " " .. sh_quote(dir .. "/plugin.sh"))
      local path = config_with_plugin("client.authentication.k8s.io/v1beta1", "token")
      write(path, read(path):gsub("command: [^\n]*", "command: ./plugin.sh"))
      local cfg = assert(kubeconfig.load { kubeconfig = path, env = env_of {} })
      assert.are.equal(dir .. "/./plugin.sh", cfg.auth.exec.command)
      assert.are.equal("Bearer exec-token-1", cfg:auth_header())
    end)
  end)

  describe("malformed files", function()
    local M = FIX .. "/malformed/"
    local cases = {
      { "missing-context.yaml", "current-context", 'context "nowhere"', 'context "nowhere" is not defined' },
      { "missing-cluster.yaml", "cluster", 'context "ctx"', 'context "ctx": cluster "ghost" is not defined' },
      { "missing-user.yaml", "user", 'context "ctx"', 'context "ctx": user "nobody" is not defined' },
      { "no-server.yaml", "server", 'cluster "c"', 'context "ctx": cluster "c" has no server' },
      { "bad-base64.yaml", "certificate-authority-data", 'cluster "c"',
        "certificate-authority-data is not valid base64" },
      { "bad-key-data.yaml", "client-key-data", 'user "u"', "client-key-data is not valid base64" },
      { "no-current-context.yaml", "current-context", nil, "no current-context is set" },
      { "wrong-type.yaml", "insecure-skip-tls-verify", 'cluster "c"',
        "insecure-skip-tls-verify must be true or false" },
      { "duplicate.yaml", "name", 'cluster "c"', 'cluster "c" is defined twice' },
      { "bad-yaml.yaml", nil, nil, "not valid YAML: line 6" },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " -> an error naming file, entry and field", function()
        local cfg, err = kubeconfig.load { kubeconfig = M .. c[1], env = env_of {} }
        assert.is_nil(cfg)
        assert.are.equal("config", err.kind)
        assert.are.equal(M .. c[1], err.file)
        assert.are.equal(c[2], err.field)
        assert.are.equal(c[3], err.entry)
        assert.matches(c[4], err.message, 1, true)
        assert.are.equal(M .. c[1] .. ": ", err.message:sub(1, #M + #c[1] + 2))
      end)
    end

    it("gives the line of a YAML syntax error", function()
      local _, err = kubeconfig.load { kubeconfig = M .. "bad-yaml.yaml", env = env_of {} }
      assert.are.equal(6, err.line)
    end)

    it("makes an unparseable file in KUBECONFIG an error, not a skip", function()
      local cfg, err = load_list(FIX .. "/first.yaml:" .. M .. "bad-yaml.yaml")
      assert.is_nil(cfg)
      assert.are.equal(M .. "bad-yaml.yaml", err.file)
    end)
  end)
end)

describe("kubeconfig.in_cluster", function()
  local root = "spec/fixtures/incluster"
  local sa = root .. "/var/run/secrets/kubernetes.io/serviceaccount"

  it("builds the config from the service environment and the service-account files", function()
    local cfg = assert(kubeconfig.in_cluster { root = root, env = env_of {
      KUBERNETES_SERVICE_HOST = "10.96.0.1", KUBERNETES_SERVICE_PORT = "443" } })
    assert.are.equal("https://10.96.0.1:443", cfg.server)
    assert.are.equal(sa .. "/ca.crt", cfg.ca_file)
    assert.are.equal("team-a", cfg.namespace)
    assert.are.equal("Bearer in-cluster-token", cfg:auth_header())
    assert.is_true(cfg.in_cluster)
    assert.are.same({ ca_file = sa .. "/ca.crt", insecure = false }, cfg:client_options())
  end)

  it("prefers POD_NAMESPACE, brackets IPv6 hosts, and re-reads the token", function()
    local dir = mktemp_dir()
    local d = dir .. "/var/run/secrets/kubernetes.io/serviceaccount"
    os.execute("mkdir -p " .. sh_quote(d))
    write(d .. "/token", "token-1")
    local cfg = assert(kubeconfig.in_cluster { root = dir, env = env_of {
      KUBERNETES_SERVICE_HOST = "fd00::1", KUBERNETES_SERVICE_PORT = "6443", POD_NAMESPACE = "from-env" } })
    assert.are.equal("https://[fd00::1]:6443", cfg.server)
    assert.are.equal("from-env", cfg.namespace)
    assert.is_nil(cfg.ca_file)
    assert.are.equal("Bearer token-1", cfg:auth_header())
    write(d .. "/token", "token-2")
    assert.are.equal("Bearer token-2", cfg:auth_header())
    -- no POD_NAMESPACE, no namespace file: "default"
    cfg = assert(kubeconfig.in_cluster { root = dir, env = env_of {
      KUBERNETES_SERVICE_HOST = "h", KUBERNETES_SERVICE_PORT = "1" } })
    assert.are.equal("default", cfg.namespace)
    os.execute("rm -rf " .. sh_quote(dir))
  end)

  it("is what load falls back to when there is no kubeconfig", function()
    local cfg = assert(kubeconfig.load { in_cluster_root = root, env = env_of {
      KUBERNETES_SERVICE_HOST = "10.0.0.1", KUBERNETES_SERVICE_PORT = "443", HOME = "/nonexistent" } })
    assert.is_true(cfg.in_cluster)
    assert.are.equal("https://10.0.0.1:443", cfg.server)
    assert.are.equal("team-a", cfg.namespace)
  end)

  it("fails outside a cluster or without a token", function()
    local cfg, err = kubeconfig.in_cluster { root = root, env = env_of {} }
    assert.is_nil(cfg)
    assert.are.equal("config", err.kind)
    assert.matches("not running in a cluster", err.message)
    cfg, err = kubeconfig.in_cluster { root = "/nonexistent", env = env_of {
      KUBERNETES_SERVICE_HOST = "h", KUBERNETES_SERVICE_PORT = "1" } }
    assert.is_nil(cfg)
    assert.are.equal("token", err.field)
  end)
end)
