--- The simulator process: builds the listeners and services of a config and serves them.
--
-- Used by `pullsecret.sim` in two ways:
--   main.child(config_path, parent_pid [, files])  -- the child process's entry point (see sim.start):
--       loads the config file (a Lua chunk returning the config table; the file is removed once read),
--       prints ONE JSON line on stdout when ready:
--         {"pid":P,"urls":{"echo":"https://127.0.0.1:N",...},"admin":"http://127.0.0.1:M","dir":"/tmp/..."}
--       and serves until POST /shutdown on the admin listener, config.max_seconds (default 600),
--       or the death of its parent; then removes its directory and exits.
--   main.build(config) -> sim   -- in-process (sim.run, and specs that want no child):
--       sim.server, sim.urls, sim.admin, sim.dir, sim.services, sim.shared, sim.files, sim:close()
--
-- Config (all optional):
--   services = { echo = true, kube = {...}, ... }  -- each name loads pullsecret.sim.<name> and calls
--       require("pullsecret.sim." .. name).new(service_config, shared, config)
--       service_config is config.services[name] (`true` becomes {}); shared is one table for all
--       services, holding shared.urls (every listener's base URL, set before new() is called),
--       shared.dir, shared.ca_file and shared.config (the whole config table, also passed as `config`).
--   tls = true             -- every service listener speaks TLS with the sim's CA (false: plain HTTP)
--   client_ca = false      -- client certificates verified against the sim CA:
--       "optional" or true: on the kube listener, a certificate is asked for but not required;
--       "required": on the kube listener, the handshake fails without one;
--       { echo = "required", kube = "optional" }: per listener.
--       The kube listener asks for one ("optional") anyway unless services.kube.client_cert == false.
--   client_cert = { cn = "sim-admin", o = nil | "group" | {"g1","g2"} }  -- the generated client certificate
--   host = "127.0.0.1"     -- listen address (loopback only: "127.0.0.1" or "::1")
--   server = { max_body_bytes =, max_header_bytes =, idle_timeout =, io_timeout = }  -- see sim/server.lua
--   max_seconds = 600      -- hard lifetime of a child process
--
-- Admin listener (plain HTTP on the same host; not counted in stats, no faults):
--   GET /stats, POST /reset, POST /faults (JSON fault), DELETE /faults,
--   GET /state/<service> (svc:state() as JSON; 404 without one), POST /shutdown.
local socket = require "socket"
local server = require "pullsecret.sim.server"
local certs = require "pullsecret.sim.certs"
local util = require "pullsecret.sim.util"

local main = {}

local function client_cert_mode(config, name)
  local c = config.client_ca
  local mode
  if type(c) == "table" then
    mode = c[name]
  elseif name == "kube" then
    mode = c
    local kube = config.services and config.services.kube
    if not mode and not (type(kube) == "table" and kube.client_cert == false) then mode = "optional" end
  end
  if mode == true then mode = "optional" end
  if mode and mode ~= "optional" and mode ~= "required" then
    error("config.client_ca: expected \"optional\" or \"required\", got " .. tostring(mode), 0)
  end
  return mode or nil
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function admin_handler(sim)
  local srv = sim.server
  return function(req)
    local m, p = req.method, req.path
    if p == "/stats" and m == "GET" then
      return util.json(200, srv:stats())
    elseif p == "/reset" and m == "POST" then
      srv:reset_stats()
      return util.json(200, { ok = true })
    elseif p == "/faults" and m == "POST" then
      local f, bad = util.json_body(req)
      if not f then return bad end
      local ok, id = pcall(srv.fault, srv, f)
      if not ok then return util.error(400, "bad_fault", tostring(id)) end
      return util.json(200, { id = id })
    elseif p == "/faults" and m == "DELETE" then
      srv:clear_faults()
      return util.json(200, { ok = true })
    elseif p == "/shutdown" and m == "POST" then
      local resp = util.json(200, { ok = true })
      resp.close = true
      resp.on_sent = function() srv:stop() end
      return resp
    end
    local name = p:match("^/state/([%w_%-]+)$")
    if name and m == "GET" then
      local svc = sim.services[name]
      if not svc then return util.error(404, "not_found", "no service " .. name) end
      if type(svc.state) ~= "function" then return util.error(404, "not_found", name .. " has no state") end
      return util.json(200, svc:state() or {})
    end
    return util.error(404, "not_found", m .. " " .. p .. " is not an admin endpoint")
  end
end

--- Builds a simulator in this process (see the module header). Raises on failure.
function main.build(config)
  if type(config) ~= "table" then error("sim: config must be a table", 2) end
  local host = config.host or "127.0.0.1"
  if host ~= "127.0.0.1" and host ~= "::1" and host ~= "localhost" then
    error("sim: config.host must be a loopback address", 2)
  end
  if host == "localhost" then host = "127.0.0.1" end
  local dir = assert(certs.tempdir())
  local sim = { dir = dir, urls = {}, services = {}, shared = {} }
  function sim.close()
    if sim.server then sim.server:close() end
    if sim.dir then certs.remove(sim.dir) sim.dir = nil end
  end
  local ok, err = pcall(function()
    local cc = type(config.client_cert) == "table" and config.client_cert or {}
    local files = assert(certs.generate{ dir = dir, client_cn = cc.cn, client_o = cc.o })
    sim.files = files
    local srv = server.new(config.server)
    sim.server = srv
    local tls = config.tls ~= false
    local names = sorted_keys(config.services)
    for _, name in ipairs(names) do
      if not name:find("^[%w_]+$") then error("sim: bad service name " .. string.format("%q", name), 0) end
      local url, lerr = srv:listen{
        name = name, host = host,
        handler = function(req) return sim.services[name]:handle(req) end,
        tls = tls and { cert_file = files.server_crt, key_file = files.server_key, ca_file = files.ca_crt,
                        client_cert = client_cert_mode(config, name) } or nil,
      }
      if not url then error("sim: cannot listen for " .. name .. ": " .. tostring(lerr), 0) end
      sim.urls[name] = url
    end
    sim.shared.urls = sim.urls
    sim.shared.dir = dir
    sim.shared.ca_file = files.ca_crt
    sim.shared.config = config
    for _, name in ipairs(names) do
      local svc_config = config.services[name]
      if svc_config == true then svc_config = {} end
      local mod = require("pullsecret.sim." .. name)
      local svc = mod.new(svc_config, sim.shared, config)
      if type(svc) ~= "table" or type(svc.handle) ~= "function" then
        error("sim: pullsecret.sim." .. name .. ".new did not return an object with :handle(req)", 0)
      end
      sim.services[name] = svc
    end
    local admin, aerr = srv:listen{ name = "admin", host = host, internal = true, handler = admin_handler(sim) }
    if not admin then error("sim: cannot listen for admin: " .. tostring(aerr), 0) end
    sim.admin = admin
  end)
  if not ok then
    sim.close()
    error(err, 0)
  end
  return sim
end

local function read_stat()
  local f = io.open("/proc/self/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local pid, ppid = s:match("^(%d+) %(.*%) %S+ (%d+)")
  return tonumber(pid), tonumber(ppid)
end
main.read_stat = read_stat

--- The child process's entry point (never returns: exits the process).
-- `files` (optional): the child's stdout/stderr files, removed when it exits because its parent died
-- (nobody is left to read or remove them).
function main.child(config_path, parent_pid, files)
  local chunk, lerr = loadfile(config_path, "t", {})
  os.remove(config_path)
  if not chunk then
    io.stderr:write("pullsecret sim: cannot load config: ", tostring(lerr), "\n")
    os.exit(2)
  end
  local config
  local ok, sim = pcall(function()
    config = chunk()
    return main.build(config)
  end)
  if not ok then
    io.stderr:write("pullsecret sim: ", tostring(sim), "\n")
    os.exit(1)
  end
  local config_max = tonumber(config.max_seconds) or 600
  local pid = read_stat()
  local urls = {}
  for k, v in pairs(sim.urls) do urls[k] = v end
  io.stdout:write(util.encode{ pid = pid, urls = urls, admin = sim.admin, dir = sim.dir }, "\n")
  io.stdout:flush()
  local deadline = socket.gettime() + config_max
  local why = "shutdown"
  local run_ok, run_err = pcall(sim.server.run, sim.server, {
    interval = 0.5,
    tick = function()
      local _, ppid = read_stat()
      if parent_pid and ppid ~= tonumber(parent_pid) then
        why = "parent exited"
        sim.server:stop()
      elseif socket.gettime() > deadline then
        why = "max_seconds elapsed"
        sim.server:stop()
      end
    end,
  })
  if not run_ok then io.stderr:write("pullsecret sim: ", tostring(run_err), "\n") end
  if why ~= "shutdown" then io.stderr:write("pullsecret sim: stopping: ", why, "\n") end
  sim.close()
  if why == "parent exited" and type(files) == "table" then
    for _, f in ipairs(files) do os.remove(f) end
  end
  os.exit(run_ok and 0 or 1)
end

return main
