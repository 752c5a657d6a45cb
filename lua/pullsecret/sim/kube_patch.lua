--- Object surgery for the simulated Kubernetes API: deep copy/compare, merge patch (RFC 7386),
-- strategic merge patch (the list fields pullsecret meets), JSON patch (RFC 6902), and the
-- simplified field ownership of server-side apply (leaf field paths per manager).
--
--     local P = require "pullsecret.sim.kube_patch"
--     local obj2 = P.merge_patch(obj, { metadata = { labels = { app = "x" } } })
--     local obj3, why = P.json_patch(obj2, { { op = "test", path = "/metadata/resourceVersion", value = "7" } })
--
-- Ownership model: a manager owns leaf paths; a leaf is a scalar, a list (lists are atomic) or an
-- empty map. Paths print as in the API server's conflict messages: ".data..dockerconfigjson".
local json = require "pullsecret.json"

local P = {}

local copy = json.copy
P.copy = copy

local function equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  if json.is_array(a) ~= json.is_array(b) and (next(a) ~= nil or next(b) ~= nil) then return false end
  for k, v in pairs(a) do if not equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
P.equal = equal

local function is_map(v) return type(v) == "table" and not json.is_array(v) end
P.is_map = is_map

--- Removes json.null values everywhere (objects are stored without nulls).
local function strip_nulls(v)
  if type(v) ~= "table" then return v end
  if json.is_array(v) then
    for i = 1, #v do v[i] = strip_nulls(v[i]) end
  else
    for k, x in pairs(v) do
      if x == json.null then v[k] = nil else strip_nulls(x) end
    end
  end
  return v
end
P.strip_nulls = strip_nulls

-- RFC 7386
local function merge(target, patch)
  if not is_map(patch) then return copy(patch) end
  if not is_map(target) then target = {} end
  for k, v in pairs(patch) do
    if v == json.null then target[k] = nil
    else target[k] = merge(target[k], v) end
  end
  return target
end

function P.merge_patch(obj, patch)
  if not is_map(patch) then return nil, "a merge patch must be a JSON object" end
  return merge(copy(obj), patch)
end

-- Strategic merge: lists named here merge by their key, other lists are replaced. Directives
-- ($setElementOrder/..., $retainKeys, $patch) are understood as far as pullsecret and kubectl's
-- client-side apply send them.
local merge_keys = {
  Pod = { ["spec.imagePullSecrets"] = "name", ["spec.containers"] = "name", ["spec.initContainers"] = "name",
          ["spec.volumes"] = "name", ["spec.containers.env"] = "name", ["spec.containers.ports"] = "containerPort",
          ["spec.containers.volumeMounts"] = "mountPath" },
}

