--- The `pullsecret` command: the procedure's steps as subcommands, and all of them in one go.
--
--     os.exit(require("pullsecret.cli").main(arg))            -- bin/pullsecret
--     local code = cli.main({ "token", "list" }, {             -- in-process (specs, host programs)
--       stdout = f, stderr = f, stdin = f,                     -- file-like: write/flush, read("l"|"a")
--       env = function(name) return vars[name] end,            -- default os.getenv
--       isatty = function(fd) return false end,                -- default `test -t fd`
--       stty = function(mode) end })                           -- default `stty <mode>` (echo off/on)
--
-- Subcommands (each has --help with an example):
--   login --api API (--username U | --sso | --apikey) [--org ORG] [--registry R] [--cacert FILE]
--                                  step 1 (again: --api, CA, registry and org default to the last
--                                  login's); session saved to $PULLSECRET_HOME/session.json (0600; the
--                                  directory, default ~/.config/pullsecret, is created 0700), and the
--                                  target (api, CA file, registry, org and its GUID) to target.json
--   logout                         removes the saved session and target
--   oauth-token                    step 2: prints "bearer eyJ..." from the saved session
--   org ORG [--guid]               step 3: the org's GUID (--guid: the GUID alone)
--   token add [--description D] [--readwrite] [--expiring] [-q]   step 4 (permanent unless --expiring);
--                                  prints "Token identifier <id>" / "Token <value>" (-q: the token alone)
--   token list [--all]             ID, read-only, expiry, description (never the tokens)
--   token get ID                   one token's metadata (never the token itself)
--   token rm ID|- ...              revokes by id; "-" reads ids or tokens, one a line, from stdin
--   secret describe [NAME] [-n NS] step 5, like kubectl describe secrets (key sizes, never values)
--   secret get NAME [-n NS]        the Secret as YAML (-o json|name), every data value redacted
--   secret create NAME --docker-server S [--docker-username token] [--docker-email E]
--                  [--docker-password-stdin] [--replace-type] [--force-conflicts]   step 6, an upsert
--   pod create (--template FILE [--set k=v]... | --name N --image I [--container C] [--pull-secret S]...)
--                                  step 7, server-side apply
--   run --org ORG --secret-name NAME [...]   all seven steps via pullsecret.run (see `run --help`)
--   sim [--dir DIR] [--max-seconds N]         the simulator in the foreground, for users' own tests
-- Common options where they apply: --kubeconfig, --context, -n/--namespace, --dry-run,
--   -v (one redacted line per HTTP request on stderr), --cacert FILE (IBM hosts); -o yaml|json|name on
--   token list, secret describe|get|create, pod create and run, -o yaml|json on org and token get.
--
-- Secrets never come from arguments (they would show in the process list and shell history):
--   PULLSECRET_PASSWORD (--username), PULLSECRET_PASSCODE (--sso), PULLSECRET_APIKEY (--apikey,
--   --icr-region), PULLSECRET_DOCKER_PASSWORD (secret create); or --password-stdin, --passcode-stdin,
--   --apikey-stdin, --docker-password-stdin (first line of stdin); or a prompt with echo off when stdin
--   is a terminal. --password, -p, --passcode, --apikey=VALUE, --token, --docker-password... and any
--   argument that looks like a JWT are refused with exit status 2 and a message saying how instead.
--   Only `oauth-token`, `token add` and `token add -q` print a secret: the one they were asked for.
--   Secrets shown with -o have every data value replaced by "<redacted: N bytes>".
--
-- Output: results on stdout; progress on stderr (`[4/7] registry token … ok (new, id 637b3d8c…)`).
-- Exit status: 0 success, 1 a failed step or request (the message names the step, the cause and
-- what to do), 2 a usage error (also argparse's), 130 interrupted.
local argparse = require "argparse"
local cjson = require "cjson.safe"
local errors = require "pullsecret.errors"
local manifest = require "pullsecret.manifest"
local yaml = require "pullsecret.yaml"

local cli = {}

cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_USAGE, cli.EXIT_INTERRUPTED = 0, 1, 2, 130

local function usage(message)
  return errors.new("usage", message)
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Secrets as arguments ---------------------------------------------------------------------------

local HOW = {
  password = { what = "a password", env = "PULLSECRET_PASSWORD", stdin = "--password-stdin" },
  passcode = { what = "a one-time passcode", env = "PULLSECRET_PASSCODE", stdin = "--passcode-stdin" },
  apikey = { what = "an API key", env = "PULLSECRET_APIKEY", stdin = "--apikey-stdin" },
  docker = { what = "a registry password or token", env = "PULLSECRET_DOCKER_PASSWORD",
             stdin = "--docker-password-stdin" },
}

-- option -> how; "flag" options are ours without a value and refused only with one.
local REFUSED = {
  ["--password"] = HOW.password, ["-p"] = HOW.password, ["--pass"] = HOW.password,
  ["--passcode"] = HOW.passcode, ["--one-time-passcode"] = HOW.passcode,
  ["--api-key"] = HOW.apikey, ["--apikey"] = { flag = true, how = HOW.apikey },
  ["--sso"] = { flag = true, how = HOW.passcode },
  ["--docker-password"] = HOW.docker, ["--token"] = HOW.docker, ["--registry-token"] = HOW.docker,
  ["--access-token"] = HOW.docker, ["--refresh-token"] = HOW.docker, ["--oauth-token"] = HOW.docker,
}

local function looks_like_jwt(s)
  return s:find("^eyJ[%w_-]*%.[%w_-]+%.[%w_-]*$") ~= nil
end

local function is_uuid(s)
  return s:find("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil
end

-- The command path named in argv ("token add"), for messages.
local function command_path(argv)
  local tops = { login = 0, logout = 0, ["oauth-token"] = 0, org = 0, token = 1, secret = 1, pod = 1, run = 0,
                 sim = 0 }
  local path = {}
  for _, a in ipairs(argv) do
    if not a:find("^%-") then
      if #path == 0 then
        if tops[a] == nil then break end
        path[1] = a
        if tops[a] == 0 then break end
      else
        path[2] = a
        break
      end
    end
  end
  return table.concat(path, " ")
end

local LOGIN_WAYS = "--username U (the password from PULLSECRET_PASSWORD or --password-stdin), --sso (a " ..
  "one-time passcode from PULLSECRET_PASSCODE or --passcode-stdin) or --apikey (an API key from " ..
  "PULLSECRET_APIKEY or --apikey-stdin)"

-- What the command `path` takes instead of the refused option: the advice of a refusal.
local function instead(how, path)
  local top = path:match("^%S+") or ""
  if path == "secret create" or (how ~= HOW.docker and (top == "login" or top == "run" or top == "")) then
    if path == "secret create" then how = HOW.docker end
    return string.format("Set %s in the environment, or pass it on standard input with %s (or answer the " ..
      "prompt when standard input is a terminal).", how.env, how.stdin)
  elseif top == "login" then
    return "A token is not a login credential: `pullsecret login` logs in with " .. LOGIN_WAYS .. "."
  elseif top == "run" then
    return "`pullsecret run` takes no token: it mints the registry token itself, after logging in with " ..
      LOGIN_WAYS .. ", or with the session of `pullsecret login`; --icr-region reads its API key from " ..
      "PULLSECRET_APIKEY or --apikey-stdin."
  elseif path == "token rm" and how == HOW.docker then
    return "Pass tokens on standard input instead, one a line: `pullsecret token rm - < token.txt`."
  elseif top == "secret" or top == "pod" then
    return "`pullsecret " .. path .. "` takes no secret: it reaches Kubernetes with the kubeconfig's " ..
      "credentials (--kubeconfig, --context)."
  elseif top == "token" or top == "org" or top == "oauth-token" then
    return "`pullsecret " .. path .. "` takes no secret: it uses the session saved by `pullsecret login`, " ..
      "which logs in with " .. LOGIN_WAYS .. "."
  end
  return "`pullsecret " .. path .. "` takes no secret."
end

local function refusal(opt, how, path)
  return usage(string.format("%s is refused: %s given as an argument is visible to every user of this " ..
    "machine in the process list and is kept in the shell history. %s", opt, how.what, instead(how, path or "")))
end

--- Checks the raw arguments for secrets: nil | err (kind "usage"). Never echoes a value. The advice
-- fits the subcommand argv names (what it reads instead).
function cli.check_secret_args(argv)
  local path = command_path(argv)
  for i, a in ipairs(argv) do
    if a == "--" then break end
    local opt, value = a:match("^(%-%-?[%w-]+)=(.*)$")
    opt = opt or a
    local r = REFUSED[opt]
    if r and not r.flag then return refusal(opt, r, path) end
    if r and r.flag then
      local nxt = argv[i + 1]
      if value or (nxt and nxt ~= "" and not nxt:find("^%-")) then
        return usage(string.format("%s takes no value: it chooses how to log in, and %s itself is read from " ..
          "%s or standard input (%s), never from an argument (visible in the process list and the shell " ..
          "history)", opt, r.how.what, r.how.env, r.how.stdin))
      end
    end
    if looks_like_jwt(value or a) then
      return usage("argument " .. i .. " looks like a token (a JWT): a token given as an argument is visible in " ..
        "the process list and kept in the shell history. Pass tokens on standard input instead, e.g. " ..
        "`pullsecret token rm - < token.txt`, and a secret's password with --docker-password-stdin or " ..
        "PULLSECRET_DOCKER_PASSWORD")
    end
  end
  return nil
end

-- Context: the io of one invocation -------------------------------------------------------------

local Ctx = {}
Ctx.__index = Ctx

local function default_isatty(fd)
  local ok = os.execute("test -t " .. math.tointeger(fd) .. " 2>/dev/null")
  return ok == true
end

local function new_ctx(io_)
  io_ = io_ or {}
  local self = setmetatable({
    stdout = io_.stdout or io.stdout, stderr = io_.stderr or io.stderr, stdin = io_.stdin or io.stdin,
    env = io_.env or os.getenv, isatty = io_.isatty or default_isatty,
    stty = io_.stty or function(mode) os.execute("stty " .. mode .. " 2>/dev/null") end,
    cleanup = {},
  }, Ctx)
  return self
end

function Ctx:out(...)
  self.stdout:write(...)
end

function Ctx:say(...)
  self.stderr:write(...)
  if self.stderr.flush then self.stderr:flush() end
end

function Ctx:home()
  local h = self.env("PULLSECRET_HOME")
  if h and h ~= "" then return (h:gsub("/+$", "")) end
  local home = self.env("HOME")
  if not home or home == "" then
    return nil, usage("neither PULLSECRET_HOME nor HOME is set: set PULLSECRET_HOME to a directory for the session")
  end
  return home .. "/.config/pullsecret"
end

-- One line of stdin (the --*-stdin options): string | nil, err.
function Ctx:stdin_line(opt)
  if self.stdin_used then
    return nil, usage(opt .. ": standard input is already read by " .. self.stdin_used .. "; use one --*-stdin option")
  end
  self.stdin_used = opt
  local line = self.stdin:read("l")
  if line then line = line:gsub("\r$", "") end
  if not line or line == "" then
    return nil, usage(opt .. ": standard input is empty (expected the secret on its first line)")
  end
  return line
end

-- A prompt with echo off; echo is restored whatever happens.
function Ctx:prompt_secret(prompt)
  self.stty("-echo")
  self:say(prompt)
  local ok, line = pcall(self.stdin.read, self.stdin, "l")
  self.stty("echo")
  self:say("\n")
  if not ok then error(line, 0) end
  return line and (line:gsub("\r$", "")) or nil
end

function Ctx:prompt_line(prompt)
  self:say(prompt)
  local line = self.stdin:read("l")
  return line and (line:gsub("\r$", "")) or nil
end

-- A secret from --*-stdin, the environment, or a prompt: value | nil, err.
function Ctx:secret(how, from_stdin, prompt)
  if from_stdin then return self:stdin_line(how.stdin) end
  local v = self.env(how.env)
  if v and v ~= "" then return v end
  if self.isatty(0) and not self.stdin_used then
    v = self:prompt_secret(prompt)
    if v and v ~= "" then return v end
    return nil, usage("no " .. how.what:gsub("^an? ", "") .. " entered")
  end
  return nil, usage(string.format("%s is needed: set %s, or pass it on standard input with %s " ..
    "(never as an argument: it would be visible in the process list and the shell history)",
    how.what:gsub("^%l", string.upper), how.env, how.stdin))
end

-- Redacted request log lines (-v).
function Ctx:logger(verbose)
  if not verbose then return nil end
  return function(line) self:say("pullsecret: ", line, "\n") end
end

-- Files -----------------------------------------------------------------------------------------

-- A file's bytes: text | nil, why (the OS's reason without the path, e.g. "Is a directory").
local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    err = tostring(err)
    if err:sub(1, #path + 2) == path .. ": " then err = err:sub(#path + 3) end
    return nil, err
  end
  local s, rerr = f:read("a")
  f:close()
  if not s then return nil, tostring(rerr or "unreadable") end
  return s
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function absolute(path)
  if not path or path:sub(1, 1) == "/" then return path end
  local p = io.popen("pwd")
  local cwd = p and p:read("l")
  if p then p:close() end
  return cwd and (cwd .. "/" .. path) or path
end

local function ensure_dir(dir)
  if os.execute("test -d " .. shell_quote(dir)) == true then return true end
  if os.execute("mkdir -p -m 700 " .. shell_quote(dir) .. " 2>/dev/null") ~= true then
    return nil, errors.new("input", "cannot create the directory " .. dir .. " (set PULLSECRET_HOME to a writable one)")
  end
  return true
end

-- Writes a file only its owner can read: created 0600 (umask 077) before anything is written.
local function write_private(path, text)
  os.execute("umask 077 && : > " .. shell_quote(path) .. " && chmod 600 " .. shell_quote(path))
  local f, err = io.open(path, "wb")
  if not f then return nil, errors.new("input", "cannot write " .. path .. ": " .. tostring(err)) end
  f:write(text)
  f:close()
  return true
end

-- Output ----------------------------------------------------------------------------------------

local kjson_null = cjson.null

-- A copy of a decoded API object (or any result) in pullsecret.yaml's terms: arrays marked, nulls
-- as yaml.null, functions and userdata dropped.
local function plain(v)
  if v == kjson_null or v == yaml.null then return yaml.null end
  if type(v) ~= "table" then
    if type(v) == "function" or type(v) == "userdata" or type(v) == "thread" then return nil end
    return v
  end
  local kjson = require("pullsecret.kube").json
  if kjson.is_array(v) or yaml.is_array(v) then
    local out = yaml.array({})
    for i, x in ipairs(v) do out[i] = plain(x) end
    return out
  end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" then out[k] = plain(x) end
  end
  return yaml.object(out)
end
cli.plain = plain

-- Secret objects anywhere in `v` get their values replaced; returns a redacted copy.
local function redact(v)
  v = plain(v)
  local kube = require "pullsecret.kube"
  local function walk(t)
    if type(t) ~= "table" or t == yaml.null then return end
    if t.kind == "Secret" then
      for _, field in ipairs{ "data", "stringData" } do
        local d = t[field]
        if type(d) == "table" and d ~= yaml.null then
          for k, x in pairs(d) do
            local n = type(x) == "string" and (field == "data" and kube.b64_size(x) or #x) or 0
            d[k] = string.format("<redacted: %d bytes>", n)
          end
        end
      end
      local md = type(t.metadata) == "table" and t.metadata or nil
      local ann = md and type(md.annotations) == "table" and md.annotations
      if ann and ann ~= yaml.null then
        local last = "kubectl.kubernetes.io/last-applied-configuration"
        if ann[last] then ann[last] = "<redacted>" end
      end
      if md and md.managedFields then md.managedFields = nil end
    end
    for _, x in pairs(t) do walk(x) end
  end
  walk(v)
  return v
end
cli.redact = redact

function Ctx:emit(format, value)
  local text, err
  if format == "json" then
    text, err = manifest.to_json(value, { indent = "    " })
  else
    text, err = manifest.to_yaml(value)
  end
  if not text then return nil, err end
  self:out(text)
  return 0
end

-- Argument parsing ------------------------------------------------------------------------------

local function with_help(state, cmd)
  cmd:add_help(false)
  cmd:flag("-h --help", "Show this help and exit."):action(function() state.help = state.help or cmd end)
  return cmd
end

local function opt_verbose(cmd)
  cmd:flag("-v --verbose", "Log each HTTP request (method, URL, status, time; secrets redacted) on stderr.")
end

local function opt_cacert(cmd)
  cmd:option("--cacert", "CA certificate file (PEM) for the IBM Cloud hosts (default: the system store).")
    :argname("FILE")
end

local function opt_kube(cmd, multi)
  cmd:option("--kubeconfig", "Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).")
    :argname("FILE")
  cmd:option("--context", "Kubeconfig context (default: current-context)."):argname("CONTEXT")
  local n = cmd:option("-n --namespace", multi and "Namespace; repeat it for several (default: the context's)."
    or "Namespace (default: the context's)."):argname("NS")
  if multi then n:count("*") end
end

local function opt_output(cmd, choices)
  cmd:option("-o --output", "Print the result as " .. table.concat(choices, ", ") .. ".")
    :choices(choices):argname("FORMAT")
end

local function opt_org(cmd)
  cmd:option("--org", "The org whose images the tokens read (default: the org of `login --org`)."):argname("ORG")
  cmd:option("--registry", "Registry host or URL (default: the session's, https://registry.<domain>).")
    :argname("HOST|URL")
end

local function build_parser(state)
  local p = argparse("pullsecret", "IBM Cloud registry tokens and Kubernetes image pull secrets, " ..
    "safely and repeatably.")
  with_help(state, p)
  p:command_target("command")
  p:epilog([[
The seven steps of the procedure, one by one or all at once:
  1 login        pullsecret login --api api.<domain> --username me@example.com
  2 oauth token  pullsecret oauth-token
  3 org guid     pullsecret org myorg --guid
  4 token        pullsecret token add --description "k8s pull secret"
  5 describe     pullsecret secret describe -n apps
  6 secret       pullsecret secret create regcred -n apps --docker-server registry.<domain> --docker-password-stdin
  7 pods         pullsecret pod create -n apps --template mypod.yaml --set pod_name=web ...
  all            pullsecret run --api api.<domain> --username me@example.com --org myorg -n apps --secret-name regcred
Secrets come from PULLSECRET_PASSWORD, PULLSECRET_PASSCODE, PULLSECRET_APIKEY, PULLSECRET_DOCKER_PASSWORD,
from --*-stdin or from a prompt; never from arguments.
Exit status: 0 ok, 1 a step failed, 2 usage, 130 interrupted.
Run `pullsecret <command> --help` for each command.]])

  -- login / logout / oauth-token / org
  local login = with_help(state, p:command("login", "Log in to IBM Cloud Dedicated (step 1) and save the session."))
  login:option("--api", "API endpoint: api.<domain> or its URL."):argname("API")
  login:option("-u --username", "User name (password login; the password from PULLSECRET_PASSWORD, " ..
    "--password-stdin or a prompt)."):argname("USER")
  login:flag("--sso", "Log in with a one-time passcode (PULLSECRET_PASSCODE, --passcode-stdin or a prompt).")
  login:flag("--apikey", "Log in with an API key (PULLSECRET_APIKEY, --apikey-stdin or a prompt).")
  login:flag("--password-stdin", "Read the password from the first line of standard input.")
  login:flag("--passcode-stdin", "Read the passcode from the first line of standard input.")
  login:flag("--apikey-stdin", "Read the API key from the first line of standard input.")
  login:option("--org", "Org to target: token commands and `run` use it; its GUID is looked up now."):argname("ORG")
  login:option("--registry", "Registry host or URL (default https://registry.<domain>)."):argname("HOST|URL")
  opt_cacert(login)
  opt_verbose(login)
  login:epilog([[
Example:
  export PULLSECRET_PASSWORD   # or: --password-stdin < file, or answer the prompt
  pullsecret login --api api.example.com --username me@example.com --org myorg
The session is saved to $PULLSECRET_HOME/session.json (default ~/.config/pullsecret), mode 0600.]])

  with_help(state, p:command("logout", "Forget the saved session (removes the session file)."))
    :epilog("Example:\n  pullsecret logout")

  local oauth = with_help(state, p:command("oauth-token", "Print the session's OAuth token (step 2)."))
  opt_cacert(oauth)
  opt_verbose(oauth)
  oauth:epilog([[
Example:
  OAUTH_TOKEN=$(pullsecret oauth-token)     # prints: bearer eyJ...
The token is printed because it is what this command is for: keep it out of logs.]])

  local org = with_help(state, p:command("org", "Show an org's GUID (step 3)."))
  org:argument("name", "Org name.")
  org:flag("--guid", "Print the GUID alone.")
  opt_cacert(org)
  opt_verbose(org)
  opt_output(org, { "json", "yaml" })
  org:epilog("Example:\n  ORG_GUID=$(pullsecret org myorg --guid)")

  -- token
  local token = with_help(state, p:command("token", "Registry tokens (step 4): add, list, get, rm."))
  token:command_target("token_command")
  token:epilog("Example:\n  pullsecret token add --description ci -q > token.txt\n  pullsecret token list")
  local tadd = with_help(state, token:command("add", "Create a registry token (non-expiring unless --expiring)."))
  tadd:option("--description", "Description stored with the token."):argname("TEXT")
  tadd:flag("--readwrite", "Read-write token (default: read-only).")
  tadd:flag("--expiring", "Expiring token (the registry's default lifetime) instead of a permanent one.")
  tadd:flag("-q --quiet", "Print only the token.")
  opt_org(tadd)
  opt_cacert(tadd)
  opt_verbose(tadd)
  tadd:epilog([[
Example:
  pullsecret token add --description "k8s pull secret"
    Token identifier 637b3d8c-...
    Token eyJhbGciOi...
  pullsecret token add -q | kubectl create secret ... --from-file=... /dev/stdin
The token is printed because it is what this command is for.]])
  local tlist = with_help(state, token:command("list", "List the registry tokens (never their values)."))
  tlist:flag("--all", "Include revoked tokens.")
  opt_output(tlist, { "json", "yaml", "name" })
  opt_org(tlist)
  opt_cacert(tlist)
  opt_verbose(tlist)
  tlist:epilog("Example:\n  pullsecret token list")
  local tget = with_help(state, token:command("get", "Show a registry token's metadata (never its value)."))
  tget:argument("id", "Token identifier.")
  opt_output(tget, { "json", "yaml" })
  opt_org(tget)
  opt_cacert(tget)
  opt_verbose(tget)
  tget:epilog("Example:\n  pullsecret token get 637b3d8c-5bd1-4a4e-9e5a-0b1b2c3d4e5f")
  local trm = with_help(state, token:command("rm", "Revoke registry tokens by identifier."))
  trm:argument("ids", "Token identifiers; `-` reads identifiers or tokens from standard input, one a line.")
    :args("+"):argname("ID|-")
  opt_org(trm)
  opt_cacert(trm)
  opt_verbose(trm)
  trm:epilog([[
Example:
  pullsecret token rm 637b3d8c-5bd1-4a4e-9e5a-0b1b2c3d4e5f
  pullsecret token rm - < token.txt        # a token itself: on standard input only
A token given as an argument is refused: it would be visible in the process list and the shell history.]])

  -- secret
  local secret = with_help(state, p:command("secret", "Image pull secrets in Kubernetes (steps 5 and 6)."))
  secret:command_target("secret_command")
  secret:epilog("Example:\n  pullsecret secret describe -n apps")
  local sdesc = with_help(state, secret:command("describe", "Describe a namespace's secrets: names, types, " ..
    "key sizes; never values."))
  sdesc:argument("name", "Only this secret."):args("?")
  opt_kube(sdesc)
  opt_output(sdesc, { "json", "yaml", "name" })
  opt_verbose(sdesc)
  sdesc:epilog("Example:\n  pullsecret secret describe -n apps")
  local sget = with_help(state, secret:command("get", "Show a secret as YAML or JSON with every value redacted."))
  sget:argument("name", "Secret name.")
  opt_kube(sget)
  opt_output(sget, { "yaml", "json", "name" })
  opt_verbose(sget)
  sget:epilog("Example:\n  pullsecret secret get regcred -n apps -o yaml   # data values shown as <redacted: N bytes>")
  local screate = with_help(state, secret:command("create", "Create or update a docker-registry pull secret."))
  screate:argument("name", "Secret name.")
  screate:option("--docker-server", "Registry server key (e.g. registry.<domain>)."):argname("SERVER"):args(1)
  screate:option("--docker-username", "Registry user name.", "token"):argname("USER")
  screate:option("--docker-email", "E-mail stored in the secret (unused by Kubernetes; e.g. a@b.c)."):argname("EMAIL")
  screate:flag("--docker-password-stdin", "Read the password (the registry token) from standard input.")
  screate:flag("--replace-type", "Replace a secret of the same name but another type (delete, then create).")
  screate:flag("--force-conflicts", "Take over the fields another field manager owns (e.g. a secret made by " ..
    "`kubectl create secret`), like kubectl apply --server-side --force-conflicts.")
  screate:flag("--dry-run", "Build the secret, send nothing.")
  opt_kube(screate)
  opt_output(screate, { "json", "yaml", "name" })
  opt_verbose(screate)
  screate:epilog([[
Example:
  pullsecret token add -q | pullsecret secret create regcred -n apps \
    --docker-server registry.example.com --docker-email a@b.c --docker-password-stdin
The password comes from --docker-password-stdin, PULLSECRET_DOCKER_PASSWORD or a prompt.
An existing secret is updated in place (a re-run changes nothing when it already holds the login).]])

  -- pod
  local pod = with_help(state, p:command("pod", "Pods that pull with the secret (step 7)."))
  pod:command_target("pod_command")
  pod:epilog("Example:\n  pullsecret pod create -n apps --name web --image registry.example.com/team/web:1 " ..
    "--pull-secret regcred")
  local pcreate = with_help(state, pod:command("create", "Create or update a pod from a template or from flags."))
  pcreate:option("--template", "Pod template (YAML with <placeholder> fields, e.g. the procedure's mypod.yaml).")
    :argname("FILE")
  pcreate:option("--set", "Placeholder value for the template; repeat it."):count("*"):argname("KEY=VALUE")
  pcreate:option("--name", "Pod name (without --template)."):argname("NAME")
  pcreate:option("--image", "Image (without --template); a missing tag means latest."):argname("IMAGE")
  pcreate:option("--container", "Container name (default: the pod name)."):argname("NAME")
  pcreate:option("--pull-secret", "Image pull secret name; repeat it."):count("*"):argname("SECRET")
  pcreate:flag("--dry-run", "Render the pod, send nothing.")
  opt_kube(pcreate)
  opt_output(pcreate, { "json", "yaml", "name" })
  opt_verbose(pcreate)
  pcreate:epilog([[
Examples:
  pullsecret pod create -n apps --template mypod.yaml --set pod_name=web --set container_name=web \
    --set dedicated_domain=example.com --set my_namespace=team --set my_image=web --set secret_name=regcred
  pullsecret pod create -n apps --name web --image registry.example.com/team/web:1 --pull-secret regcred]])

  -- run
  local run = with_help(state, p:command("run", "All seven steps in one go (idempotent: a re-run changes nothing)."))
  run:option("--api", "API endpoint api.<domain> (with --username, --sso or --apikey)."):argname("API")
  run:option("-u --username", "User name (password from PULLSECRET_PASSWORD, --password-stdin or a prompt).")
    :argname("USER")
  run:flag("--sso", "One-time passcode login (PULLSECRET_PASSCODE, --passcode-stdin or a prompt).")
  run:flag("--apikey", "API-key login (PULLSECRET_APIKEY, --apikey-stdin or a prompt).")
  run:flag("--password-stdin", "Read the password from the first line of standard input.")
  run:flag("--passcode-stdin", "Read the passcode from the first line of standard input.")
  run:flag("--apikey-stdin", "Read the API key from the first line of standard input.")
  run:option("--icr-region", "The modern path instead of steps 1-4: a secret for <region>.icr.io with user " ..
    "iamapikey and the API key."):argname("REGION")
  run:option("--org", "Org whose images the token reads (default: the org of `login --org`)."):argname("ORG")
  run:option("--secret-name", "Name of the image pull secret."):argname("NAME"):args(1)
  run:option("--namespaces", "Comma-separated namespaces (or repeat -n)."):argname("NS,NS,...")
  run:option("--docker-email", "E-mail stored in the secret (unused; e.g. a@b.c)."):argname("EMAIL")
  run:option("--registry", "Registry host or URL (default https://registry.<domain>)."):argname("HOST|URL")
  run:option("--docker-server", "The secret's server key (default: the registry's host[:port])."):argname("SERVER")
  run:option("--description", "Description of a new token."):argname("TEXT")
  run:flag("--readwrite", "Read-write token (default read-only).")
  run:flag("--rotate", "Mint a new token, write and check it, then revoke the one it replaces.")
  run:flag("--replace-type", "Replace a secret of the same name but another type.")
  run:flag("--force-conflicts", "Take over the secret's fields another field manager owns (e.g. " ..
    "`kubectl create secret`'s), like kubectl apply --server-side --force-conflicts.")
  run:option("--service-account", "Add the secret to this service account's imagePullSecrets; repeat it.")
    :count("*"):argname("SA")
  run:option("--pod-template", "Pod template to apply (step 7)."):argname("FILE")
  run:option("--set", "Placeholder value for the pod template; repeat it."):count("*"):argname("KEY=VALUE")
  run:flag("--dry-run", "Log in and read, mint and write nothing; -o shows what would be applied.")
  run:option("--concurrency", "Kubernetes requests in flight at once (default 16)."):argname("N")
  opt_cacert(run)
  opt_kube(run, true)
  opt_output(run, { "json", "yaml", "name" })
  opt_verbose(run)
  run:epilog([[
Examples:
  export PULLSECRET_PASSWORD
  pullsecret run --api api.example.com --username me@example.com --org myorg -n apps \
    --secret-name regcred --docker-email a@b.c --pod-template mypod.yaml --set pod_name=web ...
  pullsecret run --org myorg -n apps --secret-name regcred        # with the session of `pullsecret login`
  PULLSECRET_APIKEY=... pullsecret run --icr-region uk -n apps --secret-name all-icr-io
Progress goes to stderr, one line per step; the result to stdout. A re-run mints and writes nothing
when the secret already holds a valid token; after a failure it converges.]])

  -- sim
  local sim = with_help(state, p:command("sim", "Run the simulator (IBM Cloud Dedicated and Kubernetes, TLS, " ..
    "loopback) in the foreground."))
  sim:option("--dir", "Write ca.crt and kubeconfig here (default: the simulator's own temporary directory).")
    :argname("DIR")
  sim:option("--max-seconds", "Stop after this many seconds.", "86400"):convert(tonumber):argname("N")
  sim:epilog([[
Example:
  pullsecret sim --dir /tmp/sim      # then, in another terminal, the commands it prints
Stops on Ctrl-C or SIGTERM.]])
  return p
end

-- Shared steps ----------------------------------------------------------------------------------

local function target_path(home) return home .. "/target.json" end
local function session_path(home) return home .. "/session.json" end

function Ctx:read_target()
  local home, err = self:home()
  if not home then return nil, err end
  local text = read_file(target_path(home))
  local t = text and cjson.decode(text)
  return type(t) == "table" and t or {}
end

-- The saved session: session, target | nil, err.
function Ctx:load_session(a)
  local home, err = self:home()
  if not home then return nil, err end
  local target = self:read_target()
  local path = session_path(home)
  if not file_exists(path) then
    return nil, errors.new("input", "not logged in (no session at " .. path .. "): run `pullsecret login --api " ..
      "api.<domain> --username U` first, or give credentials")
  end
  local s
  s, err = require("pullsecret.session").load(path, { ca_file = a.cacert or target.cacert, log = self.log })
  if not s then return nil, err end
  self.session = { s = s, path = path, expires_at = s.expires_at }
  return s, target
end

-- Saves a loaded session again when it was refreshed, and closes it.
function Ctx:finish_session()
  local l = self.session
  if not l then return end
  self.session = nil
  if l.s.expires_at ~= l.expires_at then l.s:save(l.path) end
  l.s:close()
end

local function org_guid(s, name, target)
  if target and target.org == name and type(target.org_guid) == "string" then return target.org_guid end
  return require("pullsecret.org").guid(s, name)
end

-- A registry client over the saved session: reg | nil, err.
function Ctx:registry(a)
  local s, target = self:load_session(a)
  if not s then return nil, target end
  if a.registry == "" then return nil, usage("--registry is empty: give the registry host, e.g. registry.<domain>") end
  if not a.registry and (type(s.registry) ~= "string" or s.registry == "") then
    return nil, usage("the registry is unknown: the saved session has none (`pullsecret login` was given no " ..
      "--registry and could not derive it from the API endpoint): give --registry HOST|URL, e.g. --registry " ..
      "registry.<domain>, or log in again with --registry")
  end
  local org = a.org or target.org
  if not org then
    return nil, usage("no org: give --org ORG (or log in with `pullsecret login ... --org ORG`)")
  end
  local guid, err = org_guid(s, org, target)
  if not guid then return nil, err end
  return require("pullsecret.registry").new{ session = s, url = a.registry, org_guid = guid }
end

-- A Kubernetes client: client | nil, err.
function Ctx:kube(a, namespace)
  local cfg, err = require("pullsecret.kubeconfig").load{ kubeconfig = a.kubeconfig, context = a.context,
    namespace = namespace, env = self.env }
  if not cfg then return nil, err end
  local k
  k, err = require("pullsecret.kube").new{ config = cfg, namespace = namespace, log = self.log,
    on_event = self.kube_event }
  if not k then return nil, err end
  self.cleanup[#self.cleanup + 1] = function() k:close() end
  return k
end

local function parse_sets(list)
  local values = {}
  for _, s in ipairs(list or {}) do
    local k, v = s:match("^([^=]+)=(.*)$")
    if not k or not k:find("^[%a_][%w_%-]*$") then
      return nil, usage("--set " .. s .. ": expected KEY=VALUE with KEY a placeholder name, e.g. --set pod_name=web")
    end
    values[k] = v
  end
  return values
end

-- The library's advice names Lua options and values; the command's user passes flags and --set.
local function cli_values(message)
  message = message:gsub('pass ([%w_%-]+) = "%.%.%." in the values', "pass --set %1=VALUE")
  message = message:gsub("replace_type = true", "--replace-type")
  message = message:gsub("force = true", "--force-conflicts")
  return message
end

local function template_text(path)
  local text, err = read_file(path)
  if not text then
    return nil, usage("cannot read the template " .. path .. ": " .. err .. " (give the path of a pod template " ..
      "file, YAML)")
  end
  return text
end

-- Commands --------------------------------------------------------------------------------------

local commands = {}

-- Which login the options ask for: grant, how, flag | nil (none asked).
local function login_kind(a)
  local n = (a.username and 1 or 0) + (a.sso and 1 or 0) + (a.apikey and 1 or 0)
  if n > 1 then return nil, usage("choose one way to log in: --username U, --sso or --apikey") end
  if a.sso then return "passcode", HOW.passcode, a.passcode_stdin end
  if a.apikey then return "apikey", HOW.apikey, a.apikey_stdin end
  if a.username then return "password", HOW.password, a.password_stdin end
  return nil
end

local function check_stdin_flags(a, grant)
  local flags = { password = a.password_stdin, passcode = a.passcode_stdin, apikey = a.apikey_stdin }
  for g, on in pairs(flags) do
    if on and g ~= grant then
      local need = ({ password = "--username U", passcode = "--sso", apikey = "--apikey or --icr-region" })[g]
      return nil, usage("--" .. g .. "-stdin goes with " .. need)
    end
  end
  return true
end

-- Login options (the grant and its secret) for pullsecret.login / pullsecret.run: table | nil, err.
function Ctx:credentials(a, grant, how, from_stdin)
  local o = { api = a.api, username = a.username }
  local prompt = ({ password = "Password: ", apikey = "API key: " })[grant]
  if grant == "passcode" then
    prompt = "One-time passcode: "
    if not from_stdin and (self.env(how.env) or "") == "" and self.isatty(0) then
      local info = require("pullsecret.login").discover{ api = a.api, ca_file = a.cacert, log = self.log }
      if info then prompt = "One-time passcode (get one at " .. info.authorization_endpoint .. "/passcode): " end
    end
  end
  local v, err = self:secret(how, from_stdin, prompt)
  if not v then return nil, err end
  o[grant] = v
  return o
end

function commands.login(ctx, a)
  local grant, how, from_stdin = login_kind(a)
  if not grant and how then return nil, how end
  -- Logging in again: the saved target gives what is not said (api, CA, registry, org).
  local previous = ctx:read_target() or {}
  if not a.api then a.api = previous.api end
  if not a.api then return nil, usage("--api is missing: give the API endpoint api.<domain>") end
  if previous.api and require("pullsecret.login").base_url(a.api, "api") == previous.api then
    a.cacert = a.cacert or previous.cacert
    a.registry = a.registry or previous.registry
    a.org = a.org or previous.org
  end
  if not grant then
    if a.password_stdin or not ctx.isatty(0) then
      return nil, usage("say how to log in: --username U (password), --sso (one-time passcode) or --apikey")
    end
    a.username = ctx:prompt_line("User name: ")
    if not a.username or a.username == "" then return nil, usage("no user name entered") end
    grant, how, from_stdin = login_kind(a)
  end
  local ok, err = check_stdin_flags(a, grant)
  if not ok then return nil, err end
  local home
  home, err = ctx:home()
  if not home then return nil, err end
  local o
  o, err = ctx:credentials(a, grant, how, from_stdin)
  if not o then return nil, err end
  o.ca_file, o.registry, o.log = absolute(a.cacert), a.registry, ctx.log
  local s
  s, err = require("pullsecret.login").login(o)
  if not s then return nil, err end
  local target = { api = s.api, cacert = o.ca_file, registry = s.registry }
  if a.org then
    local guid
    guid, err = require("pullsecret.org").guid(s, a.org)
    if not guid then s:close() return nil, err end
    target.org, target.org_guid = a.org, guid
  end
  ok, err = ensure_dir(home)
  if ok then ok, err = s:save(session_path(home)) end
  if ok then ok, err = write_private(target_path(home), assert(cjson.encode(target)) .. "\n") end
  local desc = tostring(s)
  s:close()
  if not ok then return nil, err end
  ctx:out("Logged in: ", desc, "\n")
  if target.org then ctx:out("Org: ", target.org, " (", target.org_guid, ")\n") end
  ctx:out("Session saved to ", session_path(home), "\n")
  return 0
end

function commands.logout(ctx)
  local home, err = ctx:home()
  if not home then return nil, err end
  local removed = os.remove(session_path(home))
  os.remove(target_path(home))
  if removed then
    ctx:out("Logged out: removed ", session_path(home), "\n")
  else
    ctx:out("Not logged in (no session at ", session_path(home), ")\n")
  end
  return 0
end

commands["oauth-token"] = function(ctx, a)
  local s, err = ctx:load_session(a)
  if not s then return nil, err end
  local tok
  tok, err = s:oauth_token()
  if not tok then return nil, err end
  ctx:out(tok, "\n")
  return 0
end

function commands.org(ctx, a)
  local s, err = ctx:load_session(a)
  if not s then return nil, err end
  local guid
  guid, err = require("pullsecret.org").guid(s, a.name)
  if not guid then return nil, err end
  if a.output then
    return ctx:emit(a.output, yaml.object({ name = a.name, guid = guid }, { "name", "guid" }))
  end
  if a.guid then ctx:out(guid, "\n") else ctx:out("Name: ", a.name, "\nGUID: ", guid, "\n") end
  return 0
end

local function when(t)
  if not t then return "never" end
  return os.date("!%Y-%m-%d %H:%M:%S UTC", t)
end

-- A token's metadata for -o. `known`: the fields the registry's answer tells (default: all of them);
-- the others are left out, not shown as null. A null `expires` means never (a permanent token).
local function token_view(t, known)
  local v = { id = t.id, readonly = t.readonly, permanent = t.expires == nil, expires = t.expires or yaml.null,
    description = t.description or yaml.null, revoked = t.revoked, issuer = t.issuer }
  if known then
    for k in pairs(v) do if not known[k] then v[k] = nil end end
  end
  return yaml.object(v, { "id", "readonly", "permanent", "expires", "description", "revoked", "issuer" })
end

local token = {}

function token.add(ctx, a)
  local reg, err = ctx:registry(a)
  if not reg then return nil, err end
  local t
  t, err = reg:create{ permanent = not a.expiring, write = a.readwrite, description = a.description }
  if not t then return nil, err end
  if a.quiet then
    ctx:out(t.token, "\n")
  else
    ctx:out("Token identifier ", t.id, "\n", "Token ", t.token, "\n")
  end
  return 0
end

function token.list(ctx, a)
  local reg, err = ctx:registry(a)
  if not reg then return nil, err end
  local list
  list, err = reg:list()
  if not list then return nil, err end
  local shown = yaml.array({})
  for _, t in ipairs(list) do
    if a.all or not t.revoked then shown[#shown + 1] = t end
  end
  if a.output == "name" then
    for _, t in ipairs(shown) do ctx:out(tostring(t.id), "\n") end
    return 0
  elseif a.output then
    local views = yaml.array({})
    for i, t in ipairs(shown) do views[i] = token_view(t) end
    return ctx:emit(a.output, views)
  end
  local rows = { { "TOKEN ID", "READONLY", "EXPIRY", "DESCRIPTION" } }
  if a.all then rows[1][5] = "REVOKED" end
  for _, t in ipairs(shown) do
    local row = { tostring(t.id), tostring(t.readonly), when(t.expires), t.description or "-" }
    if a.all then row[5] = tostring(t.revoked) end
    rows[#rows + 1] = row
  end
  local width = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do width[i] = math.max(width[i] or 0, utf8.len(c) or #c) end
  end
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do
      cells[i] = i < #r and (c .. string.rep(" ", width[i] - (utf8.len(c) or #c))) or c
    end
    ctx:out(table.concat(cells, "   "), "\n")
  end
  return 0
end

function token.get(ctx, a)
  local reg, err = ctx:registry(a)
  if not reg then return nil, err end
  local t
  t, err = reg:get(a.id)
  if not t then return nil, err end
  -- The answer holds the token alone: its id, expiry and issuer are known (its claims), its
  -- description, read-only flag and revocation are not.
  if a.output then
    return ctx:emit(a.output, token_view(t, { id = true, permanent = true, expires = true, issuer = true }))
  end
  ctx:out("Token identifier ", tostring(t.id), "\n", "Permanent        ", tostring(t.expires == nil), "\n",
          "Expires          ", when(t.expires), "\n")
  if t.issuer then ctx:out("Issuer           ", t.issuer, "\n") end
  return 0
end

function token.rm(ctx, a)
  local ids = {}
  for _, x in ipairs(a.ids) do
    if x == "-" then
      if ctx.stdin_used then return nil, usage("`-` may be given once") end
      ctx.stdin_used = "-"
      -- Standard input is the secrets channel: a line that is neither an id nor a token may be a
      -- password pasted by mistake, so it is refused without being repeated or sent anywhere.
      local n = 0
      for line in ctx.stdin:lines() do
        n = n + 1
        line = line:gsub("^%s+", ""):gsub("%s+$", "")
        if line ~= "" then
          if not is_uuid(line) and not looks_like_jwt(line) then
            return nil, usage("line " .. n .. " of standard input is neither a token id (a UUID) nor a registry " ..
              "token (a JWT): give one identifier or token a line (nothing was revoked)")
          end
          ids[#ids + 1] = line
        end
      end
    else
      ids[#ids + 1] = x
    end
  end
  if #ids == 0 then return nil, usage("no token identifiers (standard input was empty)") end
  local reg, err = ctx:registry(a)
  if not reg then return nil, err end
  local registry = require "pullsecret.registry"
  local failed = 0
  for _, x in ipairs(ids) do
    local id = x
    if x:find(".", 1, true) then
      local info = registry.token_info(x)
      id = info and info.id or "(a malformed token)"
    end
    local ok, rerr = reg:revoke(x)
    if ok then
      ctx:out("Token ", id, " revoked\n")
    else
      failed = failed + 1
      ctx:say("pullsecret: token ", id, ": ", tostring(rerr), "\n")
    end
  end
  return failed == 0 and 0 or 1
end

function commands.token(ctx, a)
  return token[a.token_command](ctx, a)
end

local secret = {}

function secret.describe(ctx, a)
  local k, err = ctx:kube(a, a.namespace)
  if not k then return nil, err end
  local ns = a.namespace or k.namespace
  local list
  list, err = k:describe_secrets(ns)
  if not list then return nil, err end
  local shown = {}
  for _, s in ipairs(list) do
    if not a.name or s.name == a.name then shown[#shown + 1] = s end
  end
  if a.name and #shown == 0 then
    return nil, errors.new("kube", string.format('secret "%s" not found in namespace "%s"', a.name, ns))
  end
  if a.output == "name" then
    for _, s in ipairs(shown) do ctx:out("secret/", s.name, "\n") end
    return 0
  elseif a.output then
    local views = yaml.array({})
    for i, s in ipairs(shown) do
      local data = yaml.object({})
      for _, d in ipairs(s.data or {}) do data[d.key] = d.bytes end
      views[i] = yaml.object({ name = s.name, namespace = ns, type = s.type, data = data },
        { "name", "namespace", "type", "data" })
    end
    return ctx:emit(a.output, views)
  end
  for i, s in ipairs(shown) do
    if i > 1 then ctx:out("\n\n") end
    ctx:out("Name:         ", s.name, "\n", "Namespace:    ", ns, "\n\n", "Type:  ", tostring(s.type), "\n\n",
            "Data\n====\n")
    for _, d in ipairs(s.data or {}) do
      ctx:out(d.key, ":  ", tostring(d.bytes), " bytes\n")
    end
  end
  if #shown == 0 then ctx:say("No secrets in namespace ", ns, ".\n") end
  return 0
end

-- True when the live secret already has this type and exactly these data values: nothing to write.
local function same_secret(live, wanted)
  if type(live) ~= "table" or live.type ~= wanted.type then return false end
  local a, b = live.data or {}, wanted.data or {}
  for k, v in pairs(a) do if b[k] ~= v then return false end end
  for k, v in pairs(b) do if a[k] ~= v then return false end end
  return true
end

-- The NAME argument of secret get / create, checked before anything is read or sent: true | nil, err.
local function check_secret_name(name)
  local valid, verr = manifest.check_name("secret name", name, "subdomain")
  if not valid then return nil, usage(verr.message) end
  return true
end

function secret.create(ctx, a)
  if not a.docker_server or a.docker_server == "" then
    return nil, usage("--docker-server is missing: give the registry host, e.g. registry.<domain>")
  end
  if a.docker_username == "" then
    return nil, usage("--docker-username is empty: give the registry user name: token (the default, for a " ..
      "registry token), iamapikey (an IBM Cloud API key) or the registry's user")
  end
  local valid, err = check_secret_name(a.name)
  if not valid then return nil, err end
  local password
  password, err = ctx:secret(HOW.docker, a.docker_password_stdin, "Password (registry token): ")
  if not password then return nil, err end
  local k
  k, err = ctx:kube(a, a.namespace)
  if not k then return nil, err end
  local ns = a.namespace or k.namespace
  local obj
  obj, err = manifest.pull_secret{ name = a.name, namespace = ns, server = a.docker_server,
    username = a.docker_username, password = password, email = a.docker_email }
  if not obj then return nil, usage(err.message) end
  local action
  local current = not a.dry_run and k:get{ api_version = "v1", kind = "Secret", namespace = ns, name = a.name }
  if a.dry_run then
    action = "created (dry run)"
  elseif same_secret(current, obj) then
    action, obj = "unchanged", current
  else
    local r
    r, err = k:upsert_secret(obj, { replace_type = a.replace_type, force = a.force_conflicts or nil })
    if not r then return nil, err end
    action = r.action .. (r.replaced and " (replaced a secret of another type)" or "")
    obj = r.object or obj
  end
  if a.output == "name" then
    ctx:out("secret/", a.name, "\n")
  elseif a.output then
    return ctx:emit(a.output, redact(obj))
  else
    ctx:out("secret/", a.name, " ", action, "\n")
  end
  return 0
end

function secret.get(ctx, a)
  local valid, err = check_secret_name(a.name)
  if not valid then return nil, err end
  local k
  k, err = ctx:kube(a, a.namespace)
  if not k then return nil, err end
  local obj
  obj, err = k:get{ api_version = "v1", kind = "Secret", namespace = a.namespace or k.namespace, name = a.name }
  if not obj then return nil, err end
  if a.output == "name" then
    ctx:out("secret/", a.name, "\n")
    return 0
  end
  return ctx:emit(a.output or "yaml", redact(obj))
end

function commands.secret(ctx, a)
  return secret[a.secret_command](ctx, a)
end

function commands.pod(ctx, a)
  local obj, err
  local ns = a.namespace
  if a.template then
    if a.name or a.image or a.container or #a.pull_secret > 0 then
      return nil, usage("--template excludes --name, --image, --container and --pull-secret (use --set)")
    end
    local text
    text, err = template_text(a.template)
    if not text then return nil, err end
    local values
    values, err = parse_sets(a.set)
    if not values then return nil, err end
    if ns and values.kubernetes_namespace == nil and text:find("<kubernetes_namespace>", 1, true) then
      values.kubernetes_namespace = ns
    end
    obj, err = manifest.render(text, values)
    if not obj then return nil, usage(a.template .. ": " .. cli_values(err.message)) end
  else
    if #a.set > 0 then return nil, usage("--set goes with --template") end
    if not a.name or not a.image then
      return nil, usage("give --template FILE [--set KEY=VALUE]..., or --name N and --image I")
    end
    obj, err = manifest.pod{ name = a.name, namespace = ns, container = a.container, image = a.image,
      pull_secrets = a.pull_secret }
    if not obj then return nil, usage(err.message) end
  end
  local k
  k, err = ctx:kube(a, ns)
  if not k then return nil, err end
  obj.metadata.namespace = obj.metadata.namespace or ns or k.namespace
  local action = "created (dry run)"
  if not a.dry_run then
    -- Read first: a pod that already holds what is wanted is left alone (nothing written, as
    -- `secret create` and `run` do); after an apply, the same resourceVersion means nothing changed.
    local current, gerr = k:get(obj)
    if not current and tonumber(gerr.code) ~= 404 then return nil, gerr end
    if current and require("pullsecret.run").contains(current, obj) then
      action, obj = "unchanged", current
    else
      local applied, status = k:apply(obj)
      if not applied then return nil, status end
      local before = current and type(current.metadata) == "table" and current.metadata.resourceVersion
      if status == 201 or not current then
        action = "created"
      elseif before and type(applied.metadata) == "table" and applied.metadata.resourceVersion == before then
        action = "unchanged"
      else
        action = "configured"
      end
      obj = applied
    end
  end
  local kind = tostring(obj.kind):lower()
  if a.output == "name" then
    ctx:out(kind, "/", obj.metadata.name, "\n")
  elseif a.output then
    obj = plain(obj)
    if type(obj.metadata) == "table" then obj.metadata.managedFields = nil end
    return ctx:emit(a.output, obj)
  else
    ctx:out(kind, "/", obj.metadata.name, " ", action, "\n")
  end
  return 0
end

-- run -------------------------------------------------------------------------------------------

-- "new (id 637b…)" -> "new, id 637b…": one level of parentheses in the progress line.
local function flat(detail)
  detail = tostring(detail)
  local a, b = detail:match("^(.-) %((.*)%)$")
  if a and a ~= "" then return a .. ", " .. b end
  return detail
end

function Ctx:progress()
  return function(ev)
    self.step = ev
    local head = string.format("[%d/%d] %s …", ev.step, ev.total, tostring(ev.name))
    local word = ({ done = "ok", skip = "skipped", retry = "retry", fail = "FAILED" })[ev.phase]
    if not word then return end
    self:say(head, " ", word, ev.detail and (" (" .. flat(ev.detail) .. ")") or "", "\n")
  end
end

local HINTS = {
  tls = "check the CA: --cacert FILE for the IBM Cloud hosts, the kubeconfig's certificate-authority for Kubernetes",
  transport = "check the endpoint's address and the network",
  timeout = "the service did not answer in time; check the endpoint and the network",
  auth = "check the credentials, or log in again with `pullsecret login`",
  config = "check the kubeconfig (--kubeconfig, --context)",
}

--- What to do about a failure, when the kind or status says more than the message: string | nil.
function cli.hint(err)
  local status = tonumber(err.status or err.code)
  if err.kind == "conflict" and err.reason == "TypeMismatch" then
    return "add --replace-type to delete the secret of the other type and create it again"
  elseif err.kind == "conflict" and err.reason == "FieldManagerConflict" then
    return "add --force-conflicts to take those fields over (as `kubectl apply --server-side --force-conflicts` " ..
      "does), e.g. for a secret made by `kubectl create secret docker-registry`"
  elseif err.kind == "kube" and status == 403 then
    return "use another --context, or ask the cluster's administrator for that permission (RBAC)"
  elseif status and status >= 500 and status <= 599 then
    if tostring(err.message):find("try again", 1, true) then return nil end
    return "the service failed on its side (HTTP " .. status .. "); try again later"
  end
  return HINTS[err.kind]
end

local function run_result(res)
  local r = yaml.object({}, { "namespace", "namespaces", "secret_name", "registry", "username", "token",
    "token_id", "dry_run", "secrets", "service_accounts", "pods", "revoked", "unheld", "manifests" })
  for _, k in ipairs{ "namespace", "secret_name", "registry", "username", "token", "token_id", "dry_run" } do
    r[k] = res[k]
  end
  r.namespaces = plain(yaml.array(res.namespaces or {}))
  r.secrets = plain(yaml.array(res.secrets or {}))
  r.service_accounts = plain(yaml.array(res.service_accounts or {}))
  r.pods = yaml.array({})
  for i, p in ipairs(res.pods or {}) do
    r.pods[i] = yaml.object({ kind = p.kind, namespace = p.namespace, name = p.name, action = p.action },
      { "kind", "namespace", "name", "action" })
  end
  if res.revoked then r.revoked = plain(yaml.array(res.revoked)) end
  if res.unheld then r.unheld = plain(yaml.array(res.unheld)) end
  if res.manifests then r.manifests = redact(yaml.array(res.manifests)) end
  return r
end

function commands.run(ctx, a)
  if not a.secret_name or a.secret_name == "" then
    return nil, usage("--secret-name is missing: name the image pull secret to write")
  end
  local valid, verr = manifest.check_name("--secret-name", a.secret_name, "subdomain")
  if not valid then return nil, usage(verr.message) end
  if a.icr_region then
    local server, rerr = require("pullsecret.icr").server(a.icr_region)
    if not server then return nil, usage("--icr-region: " .. rerr.message) end
  end
  local opts = { secret_name = a.secret_name, docker_email = a.docker_email, registry = a.registry,
    docker_server = a.docker_server, description = a.description, write = a.readwrite or nil,
    rotate = a.rotate or nil, dry_run = a.dry_run or nil, replace_type = a.replace_type or nil,
    force = a.force_conflicts or nil, log = ctx.log }
  for _, sa in ipairs(a.service_account) do
    if sa == "" then return nil, usage("--service-account is empty: name a service account, e.g. default") end
    local sok, serr = manifest.check_name("--service-account", sa, "subdomain")
    if not sok then return nil, usage(serr.message) end
  end
  if #a.service_account > 0 then opts.service_accounts = a.service_account end
  if a.concurrency then
    opts.concurrency = math.tointeger(tonumber(a.concurrency))
    if not opts.concurrency or opts.concurrency < 1 or opts.concurrency > 1024 then
      return nil, usage("--concurrency takes a whole number from 1 to 1024")
    end
  end
  -- namespaces
  local nss, seen = {}, {}
  local function add_ns(n)
    if n ~= "" and not seen[n] then seen[n] = true; nss[#nss + 1] = n end
  end
  for _, n in ipairs(a.namespace or {}) do add_ns(n) end
  for n in (a.namespaces or ""):gmatch("[^,%s]+") do add_ns(n) end
  for _, n in ipairs(nss) do
    local nok, nerr = manifest.check_name("namespace", n, "label")
    if not nok then return nil, usage(nerr.message .. " (-n/--namespaces)") end
  end
  if #nss > 1 then opts.namespaces = nss else opts.namespace = nss[1] end
  -- pods
  if a.pod_template then
    local text, err = template_text(a.pod_template)
    if not text then return nil, err end
    local values
    values, err = parse_sets(a.set)
    if not values then return nil, err end
    -- Catch a template's missing values now, not at step 7 after the secret is written: the
    -- placeholders pullsecret.run fills itself get a stand-in.
    local probe = {}
    for k, v in pairs(values) do probe[k] = v end
    for _, f in ipairs{ "secret_name", "kubernetes_namespace", "dedicated_domain", "registry_url", "docker_email" } do
      if probe[f] == nil and text:find("<" .. f .. ">", 1, true) then probe[f] = "x" end
    end
    local obj, rerr = manifest.render(text, probe)
    if not obj then return nil, usage(a.pod_template .. ": " .. cli_values(rerr.message)) end
    opts.pods = { { template = text, values = values } }
  elseif #a.set > 0 then
    return nil, usage("--set goes with --pod-template")
  end
  -- credentials
  local grant, how, from_stdin = login_kind(a)
  if not grant and how then return nil, how end
  local ok, err = check_stdin_flags(a, a.icr_region and "apikey" or grant)
  if not ok then return nil, err end
  if a.icr_region then
    if grant then
      return nil, usage("--icr-region replaces the Dedicated login: drop --username, --sso and --apikey")
    end
    local key
    key, err = ctx:secret(HOW.apikey, a.apikey_stdin, "IBM Cloud API key: ")
    if not key then return nil, err end
    opts.icr = { region = a.icr_region, apikey = key }
  elseif grant then
    if not a.api then return nil, usage("--api is missing: give the API endpoint api.<domain> to log in to") end
    if not a.org then return nil, usage("--org is missing: name the org whose images the token reads") end
    local o
    o, err = ctx:credentials(a, grant, how, from_stdin)
    if not o then return nil, err end
    for k, v in pairs(o) do opts[k] = v end
    opts.org, opts.ca_file = a.org, a.cacert
  else
    local s, target = ctx:load_session(a)
    if not s then
      if errors.is(target, "input") and target.message:find("^not logged in") then
        return nil, usage("no credentials: give --username U (with PULLSECRET_PASSWORD), --sso or --apikey, " ..
          "or run `pullsecret login` first")
      end
      return nil, target
    end
    if a.api then
      local base = require("pullsecret.login").base_url(a.api, "api")
      if base ~= s.api then
        return nil, usage("the saved session is for " .. tostring(s.api) .. ", not " .. tostring(base) ..
          ": give credentials (--username, --sso or --apikey) or log in to it first")
      end
    end
    opts.session = s
    opts.org = a.org or target.org
    if not opts.org then return nil, usage("--org is missing: name the org whose images the token reads") end
  end
  -- <dedicated_domain> in the template needs a domain the run can derive, or a --set
  local tpl = opts.pods and opts.pods[1].template
  if tpl and tpl:find("<dedicated_domain>", 1, true) and opts.pods[1].values.dedicated_domain == nil
     and not require("pullsecret.run").known_domain(opts) then
    return nil, usage(a.pod_template .. ": no value for placeholder <dedicated_domain>, and it cannot be derived "
      .. "(the API endpoint is not api.<domain> and the registry is not registry.<domain>): pass "
      .. "--set dedicated_domain=VALUE")
  end
  local progress = ctx:progress()
  ctx.kube_event = function(ev)
    if ev.type == "retry" and ctx.step then
      progress{ step = ctx.step.step, total = ctx.step.total, name = ctx.step.name, phase = "retry",
        detail = string.format("attempt %s in %.1f s (%s)", tostring(ev.attempt), tonumber(ev.delay) or 0,
          tostring(ev.reason)) }
    end
  end
  local k
  k, err = ctx:kube(a, opts.namespace)
  if not k then return nil, errors.wrap(err, "step 5 (describe secrets)") end
  opts.kube = k
  local res
  res, err = require("pullsecret.run").run(opts, progress)
  if not res then return nil, err end
  -- A dry run mints nothing: say what a real run would do with the token.
  if res.dry_run then
    res.token = ({ rotated = "would rotate", new = "would mint a new token" })[res.token] or res.token
  end
  if a.output == "name" then
    for _ in ipairs(res.secrets or {}) do ctx:out("secret/", res.secret_name, "\n") end
    for _, p in ipairs(res.pods or {}) do ctx:out(tostring(p.kind):lower(), "/", p.name, "\n") end
  elseif a.output then
    return ctx:emit(a.output, run_result(res))
  else
    ctx:out("registry  ", tostring(res.registry), " (user ", tostring(res.username), ")\n")
    if res.token_id then
      ctx:out("token     ", tostring(res.token), ", id ", res.token_id, "\n")
    else
      ctx:out("token     ", tostring(res.token), "\n")
    end
    for _, s in ipairs(res.secrets or {}) do
      ctx:out("secret    ", s.namespace, "/", res.secret_name, " ", s.action, "\n")
    end
    for _, sa in ipairs(res.service_accounts or {}) do
      ctx:out("account   ", sa.namespace, "/", sa.name, " ", sa.action, "\n")
    end
    for _, p in ipairs(res.pods or {}) do
      ctx:out(tostring(p.kind):lower(), string.rep(" ", math.max(1, 10 - #tostring(p.kind))), p.namespace, "/",
        p.name, " ", p.action, "\n")
    end
    for _, id in ipairs(res.revoked or {}) do ctx:out("revoked   ", id, "\n") end
    for _, id in ipairs(res.unheld or {}) do
      ctx:say("pullsecret: the token ", id, " is no longer in these secrets but still valid; if no other secret ",
        "uses it, revoke it with `pullsecret token rm ", id, "`\n")
    end
    if res.dry_run then ctx:say("pullsecret: dry run: no token minted, nothing written\n") end
  end
  return 0
end

-- sim -------------------------------------------------------------------------------------------

function commands.sim(ctx, a)
  local sim = require "pullsecret.sim"
  local socket = require "socket"
  local s = sim.start{ services = { api = true, login = true, iam = true, registry = true, kube = {} },
                       max_seconds = math.max(1, math.floor(a.max_seconds or 86400)) }
  ctx.cleanup[#ctx.cleanup + 1] = function() s:stop() end
  local dir, ca, kubeconfig = s.dir, s.ca_file, s.kubeconfig
  if a.dir then
    dir = absolute(a.dir)
    local ok, err = ensure_dir(dir)
    if not ok then return nil, err end
    ca, kubeconfig = dir .. "/ca.crt", dir .. "/kubeconfig"
    local text = assert(read_file(s.kubeconfig))
    local pos = text:find(s.ca_file, 1, true)
    if pos then text = text:sub(1, pos - 1) .. ca .. text:sub(pos + #s.ca_file) end
    ok, err = write_private(ca, s.ca_pem)
    if ok then ok, err = write_private(kubeconfig, text) end
    if not ok then return nil, err end
  end
  local u = s.urls
  ctx:out("pullsecret simulator (pid ", tostring(s.pid), "): Ctrl-C or SIGTERM stops it\n",
    "  api         ", u.api, "   IBM Cloud Dedicated Cloud Controller (api.<domain>)\n",
    "  login       ", u.login, "   UAA\n",
    "  iam         ", u.iam, "   IAM\n",
    "  registry    ", u.registry, "   registry token API\n",
    "  kube        ", u.kube, "   Kubernetes API\n",
    "  ca          ", ca, "\n",
    "  kubeconfig  ", kubeconfig, "\n",
    "  directory   ", dir, "\n",
    "Demo user: demo@example.com, password demo-password, API key demo-apikey, ",
    "passcode demo-passcode (one use), org demo-org\n",
    "Try:\n",
    "  export PULLSECRET_PASSWORD=demo-password\n",
    "  pullsecret run --api ", u.api, " --cacert ", ca, " --registry ", u.registry, " \\\n",
    "    --username demo@example.com --org demo-org --kubeconfig ", kubeconfig, " -n default \\\n",
    "    --secret-name regcred --docker-email a@b.c\n")
  if ctx.stdout.flush then ctx.stdout:flush() end
  while s:alive() do socket.sleep(0.2) end
  ctx:say("pullsecret: the simulator stopped\n")
  return 0
end

-- main ------------------------------------------------------------------------------------------

local function report(ctx, err, path)
  local msg = cli_values(tostring(err.message or err))
  ctx:say("pullsecret", path ~= "" and (" " .. path) or "", ": ", msg, "\n")
  if err.kind == "usage" then
    ctx:say("Try 'pullsecret ", path ~= "" and (path .. " ") or "", "--help'.\n")
    return cli.EXIT_USAGE
  end
  local hint = cli.hint(err)
  if hint then ctx:say("pullsecret: what to do: ", hint, "\n") end
  if err.step and not err.result then
    if err.orphan then
      ctx:say("pullsecret: then run the same command again\n")
    else
      ctx:say("pullsecret: once the cause is fixed, run the same command again: it picks up where it stopped " ..
        "(a valid token already in the secret is kept, none is minted twice)\n")
    end
  end
  return cli.EXIT_FAILED
end

local function dispatch(ctx, argv)
  local refused = cli.check_secret_args(argv)
  local path = command_path(argv)
  if refused then return report(ctx, refused, path) end
  local state = {}
  local parser = build_parser(state)
  local ok, a = parser:pparse(argv)
  if state.help then
    ctx:out(state.help:get_help(), "\n")
    return cli.EXIT_OK
  end
  if not ok then
    return report(ctx, usage(tostring(a)), path)
  end
  ctx.log = ctx:logger(a.verbose)
  -- -n NS goes into request paths: a name the API server would refuse is refused here (`run`
  -- takes several and checks them itself).
  if type(a.namespace) == "string" then
    if a.namespace == "" then
      return report(ctx, usage("-n/--namespace is empty: give a namespace, or leave -n out for the context's"),
        path)
    end
    local valid, verr = manifest.check_name("namespace", a.namespace, "label")
    if not valid then return report(ctx, usage(verr.message .. " (-n/--namespace)"), path) end
  end
  local handler = commands[a.command]
  local code, err = handler(ctx, a)
  if code == nil then
    if err == nil then return cli.EXIT_FAILED end
    return report(ctx, err, path)
  end
  return code
end

--- Runs the command line `argv` (a list of strings; `arg` works) with the io in `io_` (see the module
-- header). Returns the exit status; never calls os.exit.
function cli.main(argv, io_)
  local ctx = new_ctx(io_)
  local args = {}
  for i = 1, #(argv or {}) do args[i] = tostring(argv[i]) end
  local ok, code = xpcall(dispatch, debug.traceback, ctx, args)
  for i = #ctx.cleanup, 1, -1 do pcall(ctx.cleanup[i]) end
  pcall(ctx.finish_session, ctx)
  if not ok then
    if tostring(code):find("interrupted!", 1, true) then
      -- pullsecret.run says what became of a token it had minted: keep that
      local note = tostring(code):match("interrupted!( %(the [^\n]*%))")
      ctx:say("\npullsecret: interrupted", note or "", "\n")
      return cli.EXIT_INTERRUPTED
    end
    ctx:say("pullsecret: internal error (please report it): ", tostring(code), "\n")
    return cli.EXIT_FAILED
  end
  if ctx.stdout.flush then ctx.stdout:flush() end
  return code
end

return cli
