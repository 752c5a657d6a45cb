--- HTTP with pullsecret's retry policy, over the C core's client; and the one way to print a request.
--
--     local http = require "pullsecret.http"
--     local h = http.new{ ca_file = "/etc/ssl/certs/ca-certificates.crt",      -- any core.client option
--                         retry = { attempts = 4, max_seconds = 30, base_ms = 200, max_ms = 5000 },
--                         on_event = function(ev) end,   -- {type="retry", attempt=, delay=, reason=, method=, url=}
--                         log = function(line) io.stderr:write(line, "\n") end }
--     local res, err = h:request{ method = "GET", url = "https://example.test/v2/info",
--                                 headers = { Accept = "application/json" } }
--     if not res then return nil, err end              -- err.kind: transport tls timeout too_large input
--     local body, jerr = http.json(res)                -- nil, err (kind "protocol") unless a JSON body
--     h:close()
--
-- Retry policy (bounded by retry.attempts and retry.max_seconds, whichever comes first):
--   * transport and timeout errors, and statuses 502/503/504, are retried for idempotent methods
--     (GET HEAD PUT DELETE OPTIONS TRACE, or any method with req.idempotent = true; req.idempotent =
--     false turns retries off for these);
--   * statuses 429 and 503 are retried for every method (the server did not act on the request);
--   * tls, too_large and input errors are never retried.
--   The wait is exponential backoff with full jitter: random(0, min(max_ms, base_ms * 2^(n-1))) ms,
--   unless the response carries Retry-After (delta seconds or an HTTP date), which is honoured as
--   is. When the wait would pass the time budget, no retry is made: the last response (or error)
--   is returned at once. Each attempt's timeout_ms is capped by the time left in the budget.
--   Every retry calls on_event{ type = "retry", attempt = <the attempt about to be made, 2..>,
--   delay = <seconds>, reason = "status 503" | "transport" | "timeout", status = <number|nil>,
--   method =, url = <redacted> } -- never headers or bodies.
--   log(line) gets one line per attempt: "GET https://host/path?token=<redacted> -> 200 (12 ms)"
--   or "... -> timeout error (30001 ms)".
-- Results: the core's result table for any HTTP status (4xx/5xx included), plus res.url (the
-- request URL, redacted) and res.attempts; errors are pullsecret.errors objects with the core's
-- kind, code and message, plus attempts.
--
-- For specs: http.new{ sleep = function(seconds) end, clock = function() return seconds end,
--   random = function() return 0..1 end, now = function() return epoch_seconds end } replace
--   socket.sleep, socket.gettime, math.random and os.time.
local core = require "pullsecret.core"
local errors = require "pullsecret.errors"
local cjson = require "cjson.safe"
local json = require "pullsecret.json"
local socket = require "socket"

local http = {}

local Client = {}
Client.__index = Client
Client.__name = "pullsecret.http"

local own_options = { retry = true, on_event = true, log = true, sleep = true, clock = true,
                      random = true, now = true }

local idempotent_methods = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true, TRACE = true }

-- Redaction --------------------------------------------------------------------------------------

local REDACTED = "<redacted>"

local secret_names = {
  password = true, passwd = true, passcode = true, token = true, access_token = true,
  refresh_token = true, id_token = true, apikey = true, api_key = true, ["api-key"] = true,
  client_secret = true, secret = true, authorization = true, cookie = true,
  auth = true, [".dockerconfigjson"] = true, [".dockercfg"] = true,   -- docker config credentials
}

--- True when a parameter, JSON field or header named `name` holds a secret.
function http.is_secret_name(name)
  if type(name) ~= "string" then return false end
  local n = name:lower()
  if secret_names[n] then return true end
  return n:find("token$") ~= nil or n:find("secret$") ~= nil or n:find("password$") ~= nil
    or n:find("passcode$") ~= nil or n:find("api[_%-]?key$") ~= nil or n:find("authorization$") ~= nil
    or n:find("cookie$") ~= nil or n:find("private[_%-]?key$") ~= nil
end
local is_secret = http.is_secret_name

local function redact_pairs(s)
  return (s:gsub("([^&=]*)=([^&]*)", function(k, v)
    local name = k:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    if v ~= "" and is_secret(name) then return k .. "=" .. REDACTED end
    return k .. "=" .. v
  end))
end