local function strategic(target, patch, kind, path)
  if not is_map(patch) then return copy(patch) end
  if patch["$patch"] == "replace" then
    local r = copy(patch); r["$patch"] = nil
    return strip_nulls(r)
  end
  if patch["$patch"] == "delete" then return nil end
  if not is_map(target) then target = {} end
  for k, v in pairs(patch) do
    if k:sub(1, 1) ~= "$" then
      local p = path == "" and k or path .. "." .. k
      local key = merge_keys[kind] and merge_keys[kind][p]
      if v == json.null then
        target[k] = nil
      elseif key and json.is_array(v) and json.is_array(target[k]) then
        local out = copy(target[k])
        for _, item in ipairs(v) do
          local found
          if is_map(item) and item[key] ~= nil then
            for i, cur in ipairs(out) do
              if is_map(cur) and cur[key] == item[key] then found = i; break end
            end
          end
          if found and is_map(item) and item["$patch"] == "delete" then
            table.remove(out, found)
          elseif found then
            out[found] = strategic(out[found], item, kind, p)
          elseif not (is_map(item) and item["$patch"] == "delete") then
            out[#out + 1] = strip_nulls(copy(item))
          end
        end
        target[k] = out
      else
        target[k] = strategic(target[k], v, kind, p)
      end
    end
  end
  return target
end

function P.strategic_patch(obj, patch, kind)
  if not is_map(patch) then return nil, "a strategic merge patch must be a JSON object" end
  return strategic(copy(obj), patch, kind, "")
end

-- RFC 6902 -------------------------------------------------------------------------------------
local function pointer(path)
  if path == "" then return {} end
  if path:sub(1, 1) ~= "/" then return nil end
  local parts = {}
  for seg in (path:sub(2) .. "/"):gmatch("(.-)/") do
    parts[#parts + 1] = seg:gsub("~1", "/"):gsub("~0", "~")
  end
  return parts
end

local function walk(doc, parts)
  -- returns container of the last part and the key (number for arrays)
  local cur = doc
  for i = 1, #parts - 1 do
    local k = parts[i]
    if json.is_array(cur) then k = tonumber(k) and tonumber(k) + 1 end
    if type(cur) ~= "table" or k == nil or cur[k] == nil then return nil end
    cur = cur[k]
  end
  if type(cur) ~= "table" then return nil end
  local last = parts[#parts]
  if json.is_array(cur) then
    if last == "-" then return cur, #cur + 1, true end
    local n = tonumber(last)
    if not n or last:find("[^0-9]") then return nil end
    return cur, n + 1, true
  end
  return cur, last, false
end

local function get_ptr(doc, path)
  local parts = pointer(path)
  if not parts then return nil end
  if #parts == 0 then return doc end
  local c, k = walk(doc, parts)
  if not c then return nil end
  return c[k]
end

local function op_add(doc, path, value)
  local parts = pointer(path)
  if not parts then return nil, "bad path " .. path end
  if #parts == 0 then return copy(value) end
  local c, k, arr = walk(doc, parts)
  if not c then return nil, "doc is missing path: " .. path end
  if arr then
    if k < 1 or k > #c + 1 then return nil, "index out of range: " .. path end
    table.insert(c, k, copy(value))
  else
    c[k] = copy(value)
  end
  return doc
end

local function op_remove(doc, path)
  local parts = pointer(path)
  if not parts or #parts == 0 then return nil, "bad path " .. tostring(path) end
  local c, k, arr = walk(doc, parts)
  if not c or c[k] == nil then return nil, "doc is missing path: " .. path end
  local old = c[k]
  if arr then table.remove(c, k) else c[k] = nil end
  return doc, old
end

function P.json_patch(obj, ops)
  if not json.is_array(ops) then return nil, "a JSON patch must be a JSON array of operations" end
  local doc = copy(obj)
  for _, o in ipairs(ops) do
    if not is_map(o) or type(o.path) ~= "string" then return nil, "an operation needs op and path" end
    local err
    if o.op == "add" then
      doc, err = op_add(doc, o.path, o.value)
    elseif o.op == "remove" then
      doc, err = op_remove(doc, o.path)
    elseif o.op == "replace" then
      if get_ptr(doc, o.path) == nil then
        return nil, "replace operation does not apply: doc is missing key: " .. o.path
      end
      doc, err = op_remove(doc, o.path)
      if doc then doc, err = op_add(doc, o.path, o.value) end
    elseif o.op == "test" then
      if not equal(get_ptr(doc, o.path), o.value) then
        return nil, "testing value " .. o.path .. " failed: test failed"
      end
    elseif o.op == "move" or o.op == "copy" then
      local v = get_ptr(doc, o.from or "")
      if v == nil then
        return nil, o.op .. " operation does not apply: doc is missing from path: " .. tostring(o.from)
      end
      v = copy(v)
      if o.op == "move" then doc, err = op_remove(doc, o.from) end
      if doc then doc, err = op_add(doc, o.path, v) end
    else
      return nil, "unexpected kind: " .. tostring(o.op)
    end
    if not doc then return nil, err end
  end
  return strip_nulls(doc)
end

-- Field ownership ------------------------------------------------------------------------------
local skip_top = { apiVersion = true, kind = true, status = true }
local keep_meta = { labels = true, annotations = true, finalizers = true, ownerReferences = true }

local function display(path)
  local out = {}
  for i, k in ipairs(path) do out[i] = "." .. k end
  return table.concat(out)
end
P.display = display

local function flatten(v, path, out)
  if is_map(v) and next(v) ~= nil then
    for k, x in pairs(v) do
      if x ~= json.null then
        local p = { table.unpack(path) }
        p[#p + 1] = k
        flatten(x, p, out)
      end
    end
  else
    out[table.concat(path, "\0")] = { path = path, value = v }
  end
end

--- The leaves of an object: { [key] = { path = {...}, value = v } }.
function P.leaves(obj)
  local out = {}
  for k, v in pairs(obj) do
    if not skip_top[k] then
      if k == "metadata" then
        if is_map(v) then
          for mk, mv in pairs(v) do
            if keep_meta[mk] and mv ~= json.null then flatten(mv, { "metadata", mk }, out) end
          end
        end
      elseif v ~= json.null then
        flatten(v, { k }, out)
      end
    end
  end
  return out
end

function P.get_path(obj, path)
  local cur = obj
  for _, k in ipairs(path) do
    if not is_map(cur) then return nil end
    cur = cur[k]
  end
  return cur
end

function P.set_path(obj, path, value)
  local cur = obj
  for i = 1, #path - 1 do
    if not is_map(cur[path[i]]) then cur[path[i]] = {} end
    cur = cur[path[i]]
  end
  cur[path[#path]] = copy(value)
end

function P.del_path(obj, path)
  local chain, cur = {}, obj
  for i = 1, #path - 1 do
    if not is_map(cur[path[i]]) then return end
    chain[i] = cur
    cur = cur[path[i]]
  end
  cur[path[#path]] = nil
  -- prune maps left empty (never the top level or metadata itself)
  for i = #path - 1, 2, -1 do
    local parent = chain[i]
    if next(parent[path[i]]) == nil then parent[path[i]] = nil else break end
  end
end

--- Builds the API's fieldsV1 document from a set of leaf keys.
function P.fields_v1(set)
  local root = {}
  for _, leaf in pairs(set) do
    local cur = root
    for _, k in ipairs(leaf) do
      local fk = "f:" .. k
      cur[fk] = cur[fk] or {}
      cur = cur[fk]
    end
  end
  local function mark(t)
    for _, v in pairs(t) do
      if next(v) ~= nil then v["."] = {} ; mark(v) end
    end
  end
  mark(root)
  return root
end

return P
