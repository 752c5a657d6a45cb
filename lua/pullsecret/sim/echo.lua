--- The echo service: a test service for the simulator's server.
--
--     config.services.echo = true            -- or {}
--     GET  /bytes/<n>     -> 200 with n bytes ("a".."z" repeated), Content-Type application/octet-stream
--     ANY  /status/<code> -> that status with {"status":code}
--     ANY  /raise         -> the handler raises (the server answers 500 and keeps serving)
--     ANY  anything else  -> 200 {"method":..,"path":..,"query":..,"params":{..},"headers":{..},
--                                 "body":..,"listener":..,"client_cert":{..}|absent}
-- Unlike every other sim service it echoes request headers (including Authorization): it exists
-- to test the transport, never holds real credentials, and is not started unless configured.
local util = require "pullsecret.sim.util"

local echo = {}
echo.__index = echo

function echo.new(config, shared)
  return setmetatable({ config = type(config) == "table" and config or {}, shared = shared, count = 0 }, echo)
end

local alphabet = "abcdefghijklmnopqrstuvwxyz"

function echo:handle(req)
  self.count = self.count + 1
  local n = req.path:match("^/bytes/(%d+)$")
  if n then
    n = tonumber(n)
    if n > 64 * 1024 * 1024 then return util.error(400, "too_large", "at most 64 MiB") end
    local body = string.rep(alphabet, n // #alphabet + 1):sub(1, n)
    return util.response(200, "application/octet-stream", body)
  end
  if req.path == "/raise" then error("echo: raised on purpose") end
  local code = req.path:match("^/status/(%d%d%d)$")
  if code then
    code = tonumber(code)
    if code < 200 or code > 599 then return util.error(400, "bad_status", "status must be 200..599") end
    return util.json(code, { status = code })
  end
  return util.json(200, {
    method = req.method, path = req.path, query = req.query, params = req.params,
    headers = req.headers, body = req.body, listener = req.listener, base_url = req.base_url,
    client_cert = req.client_cert,
  })
end

--- A snapshot for specs: how many requests this service handled.
function echo:state()
  return { requests = self.count }
end

return echo