-- A path segment that is a JWT (or its base64url JSON header alone): "eyJ" is base64 for '{"'.
local function redact_segment(seg)
  if #seg >= 16 and seg:find("^eyJ[%w_%-]*%.?[%w_%-]*%.?[%w_%-]*$") then return REDACTED end
  return seg
end

--- A URL with its userinfo, JWTs in its path and secret query and fragment values replaced by
-- "<redacted>"; control characters are percent-encoded, so that it prints as one line.
function http.redact_url(url)
  if type(url) ~= "string" then return tostring(url) end
  url = url:gsub("%c", function(c) return string.format("%%%02X", c:byte()) end)
  local scheme, rest = url:match("^(%a[%w+.-]*://)(.*)$")
  if not scheme then scheme, rest = "", url end
  local authority, tail = rest:match("^([^/?#]*)(.*)$")
  if authority:find("@") then authority = REDACTED .. authority:match("^.*(@.*)$") end
  local path, query, frag = tail:match("^([^?#]*)%??([^#]*)(#?.*)$")
  path = path:gsub("[^/]+", redact_segment)
  if query ~= "" then query = "?" .. redact_pairs(query) elseif tail:find("?", 1, true) then query = "?" end
  if frag:find("=", 1, true) then frag = "#" .. redact_pairs(frag:sub(2)) end
  return scheme .. authority .. path .. query .. frag
end

local function redact_json(v, depth)
  if type(v) ~= "table" then return v end
  if depth > 32 then return REDACTED end          -- too deep to look through: hide it all
  if v.kind == "Secret" then                     -- a Kubernetes Secret: every value is a secret
    for _, field in ipairs{ "data", "stringData" } do
      if type(v[field]) == "table" then
        for k in pairs(v[field]) do v[field][k] = REDACTED end
      end
    end
  end
  for k, x in pairs(v) do
    if type(k) == "string" and is_secret(k) and (type(x) == "string" or type(x) == "number") then
      v[k] = REDACTED
    else
      v[k] = redact_json(x, depth + 1)
    end
  end
  return v
end

local function header_value(headers, name)
  for k, v in pairs(headers or {}) do
    if type(k) == "string" and k:lower() == name then return v end
  end
end

local function redact_body(body, headers)
  if body == nil or body == "" then return nil end
  local ctype = tostring(header_value(headers, "content-type") or ""):lower()
  local trimmed = body:match("^%s*(.-)%s*$")
  if ctype:find("json") or trimmed:find("^[%[{]") then
    local v = cjson.decode(body)
    if type(v) == "table" then
      local text = cjson.encode(redact_json(v, 0))
      if text then return (text:gsub("\\/", "/")) end
    end
    return "<" .. #body .. " bytes>"
  end
  if ctype:find("x%-www%-form%-urlencoded") or (ctype == "" and body:find("^[%w%%._~+*-]+=[^%s]*$")) then
    return redact_pairs(body)
  end
  return "<" .. #body .. " bytes>"
end

