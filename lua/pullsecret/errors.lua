--- Error objects shared by every pullsecret module.
--
-- Every failure is returned as `nil, err` where `err` is a table with a
-- `kind` (e.g. "transport", "auth", "kube"), a one-line human `message`
-- and the fields of its kind (`status`, `code`, `reason`, `request_id`...).
-- `tostring(err)` is the message.
--
--     local errors = require "pullsecret.errors"
--     return nil, errors.new("input", "namespace is empty: pass -n NAMESPACE", { field = "namespace" })
local errors = {}

local mt = {}
mt.__index = mt
mt.__name = "pullsecret.error"
function mt.__tostring(e) return e.message end

errors.mt = mt

--- Makes an error object.
-- @param kind string
-- @param message string, one line, no secrets
-- @param fields optional table of extra fields, copied in
function errors.new(kind, message, fields)
  if type(kind) ~= "string" then error("errors.new: kind must be a string", 2) end
  local e = {}
  if fields then for k, v in pairs(fields) do e[k] = v end end
  e.kind = kind
  e.message = tostring(message or kind):gsub("[\r\n]+", " ")
  return setmetatable(e, mt)
end

--- Gives a plain table (as returned by the C core) the error metatable.
function errors.from(t)
  if getmetatable(t) == mt then return t end
  return errors.new(t.kind or "transport", t.message or "unknown error", t)
end

--- True when `err` is an error of that kind.
function errors.is(err, kind)
  return type(err) == "table" and err.kind == kind
end

--- A copy of `err` whose message is prefixed ("step 4, registry token: ...").
function errors.wrap(err, prefix)
  local e = errors.new(err.kind, prefix .. ": " .. tostring(err.message), err)
  e.cause = err
  return e
end

return errors
