--- What specs need from the machine they run on: files, shell quoting, a port nobody listens on.
--
--     local host = require "spec.helpers.host"
--     local path = host.write(dir .. "/pod.yaml", text)    -- returns the path
--     local text = host.read(path)                         -- nil when the file is missing
--     os.execute("kubectl apply -f " .. host.q(path))
--     local url = "http://127.0.0.1:" .. host.closed_port() -- connection refused
local socket = require "socket"
local util = require "pullsecret.sim.util"

local host = {}

--- `s` single-quoted for /bin/sh.
function host.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- Writes `text` to `path` (raises on failure); returns `path`.
function host.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

--- The contents of `path`, or nil when it cannot be opened.
host.read = util.read_file

--- A loopback port nothing listens on (bound, then closed).
function host.closed_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return port
end

return host
