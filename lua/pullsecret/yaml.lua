--- YAML for Kubernetes objects: an ordered loader, a safe scalar quoter and a block emitter.
--
-- Built on Debian's lyaml (libyaml). `load` keeps what plain Lua tables lose: the order of
-- mapping keys, the line of every key, and whether an empty table was `{}` or `[]`. `quote`
-- turns any UTF-8 string into a YAML scalar that reads back as exactly that string in both
-- libyaml (YAML 1.1 tags, as lyaml resolves them) and go-yaml v2 (what kubectl uses), so
-- `yes`, `y`, `1.0`, `0o17`, `2001-12-14`, `null`, `~`, `: x` and friends stay strings.
-- `dump` writes block YAML in kubectl's layout, keys in conventional order (apiVersion, kind,
-- metadata always first).
--
--     local yaml = require "pullsecret.yaml"
--     local docs, err = yaml.load("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
--     local pod = docs[1]
--     yaml.keys(pod)                 --> { "apiVersion", "kind", "metadata" }
--     yaml.line(pod, "metadata")     --> 3
--     yaml.quote("yes")              --> "'yes'"
--     print(yaml.dump(pod))
--
-- Nulls are `yaml.null` (lyaml's sentinel). `yaml.array(t)` / `yaml.object(t, keys)` mark
-- tables built in Lua so that an empty one is emitted as `[]` / `{}` and keys keep an order.
local lyaml = require "lyaml"
local libyaml = require "yaml"
local implicit = require "lyaml.implicit"
local explicit = require "lyaml.explicit"
local json = require "pullsecret.json"

local M = {}

M.null = lyaml.null

-- meta[t] = { kind = "map"|"seq", keys = {...} (maps), lines = {key = line}, line = n }
local meta = setmetatable({}, { __mode = "k" })

--- Marks `t` as a sequence (emitted `[]` when empty). Returns `t`.
function M.array(t)
  t = t or {}
  meta[t] = { kind = "seq" }
  return t
end

--- Marks `t` as a mapping. With `keys`, its keys come out in exactly that order (keys not
-- listed follow in conventional order). Returns `t`.
function M.object(t, keys)
  t = t or {}
  local m = meta[t] or {}
  m.kind = "map"
  if keys then
    m.keys = table.move(keys, 1, #keys, 1, {})
    m.exact = true
  end
  meta[t] = m
  return t
end

--- "seq" or "map" when `t` was marked by `array`/`object` or read by `load`, else nil.
function M.kind(t)
  local m = meta[t]
  return m and m.kind
end

--- True when `t` is to be written as a sequence: marked so here or by pullsecret.json, else
-- a table 1..n with no other keys.
function M.is_array(t)
  local m = meta[t]
  if m and m.kind then return m.kind == "seq" end
  return json.is_array(t)
end

--- Line (1-based) where `key` of mapping `t` was read, or where `t` itself started.
function M.line(t, key)
  local m = meta[t]
  if not m then return nil end
  if key == nil then return m.line end
  return m.lines and m.lines[key]
end

-- Conventional order for keys no order was recorded for: these first, the rest sorted.
local FIRST = { "apiVersion", "kind", "metadata" }
local PRIORITY = { "apiVersion", "kind", "metadata", "name", "generateName", "namespace",
                   "labels", "annotations", "spec", "data", "stringData", "type" }

--- The keys of mapping `t` in output order. With an order given to `object`: that order
-- (unless `conventional` is true). Else apiVersion, kind, metadata first; then the order
-- `load` read them in; then the rest in conventional order (name, namespace, labels,
-- annotations, spec, data... then sorted).
function M.keys(t, conventional)
  local m = meta[t]
  local lead = {}
  if conventional or not (m and m.exact) then table.move(FIRST, 1, #FIRST, 1, lead) end
  if m and m.keys then table.move(m.keys, 1, #m.keys, #lead + 1, lead) end
  return json.keys(t, PRIORITY, lead)
end

---------------------------------------------------------------------------------------------
-- Loading
---------------------------------------------------------------------------------------------

local TAG_PREFIX = "tag:yaml.org,2002:"
local EXPLICIT = {
  [TAG_PREFIX .. "bool"] = explicit.bool, [TAG_PREFIX .. "float"] = explicit.float,
  [TAG_PREFIX .. "int"] = explicit.int, [TAG_PREFIX .. "null"] = explicit.null,
  [TAG_PREFIX .. "str"] = explicit.str,
}
-- the order lyaml itself resolves plain scalars in
local IMPLICIT = { implicit.null, implicit.octal, implicit.decimal, implicit.float, implicit.bool,
                   implicit.inf, implicit.nan, implicit.hexadecimal, implicit.binary,
                   implicit.sexagesimal, implicit.sexfloat }

local function resolve_plain(s)
  for _, f in ipairs(IMPLICIT) do
    local v = f(s)
    if v ~= nil then return v end
  end
  return s
end

local function number_text(n)
  if math.type(n) == "integer" then return string.format("%d", n) end
  if n ~= n then return ".nan" end
  if n == math.huge then return ".inf" end
  if n == -math.huge then return "-.inf" end
  if n == math.floor(n) and math.abs(n) < 2^53 then return string.format("%.1f", n) end
  return json.float_text(n)
end
M.number_text = number_text

-- Mapping keys are strings in Kubernetes objects: other scalars are written as YAML would.
local function key_string(k)
  if type(k) == "string" then return k end
  if type(k) == "number" then return number_text(k) end
  if type(k) == "boolean" then return tostring(k) end
  if k == M.null then return "null" end
  return nil
end

local LoadError = {}

-- libyaml's "what at document: 1, line: 2, column: 6\nwhile parsing X at line: 1, column: 4"
-- as line, "what (column 6), while parsing X at line 1"
local function parser_message(raw)
  local msg = tostring(raw)
  local line, col = msg:match("line: (%d+), column: (%d+)")
  local what = msg:match("^(.-) at document") or msg:match("^[^\n]*")
  local ctx = msg:match("\n(while [^\n]-) at line")
  local ctx_line = msg:match("\nwhile .- at line: (%d+)")
  local text = what .. (col and (" (column " .. col .. ")") or "")
  if ctx then text = text .. ", " .. ctx .. " at line " .. ctx_line end
  return tonumber(line), text
end

local function new_loader(text)
  local next_event = libyaml.parser(text)
  local self = { anchors = {}, ev = nil }

  local function fail(line, msg)
    error(setmetatable({ line = line, msg = msg }, LoadError), 0)
  end

  local function parse()
    local ok, ev = pcall(next_event)
    if not ok then fail(parser_message(ev)) end
    if not ev then fail(nil, "unexpected end of YAML stream") end
    self.ev = ev
    return ev.type
  end

  local load_node

  local function anchor(node)
    if self.ev.anchor then self.anchors[self.ev.anchor] = node end
  end

  local function load_map()
    local line = self.ev.start_mark.line + 1
    local map, keys, lines = {}, {}, {}
    meta[map] = { kind = "map", keys = keys, lines = lines, line = line }
    anchor(map)
    while true do
      local key, kind = load_node()
      if kind == "end" then break end
      local kline = self.ev.start_mark.line + 1
      if kind ~= "scalar" then fail(kline, "a mapping key must be a scalar") end
      local merge = key == "<<" and self.ev.style == "PLAIN" and not self.ev.tag   -- '<<' is a key
      local k = key_string(key)
      if k == nil then fail(kline, "unsupported mapping key") end
      local value, vkind = load_node()
      if vkind == "end" then fail(kline, "mapping key without value") end
      if merge then
        local sources = (M.is_array(value) and value) or { value }
        for _, src in ipairs(sources) do
          if type(src) ~= "table" then fail(kline, "'<<' must merge a mapping") end
          for _, mk in ipairs(M.keys(src)) do
            if map[mk] == nil then map[mk] = src[mk]; keys[#keys + 1] = mk; lines[mk] = kline end
          end
        end
      else
        if map[k] ~= nil and lines[k] then
          fail(kline, string.format("duplicate mapping key %q (first at line %d)", k, lines[k]))
        end
        map[k] = value
        keys[#keys + 1] = k
        lines[k] = kline
      end
    end
    return map
  end

  local function load_seq()
    local seq = {}
    meta[seq] = { kind = "seq", line = self.ev.start_mark.line + 1 }
    anchor(seq)
    while true do
      local node, kind = load_node()
      if kind == "end" then break end
      seq[#seq + 1] = node
    end
    return seq
  end

  local function load_scalar()
    local ev = self.ev
    local value = ev.value
    local conv = ev.tag and EXPLICIT[ev.tag]
    if conv then
      local v = conv(value)
      if v == nil then
        fail(ev.start_mark.line + 1, string.format("invalid value for tag %s", ev.tag))
      end
      value = v
    elseif ev.style == "PLAIN" and not ev.tag then
      value = resolve_plain(value)
    end
    anchor(value)
    return value
  end

  function load_node()
    local t = parse()
    if t == "SCALAR" then return load_scalar(), "scalar"
    elseif t == "MAPPING_START" then return load_map(), "map"
    elseif t == "SEQUENCE_START" then return load_seq(), "seq"
    elseif t == "ALIAS" then
      local v = self.anchors[self.ev.anchor]
      if v == nil then fail(self.ev.start_mark.line + 1, "unknown alias *" .. tostring(self.ev.anchor)) end
      return v, (type(v) == "table" and "map" or "scalar")
    elseif t == "MAPPING_END" or t == "SEQUENCE_END" or t == "DOCUMENT_END" then
      return nil, "end"
    end
    fail(self.ev.start_mark.line + 1, "unexpected YAML event " .. tostring(t))
  end

  function self.load_all()
    local docs = {}
    if parse() ~= "STREAM_START" then fail(1, "not a YAML stream") end
    while true do
      local t = parse()
      if t == "STREAM_END" then break end
      if t ~= "DOCUMENT_START" then fail(self.ev.start_mark.line + 1, "expected a document") end
      local line = self.ev.start_mark.line + 1
      local node, kind = load_node()
      if kind == "end" then fail(line, "empty document") end
      if parse() ~= "DOCUMENT_END" then fail(self.ev.start_mark.line + 1, "expected end of document") end
      docs[#docs + 1] = node
      self.anchors = {}
    end
    return docs
  end

  return self
end

--- Reads every document of a YAML stream.
-- @return list of documents (mappings keep key order and lines) | nil, message, line
function M.load(text)
  if type(text) ~= "string" then error("yaml.load: text must be a string", 2) end
  local loader = new_loader(text)
  local ok, res = pcall(loader.load_all)
  if ok then return res end
  if getmetatable(res) == LoadError then
    local msg = res.line and ("line " .. res.line .. ": " .. res.msg) or res.msg
    return nil, msg, res.line
  end
  error(res, 0)
end

--- Checks YAML syntax only (no tag or type resolution).
-- @return true | nil, message, line
function M.check_syntax(text)
  local next_event = libyaml.parser(text)
  while true do
    local ok, ev = pcall(next_event)
    if not ok then
      local line, msg = parser_message(ev)
      return nil, line and ("line " .. line .. ": " .. msg) or msg, line
    end
    if not ev or ev.type == "STREAM_END" then return true end
  end
end

--- Iterates over the raw libyaml events of `text` (for callers that need positions).
-- Each call of the returned function gives one event table or raises the parser's message.
function M.events(text)
  return libyaml.parser(text)
end

---------------------------------------------------------------------------------------------
-- Quoting
---------------------------------------------------------------------------------------------

-- Words YAML 1.1 (go-yaml v2, libyaml via lyaml) reads as booleans or null, in any case.
local KEYWORDS = {}
for _, w in ipairs { "y", "n", "yes", "no", "true", "false", "on", "off", "null", ".inf", ".nan" } do
  KEYWORDS[w] = true
end

-- A plain (unquoted) scalar is used only when it is obviously a string for every YAML reader.
local function plain_ok(s)
  if s == "" then return false end
  -- no number, sign or indicator first; ".name" is fine, ".inf" and ".nan" are floats
  if not (s:find("^[A-Za-z_/$]") or (s:find("^%.%a") and not KEYWORDS[s:lower()])) then return false end
  if s:find("[^%w _./:@+=%%~$^()<>;!&*?|\\-]") then return false end -- no # ' " ` , [ ] { } tab etc.
  if s:find(" $") or s:find(": ") or s:find(":$") or s:find("  ") then return false end
  if s:find(":[^%w/.-]") then return false end          -- ":?" or ":," would break a flow collection
  if KEYWORDS[s:lower()] then return false end
  return resolve_plain(s) == s                           -- "_1" is a number to libyaml
end

-- Code points YAML cannot hold raw in a single-quoted scalar (non-printable, or line breaks).
local function needs_escape(cp)
  return cp < 0x20 or cp == 0x7f or (cp >= 0x80 and cp <= 0x9f) or cp == 0x2028 or cp == 0x2029
      or cp == 0xfeff or cp == 0xfffe or cp == 0xffff
end

local SHORT = { [0x09] = "\\t", [0x0a] = "\\n", [0x0d] = "\\r", [0x22] = '\\"', [0x5c] = "\\\\" }

--- The double-quoted YAML form of the UTF-8 string `s` (without validity check).
local function double_quoted(s)
  local out = { '"' }
  for _, cp in utf8.codes(s) do
    local short = SHORT[cp]
    if short then out[#out + 1] = short
    elseif cp < 0x80 and needs_escape(cp) then out[#out + 1] = string.format("\\x%02x", cp)
    elseif needs_escape(cp) then out[#out + 1] = string.format("\\u%04x", cp)
    else out[#out + 1] = utf8.char(cp) end
  end
  out[#out + 1] = '"'
  return table.concat(out)
end

--- A YAML scalar that reads back as exactly the string `s` (plain, 'single' or "double").
-- @return text | nil, reason (s is not valid UTF-8)
function M.quote(s)
  if type(s) ~= "string" then error("yaml.quote: expected a string", 2) end
  if not utf8.len(s) then return nil, "not valid UTF-8 (YAML holds only Unicode text)" end
  if s:find("\0", 1, true) then return nil, "holds a NUL character (YAML readers cut the text there)" end
  if plain_ok(s) then return s end
  for _, cp in utf8.codes(s) do
    if needs_escape(cp) then return double_quoted(s) end
  end
  return "'" .. s:gsub("'", "''") .. "'"
end

--- Always the double-quoted form (single line, every control character escaped).
function M.double_quote(s)
  if not utf8.len(s) then return nil, "not valid UTF-8 (YAML holds only Unicode text)" end
  if s:find("\0", 1, true) then return nil, "holds a NUL character (YAML readers cut the text there)" end
  return double_quoted(s)
end

---------------------------------------------------------------------------------------------
-- Emitting
---------------------------------------------------------------------------------------------

local function scalar_text(v, where)
  local tv = type(v)
  if tv == "string" then
    local q, why = M.quote(v)
    if not q then error(where .. ": " .. why, 0) end
    return q
  elseif tv == "number" then return number_text(v)
  elseif tv == "boolean" then return tostring(v)
  elseif v == M.null then return "null"
  end
  error(where .. ": cannot write a " .. tv .. " as YAML", 0)
end

local function is_node(v) return type(v) == "table" and v ~= M.null end

local function emit(out, v, indent, path)
  if M.is_array(v) then
    for i, item in ipairs(v) do
      local p = path .. "[" .. i .. "]"
      if is_node(item) and next(item) ~= nil then
        if M.is_array(item) then
          out[#out + 1] = indent .. "-\n"
          emit(out, item, indent .. "  ", p)
        else
          local sub = {}
          emit(sub, item, indent .. "  ", p)
          sub[1] = indent .. "- " .. sub[1]:sub(#indent + 3)
          table.move(sub, 1, #sub, #out + 1, out)
        end
      elseif is_node(item) then
        out[#out + 1] = indent .. "- " .. (M.is_array(item) and "[]" or "{}") .. "\n"
      else
        out[#out + 1] = indent .. "- " .. scalar_text(item, p) .. "\n"
      end
    end
  else
    for _, k in ipairs(M.keys(v, true)) do
      local ks = key_string(k)
      if not ks then error(path .. ": unsupported key type " .. type(k), 0) end
      local item, p = v[k], path .. "." .. ks
      local kt = scalar_text(ks, p)
      if is_node(item) and next(item) ~= nil then
        out[#out + 1] = indent .. kt .. ":\n"
        -- sequences under a key are not indented further (kubectl's layout)
        emit(out, item, M.is_array(item) and indent or indent .. "  ", p)
      elseif is_node(item) then
        out[#out + 1] = indent .. kt .. ": " .. (M.is_array(item) and "[]" or "{}") .. "\n"
      else
        out[#out + 1] = indent .. kt .. ": " .. scalar_text(item, p) .. "\n"
      end
    end
  end
end

--- Block YAML for `v` (a mapping or sequence), keys in `M.keys` order.
-- @return text | nil, message (a value YAML cannot hold, e.g. invalid UTF-8 or a function)
function M.dump(v)
  if not is_node(v) then
    local ok, s = pcall(scalar_text, v, "value")
    if ok then return s .. "\n" end
    return nil, s
  end
  if next(v) == nil then return (M.is_array(v) and "[]" or "{}") .. "\n" end
  local out = {}
  local ok, err = pcall(emit, out, v, "", "")
  if not ok then return nil, tostring(err):gsub("^%.", "") end
  return table.concat(out)
end

return M
