--- Helpers for simulated services: JSON and text responses, query and form parsing.
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
-- JSON is encoded here (not by cjson) so that the output is compact, deterministic
-- (object keys sorted), "/" is never escaped, integers print without ".0", and an
-- empty array can be told apart from an empty object (`util.array{}`).
-- `util.decode(s)` decodes with cjson.safe and turns integral floats back into integers.
local cjson = require "cjson.safe"

local util = {}

local array_mt = { __name = "pullsecret.sim.array" }

--- Marks `t` (default: a new table) as a JSON array, so that an empty one encodes as `[]`.
function util.array(t)
  return setmetatable(t or {}, array_mt)
end

--- The JSON null value (as cjson.safe decodes it).
util.null = cjson.null

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function is_array(t)
  if getmetatable(t) == array_mt then return true end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local encode_value

local function encode_table(t, out, depth)
  if depth > 64 then error("util.encode: nesting too deep (cycle?)", 0) end
  if is_array(t) then
    out[#out + 1] = "["
    for i = 1, #t do
      if i > 1 then out[#out + 1] = "," end
      encode_value(t[i], out, depth + 1)
    end
    out[#out + 1] = "]"
    return
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" and type(k) ~= "number" then
      error("util.encode: cannot encode a " .. type(k) .. " key", 0)
    end
    keys[#keys + 1] = tostring(k)
  end
  table.sort(keys)
  out[#out + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then out[#out + 1] = "," end
    out[#out + 1] = encode_string(k)
    out[#out + 1] = ":"
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    encode_value(v, out, depth + 1)
  end
  out[#out + 1] = "}"
end

function encode_value(v, out, depth)
  local tv = type(v)
  if tv == "string" then
    out[#out + 1] = encode_string(v)
  elseif tv == "number" then
    if math.type(v) == "integer" then
      out[#out + 1] = string.format("%d", v)
    elseif v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = "null"
    elseif v == math.floor(v) and math.abs(v) < 2^53 then
      out[#out + 1] = string.format("%d", math.tointeger(v))
    else
      out[#out + 1] = string.format("%.17g", v)
    end
  elseif tv == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif v == nil or v == cjson.null then
    out[#out + 1] = "null"
  elseif tv == "table" then
    encode_table(v, out, depth)
  else
    error("util.encode: cannot encode a " .. tv, 0)
  end
end

--- Encodes a Lua value as compact JSON (keys sorted, "/" not escaped).
-- Raises on values JSON cannot hold (functions, cycles).
function util.encode(v)
  local out = {}
  encode_value(v, out, 0)
  return table.concat(out)
end

--- Turns integral floats into integers, recursively (cjson under Lua 5.4 decodes every number as a float).
function util.integers(v)
  if type(v) == "number" then
    return math.tointeger(v) or v
  elseif type(v) == "table" then
    for k, x in pairs(v) do v[k] = util.integers(x) end
  end
  return v
end

--- Decodes JSON text: value | nil, message.
function util.decode(s)
  if type(s) ~= "string" then return nil, "not a string" end
  local v, err = cjson.decode(s)
  if v == nil then return nil, err end
  return util.integers(v)
end

local function with_headers(resp, headers)
  if headers then
    for k, v in pairs(headers) do resp.headers[k] = v end
  end
  return resp
end

--- A JSON response: `util.json(200, tbl [, headers])`.
function util.json(status, tbl, headers)
  return with_headers({
    status = status,
    headers = { ["Content-Type"] = "application/json" },
    body = util.encode(tbl),
  }, headers)
end

--- A plain-text response: `util.text(404, "not found\n" [, headers])`.
function util.text(status, s, headers)
  return with_headers({
    status = status,
    headers = { ["Content-Type"] = "text/plain; charset=utf-8" },
    body = s or "",
  }, headers)
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

--- An HTTP date (IMF-fixdate) for `t` (default: now).
function util.http_date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", t or os.time())
end

--- The bearer token of a request's Authorization header, or nil.
function util.bearer(req)
  local auth = req.headers and req.headers.authorization
  return auth and auth:match("^[Bb][Ee][Aa][Rr][Ee][Rr]%s+(%S+)%s*$")
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
