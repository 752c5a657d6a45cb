--- JSON for pullsecret: one encoder and one decoder for the API client, the manifests and the
-- simulator. Arrays stay arrays (even empty ones), keys come out in a stable order, integers
-- print as integers, and "/" is never escaped.
--
--     local json = require "pullsecret.json"
--     local v = assert(json.decode('{"items":[],"metadata":{}}'))  -- json.is_array(v.items) == true
--     json.encode(v)                                   --> '{"metadata":{},"items":[]}'
--     json.encode(json.object({ b = 1, a = 2 }, { "b" }))             --> '{"b":1,"a":2}'
--     json.encode({ a = { 1 }, b = json.array() }, { indent = "  " }) --> Go MarshalIndent layout
--
-- json.encode(v [, opts]) -> text | nil, message (message names where: "value.a[2]: ...")
--   opts.indent  a string: Go's MarshalIndent layout (no final newline); default compact
--   opts.order   the keys of an object in output order: a function(t) -> { keys }, or "sorted"
--                (keys named by json.object first, then sorted); default json.keys(t):
--                json.object's keys, then kind, apiVersion, metadata, name, namespace, then sorted
--   opts.quote   a function(s) -> the quoted JSON string (e.g. core.go_json_string for Go's
--                escaping); default json.quote: only what JSON requires is escaped
--   Nulls: nil, json.null and pullsecret.yaml's null. NaN, infinities, functions, userdata and
--   tables that contain themselves cannot be encoded; keys must be strings or numbers.
-- json.decode(s) -> value | nil, message: arrays carry json.array's mark, null is json.null,
--   integers are integers (lua-cjson in Debian decodes every number as a float under Lua 5.4,
--   and cannot tell [] from {}, which the API server cares about: hence this decoder).
-- json.array(t), json.object(t [, keys]) (alias json.ordered): mark `t` (default: a new table)
--   as an array / an object whose keys come out in the given order first.
-- json.is_array(t): marked by json.array (or pullsecret.yaml), else a table 1..n with no other keys.
-- json.keys(t [, first [, lead]]), json.quote(s), json.number_text(n), json.float_text(n),
-- json.copy(v), json.integers(v) (for what lua-cjson decoded), json.null.
local json = {}

json.null = require("cjson").null

local ARRAY = { __name = "pullsecret.json.array" }

--- Marks `t` (default: a new table) as a JSON array, so that an empty one encodes as `[]`.
function json.array(t) return setmetatable(t or {}, ARRAY) end

