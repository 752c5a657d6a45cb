--- Label and field selectors for the simulated Kubernetes API.
--
--     local S = require "pullsecret.sim.kube_select"
--     local match, err = S.labels("app=web,tier in (a,b),!legacy")
--     if match then print(match({ app = "web", tier = "a" })) end          --> true
--     local fmatch = assert(S.fields("metadata.name!=x,type=Opaque", { ["type"] = true }))
--     print(fmatch(secret_object))
local S = {}

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function token_ok(s, max)
  if #s == 0 or #s > max then return false end
  if #s == 1 then return s:match("^[A-Za-z0-9]$") ~= nil end
  return s:match("^[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]$") ~= nil
end

local function valid_key(k)
  -- [prefix/]name, name: alphanumerics, '-', '_', '.'; at most 63 characters
  local prefix, name = k:match("^(.-)/([^/]*)$")
  name = name or k
  if prefix and not (token_ok(prefix, 253) and prefix:match("^[a-z0-9.-]+$")) then return false end
  return token_ok(name, 63)
end

local function valid_value(v)
  return v == "" or token_ok(v, 63)
end

-- Splits on commas that are not inside parentheses.
local function split(s)
  local parts, depth, cur = {}, 0, {}
  for c in s:gmatch(".") do
    if c == "(" then depth = depth + 1 elseif c == ")" then depth = depth - 1 end
    if c == "," and depth == 0 then
      parts[#parts + 1] = table.concat(cur); cur = {}
    else
      cur[#cur + 1] = c
    end
  end
  parts[#parts + 1] = table.concat(cur)
  return parts
end

--- Parses a label selector. Returns a function(labels_table) -> boolean, or nil, message.
function S.labels(sel)
  local reqs = {}
  if sel == nil or trim(sel) == "" then return function() return true end end
  for _, part in ipairs(split(sel)) do
    part = trim(part)
    local r
    local key, op, vals = part:match("^([^%s!=(),]+)%s+(notin)%s*%((.*)%)$")
    if not key then key, op, vals = part:match("^([^%s!=(),]+)%s+(in)%s*%((.*)%)$") end
    if key then
      local set = {}
      for v in (vals .. ","):gmatch("(.-),") do
        v = trim(v)
        if not valid_value(v) then return nil, "invalid label value: " .. v end
        set[v] = true
      end
      r = { key = key, op = op, set = set }
    else
      local k, o, v = part:match("^([^%s!=]+)%s*(!=)%s*(.-)$")
      if not k then k, o, v = part:match("^([^%s!=]+)%s*(==)%s*(.-)$") end
      if not k then k, o, v = part:match("^([^%s!=]+)%s*(=)%s*(.-)$") end
      if k then
        if not valid_value(v) then return nil, "invalid label value: \"" .. v .. "\"" end
        r = { key = k, op = (o == "==" and "=" or o), value = v }
      elseif part:match("^!%s*[^%s!=(),]+$") then
        r = { key = trim(part:sub(2)), op = "!exists" }
      elseif part:match("^[^%s!=(),]+$") then
        r = { key = part, op = "exists" }
      else
        return nil, "unable to parse requirement: " .. part
      end
    end
    if not valid_key(r.key) then return nil, "invalid label key \"" .. r.key .. "\"" end
    reqs[#reqs + 1] = r
  end
  return function(labels)
    labels = labels or {}
    for _, r in ipairs(reqs) do
      local v = labels[r.key]
      if r.op == "=" then if v ~= r.value then return false end
      elseif r.op == "!=" then if v == r.value then return false end
      elseif r.op == "in" then if v == nil or not r.set[v] then return false end
      elseif r.op == "notin" then if v ~= nil and r.set[v] then return false end
      elseif r.op == "exists" then if v == nil then return false end
      elseif r.op == "!exists" then if v ~= nil then return false end
      end
    end
    return true
  end
end

local function lookup(obj, dotted)
  local cur = obj
  for k in dotted:gmatch("[^.]+") do
    if type(cur) ~= "table" then return nil end
    cur = cur[k]
  end
  if cur == nil then return "" end
  return tostring(cur)
end

--- Parses a field selector. `allowed` is a set of extra field names the resource supports
-- (metadata.name and metadata.namespace always are; a prefix ending in "." allows a subtree).
-- Returns a function(obj) -> boolean, or nil, message.
function S.fields(sel, allowed)
  local reqs = {}
  if sel == nil or trim(sel) == "" then return function() return true end end
  for _, part in ipairs(split(sel)) do
    part = trim(part)
    local k, o, v = part:match("^([^!=]+)(!=)(.*)$")
    if not k then k, o, v = part:match("^([^!=]+)(==)(.*)$") end
    if not k then k, o, v = part:match("^([^!=]+)(=)(.*)$") end
    if not k then return nil, "invalid selector: '" .. sel .. "'; can't understand '" .. part .. "'" end
    k = trim(k)
    local ok = k == "metadata.name" or k == "metadata.namespace" or (allowed and allowed[k])
    if not ok and allowed then
      for a in pairs(allowed) do
        if a:sub(-1) == "." and k:sub(1, #a) == a then ok = true end
      end
    end
    if not ok then return nil, "field label not supported: " .. k end
    reqs[#reqs + 1] = { key = k, op = o == "!=" and "!=" or "=", value = trim(v) }
  end
  return function(obj)
    for _, r in ipairs(reqs) do
      local v = lookup(obj, r.key)
      if r.op == "=" and v ~= r.value then return false end
      if r.op == "!=" and v == r.value then return false end
    end
    return true
  end
end

return S
