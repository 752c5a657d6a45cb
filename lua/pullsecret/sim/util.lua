--- Helpers for simulated services: responses, JSON, query and form parsing, base64, random ids,
-- and the few file and process helpers the simulator's launcher and the specs share.
--
-- A service's `handle(req)` returns a response table; these build the common ones.
--
--     local util = require "pullsecret.sim.util"
--     function svc:handle(req)
--       if req.method ~= "GET" then return util.json(405, { error = "method not allowed" }) end
--       local page = tonumber(req.params.page or "1")
--       return util.json(200, { page = page, items = util.array{} })   -- "items":[]
--     end
--
-- JSON is pullsecret.json's: compact and deterministic (object keys sorted), "/" never escaped,
-- integers written without ".0" and decoded as integers, an empty array told apart from an empty
-- object (`util.array{}`).
local json = require "pullsecret.json"

local util = {}

--- Marks `t` (default: a new table) as a JSON array, so that an empty one encodes as `[]`.
util.array = json.array

--- The JSON null value (cjson's, as pullsecret.json decodes it).
util.null = json.null

--- Encodes a Lua value as compact JSON (keys sorted, "/" not escaped).
-- Raises on values JSON cannot hold (functions, cycles, NaN).
function util.encode(v)
  local text, err = json.encode(v, { order = "sorted" })
  if not text then error("util.encode: " .. err, 2) end
  return text
end

--- Turns integral floats into integers, recursively (cjson under Lua 5.4 decodes every number as a float).
function util.integers(v) return json.integers(v) end

--- Decodes JSON text: value | nil, message (arrays marked, integers as integers).
util.decode = json.decode

--- A response: `util.response(200, "text/plain", "ok" [, headers])` (the headers are added to
-- the Content-Type, which is left out when `content_type` is nil).
function util.response(status, content_type, body, headers)
  local h = { ["Content-Type"] = content_type }
  for k, v in pairs(headers or {}) do h[k] = v end
  return { status = status, headers = h, body = body }
end

--- A JSON response: `util.json(200, tbl [, headers])`.
function util.json(status, tbl, headers)
  return util.response(status, "application/json", util.encode(tbl), headers)
end

--- A plain-text response: `util.text(404, "not found\n" [, headers])`.
function util.text(status, s, headers)
  return util.response(status, "text/plain; charset=utf-8", s or "", headers)
end

--- A JSON error body in the sim's common shape: {"error":code,"message":msg}.
function util.error(status, code, message, headers)
  return util.json(status, { error = code, message = message or code }, headers)
end

--- Percent-decodes `s` ("%41" -> "A"); `plus_as_space` also turns "+" into " " (form bodies).
function util.percent_decode(s, plus_as_space)
  if plus_as_space then s = s:gsub("%+", " ") end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Percent-encodes `s` (RFC 3986: A-Z a-z 0-9 - . _ ~ kept).
function util.percent_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function parse_pairs(s, plus_as_space)
  local params, list = {}, {}
  if not s or s == "" then return params, list end
  for part in s:gmatch("[^&]+") do
    local k, v = part:match("^([^=]*)=(.*)$")
    if not k then k, v = part, "" end
    k, v = util.percent_decode(k, plus_as_space), util.percent_decode(v, plus_as_space)
    params[k] = v
    list[#list + 1] = { k, v }
  end
  return params, list
end

--- Parses a query string: params (a repeated name keeps the LAST value), list of {name, value} in order.
-- "+" stays "+" (RFC 3986 query); use parse_form for x-www-form-urlencoded bodies.
function util.parse_query(s)
  return parse_pairs(s, false)
end

--- Parses an application/x-www-form-urlencoded body ("+" is a space): params, list.
function util.parse_form(s)
  return parse_pairs(s, true)
end

--- True when the request's Content-Type is application/x-www-form-urlencoded.
function util.is_form(req)
  local ctype = (req.headers and req.headers["content-type"] or ""):lower()
  return ctype:find("^application/x%-www%-form%-urlencoded") ~= nil
end

--- Encodes an ordered list of {name, value} pairs as a form body (space as "+").
function util.form_encode(list)
  local out = {}
  for i, kv in ipairs(list) do
    out[i] = util.percent_encode(kv[1]):gsub("%%20", "+") .. "=" .. util.percent_encode(kv[2]):gsub("%%20", "+")
  end
  return table.concat(out, "&")
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

--- Base64 (standard alphabet, padded).
function util.b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local chunk = {}
    for j = 1, 4 do
      local idx = (n >> (6 * (4 - j))) & 63
      chunk[j] = b64chars:sub(idx + 1, idx + 1)
    end
    if not b then chunk[3], chunk[4] = "=", "=" elseif not c then chunk[4] = "=" end
    out[#out + 1] = table.concat(chunk)
  end
  return table.concat(out)
end

--- Base64url without padding.
function util.b64url(s)
  return (util.b64(s):gsub("[+/=]", { ["+"] = "-", ["/"] = "_", ["="] = "" }))
end

local b64index = {}
for i = 1, #b64chars do b64index[b64chars:sub(i, i)] = i - 1 end

--- Decodes base64 (standard or URL alphabet, padding optional): s | nil, message.
function util.unb64(s)
  s = s:gsub("[-_]", { ["-"] = "+", ["_"] = "/" }):gsub("=+$", "")
  if s:find("[^%w%+/]") or #s % 4 == 1 then return nil, "invalid base64" end
  local out = {}
  for i = 1, #s, 4 do
    local n, k = 0, 0
    for j = i, math.min(i + 3, #s) do
      n = (n << 6) | b64index[s:sub(j, j)]
      k = k + 1
    end
    n = n << (6 * (4 - k))
    local bytes = string.char((n >> 16) & 255, (n >> 8) & 255, n & 255)
    out[#out + 1] = bytes:sub(1, k - 1)
  end
  return table.concat(out)
end

local urandom
--- `n` random bytes (from /dev/urandom).
function util.random_bytes(n)
  urandom = urandom or assert(io.open("/dev/urandom", "rb"))
  return urandom:read(n)
end

--- A random (version 4) UUID.
function util.uuid()
  local b = { util.random_bytes(16):byte(1, 16) }
  b[7] = (b[7] & 0x0f) | 0x40
  b[9] = (b[9] & 0x3f) | 0x80
  return string.format("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", table.unpack(b))
end

--- An HTTP date (IMF-fixdate) for `t` (default: now).
function util.http_date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", t or os.time())
end

--- The bearer token of a request's Authorization header, or nil.
function util.bearer(req)
  local auth = req.headers and req.headers.authorization
  return auth and auth:match("^[Bb][Ee][Aa][Rr][Ee][Rr]%s+(%S+)%s*$")
end

--- The contents of the file at `path`, or nil when it cannot be opened.
function util.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- The state of process `pid` (Linux /proc): "alive", "zombie" (exited, not reaped) or "gone".
function util.proc_state(pid)
  local s = util.read_file("/proc/" .. pid .. "/stat")
  if not s then return "gone" end
  local state = s:match("^%d+ %(.*%) (%S)")
  if state == "Z" or state == "X" then return "zombie" end
  return "alive"
end

--- Waits (polling every 20 ms) until process `pid` is no longer alive: true, or false after `seconds`.
function util.wait_dead(pid, seconds)
  local socket = require "socket"
  local deadline = socket.gettime() + seconds
  while util.proc_state(pid) == "alive" do
    if socket.gettime() > deadline then return false end
    socket.sleep(0.02)
  end
  return true
end

--- Decodes a JSON request body: tbl | nil, resp (a 400 response ready to return).
function util.json_body(req)
  local v, err = util.decode(req.body or "")
  if type(v) ~= "table" then
    return nil, util.error(400, "bad_request", "expected a JSON body: " .. tostring(err or "not an object"))
  end
  return v
end

return util