--- Marks `t` (default: a new table) as a JSON object; with `keys`, these keys come out first, in
-- that order (the others follow as the encoder's order says).
function json.object(t, keys)
  return setmetatable(t or {}, { __name = "pullsecret.json.object", __jsonorder = keys or {} })
end
json.ordered = json.object

-- pullsecret.yaml marks the tables it loads or builds; it is consulted only when loaded.
local function yaml_mod() return package.loaded["pullsecret.yaml"] end

-- True when `t` is a table 1..n (n > 0) with no other keys.
local function is_sequence(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

--- True when `t` is to be written as a JSON array.
function json.is_array(t)
  if type(t) ~= "table" then return false end
  local mt = getmetatable(t)
  if mt == ARRAY then return true end
  if type(mt) == "table" and rawget(mt, "__jsonorder") then return false end
  local y = yaml_mod()
  local kind = y and y.kind(t)
  if kind then return kind == "seq" end
  return is_sequence(t)
end

local function is_null(v)
  if v == nil or v == json.null then return true end
  local y = yaml_mod()
  return y ~= nil and v == y.null
end

local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

--- `s` as a JSON string: '"', '\' and control characters escaped; "/", DEL and UTF-8 as they are.
function json.quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == "\127" then return c end
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

--- A finite float in the fewest significant digits (15 to 17) that read back as the same float.
function json.float_text(n)
  for digits = 15, 16 do
    local s = string.format("%." .. digits .. "g", n)
    if tonumber(s) == n then return s end
  end
  return string.format("%.17g", n)
end

--- A number as JSON text: integers (and integral floats below 2^63) without a fraction, other
-- floats as json.float_text. nil, why for NaN and infinities.
function json.number_text(n)
  if n ~= n or n == math.huge or n == -math.huge then return nil, "not a finite number" end
  if math.type(n) == "integer" then return string.format("%d", n) end
  if n == math.floor(n) and math.abs(n) < 2^63 then return string.format("%d", math.tointeger(n)) end
  return json.float_text(n)
end

local KUBE_FIRST = { "kind", "apiVersion", "metadata", "name", "namespace" }
local NO_FIRST = {}
local ranks = setmetatable({}, { __mode = "k" })

--- The keys of object `t` in output order: the `lead` keys (default: those given to
-- json.object) in their order, then the `first` keys (default: kind, apiVersion, metadata,
-- name, namespace) in theirs, then the rest sorted (as strings). Keys whose value is nil are
-- left out.
function json.keys(t, first, lead)
  first = first or KUBE_FIRST
  local rank = ranks[first]
  if not rank then
    rank = {}
    for i, k in ipairs(first) do rank[k] = i end
    ranks[first] = rank
  end
  if lead == nil then
    local mt = getmetatable(t)
    lead = type(mt) == "table" and rawget(mt, "__jsonorder") or NO_FIRST
  end
  local out, seen = {}, {}
  for _, k in ipairs(lead) do
    if not seen[k] and t[k] ~= nil then seen[k] = true; out[#out + 1] = k end
  end
  local rest = {}
  for k in pairs(t) do if not seen[k] then rest[#rest + 1] = k end end
  table.sort(rest, function(a, b)
    local ra, rb = rank[a] or math.huge, rank[b] or math.huge
    if ra ~= rb then return ra < rb end
    return tostring(a) < tostring(b)
  end)
  table.move(rest, 1, #rest, #out + 1, out)
  return out
end

local function sorted_keys(t) return json.keys(t, NO_FIRST) end

-- The encoder's state: out (pieces), order, quote, indent, seen (tables being written), path
-- (the keys leading to the value being written, for messages).
local function fail(st, why)
  local p = { "value" }
  for _, k in ipairs(st.path) do
    p[#p + 1] = type(k) == "number" and "[" .. k .. "]" or "." .. k
  end
  error({ message = table.concat(p) .. ": " .. why }, 0)
end

local function encode(st, v, depth)
  local out, tv = st.out, type(v)
  if tv == "string" then
    out[#out + 1] = st.quote(v)
  elseif tv == "number" then
    local s, why = json.number_text(v)
    if not s then fail(st, why) end
    out[#out + 1] = s
  elseif tv == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif is_null(v) then
    out[#out + 1] = "null"
  elseif tv == "table" then
    if st.seen[v] then fail(st, "a table that contains itself") end
    st.seen[v] = true
    local nl, pad, inner, colon = "", "", "", ":"
    if st.indent then
      nl, pad, inner, colon = "\n", st.indent:rep(depth), st.indent:rep(depth + 1), ": "
    end
    local path = st.path
    if json.is_array(v) then
      local n = #v
      if n == 0 then out[#out + 1] = "[]" else
        out[#out + 1] = "[" .. nl
        for i = 1, n do
          out[#out + 1] = inner
          path[#path + 1] = i
          encode(st, v[i], depth + 1)
          path[#path] = nil
          out[#out + 1] = (i < n and "," or "") .. nl
        end
        out[#out + 1] = pad .. "]"
      end
    else
      local keys = st.order(v)
      if #keys == 0 then out[#out + 1] = "{}" else
        out[#out + 1] = "{" .. nl
        for i, k in ipairs(keys) do
          local ks = k
          if type(k) == "number" then ks = json.number_text(k) or tostring(k) end
          if type(ks) ~= "string" then fail(st, "a " .. type(k) .. " key") end
          out[#out + 1] = inner .. st.quote(ks) .. colon
          path[#path + 1] = ks
          encode(st, v[k], depth + 1)
          path[#path] = nil
          out[#out + 1] = (i < #keys and "," or "") .. nl
        end
        out[#out + 1] = pad .. "}"
      end
    end
    st.seen[v] = nil
  else
    fail(st, "cannot encode a " .. tv)
  end
end

--- JSON text for `v` (see the module header for the options): text | nil, message.
function json.encode(v, opts)
  opts = opts or {}
  local order = opts.order or json.keys
  if order == "sorted" then order = sorted_keys end
  if type(order) ~= "function" then error("json.encode: order must be a function or \"sorted\"", 2) end
  if opts.indent ~= nil and type(opts.indent) ~= "string" then error("json.encode: indent must be a string", 2) end
  local st = { out = {}, order = order, quote = opts.quote or json.quote, indent = opts.indent,
               seen = {}, path = {} }
  local ok, err = pcall(encode, st, v, 0)
  if not ok then return nil, type(err) == "table" and err.message or tostring(err) end
  return table.concat(st.out)
end

---------------------------------------------------------------------------------------------------
-- Decoding
---------------------------------------------------------------------------------------------------
local decode_value

local function skip(s, i)
  return s:find("[^ \t\r\n]", i) or #s + 1
end

local simple_escapes = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

local function decode_string(s, i)
  -- s:sub(i, i) == '"'
  local buf, j = {}, i + 1
  while true do
    local a, b = s:find('["\\\0-\31]', j)   -- JSON forbids U+0000..U+001F raw; DEL is fine
    if not a then error("unterminated string at " .. i, 0) end
    buf[#buf + 1] = s:sub(j, a - 1)
    local c = s:sub(a, b)
    if c == '"' then return table.concat(buf), a + 1 end
    if c ~= "\\" then error("control character in string at " .. a, 0) end
    local e = s:sub(a + 1, a + 1)
    local simple = simple_escapes[e]
    if simple then
      buf[#buf + 1] = simple
      j = a + 2
    elseif e == "u" then
      local hex = s:match("^%x%x%x%x", a + 2)
      if not hex then error("bad \\u escape at " .. a, 0) end
      local cp = tonumber(hex, 16)
      j = a + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local lo = s:match("^\\u(%x%x%x%x)", j)
        local lcp = lo and tonumber(lo, 16)
        if lcp and lcp >= 0xDC00 and lcp <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lcp - 0xDC00)
          j = j + 6
        else
          cp = 0xFFFD
        end
      elseif cp >= 0xDC00 and cp <= 0xDFFF then
        cp = 0xFFFD
      end
      buf[#buf + 1] = utf8.char(cp)
    else
      error("bad escape at " .. a, 0)
    end
  end
end

function decode_value(s, i, depth)
  if depth > 200 then error("nesting too deep", 0) end
  i = skip(s, i)
  local c = s:sub(i, i)
  if c == "{" then
    local obj = {}
    i = skip(s, i + 1)
    if s:sub(i, i) == "}" then return obj, i + 1 end
    while true do
      if s:sub(i, i) ~= '"' then error("expected a string key at " .. i, 0) end
      local k
      k, i = decode_string(s, i)
      i = skip(s, i)
      if s:sub(i, i) ~= ":" then error("expected ':' at " .. i, 0) end
      local v
      v, i = decode_value(s, i + 1, depth + 1)
      obj[k] = v
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "}" then return obj, i + 1 end
      if d ~= "," then error("expected ',' or '}' at " .. i, 0) end
      i = skip(s, i + 1)
    end
  elseif c == "[" then
    local arr = json.array({})
    i = skip(s, i + 1)
    if s:sub(i, i) == "]" then return arr, i + 1 end
    while true do
      local v
      v, i = decode_value(s, i, depth + 1)
      arr[#arr + 1] = v
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "]" then return arr, i + 1 end
      if d ~= "," then error("expected ',' or ']' at " .. i, 0) end
      i = i + 1
    end
  elseif c == '"' then
    return decode_string(s, i)
  elseif s:find("^true", i) then return true, i + 4
  elseif s:find("^false", i) then return false, i + 5
  elseif s:find("^null", i) then return json.null, i + 4
  else
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if not num or num == "" or num == "-" then error("unexpected character at " .. i, 0) end
    local v = tonumber(num)
    if v == nil then error("bad number at " .. i, 0) end
    if not num:find("[.eE]") then v = math.tointeger(v) or v end
    return v, i + #num
  end
end

--- Decodes JSON text: value | nil, message. Arrays carry json.array's mark, null is json.null.
function json.decode(s)
  if type(s) ~= "string" then return nil, "not a string" end
  local ok, v, i = pcall(decode_value, s, 1, 0)
  if not ok then return nil, v end
  if skip(s, i) <= #s then return nil, "trailing data at " .. i end
  return v
end

--- Turns integral floats into integers, in place and recursively (64 levels deep): what lua-cjson
-- decodes needs it under Lua 5.4. Returns `v`.
function json.integers(v, depth)
  depth = depth or 0
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) == "table" and depth < 64 then
    for k, x in pairs(v) do v[k] = json.integers(x, depth + 1) end
  end
  return v
end

--- A deep copy that keeps the marks (metatables) of json.array and json.object.
function json.copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = json.copy(x) end
  return setmetatable(t, getmetatable(v))
end

return json