--- The printable form of a request: method, redacted URL, headers (secret ones redacted) and body
-- (form and JSON bodies with secret fields redacted; anything else as "<N bytes>"). One line.
function http.redact(req)
  if type(req) ~= "table" then error("http.redact: expected a request table", 2) end
  local parts = { (tostring(req.method or "GET"):upper():gsub("%c", "?")), http.redact_url(req.url) }
  local names = {}
  for k in pairs(req.headers or {}) do names[#names + 1] = k end
  table.sort(names, function(a, b) return tostring(a):lower() < tostring(b):lower() end)
  if #names > 0 then
    local hs = {}
    for _, k in ipairs(names) do
      local v = req.headers[k]
      if is_secret(tostring(k)) or tostring(k):lower():find("auth") then v = REDACTED end
      hs[#hs + 1] = tostring(k) .. ": " .. tostring(v):gsub("[%c]", " ")
    end
    parts[#parts + 1] = "{" .. table.concat(hs, ", ") .. "}"
  end
  local body = redact_body(req.body, req.headers)
  if body then parts[#parts + 1] = (body:gsub("[%c]", " ")) end
  return table.concat(parts, " ")
end

-- JSON ---------------------------------------------------------------------------------------

--- Decodes res.body as a JSON object or array (integral numbers as integers):
-- tbl | nil, err (kind "protocol", fields status, content_type, bytes).
function http.json(res)
  if type(res) ~= "table" then error("http.json: expected a response table", 2) end
  local body = res.body or ""
  local v = cjson.decode(body)
  if type(v) == "table" then return json.integers(v) end
  local ctype = res.headers and res.headers["content-type"] or "no content type"
  local host = type(res.url) == "string" and res.url:match("^%a[%w+.-]*://([^/?#]+)") or "the server"
  host = host:gsub("^.*@", "")
  return nil, errors.new("protocol", string.format("expected a JSON body from %s (HTTP %s), got %s, %d bytes",
    host, tostring(res.status), ctype, #body), { status = res.status, content_type = ctype, bytes = #body })
end

-- Retry-After --------------------------------------------------------------------------------

local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9,
                 Oct = 10, Nov = 11, Dec = 12 }

-- Days since 1970-01-01 of a civil date (proleptic Gregorian).
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- Parses an HTTP date (IMF-fixdate, RFC 850 or asctime) into epoch seconds, or nil.
function http.parse_date(s)
  if type(s) ~= "string" then return nil end
  local d, mon, y, hh, mm, ss = s:match("^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d then
    d, mon, y, hh, mm, ss = s:match("^%a+, (%d%d)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    if y then y = tonumber(y) + (tonumber(y) < 70 and 2000 or 1900) end
  end
  if not d then
    mon, d, hh, mm, ss, y = s:match("^%a+ (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
  end
  if not d or not months[mon] then return nil end
  return days_from_civil(tonumber(y), months[mon], tonumber(d)) * 86400
    + tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
end

--- Seconds to wait per a Retry-After value (delta seconds or HTTP date), or nil when absent/invalid.
function http.retry_after(value, now)
  if type(value) ~= "string" then return nil end
  value = value:match("^%s*(.-)%s*$")
  local delta = value:match("^%d+$")
  if delta then return tonumber(delta) end
  local t = http.parse_date(value)
  if t then return math.max(0, t - (now or os.time())) end
  return nil
end

-- The client ---------------------------------------------------------------------------------

--- A new client (see the module header).
function http.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("http.new: options must be a table", 2) end
  local copts = {}
  for k, v in pairs(opts) do
    if not own_options[k] then copts[k] = v end
  end
  local retry = opts.retry or {}
  if type(retry) ~= "table" then error("http.new: retry must be a table", 2) end
  local client = core.client(copts)
  return setmetatable({
    client = client,
    attempts = math.max(1, retry.attempts or 4),
    max_seconds = retry.max_seconds or 30,
    base_ms = retry.base_ms or 200,
    max_ms = retry.max_ms or 5000,
    on_event = opts.on_event,
    log = opts.log,
    sleep = opts.sleep or socket.sleep,
    clock = opts.clock or socket.gettime,
    random = opts.random or math.random,
    now = opts.now or os.time,
  }, Client)
end

local retry_any = { [429] = true, [503] = true }
local retry_idempotent = { [502] = true, [503] = true, [504] = true }

-- Why a result should be retried ("status 503", "transport", "timeout"), or nil.
local function retry_reason(res, err, idempotent)
  if res then
    if retry_any[res.status] or (idempotent and retry_idempotent[res.status]) then
      return "status " .. res.status
    end
    return nil
  end
  if idempotent and (err.kind == "transport" or err.kind == "timeout") then return err.kind end
  return nil
end

local function is_idempotent(req)
  if req.idempotent ~= nil then return req.idempotent == true end
  return idempotent_methods[tostring(req.method or "GET"):upper()] == true
end

local function check_request(req, level)
  if type(req) ~= "table" then error("request: expected a table", level) end
  if type(req.url) ~= "string" then error("request: url must be a string", level) end
  if req.method ~= nil and type(req.method) ~= "string" then error("request: method must be a string", level) end
  if req.headers ~= nil and type(req.headers) ~= "table" then error("request: headers must be a table", level) end
  if req.body ~= nil and type(req.body) ~= "string" then error("request: body must be a string", level) end
end

-- The core request for one attempt: the caller's, with timeout_ms capped by the budget left.
local function attempt_request(req, left_ms)
  local r = {}
  for k, v in pairs(req) do if k ~= "idempotent" then r[k] = v end end
  r.method = tostring(req.method or "GET"):upper()
  local t = req.timeout_ms or 30000
  r.timeout_ms = math.max(1, math.floor(math.min(t, left_ms)))
  if r.connect_timeout_ms then r.connect_timeout_ms = math.max(1, math.min(r.connect_timeout_ms, r.timeout_ms)) end
  return r
end

function Client:_log(method, url, res, err, ms)
  if not self.log then return end
  local outcome = res and tostring(res.status) or (tostring(err.kind) .. " error")
  local line = string.format("%s %s -> %s (%d ms)", method, url, outcome, math.floor(ms + 0.5))
  pcall(self.log, (line:gsub("%c", "?")))
end

-- The backoff before attempt n+1 (seconds), or the server's Retry-After.
function Client:_delay(n, res)
  local ra = res and res.headers and http.retry_after(res.headers["retry-after"], self.now())
  if ra then return ra, true end
  local cap = math.min(self.max_ms, self.base_ms * 2 ^ (n - 1))
  return self.random() * cap / 1000, false
end

--- One request with retries: res | nil, err (see the module header).
function Client:request(req)
  if not self.client then error("http client is closed", 2) end
  check_request(req, 3)
  local method = tostring(req.method or "GET"):upper()
  local url = http.redact_url(req.url)
  local idempotent = is_idempotent(req)
  local start = self.clock()
  local res, err
  local n = 0
  while true do
    n = n + 1
    local left = self.max_seconds - (self.clock() - start)
    local t0 = self.clock()
    local raw
    res, raw = self.client:request(attempt_request(req, left * 1000))
    err = nil
    if not res then err = errors.from(raw or { kind = "transport", message = "request failed" }) end
    self:_log(method, url, res, err, (self.clock() - t0) * 1000)
    local reason = retry_reason(res, err, idempotent)
    if not reason or n >= self.attempts then break end
    local delay = self:_delay(n, res)
    left = self.max_seconds - (self.clock() - start)
    if delay >= left then break end
    if self.on_event then
      pcall(self.on_event, { type = "retry", attempt = n + 1, delay = delay, reason = reason,
                             status = res and res.status or nil, method = method, url = url })
    end
    if delay > 0 then self.sleep(delay) end
  end
  if res then
    res.url = url
    res.attempts = n
    return res
  end
  err.attempts = n
  return nil, err
end

--- Many requests at once (core batch), each retried per the policy: results in input order,
-- results[i] = res or { error = err }.
function Client:batch(reqs, opts)
  if not self.client then error("http client is closed", 2) end
  if type(reqs) ~= "table" then error("batch: expected a list of requests", 2) end
  for _, req in ipairs(reqs) do check_request(req, 3) end
  opts = opts or {}
  local start = self.clock()
  local results, tries, pending = {}, {}, {}
  for i = 1, #reqs do pending[i] = i; tries[i] = 0 end
  while #pending > 0 do
    local left = self.max_seconds - (self.clock() - start)
    local batch = {}
    for j, i in ipairs(pending) do batch[j] = attempt_request(reqs[i], left * 1000) end
    local t0 = self.clock()
    local out = self.client:batch(batch, opts)
    local ms = (self.clock() - t0) * 1000
    local again, wait = {}, 0
    for j, i in ipairs(pending) do
      local req, r = reqs[i], out[j]
      tries[i] = tries[i] + 1
      local method, url = batch[j].method, http.redact_url(req.url)
      local res, err
      if r and r.error then err = errors.from(r.error) elseif r then res = r
      else err = errors.new("transport", "no result") end
      self:_log(method, url, res, err, ms)
      if res then res.url, res.attempts = url, tries[i] else err.attempts = tries[i] end
      results[i] = res or { error = err }
      local reason = retry_reason(res, err, is_idempotent(req))
      if reason and tries[i] < self.attempts then
        local delay = self:_delay(tries[i], res)
        if delay < self.max_seconds - (self.clock() - start) then
          again[#again + 1] = i
          wait = math.max(wait, delay)
          if self.on_event then
            pcall(self.on_event, { type = "retry", attempt = tries[i] + 1, delay = delay, reason = reason,
                                   status = res and res.status or nil, method = method, url = url })
          end
        end
      end
    end
    pending = again
    if #pending > 0 and wait > 0 then self.sleep(wait) end
  end
  return results
end

--- Closes the connection cache. Idempotent.
function Client:close()
  if self.client then
    self.client:close()
    self.client = nil
  end
end

Client.__close = Client.close

return http
