--- The simulator: IBM Cloud and Kubernetes endpoints on loopback, for specs, the demo and users' own tests.
--
--     local sim = require "pullsecret.sim"
--     local s = sim.start{ services = { echo = true } }   -- a child process; blocks until it is ready
--     -- s.urls.echo = "https://127.0.0.1:PORT", s.urls.admin = "http://127.0.0.1:PORT"
--     -- s.ca_file, s.ca_pem, s.dir, s.client_cert_file/_pem, s.client_key_file/_pem, s.pid
--     s:fault{ listener = "echo", method = "GET", path = "/flaky", status = 503, retry_after = "1", times = 1 }
--     local st = s:stats()      -- { connections = { echo = 1 }, requests = { echo = 2 },
--                               --   max_in_flight = { echo = 1 }, log = { {...} } }
--     s:stop()                  -- idempotent; the child is reaped and s.dir removed
--
-- sim.start(config [, opts]) -> handle; raises (with the child's stderr) when the child fails to start.
--   config: see pullsecret.sim.main (services, tls, client_ca, client_cert, max_seconds ...);
--     it is written to a 0600 temp file as a Lua literal, so it may hold only strings, numbers,
--     booleans and tables.
--   opts.timeout: seconds to wait for the ready line (default 20).
--   When config.services.kube is set, s.kubeconfig is s.dir .. "/kubeconfig" (cluster "sim",
--   user "sim-admin" with the first kube user's token, context "sim", namespace "default").
-- Handle methods (each talks to the child's admin listener; raise on failure):
--   s:stats(), s:reset_stats(), s:fault{...} -> id, s:clear_faults(), s:state(service) -> table,
--   s:stop(). The handle also closes with `local s <close> = sim.start{...}`.
--
-- sim.run(config [, opts]) serves in this process (the `pullsecret sim` command): prints the
--   endpoints to opts.out (default io.stdout) and serves until interrupted or config.max_seconds.
local socket = require "socket"
local main = require "pullsecret.sim.main"
local certs = require "pullsecret.sim.certs"
local util = require "pullsecret.sim.util"

local sim = {}

local Sim = {}
Sim.__index = Sim
Sim.__name = "pullsecret.sim"
Sim.__close = function(self) self:stop() end
-- A dropped handle must not leave its child running: the popen handle's own finalizer would
-- wait for the child (for up to max_seconds). Finalizers run in reverse order of creation, so
-- this one runs before the pipe's.
Sim.__gc = function(self) if not self.stopped then pcall(self.stop, self) end end
Sim.__tostring = function(self) return "pullsecret.sim (pid " .. tostring(self.pid) .. ")" end

local q = certs.shell_quote

-- Config serialisation ------------------------------------------------------------------------

local function literal(v, depth, seen)
  local t = type(v)
  if t == "string" then
    return string.format("%q", v)
  elseif t == "number" then
    if math.type(v) == "integer" then return string.format("%d", v) end
    if v ~= v then return "(0/0)" end
    if v == math.huge then return "1e999" elseif v == -math.huge then return "-1e999" end
    return string.format("%.17g", v)
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "table" then
    if seen[v] or depth > 50 then error("sim.start: config has a cycle", 3) end
    seen[v] = true
    local out = {}
    for k, x in pairs(v) do
      local key
      if type(k) == "string" and k:find("^[%a_][%w_]*$") then
        key = k
      elseif type(k) == "string" or type(k) == "number" then
        key = "[" .. literal(k, depth + 1, seen) .. "]"
      else
        error("sim.start: config keys must be strings or numbers", 3)
      end
      out[#out + 1] = key .. " = " .. literal(x, depth + 1, seen)
    end
    seen[v] = nil
    table.sort(out)
    return "{ " .. table.concat(out, ", ") .. " }"
  end
  error("sim.start: config cannot hold a " .. t, 3)
end

local function write_file(path, data, mode)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(data)
  f:close()
  if mode then os.execute("chmod " .. mode .. " " .. q(path)) end
  return true
end

local read_file, proc_state, wait_dead = util.read_file, util.proc_state, util.wait_dead

-- The interpreter running us (the lowest negative index of `arg`), else "lua5.4".
local function interpreter()
  local a = rawget(_G, "arg")
  local best
  if type(a) == "table" then
    local i = -1
    while a[i] do best = a[i]; i = i - 1 end
  end
  if type(best) == "string" and best:match("lua[%d%.]*$") then return best end
  return "lua5.4"
end

-- Kubeconfig --------------------------------------------------------------------------------

local function kubeconfig_text(s, kube)
  local token = "sim-admin-token"
  if type(kube) == "table" and type(kube.users) == "table" and type(kube.users[1]) == "table"
     and kube.users[1].token then
    token = kube.users[1].token
  end
  local e = util.encode
  return table.concat({
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: sim",
    "  cluster:",
    "    server: " .. e(s.urls.kube),
    "    certificate-authority: " .. e(s.ca_file),
    "users:",
    "- name: sim-admin",
    "  user:",
    "    token: " .. e(token),
    "contexts:",
    "- name: sim",
    "  context:",
    "    cluster: sim",
    "    user: sim-admin",
    "    namespace: default",
    "current-context: sim",
    "preferences: {}",
    "",
  }, "\n")
end

-- Admin calls (plain HTTP/1.1 on loopback, one connection per call, 10 s timeout) --------------

local function admin_call(self, method, path, body)
  if self.stopped then error("pullsecret.sim: the simulator is stopped", 3) end
  local host, port = self.urls.admin:match("^http://([^/]+):(%d+)$")
  host = host:gsub("^%[(.*)%]$", "%1")
  local c = (host:find(":") and socket.tcp6 or socket.tcp4)()
  c:settimeout(10)
  local ok, err = c:connect(host, tonumber(port))
  if not ok then
    c:close()
    error("pullsecret.sim: admin " .. method .. " " .. path .. ": " .. tostring(err), 3)
  end
  body = body or ""
  local req = method .. " " .. path .. " HTTP/1.1\r\nHost: " .. host .. ":" .. port ..
    "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
  ok, err = c:send(req)
  local data, rerr, partial
  if ok then data, rerr, partial = c:receive("*a") end
  c:close()
  data = data or partial
  if not ok or not data or data == "" then
    error("pullsecret.sim: admin " .. method .. " " .. path .. ": " .. tostring(err or rerr), 3)
  end
  local status = tonumber(data:match("^HTTP/1%.%d (%d%d%d)"))
  local rbody = data:match("\r\n\r\n(.*)$") or ""
  local v = util.decode(rbody)
  if status ~= 200 then
    local msg = type(v) == "table" and v.message or rbody
    error("pullsecret.sim: admin " .. method .. " " .. path .. ": " .. tostring(status) .. " " .. tostring(msg), 3)
  end
  return v
end

function Sim:stats()
  local st = admin_call(self, "GET", "/stats")
  st.log = st.log or {}
  return st
end

function Sim:reset_stats()
  admin_call(self, "POST", "/reset")
end

function Sim:fault(f)
  if type(f) ~= "table" then error("fault: expected a table", 2) end
  return admin_call(self, "POST", "/faults", util.encode(f)).id
end

function Sim:clear_faults()
  admin_call(self, "DELETE", "/faults")
end

function Sim:state(service)
  if type(service) ~= "string" then error("state: expected a service name", 2) end
  return admin_call(self, "GET", "/state/" .. service)
end

--- Stops the child (politely, then TERM, then KILL), reaps it and removes its files. Idempotent.
function Sim:stop()
  if self.stopped then return end
  if self.pid and proc_state(self.pid) == "alive" then
    pcall(admin_call, self, "POST", "/shutdown")
    if not wait_dead(self.pid, 3) then
      os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
      if not wait_dead(self.pid, 2) then
        os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
        wait_dead(self.pid, 2)
      end
    end
  end
  self.stopped = true
  if self._pipe then
    self._pipe:close()       -- waits for (reaps) the child
    self._pipe = nil
  end
  if self.dir then certs.remove(self.dir) end
  for _, p in ipairs(self._tmp or {}) do os.remove(p) end
end

--- True while the child process runs.
function Sim:alive()
  return not self.stopped and self.pid ~= nil and proc_state(self.pid) == "alive"
end

--- Starts a simulator in a child process (see the module header).
function sim.start(config, opts)
  config = config or {}
  opts = opts or {}
  if type(config) ~= "table" then error("sim.start: config must be a table", 2) end
  local my_pid = main.read_stat()
  local cfg_path, out_path, err_path = os.tmpname(), os.tmpname(), os.tmpname()
  local tmp = { cfg_path, out_path, err_path }
  local function cleanup() for _, p in ipairs(tmp) do os.remove(p) end end
  local ok, werr = write_file(cfg_path, "return " .. literal(config, 0, {}) .. "\n", "600")
  if not ok then cleanup() error("sim.start: cannot write the config file: " .. tostring(werr), 2) end
  local code = string.format("require('pullsecret.sim.main').child(%q, %d, { %q, %q })",
    cfg_path, my_pid or 0, out_path, err_path)
  local cmd = "echo $$; LUA_PATH=" .. q(package.path) .. " LUA_CPATH=" .. q(package.cpath) ..
    " exec " .. q(interpreter()) .. " -e " .. q(code) .. " </dev/null >" .. q(out_path) .. " 2>" .. q(err_path)
  local pipe = io.popen(cmd, "r")
  local pid = pipe and tonumber(pipe:read("l"))
  if not pid then
    if pipe then pipe:close() end
    cleanup()
    error("sim.start: cannot spawn the simulator", 2)
  end
  local function fail(why)
    if proc_state(pid) == "alive" then
      os.execute("kill -KILL " .. pid .. " 2>/dev/null")
      wait_dead(pid, 2)
    end
    pipe:close()
    local stderr = (read_file(err_path) or ""):gsub("%s+$", "")
    local out = read_file(out_path) or ""
    local dir = out:match('"dir":"([^"]+)"')
    if dir then certs.remove(dir) end
    cleanup()
    error("sim.start: the simulator " .. why .. (stderr ~= "" and (":\n" .. stderr) or " (no stderr)"), 3)
  end
  local deadline = socket.gettime() + (opts.timeout or 20)
  local line
  while true do
    local out = read_file(out_path) or ""
    line = out:match("^([^\n]*)\n")
    if line then break end
    if proc_state(pid) ~= "alive" then fail("exited before it was ready") end
    if socket.gettime() > deadline then fail("was not ready within " .. (opts.timeout or 20) .. " s") end
    socket.sleep(0.01)
  end
  local ready = util.decode(line)
  if type(ready) ~= "table" or type(ready.urls) ~= "table" or not ready.admin then
    fail("printed an unexpected ready line " .. string.format("%q", line:sub(1, 200)))
  end
  local s = setmetatable({ pid = pid, dir = ready.dir, urls = ready.urls, _pipe = pipe, _tmp = tmp }, Sim)
  s.urls.admin = ready.admin
  s.ca_file = s.dir .. "/ca.crt"
  s.ca_pem = read_file(s.ca_file)
  s.client_cert_file = s.dir .. "/client.crt"
  s.client_key_file = s.dir .. "/client.key"
  s.client_cert_pem = read_file(s.client_cert_file)
  s.client_key_pem = read_file(s.client_key_file)
  local services = config.services or {}
  if services.kube then
    s.kubeconfig = s.dir .. "/kubeconfig"
    write_file(s.kubeconfig, kubeconfig_text(s, services.kube), "600")
  end
  os.remove(cfg_path)
  return s
end

--- Serves a simulator in this process until interrupted (or config.max_seconds); prints the endpoints.
function sim.run(config, opts)
  config = config or {}
  opts = opts or {}
  local out = opts.out or io.stdout
  local s = main.build(config)
  local info = { urls = s.urls, dir = s.dir, ca_file = s.files.ca_crt }
  local services = config.services or {}
  if services.kube then
    info.kubeconfig = s.dir .. "/kubeconfig"
    write_file(info.kubeconfig, kubeconfig_text(info, services.kube), "600")
  end
  out:write("pullsecret simulator (pid ", tostring(main.read_stat()), ")\n")
  local names = {}
  for k in pairs(s.urls) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do out:write(string.format("  %-10s %s\n", k, s.urls[k])) end
  out:write(string.format("  %-10s %s\n", "admin", s.admin))
  out:write(string.format("  %-10s %s\n", "ca", s.files.ca_crt))
  out:write(string.format("  %-10s %s\n", "client", s.files.client_crt .. " " .. s.files.client_key))
  if info.kubeconfig then out:write(string.format("  %-10s %s\n", "kubeconfig", info.kubeconfig)) end
  out:flush()
  local deadline = config.max_seconds and (socket.gettime() + config.max_seconds)
  local ok, err = pcall(s.server.run, s.server, {
    tick = function() if deadline and socket.gettime() > deadline then s.server:stop() end end,
  })
  s.close()
  if not ok and not tostring(err):find("interrupted") then error(err, 0) end
  return true
end

return sim
