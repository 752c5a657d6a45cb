-- The `pullsecret` command as its users see it: exit codes, messages, what lands on stdout and
-- stderr, and what the simulated IBM Cloud and Kubernetes hosts received. Most runs are in-process
-- (cli.main with its io table); a few run bin/pullsecret as a real process.
local cjson = require "cjson"
local cli = require "pullsecret.cli"
local core = require "pullsecret.core"
local manifest = require "pullsecret.manifest"
local sim = require "pullsecret.sim"

local DEMO_ORG_GUID = "a7aff246-5f5b-4cf8-87d8-f316053e4a20"
local USER, PASSWORD, APIKEY, PASSCODE = "demo@example.com", "demo-password", "demo-apikey", "demo-passcode"
local DOCKER_PW = "s3cr3t-docker-pw"

-- Everything any run printed, and every registry token any simulator issued: scanned at the end.
local transcripts, issued = {}, {}

local function buffer(input)
  local b = { parts = {}, input = input or "", pos = 1 }
  function b:write(...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = tostring((select(i, ...))) end
    return self
  end
  function b:flush() return self end
  function b:text() return table.concat(self.parts) end
  function b:read(fmt)
    if fmt == "a" then
      local r = self.input:sub(self.pos)
      self.pos = #self.input + 1
      return r
    end
    if self.pos > #self.input then return nil end
    local nl = self.input:find("\n", self.pos, true)
    local line = self.input:sub(self.pos, (nl or #self.input + 1) - 1)
    self.pos = (nl or #self.input) + 1
    return line
  end
  function b:lines() return function() return self:read("l") end end
  return b
end

local function tmpdir()
  local p = io.popen("mktemp -d /tmp/pullsecret-cli-spec.XXXXXX")
  local d = p:read("l")
  p:close()
  return d
end

local function rmdir(d)
  if d and d:find("^/tmp/pullsecret%-cli%-spec%.") then os.execute("rm -rf '" .. d .. "'") end
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local read = require("spec.helpers.host").read

-- Runs the command in-process. o = { home =, env = {}, stdin = "", tty = false, stty =, exempt = why }
local function pullsecret(argv, o)
  o = o or {}
  local out, err, inp = buffer(), buffer(), buffer(o.stdin)
  local env = { HOME = o.home, PULLSECRET_HOME = o.home and (o.home .. "/ps") }
  for k, v in pairs(o.env or {}) do env[k] = v end
  local code = cli.main(argv, { stdout = out, stderr = err, stdin = inp, env = function(n) return env[n] end,
    isatty = function() return o.tty or false end, stty = o.stty or function() end })
  local r = { code = code, out = out:text(), err = err:text(), argv = argv, exempt = o.exempt }
  transcripts[#transcripts + 1] = r
  return r
end

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs bin/pullsecret as a process: { code, out, err }. env: variables; stdin: text. The variables
-- (passwords among them) go through a file the shell sources, never on a command line.
local function process(args, env, stdin, exempt)
  local d = tmpdir()
  local lines = { "export LUA_PATH=" .. sh_quote(package.path), "export LUA_CPATH=" .. sh_quote(package.cpath) }
  for k, v in pairs(env or {}) do lines[#lines + 1] = "export " .. k .. "=" .. sh_quote(v) end
  write(d .. "/env", table.concat(lines, "\n") .. "\n")
  local argv = {}
  for i, a in ipairs(args) do argv[i] = sh_quote(a) end
  write(d .. "/in", stdin or "")
  local cmd = "( . " .. d .. "/env && exec lua5.4 bin/pullsecret " .. table.concat(argv, " ") ..
    " ) <" .. d .. "/in >" .. d .. "/out 2>" .. d .. "/err; echo $?"
  local p = io.popen(cmd)
  local code = tonumber(p:read("l"))
  p:close()
  local r = { code = code, out = read(d .. "/out"), err = read(d .. "/err"), argv = args, exempt = exempt }
  rmdir(d)
  transcripts[#transcripts + 1] = r
  return r
end

local function start_sim(extra)
  local config = { services = { api = true, login = true, iam = true, registry = true,
                                kube = { namespaces = { "default", "apps", "kube-system" } } } }
  for k, v in pairs(extra or {}) do config[k] = v end
  return sim.start(config)
end

local function stop_sim(s)
  if not s then return end
  local ok, st = pcall(s.state, s, "registry")
  if ok then
    for _, t in ipairs(st.tokens or {}) do issued[#issued + 1] = t.token end
  end
  s:stop()
end

-- Requests that change something: every method but GET/HEAD, minus the ones `allow` lets pass.
local function writes(s, allow)
  local out = {}
  for _, l in ipairs(s:stats().log) do
    if l.method ~= "GET" and l.method ~= "HEAD" then
      local ok = false
      for _, a in ipairs(allow or {}) do
        if l.listener == a.listener and l.method == a.method and l.path:find(a.path) then ok = true end
      end
      if not ok then out[#out + 1] = l.listener .. " " .. l.method .. " " .. l.path end
    end
  end
  table.sort(out)
  return out
end

-- Logging in is a POST to the UAA that writes nothing.
local LOGIN_POST = { listener = "login", method = "POST", path = "^/UAALoginServerWAR/oauth/token$" }

local function kube_client(s)
  return assert(require("pullsecret.kube").new{ kubeconfig = s.kubeconfig })
end

-- user, password of the dockerconfigjson secret `name` for `server`.
local function secret_login(s, ns, name, server)
  local k = kube_client(s)
  local obj = k:get{ api_version = "v1", kind = "Secret", namespace = ns, name = name }
  k:close()
  if not obj then return nil end
  return require("pullsecret.run").secret_login(obj, server)
end

local function registry_tokens(s)
  return s:state("registry").tokens or {}
end

local function live_tokens(s)
  local live = {}
  for _, t in ipairs(registry_tokens(s)) do
    if not t.revoked then live[#live + 1] = t end
  end
  return live
end

local function host_of(url) return url:match("^https://([^/]+)") end
local function pat(s) return (s:gsub("%p", "%%%0")) end

-- Creates the docker-registry secret `name` with real kubectl (`kubectl create -f`, field manager
-- kubectl-create, as the seed's manual step 6 does): exit code, stderr.
local function kubectl_create(s, dir, name, ns, server, password)
  local _, text = assert(manifest.pull_secret{ name = name, namespace = ns, server = server, username = "token",
    password = password, email = "a@b.c" })
  local file = write(dir .. "/" .. name .. ".json", text)
  local p = io.popen("kubectl --kubeconfig " .. sh_quote(s.kubeconfig) .. " --cache-dir " .. sh_quote(dir ..
    "/kcache") .. " create -f " .. sh_quote(file) .. " 2>" .. sh_quote(dir .. "/kubectl.err"))
  local out = p:read("a")
  local _, _, code = p:close()
  os.remove(file)
  return code, (read(dir .. "/kubectl.err") or "") .. out
end

local function seed_template(dir)
  return write(dir .. "/mypod.yaml", manifest.SEED_POD_TEMPLATE)
end

local HELP_PATHS = {
  {}, { "login" }, { "logout" }, { "oauth-token" }, { "org" }, { "token" }, { "token", "add" },
  { "token", "list" }, { "token", "get" }, { "token", "rm" }, { "secret" }, { "secret", "describe" },
  { "secret", "get" },
  { "secret", "create" }, { "pod" }, { "pod", "create" }, { "run" }, { "sim" },
}

describe("pullsecret usage", function()
  local home
  setup(function() home = tmpdir() end)
  teardown(function() rmdir(home) end)

  it("shows --help with an example on every command, on stdout, exit 0", function()
    for _, path in ipairs(HELP_PATHS) do
      local argv = { table.unpack(path) }
      argv[#argv + 1] = "--help"
      local r = pullsecret(argv, { home = home })
      local name = table.concat(path, " ")
      assert.equal(0, r.code, name)
      assert.equal("", r.err, name)
      assert.truthy(r.out:find("^Usage: pullsecret" .. (name ~= "" and (" " .. name:gsub("%-", "%%-")) or "")), name)
      assert.truthy(r.out:find("Example") or r.out:find("pullsecret login %-%-api"), name)
    end
    local r = pullsecret({ "--help" }, { home = home })
    assert.truthy(r.out:find("\nExit status: 0 ok, 1 a step failed, 2 usage, 130 interrupted.\n", 1, true), r.out)
    r = pullsecret({ "secret", "create", "--help" }, { home = home })
    assert.truthy(r.out:find("\n   %-%-force%-conflicts +Take over the fields another field manager owns"), r.out)
    r = pullsecret({ "run", "--help" }, { home = home })
    assert.truthy(r.out:find("\n   %-%-force%-conflicts +Take over the secret's fields another field manager owns"),
      r.out)
  end)

  it("exits 2 with a message on usage errors", function()
    local cases = {
      { {}, "a command is required" },
      { { "bogus" }, "unknown command 'bogus'" },
      { { "token", "add", "--frobnicate" }, "unknown option '%-%-frobnicate'" },
      { { "token", "get" }, "missing argument 'id'" },
      { { "run", "--org", "o" }, "%-%-secret%-name is missing" },
      { { "run", "--secret-name", "s", "--username", "u" }, "%-%-api is missing" },
      { { "secret", "create", "x" }, "%-%-docker%-server is missing" },
      { { "pod", "create" }, "give %-%-template FILE" },
      { { "pod", "create", "--template", "/nonexistent/t.yaml" },
        "cannot read the template /nonexistent/t.yaml: No such file or directory (give the path of a pod " ..
        "template file, YAML)", true },
      { { "pod", "create", "--template", home }, "cannot read the template " .. home .. ": Is a directory (give " ..
        "the path of a pod template file, YAML)", true },
      { { "secret", "create", "x", "--docker-server", "r.example", "--docker-username", "" },
        "--docker-username is empty: give the registry user name: token (the default, for a registry token), " ..
        "iamapikey (an IBM Cloud API key) or the registry's user", true },
      { { "secret", "get", "Bad_Name" }, 'secret name "Bad_Name" is not a valid DNS-1123 subdomain', true },
      { { "secret", "describe", "-n", "Bad NS" }, 'namespace "Bad NS" is not a valid DNS-1123 label: use at most ' ..
        "63 lowercase letters, digits and '-', starting and ending with a letter or digit (-n/--namespace)", true },
      { { "secret", "get", "regcred", "-n", "Bad NS" }, 'namespace "Bad NS" is not a valid DNS-1123 label', true },
      { { "secret", "create", "x", "--docker-server", "r.example", "--namespace=Bad NS" },
        'namespace "Bad NS" is not a valid DNS-1123 label', true },
      { { "pod", "create", "-n", "Bad NS", "--name", "web", "--image", "i" },
        'namespace "Bad NS" is not a valid DNS-1123 label', true },
      { { "secret", "describe", "-n", "" }, "-n/--namespace is empty: give a namespace, or leave -n out for the " ..
        "context's", true },
      { { "run", "--secret-name", "s", "--org", "o", "--service-account", "Bad SA" },
        '--service-account "Bad SA" is not a valid DNS-1123 subdomain', true },
      { { "run", "--secret-name", "s", "--org", "o", "--service-account", "" },
        "--service-account is empty: name a service account, e.g. default", true },
      { { "token", "add", "-o", "json" }, "unknown option '-o'", true },
      { { "run", "--secret-name", "s", "-o", "xml" }, "argument for option '%-o' must be one of" },
      { { "login", "--api", "api.example.com", "--username", "u", "--sso" }, "choose one way to log in" },
      { { "run", "--secret-name", "s", "--org", "o" }, "no credentials: give %-%-username" },
      { { "run", "--secret-name", "s", "--concurrency", "0" }, "%-%-concurrency takes a whole number from 1 to 1024" },
      { { "run", "--secret-name", "Bad_Name", "--org", "o" },
        '%-%-secret%-name "Bad_Name" is not a valid DNS%-1123 subdomain' },
      { { "run", "--secret-name", "s", "-n", "Bad_NS", "--org", "o" },
        'namespace "Bad_NS" is not a valid DNS%-1123 label' },
      { { "run", "--secret-name", "s", "--icr-region", "xx" },
        '%-%-icr%-region: unknown IBM Cloud Container Registry region "xx": use one of us, uk' },
    }
    for _, c in ipairs(cases) do
      local r = pullsecret(c[1], { home = home, env = { PULLSECRET_DOCKER_PASSWORD = DOCKER_PW } })
      local name = table.concat(c[1], " ")
      assert.equal(2, r.code, name)
      assert.truthy(r.err:find(c[2], 1, c[3]), name .. ": " .. r.err)
      assert.truthy(r.err:find("Try 'pullsecret"), name)
      assert.falsy(r.err:find(" = ", 1, true), name .. ": Lua wording: " .. r.err)
      assert.equal("", r.out, name)
    end
  end)

  it("refuses a secret passed as an option, naming the variable and the stdin option", function()
    local V = "hunter2-value"
    local cases = {
      { { "login", "--api", "a", "--username", "u", "--password", V }, "PULLSECRET_PASSWORD", "%-%-password%-stdin" },
      { { "login", "--api", "a", "--username", "u", "--password=" .. V }, "PULLSECRET_PASSWORD",
        "%-%-password%-stdin" },
      { { "login", "--api", "a", "-u", "u", "-p", V }, "PULLSECRET_PASSWORD", "%-%-password%-stdin" },
      { { "login", "--api", "a", "--passcode", V }, "PULLSECRET_PASSCODE", "%-%-passcode%-stdin" },
      { { "login", "--api", "a", "--sso", V }, "PULLSECRET_PASSCODE", "%-%-passcode%-stdin" },
      { { "login", "--api", "a", "--apikey", V }, "PULLSECRET_APIKEY", "%-%-apikey%-stdin" },
      { { "run", "--icr-region", "uk", "--apikey=" .. V }, "PULLSECRET_APIKEY", "%-%-apikey%-stdin" },
      { { "secret", "create", "x", "--docker-password", V }, "PULLSECRET_DOCKER_PASSWORD",
        "%-%-docker%-password%-stdin" },
      { { "secret", "create", "x", "--docker-password=" .. V }, "PULLSECRET_DOCKER_PASSWORD",
        "%-%-docker%-password%-stdin" },
      { { "secret", "create", "x", "--password", V }, "PULLSECRET_DOCKER_PASSWORD", "%-%-docker%-password%-stdin",
        "PULLSECRET_PASSWORD " },
      { { "token", "rm", "--token", V }, "Pass tokens on standard input instead, one a line: " ..
        "`pullsecret token rm %- < token%.txt`", "process list", "PULLSECRET_DOCKER_PASSWORD" },
      { { "login", "--api", "a", "--token", V }, "A token is not a login credential: `pullsecret login` logs in " ..
        "with %-%-username U %(the password from PULLSECRET_PASSWORD or %-%-password%-stdin%), %-%-sso %(a " ..
        "one%-time passcode from PULLSECRET_PASSCODE or %-%-passcode%-stdin%) or %-%-apikey %(an API key from " ..
        "PULLSECRET_APIKEY or %-%-apikey%-stdin%)%.", "process list", "DOCKER" },
      { { "login", "--api", "a", "--refresh-token=" .. V }, "A token is not a login credential", "process list",
        "DOCKER" },
      { { "run", "--secret-name", "s", "--token", V }, "`pullsecret run` takes no token: it mints the registry " ..
        "token itself", "PULLSECRET_APIKEY", "DOCKER" },
      { { "token", "list", "--password", V }, "`pullsecret token list` takes no secret: it uses the session saved " ..
        "by `pullsecret login`", "process list" },
      { { "secret", "get", "x", "--token", V }, "`pullsecret secret get` takes no secret: it reaches Kubernetes " ..
        "with the kubeconfig's credentials", "process list", "DOCKER" },
    }
    for _, c in ipairs(cases) do
      local r = pullsecret(c[1], { home = home })
      local name = table.concat(c[1], " ")
      assert.equal(2, r.code, name)
      assert.truthy(r.err:find(c[2]), name .. ": " .. r.err)
      assert.truthy(r.err:find(c[3]), name .. ": " .. r.err)
      if c[4] then assert.falsy(r.err:find(c[4], 1, true), name .. ": " .. r.err) end
      assert.truthy(r.err:find("process list"), name)
      assert.falsy((r.err .. r.out):find(V, 1, true), name)
    end
  end)

  it("refuses a token (a JWT) anywhere on the command line and explains stdin", function()
    local jwt = "eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJ4In0.c2lnbmF0dXJl"
    for _, argv in ipairs{ { "token", "rm", jwt }, { "run", "--description", jwt, "--secret-name", "s" } } do
      local r = pullsecret(argv, { home = home })
      assert.equal(2, r.code)
      assert.truthy(r.err:find("looks like a token"))
      assert.truthy(r.err:find("pullsecret token rm %- < token.txt"))
      assert.falsy((r.err .. r.out):find(jwt, 1, true))
    end
  end)

  it("exits 2 when a secret is needed and neither stdin, the environment nor a terminal gives it", function()
    local r = pullsecret({ "login", "--api", "api.example.com", "--username", "u" }, { home = home })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("A password is needed: set PULLSECRET_PASSWORD, or pass it on standard input with " ..
      "%-%-password%-stdin"))
    r = pullsecret({ "login", "--api", "api.example.com", "--username", "u", "--password-stdin" },
      { home = home, stdin = "" })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("%-%-password%-stdin: standard input is empty"))
    r = pullsecret({ "login", "--api", "api.example.com", "--sso", "--password-stdin" }, { home = home })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("%-%-password%-stdin goes with %-%-username"))
  end)

  it("says `not logged in` (exit 1) for session commands without a session", function()
    local r = pullsecret({ "oauth-token" }, { home = home })
    assert.equal(1, r.code)
    assert.truthy(r.err:find("not logged in %(no session at " .. home:gsub("%p", "%%%0") .. "/ps/session.json%)"))
    assert.equal("", r.out)
  end)

  it("exits 2 as a real process, with argparse's errors too", function()
    local r = process({ "token", "add", "--frobnicate" })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("unknown option '%-%-frobnicate'"))
    r = process({ "login", "--password", "x" })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("PULLSECRET_PASSWORD"))
    r = process({ "--help" })
    assert.equal(0, r.code)
    assert.truthy(r.out:find("^Usage: pullsecret"))
  end)
end)

describe("pullsecret run against the simulator", function()
  local s, home, args, template

  setup(function()
    s = start_sim()
    home = tmpdir()
    template = seed_template(home)
    args = { "run", "--api", s.urls.api, "--cacert", s.ca_file, "--registry", s.urls.registry,
      "--username", USER, "--org", "demo-org", "--kubeconfig", s.kubeconfig, "-n", "default",
      "--secret-name", "regcred", "--docker-email", "a@b.c", "--pod-template", template,
      "--set", "pod_name=web", "--set", "container_name=app", "--set", "dedicated_domain=sim.example",
      "--set", "my_namespace=team", "--set", "my_image=img", "--set", "tag=1.0" }
  end)
  teardown(function()
    stop_sim(s)
    rmdir(home)
  end)

  local function run(extra, o)
    o = o or {}
    local argv = { table.unpack(args) }
    for _, x in ipairs(extra or {}) do argv[#argv + 1] = x end
    o.home = home
    o.env = o.env or { PULLSECRET_PASSWORD = PASSWORD }
    return pullsecret(argv, o)
  end

  it("first run: mints one token, creates the secret and the pod; progress on stderr, result on stdout", function()
    s:reset_stats()
    local r = run()
    assert.equal(0, r.code, r.err)
    local tokens = registry_tokens(s)
    assert.equal(1, #tokens)
    assert.is_false(tokens[1].revoked)
    assert.equal(0, tokens[1].expiry)                -- permanent
    local id = tokens[1]._id
    local lines = {}
    for l in r.err:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.same({
      "[1/7] login … ok (session demo@example.com@" .. host_of(s.urls.api) .. ", expires in 60 min)",
      "[2/7] oauth token … ok (bearer token)",
      "[3/7] org guid … ok (" .. DEMO_ORG_GUID .. ")",
      "[4/7] registry token … ok (new, id " .. id:sub(1, 8) .. "…)",
      "[5/7] describe secrets … ok (default: 0 secrets)",
      "[6/7] pull secret … ok (default/regcred created)",
      "[7/7] pods … ok (Pod default/web created)",
    }, lines)
    assert.equal("registry  " .. host_of(s.urls.registry) .. " (user token)\n" ..
      "token     new, id " .. id .. "\n" ..
      "secret    default/regcred created\n" ..
      "pod       default/web created\n", r.out)
    local user, pass = secret_login(s, "default", "regcred", host_of(s.urls.registry))
    assert.equal("token", user)
    assert.equal(tokens[1].token, pass)
    local k = kube_client(s)
    local pod = assert(k:get{ api_version = "v1", kind = "Pod", namespace = "default", name = "web" })
    k:close()
    assert.equal("registry.sim.example/team/img:1.0", pod.spec.containers[1].image)
    assert.equal("regcred", pod.spec.imagePullSecrets[1].name)
  end)

  it("second run: mints nothing and writes nothing", function()
    s:reset_stats()
    local r = run()
    assert.equal(0, r.code, r.err)
    assert.truthy(r.err:find("[4/7] registry token … ok (reused, id ", 1, true))
    assert.truthy(r.err:find("[6/7] pull secret … ok (default/regcred unchanged)", 1, true))
    assert.truthy(r.out:find("secret    default/regcred unchanged\n", 1, true))
    assert.equal(1, #registry_tokens(s))
    assert.same({}, writes(s, { LOGIN_POST }))
  end)

  it("with the session of `pullsecret login`: no login at all, and still nothing written", function()
    local r = pullsecret({ "login", "--api", s.urls.api, "--cacert", s.ca_file, "--registry", s.urls.registry,
      "--username", USER, "--org", "demo-org", "--password-stdin" }, { home = home, stdin = PASSWORD .. "\n" })
    assert.equal(0, r.code, r.err)
    s:reset_stats()
    r = pullsecret({ "run", "--kubeconfig", s.kubeconfig, "-n", "default", "--secret-name", "regcred",
      "--docker-email", "a@b.c" }, { home = home })
    assert.equal(0, r.code, r.err)
    assert.truthy(r.err:find("[1/7] login … ok (session demo@example.com@", 1, true))
    assert.truthy(r.err:find("[4/7] registry token … ok (reused", 1, true))
    assert.same({}, writes(s))
  end)

  it("--rotate: a new token in the secret, the old one revoked, exactly one live token", function()
    local before = live_tokens(s)
    assert.equal(1, #before)
    local r = run({ "--rotate", "-o", "json" })
    assert.equal(0, r.code, r.err)
    local res = cjson.decode(r.out)
    assert.equal("rotated", res.token)
    assert.same({ before[1]._id }, res.revoked)
    local live = live_tokens(s)
    assert.equal(1, #live)
    assert.equal(res.token_id, live[1]._id)
    assert.are_not.equal(before[1]._id, live[1]._id)
    local _, pass = secret_login(s, "default", "regcred", host_of(s.urls.registry))
    assert.equal(live[1].token, pass)
    assert.same({ { namespace = "default", action = "updated" } }, res.secrets)
    assert.truthy(r.err:find("[4/7] registry token … ok (replaced token " .. before[1]._id:sub(1, 8) ..
      "… revoked)", 1, true))
  end)

  it("--rotate when the replaced token cannot be revoked: exit 1 naming it and `token rm`, which works", function()
    local before = live_tokens(s)
    assert.equal(1, #before)
    s:fault{ listener = "registry", method = "DELETE", path = "/api/v1/tokens/.*", status = 403 }
    local r = run({ "--rotate" })
    s:clear_faults()
    assert.equal(1, r.code, r.err)
    assert.truthy(r.err:find("[7/7] pods … ok (Pod default/web unchanged)", 1, true), r.err)
    assert.truthy(r.err:find("pullsecret run: step 4 (registry token): the secrets hold the new token ", 1, true),
      r.err)
    assert.truthy(r.err:find("`pullsecret token rm " .. before[1]._id .. "`", 1, true), r.err)
    assert.falsy(r.err:find("run the same command again", 1, true), r.err)
    assert.equal("", r.out)
    local live = live_tokens(s)
    assert.equal(2, #live)
    local _, pass = secret_login(s, "default", "regcred", host_of(s.urls.registry))
    assert.equal(live[2].token, pass)
    r = pullsecret({ "token", "rm", before[1]._id }, { home = home })
    assert.equal(0, r.code, r.err)
    live = live_tokens(s)
    assert.equal(1, #live)
    assert.equal(live[1].token, pass)
  end)

  it("--dry-run: logs in and reads, writes nothing, shows the manifests with the secret redacted", function()
    s:reset_stats()
    local n = #registry_tokens(s)
    local r = run({ "--rotate", "--dry-run", "-o", "yaml", "--namespaces", "default,apps" })
    assert.equal(0, r.code, r.err)
    assert.same({}, writes(s, { LOGIN_POST }))
    assert.equal(n, #registry_tokens(s))
    assert.truthy(r.err:find("[4/7] registry token … skipped (dry run: no token minted)", 1, true))
    assert.truthy(r.out:find("dry_run: true\n", 1, true))
    assert.truthy(r.out:find("\ntoken: would rotate\n", 1, true), r.out)
    assert.truthy(r.out:find("  action: would update\n", 1, true))
    assert.truthy(r.out:find("  action: would create\n", 1, true))
    assert.truthy(r.out:find("kind: Secret", 1, true))
    assert.truthy(r.out:find(".dockerconfigjson: '<redacted: %d+ bytes>'"))
    assert.falsy(r.out:find("eyJ", 1, true))
  end)

  it("--dry-run says what it would do with the token: would rotate, would mint a new token, reused", function()
    s:reset_stats()
    local n = #registry_tokens(s)
    local login = { "--api", s.urls.api, "--cacert", s.ca_file, "--registry", s.urls.registry, "--username", USER,
      "--org", "demo-org", "--kubeconfig", s.kubeconfig, "-n", "default", "--docker-email", "a@b.c", "--dry-run" }
    local function dry(name, extra)
      local argv = { "run", "--secret-name", name, table.unpack(login) }
      for _, x in ipairs(extra or {}) do argv[#argv + 1] = x end
      return pullsecret(argv, { home = home, env = { PULLSECRET_PASSWORD = PASSWORD } })
    end
    local reg = host_of(s.urls.registry)
    local r = dry("regcred", { "--rotate" })
    assert.equal(0, r.code, r.err)
    assert.equal("registry  " .. reg .. " (user token)\ntoken     would rotate\n" ..
      "secret    default/regcred would update\n",
      r.out)
    r = dry("fresh")
    assert.equal(0, r.code, r.err)
    assert.equal("registry  " .. reg .. " (user token)\ntoken     would mint a new token\n" ..
      "secret    default/fresh would create\n", r.out)
    assert.truthy(r.err:find("\npullsecret: dry run: no token minted, nothing written\n", 1, true), r.err)
    r = dry("fresh", { "-o", "json" })
    assert.equal("would mint a new token", cjson.decode(r.out).token)
    r = dry("regcred")
    assert.equal(0, r.code, r.err)
    local id = live_tokens(s)[1]._id
    assert.equal("registry  " .. reg .. " (user token)\ntoken     reused, id " .. id .. "\n" ..
      "secret    default/regcred unchanged\n", r.out)
    assert.equal(n, #registry_tokens(s))
    assert.same({}, writes(s, { LOGIN_POST }))
  end)

  it("a secret made by kubectl: exit 1 naming --force-conflicts; with it the run takes the secret over", function()
    if os.execute("command -v kubectl >/dev/null 2>&1") ~= true then
      pending("kubectl is not installed")
      return
    end
    local code, kerr = kubectl_create(s, home, "kcrun", "default", host_of(s.urls.registry), "kubectl-made-pw")
    assert.equal(0, code, kerr)
    local argv = { "run", "--api", s.urls.api, "--cacert", s.ca_file, "--registry", s.urls.registry,
      "--username", USER, "--org", "demo-org", "--kubeconfig", s.kubeconfig, "-n", "default",
      "--secret-name", "kcrun", "--docker-email", "a@b.c" }
    local live = #live_tokens(s)
    local r = pullsecret(argv, { home = home, env = { PULLSECRET_PASSWORD = PASSWORD } })
    assert.equal(1, r.code, r.err)
    assert.truthy(r.err:find("[6/7] pull secret … FAILED (conflict)", 1, true), r.err)
    assert.truthy(r.err:find('pullsecret run: step 6 (pull secret): secret "kcrun" in namespace "default": fields ' ..
      'owned by another manager would change: .data..dockerconfigjson (conflict with "kubectl-create"', 1, true), r.err)
    assert.truthy(r.err:find("; --force-conflicts takes them over\n", 1, true), r.err)
    assert.truthy(r.err:find("\npullsecret: what to do: add --force-conflicts to take those fields over", 1, true),
      r.err)
    assert.falsy(r.err:find("force = true", 1, true), r.err)
    assert.equal("", r.out)
    assert.equal(live, #live_tokens(s))                       -- the token it minted is revoked again
    assert.equal("kubectl-made-pw", select(2, secret_login(s, "default", "kcrun", host_of(s.urls.registry))))
    argv[#argv + 1] = "--force-conflicts"
    r = pullsecret(argv, { home = home, env = { PULLSECRET_PASSWORD = PASSWORD } })
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("\nsecret    default/kcrun updated\n", 1, true), r.out)
    local res_tokens = live_tokens(s)
    assert.equal(live + 1, #res_tokens)
    assert.equal(res_tokens[#res_tokens].token,
      select(2, secret_login(s, "default", "kcrun", host_of(s.urls.registry))))
  end)

  it("-o name and several namespaces with repeated -n; -v logs each request on stderr", function()
    local r = run({ "-n", "apps", "-o", "name", "-v", "--concurrency", "2" })
    assert.equal(0, r.code, r.err)
    assert.equal("secret/regcred\nsecret/regcred\npod/web\npod/web\n", r.out)
    assert.truthy(r.err:find("pullsecret: GET " .. s.urls.api .. "/v2/info %-> 200 %(%d+ ms%)"))
    assert.truthy(r.err:find("pullsecret: POST " .. s.urls.login:gsub("%p", "%%%0") ..
      "/UAALoginServerWAR/oauth/token %-> 200"))
    assert.truthy(r.err:find("[6/7] pull secret … ok (apps/regcred created)", 1, true))
    local _, pass = secret_login(s, "apps", "regcred", host_of(s.urls.registry))
    assert.equal(live_tokens(s)[1].token, pass)
  end)

  it("--service-account adds the secret to the account's imagePullSecrets", function()
    local r = run({ "--service-account", "default" })
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("account   default/default added\n", 1, true))
    local k = kube_client(s)
    local sa = assert(k:get{ api_version = "v1", kind = "ServiceAccount", namespace = "default", name = "default" })
    k:close()
    assert.equal("regcred", sa.imagePullSecrets[1].name)
  end)

  it("the icr.io path: a secret for <region>.icr.io with user iamapikey, the key from the environment", function()
    local r = pullsecret({ "run", "--icr-region", "uk", "--kubeconfig", s.kubeconfig, "-n", "apps",
      "--secret-name", "all-icr-io" }, { home = home, env = { PULLSECRET_APIKEY = APIKEY } })
    assert.equal(0, r.code, r.err)
    assert.truthy(r.err:find("[1/7] login … skipped (icr.io API-key path)", 1, true))
    assert.truthy(r.out:find("registry  uk.icr.io (user iamapikey)\n", 1, true))
    local user, pass = secret_login(s, "apps", "all-icr-io", "uk.icr.io")
    assert.equal("iamapikey", user)
    assert.equal(APIKEY, pass)
  end)

  it("a template missing a value is a usage error before anything is sent", function()
    s:reset_stats()
    local r = pullsecret({ "run", "--api", s.urls.api, "--username", USER, "--org", "demo-org",
      "--kubeconfig", s.kubeconfig, "--secret-name", "regcred", "--pod-template", template,
      "--set", "pod_name=web" }, { home = home, env = { PULLSECRET_PASSWORD = PASSWORD } })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("no value for placeholder <container_name>, <my_namespace>, <my_image>: " ..
      "pass %-%-set container_name=VALUE"), r.err)
    assert.same({}, s:stats().log)
  end)

  it("a wrong password: exit 1, the message names step 1 and what to check", function()
    local r = run({}, { env = { PULLSECRET_PASSWORD = "wrong-pass" } })
    assert.equal(1, r.code)
    assert.truthy(r.err:find("[1/7] login … FAILED (auth)", 1, true))
    assert.truthy(r.err:find("pullsecret run: step 1 %(login%): "))
    assert.truthy(r.err:find("check the user name and password"))
    assert.falsy(r.err:find("wrong-pass", 1, true))
  end)

  it("runs as a process: the password from the environment or stdin, exit 0", function()
    local r = process(args, { PULLSECRET_PASSWORD = PASSWORD })
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("secret    default/regcred unchanged", 1, true))
    local argv = { table.unpack(args) }
    argv[#argv + 1] = "--password-stdin"
    r = process(argv, {}, PASSWORD .. "\n")
    assert.equal(0, r.code, r.err)
    assert.truthy(r.err:find("[7/7] pods … ok", 1, true))
    r = process(argv, {}, "not-the-password\n")
    assert.equal(1, r.code)
    assert.truthy(r.err:find("step 1 %(login%)"))
  end)

  it("namespaces brought onto one token: the other, still valid, is named with how to revoke it", function()
    local base = { "run", "--api", s.urls.api, "--cacert", s.ca_file, "--registry", s.urls.registry,
      "--username", USER, "--org", "demo-org", "--kubeconfig", s.kubeconfig, "--secret-name", "split" }
    local function with(...)
      local argv = { table.unpack(base) }
      for _, x in ipairs{ ... } do argv[#argv + 1] = x end
      return pullsecret(argv, { home = home, env = { PULLSECRET_PASSWORD = PASSWORD } })
    end
    local a = with("-n", "default", "-o", "json")
    assert.equal(0, a.code, a.err)
    local b = with("-n", "apps", "-o", "json")
    assert.equal(0, b.code, b.err)
    local ida, idb = cjson.decode(a.out).token_id, cjson.decode(b.out).token_id
    assert.are_not.equal(ida, idb)
    local r = with("-n", "default", "-n", "apps")
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("token     reused, id " .. ida, 1, true), r.out)
    assert.truthy(r.err:find("pullsecret: the token " .. idb .. " is no longer in these secrets but still valid; "
      .. "if no other secret uses it, revoke it with `pullsecret token rm " .. idb .. "`", 1, true), r.err)
  end)
end)

describe("pullsecret login, oauth-token, org and token", function()
  local s, home

  setup(function()
    s = start_sim({ dedicated = { users = { { name = USER, password = PASSWORD, apikey = APIKEY,
      passcode = { PASSCODE, "second-passcode" }, orgs = { "demo-org" } } },
      orgs = { { name = "demo-org", guid = DEMO_ORG_GUID } } } })
    home = tmpdir()
  end)
  teardown(function()
    stop_sim(s)
    rmdir(home)
  end)

  local function login(extra, o)
    local argv = { "login", "--api", s.urls.api, "--cacert", s.ca_file, "--registry", s.urls.registry,
      "--org", "demo-org" }
    for _, x in ipairs(extra) do argv[#argv + 1] = x end
    o = o or {}
    o.home = home
    return pullsecret(argv, o)
  end

  it("login saves a 0600 session in a 0700 directory; oauth-token prints `bearer ...` from it", function()
    local r = login({ "--username", USER, "--password-stdin" }, { stdin = PASSWORD .. "\n" })
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("^Logged in: session demo@example.com@" .. (host_of(s.urls.api):gsub("%p", "%%%0"))))
    assert.truthy(r.out:find("Org: demo-org (" .. DEMO_ORG_GUID .. ")\n", 1, true))
    local lfs = require "lfs"
    assert.equal("rwx------", lfs.attributes(home .. "/ps", "permissions"))
    assert.equal("rw-------", lfs.attributes(home .. "/ps/session.json", "permissions"))
    assert.falsy(read(home .. "/ps/session.json"):find(PASSWORD, 1, true))
    r = pullsecret({ "oauth-token" }, { home = home, exempt = "oauth-token prints the token" })
    assert.equal(0, r.code, r.err)
    local tok = r.out:match("^bearer (eyJ[%w_%-]+%.[%w_%-]+%.[%w_%-]+)\n$")
    assert.truthy(tok, r.out)
    local _, payload = core.jwt_claims(tok)
    assert.equal(USER, cjson.decode(payload).user_name)
    -- the token works: the Cloud Controller accepts it
    local h = require("pullsecret.http").new{ ca_file = s.ca_file }
    local res = h:request{ url = s.urls.api .. "/v2/organizations", headers = { Authorization = "bearer " .. tok } }
    h:close()
    assert.equal(200, res.status)
  end)

  it("login again: the API, CA, registry and org of the last login are the defaults", function()
    local r = pullsecret({ "login", "--username", USER, "--password-stdin" },
      { home = home, stdin = PASSWORD .. "\n" })
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("Org: demo-org (" .. DEMO_ORG_GUID .. ")\n", 1, true))
    local target = cjson.decode(read(home .. "/ps/target.json"))
    assert.same({ api = s.urls.api, cacert = s.ca_file, registry = s.urls.registry, org = "demo-org",
      org_guid = DEMO_ORG_GUID }, target)
    local other = tmpdir()
    r = pullsecret({ "login", "--username", USER, "--password-stdin" }, { home = other, stdin = PASSWORD .. "\n" })
    rmdir(other)
    assert.equal(2, r.code)
    assert.truthy(r.err:find("%-%-api is missing"))
  end)

  it("org --guid prints the GUID alone", function()
    local r = pullsecret({ "org", "demo-org", "--guid" }, { home = home })
    assert.equal(0, r.code, r.err)
    assert.equal(DEMO_ORG_GUID .. "\n", r.out)
    r = pullsecret({ "org", "demo-org", "-o", "json" }, { home = home })
    assert.same({ name = "demo-org", guid = DEMO_ORG_GUID }, cjson.decode(r.out))
    r = pullsecret({ "org", "no-such-org", "--guid" }, { home = home })
    assert.equal(1, r.code)
    assert.truthy(r.err:find('org "no%-such%-org" not found.*demo%-org'))
  end)

  local added = {}

  it("token add prints the identifier and the token, permanent and read-only by default", function()
    local r = pullsecret({ "token", "add", "--description", "k8s pull secret" },
      { home = home, exempt = "token add prints the token" })
    assert.equal(0, r.code, r.err)
    local id, tok = r.out:match("^Token identifier (%S+)\nToken (%S+)\n$")
    assert.truthy(id, r.out)
    local info = assert(require("pullsecret.registry").token_info(tok))
    assert.equal(id, info.id)
    assert.is_true(info.permanent)
    local t
    for _, x in ipairs(registry_tokens(s)) do if x._id == id then t = x end end
    assert.equal("k8s pull secret", t.secondary_owner)
    assert.is_true(t.readonly)
    assert.equal("org:" .. DEMO_ORG_GUID, t.scope)
    added.permanent = id
  end)

  it("token add -q prints just the token; --expiring and --readwrite are honoured", function()
    local r = pullsecret({ "token", "add", "-q", "--expiring", "--readwrite" },
      { home = home, exempt = "token add -q prints the token" })
    assert.equal(0, r.code, r.err)
    local tok = r.out:match("^(eyJ[%w_%-]+%.[%w_%-]+%.[%w_%-]+)\n$")
    assert.truthy(tok, r.out)
    local info = assert(require("pullsecret.registry").token_info(tok))
    assert.is_false(info.permanent)
    assert.truthy(info.expires > os.time())
    local t
    for _, x in ipairs(registry_tokens(s)) do if x._id == info.id then t = x end end
    assert.is_false(t.readonly)
    added.expiring, added.expiring_token = info.id, tok
  end)

  it("token list shows ids, read-only, expiry and description, never the tokens", function()
    local r = pullsecret({ "token", "list" }, { home = home })
    assert.equal(0, r.code, r.err)
    local lines = {}
    for l in r.out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(3, #lines)
    assert.truthy(lines[1]:find("^TOKEN ID%s+READONLY%s+EXPIRY%s+DESCRIPTION$"))
    assert.truthy(lines[2]:find("^" .. pat(added.permanent) .. "%s+true%s+never%s+k8s pull secret$"), lines[2])
    assert.truthy(lines[3]:find("^" .. pat(added.expiring) ..
      "%s+false%s+%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d UTC%s+%-$"), lines[3])
    assert.falsy(r.out:find("eyJ", 1, true))
    r = pullsecret({ "token", "list", "-o", "name" }, { home = home })
    assert.equal(added.permanent .. "\n" .. added.expiring .. "\n", r.out)
    r = pullsecret({ "token", "list", "-o", "json" }, { home = home })
    local list = cjson.decode(r.out)
    assert.equal(added.permanent, list[1].id)
    assert.is_true(list[1].permanent)
    assert.equal(cjson.null, list[1].expires)
    assert.is_nil(list[1].token)
  end)

  it("token get shows one token's metadata without its value", function()
    local r = pullsecret({ "token", "get", added.permanent }, { home = home })
    assert.equal(0, r.code, r.err)
    assert.equal("Token identifier " .. added.permanent .. "\nPermanent        true\nExpires          never\n" ..
      "Issuer           registry.sim.example\n", r.out)
    r = pullsecret({ "token", "get", added.permanent, "-o", "json" }, { home = home })
    assert.equal(0, r.code, r.err)
    -- the GET answer holds the token alone: description, read-only and revoked are unknown, left out
    assert.same({ id = added.permanent, permanent = true, expires = cjson.null, issuer = "registry.sim.example" },
      cjson.decode(r.out))
    assert.falsy(r.out:find("description", 1, true))
    assert.falsy(r.out:find("readonly", 1, true))
    r = pullsecret({ "token", "get", added.expiring, "-o", "yaml" }, { home = home })
    assert.truthy(r.out:find("^id: '?" .. pat(added.expiring) .. "'?\npermanent: false\nexpires: %d+\n" ..
      "issuer: registry.sim.example\n$"), r.out)
    r = pullsecret({ "token", "get", added.expiring }, { home = home })
    assert.truthy(r.out:find("^Token identifier " .. pat(added.expiring) .. "\nPermanent        false\n" ..
      "Expires          %d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d UTC\nIssuer           registry.sim.example\n$"), r.out)
    r = pullsecret({ "token", "get", "no-such-id" }, { home = home })
    assert.equal(1, r.code)
    assert.truthy(r.err:find("no registry token with id no%-such%-id"))
  end)

  it("token rm - refuses a stdin line that is neither a token id nor a token, without repeating it", function()
    local live = #live_tokens(s)
    s:reset_stats()
    local r = pullsecret({ "token", "rm", "-" }, { home = home,
      stdin = added.permanent .. "\n\n  hunter2-secretpw  \n" .. added.expiring_token .. "\n" })
    assert.equal(2, r.code, r.err)
    assert.equal("pullsecret token rm: line 3 of standard input is neither a token id (a UUID) nor a registry " ..
      "token (a JWT): give one identifier or token a line (nothing was revoked)\nTry 'pullsecret token rm --help'.\n",
      r.err)
    assert.equal("", r.out)
    assert.same({}, s:stats().log)                           -- nothing sent, not even the good lines
    assert.equal(live, #live_tokens(s))
    r = pullsecret({ "token", "rm", "-" }, { home = home, stdin = "637B3D8C-A087-5AF9-A636-16E7EFC70967x\n" })
    assert.equal(2, r.code, r.err)
    assert.truthy(r.err:find("line 1 of standard input is neither", 1, true), r.err)
    assert.falsy(r.err:find("637B3D8C", 1, true), r.err)
  end)

  it("token rm revokes by id, and by token read from stdin", function()
    local r = pullsecret({ "token", "rm", added.permanent }, { home = home })
    assert.equal(0, r.code, r.err)
    assert.equal("Token " .. added.permanent .. " revoked\n", r.out)
    r = pullsecret({ "token", "rm", "-" }, { home = home, stdin = added.expiring_token .. "\n" })
    assert.equal(0, r.code, r.err)
    assert.equal("Token " .. added.expiring .. " revoked\n", r.out)
    assert.same({}, live_tokens(s))
    r = pullsecret({ "token", "list" }, { home = home })
    assert.equal(1, select(2, r.out:gsub("\n", "")))       -- the header alone
    r = pullsecret({ "token", "list", "--all" }, { home = home })
    assert.truthy(r.out:find(pat(added.permanent) .. ".-true\n"))
  end)

  it("token commands with a session that has no registry: exit 2 naming --registry", function()
    local other = tmpdir()
    finally(function() rmdir(other) end)
    local r = pullsecret({ "login", "--api", s.urls.api, "--cacert", s.ca_file, "--username", USER, "--org",
      "demo-org", "--password-stdin" }, { home = other, stdin = PASSWORD .. "\n" })
    assert.equal(0, r.code, r.err)
    for _, argv in ipairs{ { "token", "list", "--org", "demo-org" }, { "token", "add" } } do
      r = pullsecret(argv, { home = other })
      assert.equal(2, r.code, r.err)
      assert.equal("pullsecret " .. argv[1] .. " " .. argv[2] .. ": the registry is unknown: the saved session has " ..
        "none (`pullsecret login` was given no --registry and could not derive it from the API endpoint): give " ..
        "--registry HOST|URL, e.g. --registry registry.<domain>, or log in again with --registry\n" ..
        "Try 'pullsecret " .. argv[1] .. " " .. argv[2] .. " --help'.\n", r.err)
      assert.equal("", r.out)
    end
    r = pullsecret({ "token", "list", "--registry", s.urls.registry }, { home = other })
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("^TOKEN ID"), r.out)
  end)

  it("login with the passcode from the environment, and the API key on stdin", function()
    local r = login({ "--sso" }, { env = { PULLSECRET_PASSCODE = PASSCODE } })
    assert.equal(0, r.code, r.err)
    r = login({ "--sso" }, { env = { PULLSECRET_PASSCODE = PASSCODE } })   -- one-time: used already
    assert.equal(1, r.code)
    assert.truthy(r.err:find("passcode was not accepted"))
    r = login({ "--apikey", "--apikey-stdin" }, { stdin = APIKEY .. "\n" })
    assert.equal(0, r.code, r.err)
    r = pullsecret({ "org", "demo-org", "--guid" }, { home = home })
    assert.equal(DEMO_ORG_GUID .. "\n", r.out)
  end)

  it("prompts with echo off on a terminal, and restores echo", function()
    local calls = {}
    local r = login({ "--username", USER }, { tty = true, stdin = PASSWORD .. "\n",
      stty = function(mode) calls[#calls + 1] = mode end })
    assert.equal(0, r.code, r.err)
    assert.same({ "-echo", "echo" }, calls)
    assert.truthy(r.err:find("^Password: \n"))
    calls = {}
    r = login({ "--username", USER }, { tty = true, stdin = "wrong\n",
      stty = function(mode) calls[#calls + 1] = mode end })
    assert.equal(1, r.code)
    assert.same({ "-echo", "echo" }, calls)
  end)

  -- On a real terminal (script(1) gives one): what the user types is not echoed, and Ctrl-C at
  -- the prompt leaves the terminal echoing again. script(1) runs the command with $SHELL; bash is
  -- named because dash, CI's /bin/sh, dies of the same SIGINT before it can print rc= and stty -a.
  local function on_tty(keys, d, name)
    local cmd = "lua5.4 bin/pullsecret login --api " .. s.urls.api .. " --cacert " .. s.ca_file ..
      " --username " .. USER .. "; echo rc=$?; stty -a"
    local feeder = "(i=0; while ! grep -qs 'Password:' " .. d .. "/" .. name .. " && [ $i -lt 200 ]; do " ..
      "i=$((i+1)); sleep 0.05; done; printf " .. sh_quote(keys) .. "; sleep 0.5)"
    os.execute(feeder .. " | env LUA_PATH=" .. sh_quote(package.path) .. " LUA_CPATH=" .. sh_quote(package.cpath) ..
      " PULLSECRET_HOME=" .. d .. "/ps SHELL=/bin/bash script -qec " .. sh_quote(cmd) .. " /dev/null >" ..
      d .. "/" .. name .. " 2>&1")
    local out = read(d .. "/" .. name) or ""
    transcripts[#transcripts + 1] = { out = out, err = "", argv = { "login (terminal)" } }
    return out
  end

  it("on a real terminal: the password typed at the prompt is not echoed; Ctrl-C restores echo", function()
    if os.execute("command -v script >/dev/null 2>&1") ~= true then
      pending("script(1) is not installed")
      return
    end
    local d = tmpdir()
    finally(function() rmdir(d) end)
    local out = on_tty(PASSWORD .. "\n", d, "typed")
    assert.truthy(out:find("^Password: \r?\nLogged in: session demo@example.com@"), out)
    assert.truthy(out:find("rc=0", 1, true), out)
    assert.truthy(out:find("[ ;]echo[ ;]"), out)
    assert.falsy(out:find(PASSWORD, 1, true))
    out = on_tty("\3", d, "interrupted")
    assert.truthy(out:find("pullsecret: interrupted", 1, true), out)
    assert.truthy(out:find("rc=130", 1, true), out)
    assert.truthy(out:find("[ ;]echo[ ;]"), out)
    assert.falsy(out:find("[%s;]%-echo[%s;]"), out)
  end)

  it("logout removes the session", function()
    local r = pullsecret({ "logout" }, { home = home })
    assert.equal(0, r.code)
    assert.equal("Logged out: removed " .. home .. "/ps/session.json\n", r.out)
    assert.is_nil(read(home .. "/ps/session.json"))
    r = pullsecret({ "token", "list" }, { home = home })
    assert.equal(1, r.code)
    assert.truthy(r.err:find("not logged in"))
  end)
end)

describe("pullsecret secret and pod", function()
  local s, home, K

  setup(function()
    s = sim.start{ services = { kube = { namespaces = { "default", "apps" } } } }
    home = tmpdir()
    K = { "--kubeconfig", s.kubeconfig }
  end)
  teardown(function()
    stop_sim(s)
    rmdir(home)
  end)

  local function cmd(argv, o)
    for _, x in ipairs(K) do argv[#argv + 1] = x end
    o = o or {}
    o.home = home
    return pullsecret(argv, o)
  end

  it("secret create takes the password on stdin and upserts the secret", function()
    local r = cmd({ "secret", "create", "regcred", "-n", "apps", "--docker-server", "registry.example.com",
      "--docker-email", "a@b.c", "--docker-password-stdin" }, { stdin = DOCKER_PW .. "\n" })
    assert.equal(0, r.code, r.err)
    assert.equal("secret/regcred created\n", r.out)
    local user, pass = secret_login(s, "apps", "regcred", "registry.example.com")
    assert.equal("token", user)
    assert.equal(DOCKER_PW, pass)
    s:reset_stats()
    r = cmd({ "secret", "create", "regcred", "-n", "apps", "--docker-server", "registry.example.com",
      "--docker-email", "a@b.c" }, { env = { PULLSECRET_DOCKER_PASSWORD = DOCKER_PW } })
    assert.equal(0, r.code, r.err)
    assert.equal("secret/regcred unchanged\n", r.out)
    assert.same({}, writes(s))
  end)

  it("secret create -o yaml shows the secret redacted; --dry-run sends nothing", function()
    local r = cmd({ "secret", "create", "regcred", "-n", "apps", "--docker-server", "registry.example.com",
      "--docker-email", "a@b.c", "-o", "yaml" }, { env = { PULLSECRET_DOCKER_PASSWORD = DOCKER_PW } })
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("^apiVersion: v1\nkind: Secret\n"))
    assert.truthy(r.out:find("  .dockerconfigjson: '<redacted: %d+ bytes>'\n"))
    assert.falsy(r.out:find("managedFields", 1, true))
    s:reset_stats()
    r = cmd({ "secret", "create", "other", "-n", "apps", "--docker-server", "registry.example.com",
      "--dry-run", "-o", "json" }, { env = { PULLSECRET_DOCKER_PASSWORD = DOCKER_PW } })
    assert.equal(0, r.code, r.err)
    local obj = cjson.decode(r.out)
    assert.equal("other", obj.metadata.name)
    assert.truthy(obj.data[".dockerconfigjson"]:find("^<redacted: %d+ bytes>$"))
    assert.same({}, s:stats().log)
  end)

  it("secret create as a process: the password on stdin, exit 0, and exit 2 without one", function()
    local r = process({ "secret", "create", "piped", "-n", "apps", "--docker-server", "r.example",
      "--docker-password-stdin", table.unpack(K) }, {}, DOCKER_PW .. "\n")
    assert.equal(0, r.code, r.err)
    assert.equal("secret/piped created\n", r.out)
    assert.equal(DOCKER_PW, select(2, secret_login(s, "apps", "piped", "r.example")))
    r = process({ "secret", "create", "piped", "-n", "apps", "--docker-server", "r.example", table.unpack(K) })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("PULLSECRET_DOCKER_PASSWORD"))
  end)

  it("secret create refuses to change a secret's type unless --replace-type", function()
    local k = kube_client(s)
    assert(k:create{ apiVersion = "v1", kind = "Secret", metadata = { name = "typed", namespace = "apps" },
      type = "Opaque", data = { a = "YQ==" } })
    k:close()
    local argv = { "secret", "create", "typed", "-n", "apps", "--docker-server", "r.example" }
    local r = cmd({ table.unpack(argv) }, { env = { PULLSECRET_DOCKER_PASSWORD = DOCKER_PW } })
    assert.equal(1, r.code)
    assert.truthy(r.err:find("already exists with type Opaque, not kubernetes.io/dockerconfigjson", 1, true), r.err)
    assert.truthy(r.err:find("a secret's type cannot be changed: --replace-type deletes it and creates it again\n",
      1, true), r.err)
    assert.falsy(r.err:find("replace_type", 1, true), r.err)
    assert.truthy(r.err:find("what to do: add %-%-replace%-type"), r.err)
    argv[#argv + 1] = "--replace-type"
    r = cmd(argv, { env = { PULLSECRET_DOCKER_PASSWORD = DOCKER_PW } })
    assert.equal(0, r.code, r.err)
    assert.equal("secret/typed created (replaced a secret of another type)\n", r.out)
    assert.equal(DOCKER_PW, select(2, secret_login(s, "apps", "typed", "r.example")))
  end)

  it("secret create over a secret kubectl made: exit 1 naming --force-conflicts; with it, updated", function()
    if os.execute("command -v kubectl >/dev/null 2>&1") ~= true then
      pending("kubectl is not installed")
      return
    end
    local code, kerr = kubectl_create(s, home, "kc", "default", "registry.example.com", "kubectl-made-pw")
    assert.equal(0, code, kerr)
    local argv = { "secret", "create", "kc", "-n", "default", "--docker-server", "registry.example.com",
      "--docker-email", "a@b.c" }
    local r = cmd({ table.unpack(argv) }, { env = { PULLSECRET_DOCKER_PASSWORD = DOCKER_PW } })
    assert.equal(1, r.code, r.err)
    assert.equal('pullsecret secret create: secret "kc" in namespace "default": fields owned by another manager ' ..
      'would change: .data..dockerconfigjson (conflict with "kubectl-create" using v1); --force-conflicts takes ' ..
      "them over\npullsecret: what to do: add --force-conflicts to take those fields over (as `kubectl apply " ..
      "--server-side --force-conflicts` does), e.g. for a secret made by `kubectl create secret docker-registry`\n",
      r.err)
    assert.equal("", r.out)
    assert.equal("kubectl-made-pw", select(2, secret_login(s, "default", "kc", "registry.example.com")))
    argv[#argv + 1] = "--force-conflicts"
    r = cmd({ table.unpack(argv) }, { env = { PULLSECRET_DOCKER_PASSWORD = DOCKER_PW } })
    assert.equal(0, r.code, r.err)
    assert.equal("secret/kc updated\n", r.out)
    local user, pass = secret_login(s, "default", "kc", "registry.example.com")
    assert.equal("token", user)
    assert.equal(DOCKER_PW, pass)
    s:reset_stats()
    r = cmd({ table.unpack(argv) }, { env = { PULLSECRET_DOCKER_PASSWORD = DOCKER_PW } })
    assert.equal("secret/kc unchanged\n", r.out)
    assert.same({}, writes(s))
  end)

  it("a namespace that is not a DNS-1123 label is refused (exit 2) before any request", function()
    s:reset_stats()
    for _, argv in ipairs{ { "secret", "describe", "-n", "Bad NS" }, { "secret", "get", "regcred", "-n", "Bad NS" },
        { "secret", "create", "regcred", "-n", "Bad NS", "--docker-server", "r.example" },
        { "pod", "create", "-n", "Bad NS", "--name", "web", "--image", "i" } } do
      local r = cmd(argv, { env = { PULLSECRET_DOCKER_PASSWORD = DOCKER_PW } })
      assert.equal(2, r.code, r.err)
      assert.truthy(r.err:find('^pullsecret [%a ]+: namespace "Bad NS" is not a valid DNS%-1123 label: .* %(%-n/' ..
        '%-%-namespace%)\nTry '), r.err)
      assert.falsy(r.err:find("No secrets", 1, true))
      assert.equal("", r.out)
    end
    assert.same({}, s:stats().log)
  end)

  it("secret get shows the secret with every value redacted", function()
    local r = cmd({ "secret", "get", "regcred", "-n", "apps" })
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("^apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: apps\n"), r.out)
    assert.truthy(r.out:find("\ndata:\n  .dockerconfigjson: '<redacted: %d+ bytes>'\n" ..
      "type: kubernetes.io/dockerconfigjson\n"), r.out)
    r = cmd({ "secret", "get", "regcred", "-n", "apps", "-o", "json" })
    local obj = cjson.decode(r.out)
    assert.truthy(obj.data[".dockerconfigjson"]:find("^<redacted: %d+ bytes>$"))
    assert.is_nil(obj.metadata.managedFields)
    r = cmd({ "secret", "get", "nope", "-n", "apps" })
    assert.equal(1, r.code)
    assert.truthy(r.err:find("not found"), r.err)
  end)

  it("secret describe lists names, types and key sizes, never values", function()
    local r = cmd({ "secret", "describe", "-n", "apps" })
    assert.equal(0, r.code, r.err)
    local k = kube_client(s)
    local obj = k:get{ api_version = "v1", kind = "Secret", namespace = "apps", name = "regcred" }
    k:close()
    local size = #core.b64decode(obj.data[".dockerconfigjson"])
    assert.truthy(r.out:find("Name:         regcred\nNamespace:    apps\n\nType:  kubernetes.io/dockerconfigjson\n\n" ..
      "Data\n====\n.dockerconfigjson:  " .. size .. " bytes\n", 1, true), r.out)
    assert.falsy(r.out:find(obj.data[".dockerconfigjson"], 1, true))
    r = cmd({ "secret", "describe", "regcred", "-n", "apps", "-o", "json" })
    assert.same({ { name = "regcred", namespace = "apps", type = "kubernetes.io/dockerconfigjson",
      data = { [".dockerconfigjson"] = size } } }, cjson.decode(r.out))
    r = cmd({ "secret", "describe", "-n", "apps", "-o", "name" })
    assert.equal("secret/piped\nsecret/regcred\nsecret/typed\n", r.out)
    r = cmd({ "secret", "describe", "nope", "-n", "apps" })
    assert.equal(1, r.code)
    assert.truthy(r.err:find('secret "nope" not found in namespace "apps"', 1, true))
  end)

  it("pod create from the seed template", function()
    local t = seed_template(home)
    local r = cmd({ "pod", "create", "-n", "apps", "--template", t, "--set", "pod_name=mypod",
      "--set", "container_name=app", "--set", "dedicated_domain=example.com", "--set", "my_namespace=team",
      "--set", "my_image=web", "--set", "secret_name=regcred" })
    assert.equal(0, r.code, r.err)
    assert.equal("pod/mypod created\n", r.out)
    local k = kube_client(s)
    local pod = assert(k:get{ api_version = "v1", kind = "Pod", namespace = "apps", name = "mypod" })
    k:close()
    assert.equal("registry.example.com/team/web:latest", pod.spec.containers[1].image)
    assert.equal("app", pod.spec.containers[1].name)
    assert.equal("regcred", pod.spec.imagePullSecrets[1].name)
    local rv = pod.metadata.resourceVersion
    s:reset_stats()
    r = cmd({ "pod", "create", "-n", "apps", "--template", t, "--set", "pod_name=mypod",
      "--set", "container_name=app", "--set", "dedicated_domain=example.com", "--set", "my_namespace=team",
      "--set", "my_image=web", "--set", "secret_name=regcred" })
    assert.equal(0, r.code, r.err)
    assert.equal("pod/mypod unchanged\n", r.out)
    assert.same({}, writes(s))
    k = kube_client(s)
    assert.equal(rv, assert(k:get{ api_version = "v1", kind = "Pod", namespace = "apps", name = "mypod" })
      .metadata.resourceVersion)
    k:close()
    r = cmd({ "pod", "create", "-n", "apps", "--template", t, "--set", "pod_name=mypod" })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("no value for placeholder <container_name>.*pass %-%-set container_name=VALUE"))
  end)

  it("pod create from flags; -o yaml and --dry-run", function()
    local r = cmd({ "pod", "create", "-n", "apps", "--name", "web", "--image", "registry.example.com/team/web",
      "--pull-secret", "regcred", "--dry-run", "-o", "yaml" })
    assert.equal(0, r.code, r.err)
    assert.equal("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  containers:\n" ..
      "  - name: web\n    image: registry.example.com/team/web:latest\n  imagePullSecrets:\n  - name: regcred\n",
      r.out)
    r = cmd({ "pod", "create", "-n", "apps", "--name", "web", "--image", "registry.example.com/team/web:2",
      "--container", "c", "--pull-secret", "regcred" })
    assert.equal(0, r.code, r.err)
    assert.equal("pod/web created\n", r.out)
    s:reset_stats()
    r = cmd({ "pod", "create", "-n", "apps", "--name", "web", "--image", "registry.example.com/team/web:2",
      "--container", "c", "--pull-secret", "regcred" })
    assert.equal(0, r.code, r.err)
    assert.equal("pod/web unchanged\n", r.out)
    assert.same({}, writes(s))
    r = cmd({ "pod", "create", "-n", "apps", "--name", "web", "--image", "registry.example.com/team/web:3",
      "--container", "c", "--pull-secret", "regcred" })
    assert.equal(0, r.code, r.err)
    assert.equal("pod/web configured\n", r.out)
    local k = kube_client(s)
    assert.equal("registry.example.com/team/web:3",
      assert(k:get{ api_version = "v1", kind = "Pod", namespace = "apps", name = "web" }).spec.containers[1].image)
    k:close()
    r = cmd({ "pod", "create", "-n", "apps", "--name", "Not_A_Name", "--image", "x" })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("name"))
  end)
end)

describe("pullsecret run: a fault at each step", function()
  local s, home, template

  setup(function()
    s = start_sim()
    home = tmpdir()
    template = seed_template(home)
  end)
  teardown(function()
    stop_sim(s)
    rmdir(home)
  end)

  local function run(name)
    return pullsecret({ "run", "--api", s.urls.api, "--cacert", s.ca_file, "--registry", s.urls.registry,
      "--username", USER, "--org", "demo-org", "--kubeconfig", s.kubeconfig, "-n", "default",
      "--secret-name", name, "--docker-email", "a@b.c", "--pod-template", template,
      "--set", "pod_name=" .. name, "--set", "container_name=app", "--set", "dedicated_domain=sim.example",
      "--set", "my_namespace=team", "--set", "my_image=img" },
      { home = home, env = { PULLSECRET_PASSWORD = PASSWORD } })
  end

  -- Every live token is held by a secret: no orphans.
  local function assert_no_orphans()
    local k = kube_client(s)
    local held = {}
    for _, obj in ipairs(assert(k:list{ kind = "Secret", namespace = "default" })) do
      local _, pass = require("pullsecret.run").secret_login(obj, host_of(s.urls.registry))
      if pass then held[pass] = true end
    end
    k:close()
    for _, t in ipairs(live_tokens(s)) do assert.is_true(held[t.token] == true, "orphan token " .. t._id) end
  end

  local FAULTS = {
    { 1, "login", { listener = "login", method = "POST", path = "/UAALoginServerWAR/oauth/token", status = 500 },
      "the login service is failing" },
    { 3, "org guid", { listener = "api", method = "GET", path = "/v2/organizations", status = 500 } },
    { 4, "registry token", { listener = "registry", method = "POST", path = "/api/v1/tokens", status = 500 },
      "the registry is failing" },
    { 4, "registry token", { listener = "registry", method = "POST", path = "/api/v1/tokens", status = 401 },
      "log in again" },
    { 5, "describe secrets", { listener = "kube", method = "GET", path = "/api/v1/namespaces/default/secrets",
      status = 500 } },
    { 6, "pull secret", { listener = "kube", method = "PATCH", path = "/api/v1/namespaces/default/secrets/.*",
      status = 500 }, "the service failed on its side (HTTP 500); try again later" },
    { 6, "pull secret", { listener = "kube", method = "PATCH", path = "/api/v1/namespaces/default/secrets/.*",
      status = 403 }, "may not apply secrets" },
    { 7, "pods", { listener = "kube", method = "PATCH", path = "/api/v1/namespaces/default/pods/.*", status = 500 },
      "was written and is valid" },
  }

  for i, f in ipairs(FAULTS) do
    local step, name, fault, hint = f[1], f[2], f[3], f[4]
    it(string.format("step %d (%s), status %d: exit 1 naming the step; a re-run converges", step, name,
      fault.status), function()
      local secret = "f" .. i
      s:fault(fault)
      local r = run(secret)
      s:clear_faults()
      assert.equal(1, r.code, r.err)
      assert.truthy(r.err:find(string.format("[%d/7] %s … FAILED", step, name), 1, true), r.err)
      assert.truthy(r.err:find(string.format("pullsecret run: step %d %%(%s%%): ", step, name:gsub("%p", "%%%0"))),
        r.err)
      assert.truthy(r.err:find("run the same command again"), r.err)
      if hint then assert.truthy(r.err:find(hint, 1, true), r.err) end
      assert.equal("", r.out)
      assert_no_orphans()
      r = run(secret)
      assert.equal(0, r.code, r.err)
      assert.truthy(r.out:find("secret    default/" .. secret .. " ", 1, true))
      assert_no_orphans()
      local _, pass = secret_login(s, "default", secret, host_of(s.urls.registry))
      assert.truthy(pass)
    end)
  end
end)

describe("pullsecret run: a fault at step 2 (the session's token cannot be refreshed)", function()
  local s, home
  setup(function()
    s = start_sim({ dedicated = { token_lifetime = 1 } })
    home = tmpdir()
  end)
  teardown(function()
    stop_sim(s)
    rmdir(home)
  end)

  it("exits 1 naming step 2, and converges once the login host answers again", function()
    local r = pullsecret({ "login", "--api", s.urls.api, "--cacert", s.ca_file, "--registry", s.urls.registry,
      "--username", USER, "--org", "demo-org" }, { home = home, env = { PULLSECRET_PASSWORD = PASSWORD } })
    assert.equal(0, r.code, r.err)
    require("socket").sleep(1.2)                          -- the saved access token has expired
    s:fault{ listener = "login", method = "POST", path = "/UAALoginServerWAR/oauth/token", status = 500 }
    local argv = { "run", "--kubeconfig", s.kubeconfig, "-n", "default", "--secret-name", "regcred" }
    r = pullsecret(argv, { home = home })
    s:clear_faults()
    assert.equal(1, r.code)
    assert.truthy(r.err:find("[2/7] oauth token … FAILED", 1, true), r.err)
    assert.truthy(r.err:find("pullsecret run: step 2 %(oauth token%): refreshing the session"), r.err)
    assert.equal(0, #registry_tokens(s))
    r = pullsecret(argv, { home = home })
    assert.equal(0, r.code, r.err)
    assert.equal(1, #live_tokens(s))
  end)
end)

describe("pullsecret run interrupted (SIGINT) while it writes the secret", function()
  it("exits 130 and says what became of the token it minted; no token is left that no secret holds", function()
    local s = start_sim()
    local d = tmpdir()
    finally(function()
      stop_sim(s)
      rmdir(d)
    end)
    s:fault{ listener = "kube", method = "PATCH", path = "/api/v1/namespaces/default/secrets/.*", delay_ms = 3000 }
    local argv = { "run", "--api", s.urls.api, "--cacert", s.ca_file, "--registry", s.urls.registry,
      "--username", USER, "--org", "demo-org", "--kubeconfig", s.kubeconfig, "-n", "default", "--secret-name", "intr" }
    for i, a in ipairs(argv) do argv[i] = sh_quote(a) end
    write(d .. "/run.sh", "export PULLSECRET_PASSWORD=" .. sh_quote(PASSWORD) .. "\nexport LUA_PATH=" ..
      sh_quote(package.path) .. "\nexport LUA_CPATH=" .. sh_quote(package.cpath) .. "\necho $$ > " .. d ..
      "/pid\nexec lua5.4 bin/pullsecret " .. table.concat(argv, " ") .. "\n")
    os.execute("(sh " .. d .. "/run.sh </dev/null >" .. d .. "/out 2>" .. d .. "/err; echo $? >" .. d .. "/rc) &")
    local socket = require "socket"
    for _ = 1, 200 do
      if (read(d .. "/err") or ""):find("[5/7]", 1, true) then break end
      socket.sleep(0.05)
    end
    socket.sleep(0.3)                                 -- the secret's PATCH is on its way
    os.execute("kill -INT " .. assert(read(d .. "/pid")):match("%d+"))
    for _ = 1, 200 do
      if (read(d .. "/rc") or ""):find("%d") then break end
      socket.sleep(0.05)
    end
    local err = read(d .. "/err") or ""
    transcripts[#transcripts + 1] = { out = read(d .. "/out") or "", err = err, argv = { "run (interrupted)" } }
    assert.equal("130", (read(d .. "/rc") or ""):match("%d+"), err)
    assert.equal("", read(d .. "/out"))
    local tokens = registry_tokens(s)
    assert.equal(1, #tokens)
    local id = tokens[1]._id
    assert.truthy(err:find("\npullsecret: interrupted (the token " .. id:sub(1, 8) .. "… minted by this run is ", 1,
      true), err)
    local _, pass = secret_login(s, "default", "intr", host_of(s.urls.registry))
    if tokens[1].revoked then
      assert.is_nil(pass)
    else
      assert.equal(tokens[1].token, pass)
      assert.truthy(err:find("is kept: the secret in 1 namespace holds it)", 1, true), err)
    end
  end)
end)

describe("pullsecret sim", function()
  it("serves in the foreground, writes a kubeconfig and CA, and stops on SIGTERM", function()
    local d = tmpdir()
    local pid
    finally(function()
      if pid then os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
      rmdir(d)
    end)
    local p = io.popen("LUA_PATH=" .. sh_quote(package.path) .. " LUA_CPATH=" .. sh_quote(package.cpath) ..
      " lua5.4 bin/pullsecret sim --dir " .. d .. "/files --max-seconds 30 >" .. d .. "/out 2>" .. d ..
      "/err </dev/null & echo $!")
    pid = p:read("l")
    p:close()
    local out
    for _ = 1, 200 do
      out = read(d .. "/out") or ""
      if out:find("Try:") then break end
      require("socket").sleep(0.05)
    end
    transcripts[#transcripts + 1] = { out = out, err = "", argv = { "sim" }, exempt = "prints the demo user" }
    local child = out:match("^pullsecret simulator %(pid (%d+)%)")
    assert.truthy(child, out)
    local api = out:match("\n  api +(%S+)")
    local registry = out:match("\n  registry +(%S+)")
    assert.truthy(out:find("\n  kubeconfig  " .. d .. "/files/kubeconfig\n", 1, true))
    assert.truthy(out:find("Demo user: demo@example.com, password demo-password, API key demo-apikey, " ..
      "passcode demo-passcode (one use), org demo-org\n", 1, true), out)
    assert.truthy(read(d .. "/files/ca.crt"):find("BEGIN CERTIFICATE", 1, true))
    local r = process({ "run", "--api", api, "--cacert", d .. "/files/ca.crt", "--registry", registry,
      "--username", USER, "--org", "demo-org", "--kubeconfig", d .. "/files/kubeconfig", "-n", "default",
      "--secret-name", "regcred" }, { PULLSECRET_PASSWORD = PASSWORD, PULLSECRET_HOME = d .. "/home" })
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("secret    default/regcred created", 1, true))
    os.execute("kill -TERM " .. pid)
    local gone = false
    for _ = 1, 100 do
      local st = read("/proc/" .. child .. "/stat")
      if not st or st:match("^%d+ %(.-%) (%S)") == "Z" then gone = true break end
      require("socket").sleep(0.05)
    end
    assert.is_true(gone, "the simulator process outlived the command")
  end)
end)

describe("pullsecret never prints a secret", function()
  it("no password, API key, passcode or registry token in any output but token add and oauth-token", function()
    assert.truthy(#transcripts > 50)
    assert.truthy(#issued > 5)
    local secrets = { PASSWORD, APIKEY, PASSCODE, DOCKER_PW, "hunter2-value", "hunter2-secretpw", "kubectl-made-pw" }
    local exempt = 0
    for _, r in ipairs(transcripts) do
      local text = (r.out or "") .. (r.err or "")
      local name = table.concat(r.argv or {}, " ")
      if r.exempt then
        exempt = exempt + 1
      else
        for _, sec in ipairs(secrets) do
          assert.falsy(text:find(sec, 1, true), name .. " printed a secret")
        end
        for _, tok in ipairs(issued) do
          assert.falsy(text:find(tok, 1, true), name .. " printed a registry token")
        end
        assert.falsy(text:find("eyJ[%w_%-]+%.[%w_%-]+%.[%w_%-]+"), name .. " printed a JWT")
      end
    end
    assert.equal(4, exempt)
  end)
end)
