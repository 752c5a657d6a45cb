--- IBM Cloud error bodies -> pullsecret error objects (internal to the IBM modules).
--
-- Knows the four shapes (wire-ibm.md): UAA `{error, error_description}`, IAM
-- `{errorCode, errorMessage, context.requestId}`, Cloud Controller v2
-- `{code, description, error_code}` and Container Registry `{code, message, request-id}`.
--
--     local ibmerr = require "pullsecret.ibmerr"
--     local err = ibmerr.response(res, {
--       what = "login to https://api.example.com",       -- what was being done
--       hint = function(info) return "check the user name and password" end, -- what to do (or nil)
--       secrets = { password },                           -- scrubbed from server texts
--     })
--     -- err.kind: "auth" (UAA/IAM bodies, other 401s), "registry" (CRG bodies), "http" (anything else);
--     -- err.status, err.code (service code: "invalid_grant", "BXNIM0415E", "CF-NotAuthenticated",
--     -- "CRG0009E"), err.description (server text, scrubbed), err.request_id, err.service.
--     ibmerr.protocol("registry token create", "a JSON object with a token field")  -- kind "protocol"
--
-- Server texts are scrubbed before use: UAA echoes refresh tokens in its descriptions, so
-- anything looking like a token, and every value in `secrets`, becomes "<redacted>".
local cjson = require "cjson.safe"
local errors = require "pullsecret.errors"

local ibmerr = {}

--- `text` with every secret value, JWT-looking or long opaque run replaced by "<redacted>";
-- one line, at most 240 characters.
function ibmerr.scrub(text, secrets)
  if type(text) ~= "string" then return nil end
  for _, s in ipairs(secrets or {}) do
    if type(s) == "string" and #s >= 3 then
      local from = 1
      while true do
        local i, j = text:find(s, from, true)
        if not i then break end
        text = text:sub(1, i - 1) .. "<redacted>" .. text:sub(j + 1)
        from = i + #"<redacted>"
      end
    end
  end
  text = text:gsub("[%w%-_]+%.[%w%-_]+%.[%w%-_]*", function(m)
    return #m >= 20 and "<redacted>" or m
  end)
  text = text:gsub("[%w%-_%+/=%.]+", function(m)
    if #m < 24 or m:find("^%x+%-%x+%-%x+%-%x+%-%x+$") then return m end   -- short, or a UUID
    if m:find("%.") then                                                   -- a host name: short labels
      local short = true
      for label in m:gmatch("[^%.]+") do if #label > 20 then short = false end end
      if short then return m end
    end
    return "<redacted>"
  end)
  text = text:gsub("[%c]+", " ")
  if #text > 240 then text = text:sub(1, 237) .. "..." end
  return text
end

local REQUEST_ID_HEADERS = { "x-request-id", "x-vcap-request-id", "transaction-id", "x-correlation-id" }

-- Reads the service, code, description and request id out of a response: info table.
function ibmerr.parse(res)
  local info = { status = res.status }
  local body = res.body and cjson.decode(res.body)
  if type(body) == "table" then
    if type(body.error) == "string" and body.error:find("^[%w_]+$") then
      info.service, info.code, info.description = "uaa", body.error, body.error_description
    elseif type(body.errorCode) == "string" then
      info.service, info.code, info.description = "iam", body.errorCode, body.errorMessage
      if type(body.context) == "table" then info.request_id = body.context.requestId end
    elseif type(body.error_code) == "string" then
      info.service, info.code, info.description = "cf", body.error_code, body.description
      info.cf_code = math.tointeger(body.code)
    elseif type(body.code) == "string" and body.code:match("^CRG") then
      info.service, info.code, info.description = "registry", body.code, body.message
      info.request_id = body["request-id"]
    elseif type(body.code) == "string" and type(body.message) == "string" then
      info.service, info.code, info.description = "unknown", body.code, body.message
    end
  end
  if type(info.request_id) ~= "string" then info.request_id = nil end
  if type(info.description) ~= "string" then info.description = nil end
  if not info.request_id and res.headers then
    for _, h in ipairs(REQUEST_ID_HEADERS) do
      if res.headers[h] then info.request_id = res.headers[h]; break end
    end
  end
  return info
end

local LABEL = { uaa = "UAA", iam = "IAM", cf = "Cloud Controller", registry = "registry", unknown = "server" }

--- An error object for a non-2xx response. ctx = { what =, hint = function(info) | string, secrets = }.
function ibmerr.response(res, ctx)
  local info = ibmerr.parse(res)
  info.description = ibmerr.scrub(info.description, ctx.secrets)
  local kind
  if info.service == "uaa" or info.service == "iam" then
    kind = "auth"
  elseif info.service == "registry" then
    kind = "registry"
  elseif res.status == 401 then
    kind = "auth"
  else
    kind = "http"
  end
  local hint = ctx.hint
  if type(hint) == "function" then hint = hint(info) end
  local detail
  if info.code then
    detail = LABEL[info.service] .. " " .. info.code .. (info.description and (": " .. info.description) or "")
      .. ", HTTP " .. tostring(res.status)
  else
    detail = "HTTP " .. tostring(res.status)
  end
  local msg = ctx.what .. " failed: " .. (hint and (hint .. " (" .. detail .. ")") or detail)
  if info.request_id then
    info.request_id = tostring(info.request_id):gsub("[^%w%-_%.:]", ""):sub(1, 80)
    msg = msg .. " [request id " .. info.request_id .. "]"
  end
  return errors.new(kind, msg, {
    status = res.status, code = info.code, description = info.description,
    request_id = info.request_id, service = info.service, cf_code = info.cf_code,
  })
end

--- A kind "protocol" error: `what` answered something other than `expected`.
function ibmerr.protocol(what, expected, reason)
  local msg = what .. ": unexpected answer (expected " .. expected .. ")"
  if reason then msg = msg .. ": " .. reason end
  return errors.new("protocol", msg, { reason = reason or ("expected " .. expected) })
end

--- Decodes a 2xx JSON object body: tbl | nil, protocol error naming `expected`.
function ibmerr.json_object(res, what, expected)
  local ctype = res.headers and res.headers["content-type"] or ""
  local body = res.body and cjson.decode(res.body)
  if type(body) ~= "table" then
    local why = (res.body == nil or res.body == "") and "empty body"
      or ("body is not JSON" .. (ctype ~= "" and (" (Content-Type " .. ibmerr.scrub(ctype) .. ")") or ""))
    return nil, ibmerr.protocol(what, expected, why)
  end
  return body
end

return ibmerr
