--- The simulator's HTTP/1.1 server: one thread, coroutines, socket.select (LuaSocket + LuaSec).
--
-- Every accepted connection is a coroutine that yields whenever its socket would block,
-- so a slow client (or a slow TLS handshake) never stalls the others.
--
--     local server = require "pullsecret.sim.server"
--     local srv = server.new()
--     local url = srv:listen{ name = "echo", handler = function(req)
--       return { status = 200, headers = { ["Content-Type"] = "text/plain" }, body = req.path }
--     end, tls = { cert_file = "server.crt", key_file = "server.key",
--                  ca_file = "ca.crt", client_cert = "optional" } }   -- tls and client_cert optional
--     srv:run()            -- until srv:stop(); or call srv:step(timeout) from your own loop
--
-- listen{...}: name (the listener's name in stats, faults and req.listener), handler(req) -> resp,
--   host ("127.0.0.1"), port (0 = ephemeral), tls = { cert_file, key_file, ca_file,
--   client_cert = nil | "optional" | "required" } (client certificates verified against ca_file),
--   internal = true for the admin listener (not counted, not logged, no faults).
--   Returns the base URL ("https://127.0.0.1:PORT") and the listener record.
--
-- req  = { method, path (raw, without query), query (raw), params (decoded, last value wins),
--          headers (lower-cased names; repeats joined by ", "), body, listener, base_url,
--          http_version, remote ("ip:port"),
--          client_cert = { subject = "CN=..,O=..", cn =, o =, orgs = {..}, issuer =, serial = } | nil }
-- resp = { status = 200, headers = { ["Content-Type"] = "..." } (a value may be a list: repeated header),
--          body = "..." , close = true (close the connection after it),
--          on_sent = function() end (called once the response has been written) }
-- The server sets Content-Length, Date and Connection itself. A handler that raises gets a 500
-- with a JSON body; the server keeps running. server.sleep(seconds) may be called from a
-- handler: it suspends only that connection.
--
-- Faults (srv:fault{...}): listener, method, path (a Lua pattern, anchored at both ends),
--   delay_ms, status (answered with {"error":"simulated fault","status":N}), retry_after (header),
--   close_mid_body (headers + half the body, then close), oversize (a body of N bytes),
--   times (how many matching requests it hits; nil = every one). The first live match applies.
--
-- Stats: connections, requests and the most requests in flight at once (max_in_flight) per
-- listener, and a bounded log of { listener, method, path, query, status } (never bodies, never
-- header values).
local socket = require "socket"
local ssl = require "ssl"
local util = require "pullsecret.sim.util"

local server = {}

local Server = {}
Server.__index = Server

local reasons = {
  [100] = "Continue", [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [301] = "Moved Permanently", [302] = "Found", [304] = "Not Modified",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [409] = "Conflict", [410] = "Gone", [411] = "Length Required",
  [413] = "Content Too Large", [415] = "Unsupported Media Type", [422] = "Unprocessable Entity",
  [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

--- A new server. opts: max_header_bytes (64 KiB), max_body_bytes (8 MiB), idle_timeout (60 s,
-- between requests on a kept-alive connection), io_timeout (30 s, within a request or handshake),
-- max_connections (500), log_max (1000 entries).
function server.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("server.new: options must be a table", 2) end
  local self = setmetatable({
    listeners = {},
    waiting = {},      -- socket -> { co, mode = "r"|"w", deadline }
    sleeping = {},     -- { co, wake }
    conns = {},        -- conn -> true (open connections)
    nconns = 0,
    faults = {},
    fault_seq = 0,
    in_flight = {},    -- listener name -> requests being served now
    max_header_bytes = opts.max_header_bytes or 64 * 1024,
    max_body_bytes = opts.max_body_bytes or 8 * 1024 * 1024,
    idle_timeout = opts.idle_timeout or 60,
    io_timeout = opts.io_timeout or 30,
    max_connections = opts.max_connections or 500,
    log_max = opts.log_max or 1000,
    stopped = false,
  }, Server)
  self:reset_stats()
  return self
end

--- Suspends the calling connection for `seconds` (only from a handler or connection coroutine).
function server.sleep(seconds)
  if not coroutine.isyieldable() then socket.sleep(seconds) return end
  coroutine.yield("sleep", nil, socket.gettime() + seconds)
end

-- Low-level I/O on a connection ------------------------------------------------------------

local function wait(conn, mode, timeout)
  return coroutine.yield(mode, conn.sock, socket.gettime() + timeout)
end

local function would_block(err)
  return err == "timeout" or err == "wantread" or err == "wantwrite"
end

-- Reads more bytes into conn.buf: true | nil, "closed"|"timeout"|message.
local function fill(conn, timeout)
  while true do
    local data, err, partial = conn.sock:receive(16384)
    local got = data or partial
    if got and #got > 0 then
      conn.buf = conn.buf .. got
      return true
    end
    if not would_block(err) then return nil, err end
    if not wait(conn, err == "wantwrite" and "w" or "r", timeout) then return nil, "timeout" end
  end
end

-- Reads exactly n bytes (buffered bytes first): string | nil, err.
local function read_exact(conn, n, timeout)
  local parts, have = {}, 0
  if #conn.buf > 0 then
    local take = math.min(n, #conn.buf)
    parts[1] = conn.buf:sub(1, take)
    conn.buf = conn.buf:sub(take + 1)
    have = take
  end
  while have < n do
    local data, err, partial = conn.sock:receive(math.min(n - have, 65536))
    local got = data or partial
    if got and #got > 0 then
      parts[#parts + 1] = got
      have = have + #got
    elseif not would_block(err) then
      return nil, err
    elseif not wait(conn, err == "wantwrite" and "w" or "r", timeout) then
      return nil, "timeout"
    end
  end
  return table.concat(parts)
end

-- Reads one CRLF-terminated line (without the CRLF): string | nil, err.
local function read_line(conn, limit, timeout)
  while true do
    local e = conn.buf:find("\r\n", 1, true)
    if e then
      local line = conn.buf:sub(1, e - 1)
      conn.buf = conn.buf:sub(e + 2)
      return line
    end
    if #conn.buf > limit then return nil, "too long" end
    local ok, err = fill(conn, timeout)
    if not ok then return nil, err end
  end
end

local function send_all(conn, data, timeout)
  local i, n = 1, #data
  while i <= n do
    local last, err, lastpart = conn.sock:send(data, i)
    if last then
      i = last + 1
    else
      if lastpart and lastpart >= i then i = lastpart + 1 end
      if not would_block(err) then return nil, err end
      if i <= n and not wait(conn, err == "wantread" and "r" or "w", timeout) then return nil, "timeout" end
    end
  end
  return true
end

-- Responses ---------------------------------------------------------------------------------

local function bad_header(s)
  return type(s) ~= "string" or s:find("[\r\n%z]") ~= nil
end

local skip_headers = { ["content-length"] = true, ["connection"] = true, ["date"] = true,
                       ["transfer-encoding"] = true }

-- The status line and header block for resp (validated; raises on a malformed response).
local function build_head(status, headers, body_len, keep_alive, http10)
  local out = { string.format("HTTP/1.1 %d %s", status, reasons[status] or "Status") }
  local names = {}
  for k in pairs(headers or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = headers[k]
    if not skip_headers[k:lower()] then
      local list = type(v) == "table" and v or { v }
      for _, item in ipairs(list) do
        item = tostring(item)
        if bad_header(k) or bad_header(item) or not k:find("^[%w!#$%%&'*+%-.^_`|~]+$") then
          error("handler returned an invalid header " .. string.format("%q", k), 0)
        end
        out[#out + 1] = k .. ": " .. item
      end
    end
  end
  if status ~= 204 and status ~= 304 and status >= 200 then
    out[#out + 1] = "Content-Length: " .. body_len
  end
  out[#out + 1] = "Date: " .. util.http_date()
  if not keep_alive then
    out[#out + 1] = "Connection: close"
  elseif http10 then
    out[#out + 1] = "Connection: keep-alive"
  end
  return table.concat(out, "\r\n") .. "\r\n\r\n"
end

local function error_json(status, message)
  return util.json(status, { error = reasons[status] or "error", message = message, status = status })
end

-- Faults ----------------------------------------------------------------------------------

local function anchor(pat)
  if pat:sub(1, 1) ~= "^" then pat = "^" .. pat end
  if pat:sub(-1) ~= "$" or pat:sub(-2) == "%$" then pat = pat .. "$" end
  return pat
end

--- Adds a fault (see the module header); returns its id.
function Server:fault(f)
  if type(f) ~= "table" then error("fault: expected a table", 2) end
  if f.path ~= nil and type(f.path) ~= "string" then error("fault: path must be a string (a Lua pattern)", 2) end
  if f.path then
    local ok, err = pcall(string.find, "", anchor(f.path))
    if not ok then error("fault: bad path pattern: " .. tostring(err), 2) end
  end
  local toint = function(v) return v ~= nil and (math.tointeger(tonumber(v)) or tonumber(v)) or nil end
  self.fault_seq = self.fault_seq + 1
  local rec = {
    id = self.fault_seq,
    listener = f.listener,
    method = f.method and tostring(f.method):upper() or nil,
    path = f.path and anchor(f.path) or nil,
    delay_ms = toint(f.delay_ms),
    status = toint(f.status),
    retry_after = f.retry_after ~= nil and tostring(f.retry_after) or nil,
    close_mid_body = f.close_mid_body == true,
    oversize = toint(f.oversize),
    times = toint(f.times),
    hits = 0,
  }
  if rec.status and (math.type(rec.status) ~= "integer" or rec.status < 200 or rec.status > 599) then
    error("fault: status must be an integer 200..599", 2)
  end
  self.faults[#self.faults + 1] = rec
  return rec.id
end

function Server:clear_faults()
  self.faults = {}
end

function Server:_match_fault(listener, method, path)
  for _, f in ipairs(self.faults) do
    if (f.times == nil or f.hits < f.times)
       and (f.listener == nil or f.listener == listener)
       and (f.method == nil or f.method == method)
       and (f.path == nil or path:find(f.path)) then
      f.hits = f.hits + 1
      return f
    end
  end
end

-- Stats -------------------------------------------------------------------------------------

function Server:reset_stats()
  self.counters = { connections = {}, requests = {}, max_in_flight = {} }
  self.log = {}
end

--- A copy: { connections = { name = n }, requests = { name = n }, max_in_flight = { name = n },
-- log = { {listener,method,path,query,status}... } }. max_in_flight: the most requests a listener
-- had read and not yet answered at one time (since the last reset).
function Server:stats()
  local c = { connections = {}, requests = {}, max_in_flight = {}, log = util.array() }
  for k, v in pairs(self.counters.connections) do c.connections[k] = v end
  for k, v in pairs(self.counters.requests) do c.requests[k] = v end
  for k, v in pairs(self.counters.max_in_flight) do c.max_in_flight[k] = v end
  for i, e in ipairs(self.log) do
    c.log[i] = { listener = e.listener, method = e.method, path = e.path, query = e.query, status = e.status }
  end
  return c
end

function Server:_count(kind, l)
  if l.internal then return end
  local t = self.counters[kind]
  t[l.name] = (t[l.name] or 0) + 1
end

function Server:_log(l, req, status)
  if l.internal then return end
  local log = self.log
  log[#log + 1] = { listener = l.name, method = req and req.method or "", path = req and req.path or "",
                    query = req and req.query or "", status = status }
  if #log > self.log_max then table.remove(log, 1) end
end

-- Requests ----------------------------------------------------------------------------------

local function client_cert_info(sock)
  local cert = sock.getpeercertificate and sock:getpeercertificate()
  if not cert then return nil end
  local parts, info = {}, { orgs = {} }
  local short = { commonName = "CN", organizationName = "O", organizationalUnitName = "OU",
                  countryName = "C", localityName = "L", stateOrProvinceName = "ST" }
  for _, e in ipairs(cert:subject()) do
    local name = short[e.name] or e.name or e.oid
    parts[#parts + 1] = name .. "=" .. tostring(e.value)
    if name == "CN" and not info.cn then info.cn = e.value end
    if name == "O" then
      info.o = info.o or e.value
      info.orgs[#info.orgs + 1] = e.value
    end
  end
  info.subject = table.concat(parts, ",")
  local iparts = {}
  for _, e in ipairs(cert:issuer()) do iparts[#iparts + 1] = (short[e.name] or e.name) .. "=" .. tostring(e.value) end
  info.issuer = table.concat(iparts, ",")
  info.serial = cert:serial()
  return info
end

-- Parses the head of a request out of conn.buf: req | nil, status, message | nil, "closed"/"timeout".
function Server:_read_request(conn)
  local first = true
  local head
  while true do
    -- tolerate empty lines before a request line (RFC 9112 section 2.2)
    local lead = conn.buf:match("^[\r\n]+")
    if lead then conn.buf = conn.buf:sub(#lead + 1) end
    local e = conn.buf:find("\r\n\r\n", 1, true)
    if e then
      head = conn.buf:sub(1, e + 1)
      conn.buf = conn.buf:sub(e + 4)
      break
    end
    if #conn.buf > self.max_header_bytes then return nil, 431, "request head too large" end
    local ok, err = fill(conn, (first and #conn.buf == 0) and self.idle_timeout or self.io_timeout)
    if not ok then
      if #conn.buf > 0 then return nil, 400, "incomplete request" end
      return nil, err
    end
    first = false
  end
  if #head > self.max_header_bytes then return nil, 431, "request head too large" end
  local line_end = head:find("\r\n", 1, true)
  local method, target, version = head:sub(1, line_end - 1):match("^([%w!#$%%&'*+%-.^_`|~]+) (%S+) HTTP/(1%.[01])$")
  if not method then return nil, 400, "malformed request line" end
  if target:find("[%c]") then return nil, 400, "malformed request target" end
  local headers = {}
  for line in head:sub(line_end + 2):gmatch("(.-)\r\n") do
    if line:find("^[ \t]") then return nil, 400, "obsolete header folding" end
    local name, value = line:match("^([%w!#$%%&'*+%-.^_`|~]+):[ \t]*(.-)[ \t]*$")
    if not name or value:find("[%z\r\n]") then return nil, 400, "malformed header line" end
    name = name:lower()
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  local path, query
  if target:find("^https?://") then target = target:match("^https?://[^/]*(.*)$") end
  if target == "" then target = "/" end
  if target == "*" then
    path, query = "*", ""
  else
    if target:sub(1, 1) ~= "/" then return nil, 400, "malformed request target" end
    path, query = target:match("^([^?#]*)%??([^#]*)")
  end
  local req = { method = method, path = path, query = query, headers = headers,
                http_version = version, body = "" }
  req.params = util.parse_query(query)
  return req
end

-- Reads the request body per Content-Length or chunked: true | nil, status, message.
function Server:_read_body(conn, req)
  local h = req.headers
  local te, cl = h["transfer-encoding"], h["content-length"]
  if te and cl then return nil, 400, "both Transfer-Encoding and Content-Length" end
  local expect = h.expect and h.expect:lower() == "100-continue"
  local function continue()
    if expect and req.http_version == "1.1" then
      expect = false
      return send_all(conn, "HTTP/1.1 100 Continue\r\n\r\n", self.io_timeout)
    end
    return true
  end
  if te then
    if te:lower():gsub("%s", "") ~= "chunked" then return nil, 501, "unsupported Transfer-Encoding" end
    if not continue() then return nil, "closed" end
    local parts, total = {}, 0
    while true do
      local line, err = read_line(conn, 1024, self.io_timeout)
      if not line then return nil, err == "too long" and 400 or err, "malformed chunk size" end
      local size = line:match("^(%x+)%s*;?.*$")
      if not size or #size > 8 then return nil, 400, "malformed chunk size" end
      size = tonumber(size, 16)
      if size == 0 then break end
      total = total + size
      if total > self.max_body_bytes then return nil, 413, "request body too large" end
      local data, derr = read_exact(conn, size + 2, self.io_timeout)
      if not data then return nil, derr end
      if data:sub(-2) ~= "\r\n" then return nil, 400, "malformed chunk" end
      parts[#parts + 1] = data:sub(1, -3)
    end
    -- trailers, up to the empty line
    while true do
      local line, err = read_line(conn, self.max_header_bytes, self.io_timeout)
      if not line then return nil, err == "too long" and 431 or err, "malformed trailers" end
      if line == "" then break end
    end
    req.body = table.concat(parts)
  elseif cl then
    if not cl:find("^%d+$") or #cl > 15 then return nil, 400, "malformed Content-Length" end
    local n = tonumber(cl)
    if n > self.max_body_bytes then return nil, 413, "request body too large" end
    if n > 0 then
      if not continue() then return nil, "closed" end
      local data, err = read_exact(conn, n, self.io_timeout)
      if not data then return nil, err end
      req.body = data
    end
  end
  return true
end

local function call_handler(l, req)
  local ok, resp = pcall(l.handler, req)
  if not ok then
    io.stderr:write("pullsecret sim: handler for ", l.name, " raised: ", tostring(resp), "\n")
    return error_json(500, "handler error: " .. tostring(resp):gsub("[\r\n]", " "):sub(1, 300))
  end
  if type(resp) ~= "table" or math.type(resp.status) ~= "integer" or resp.status < 100 or resp.status > 599
     or (resp.body ~= nil and type(resp.body) ~= "string")
     or (resp.headers ~= nil and type(resp.headers) ~= "table") then
    io.stderr:write("pullsecret sim: handler for ", l.name, " returned an invalid response\n")
    return error_json(500, "handler returned an invalid response")
  end
  return resp
end

local function wants_keep_alive(req)
  local c = (req.headers.connection or ""):lower()
  if req.http_version == "1.0" then return c:find("keep%-alive") ~= nil end
  return not c:find("close")
end

-- Writes resp; returns true to keep the connection open.
function Server:_respond(conn, req, resp, keep_alive, cut)
  local body = resp.body or ""
  local status = resp.status
  if resp.close then keep_alive = false end
  if cut then keep_alive = false end
  local ok_head, head = pcall(build_head, status, resp.headers, #body, keep_alive, req and req.http_version == "1.0")
  if not ok_head then
    io.stderr:write("pullsecret sim: ", tostring(head), "\n")
    resp = error_json(500, tostring(head))
    body, status = resp.body, 500
    head = build_head(status, resp.headers, #body, keep_alive, req and req.http_version == "1.0")
  end
  if (req and req.method == "HEAD") or status == 204 or status == 304 then body = "" end
  local data = head
  if cut then
    data = data .. body:sub(1, #body // 2)
  elseif #body < 65536 then
    data = data .. body
  end
  local ok = send_all(conn, data, self.io_timeout)
  if ok and not cut and #body >= 65536 and not (req and req.method == "HEAD") then
    ok = send_all(conn, body, self.io_timeout)
  end
  self:_log(conn.l, req, status)
  if ok and resp.on_sent then pcall(resp.on_sent) end
  return ok and keep_alive
end

-- Serves one request, counting it in flight meanwhile.
function Server:_handle(conn, req)
  local l = conn.l
  if l.internal then return self:_answer(conn, req) end
  local n = (self.in_flight[l.name] or 0) + 1
  self.in_flight[l.name] = n
  local max = self.counters.max_in_flight
  if n > (max[l.name] or 0) then max[l.name] = n end
  local ok, keep = pcall(self._answer, self, conn, req)
  self.in_flight[l.name] = self.in_flight[l.name] - 1
  if not ok then error(keep, 0) end
  return keep
end

function Server:_answer(conn, req)
  local l = conn.l
  req.listener = l.name
  req.base_url = l.url
  req.client_cert = conn.client_cert
  req.remote = conn.remote
  local fault = not l.internal and self:_match_fault(l.name, req.method, req.path) or nil
  local resp
  if fault then
    if fault.delay_ms and fault.delay_ms > 0 then server.sleep(fault.delay_ms / 1000) end
    if fault.oversize then
      resp = util.response(fault.status or 200, "application/octet-stream", string.rep("x", fault.oversize))
    elseif fault.status then
      resp = util.json(fault.status, { error = "simulated fault", status = fault.status })
    end
  end
  if not resp then resp = call_handler(l, req) end
  local cut = false
  if fault then
    if fault.retry_after then
      resp.headers = resp.headers or {}
      resp.headers["Retry-After"] = fault.retry_after
    end
    if fault.close_mid_body then
      cut = true
      if #(resp.body or "") < 2 then resp.body = util.encode({ padding = string.rep("x", 1024) }) end
    end
  end
  return self:_respond(conn, req, resp, wants_keep_alive(req), cut)
end

-- One connection's life: TLS handshake, then requests until close.
function Server:_serve(conn)
  local l = conn.l
  if l.ctx then
    local ctx = l.new_ctx and l.new_ctx() or l.ctx
    local wrapped, err = ssl.wrap(conn.sock, ctx)
    if not wrapped then return nil, err end
    conn.sock = wrapped
    wrapped:settimeout(0)
    local deadline = socket.gettime() + self.io_timeout
    while true do
      local ok, herr = wrapped:dohandshake()
      if ok then break end
      local left = deadline - socket.gettime()
      if herr == "wantread" or herr == "wantwrite" then
        if left <= 0 or not wait(conn, herr == "wantread" and "r" or "w", left) then return nil, "handshake timeout" end
      else
        return nil, herr
      end
    end
    if l.client_cert then conn.client_cert = client_cert_info(wrapped) end
  end
  while true do
    local req, status, message = self:_read_request(conn)
    if not req then
      if type(status) == "number" then
        self:_count("requests", l)
        self:_respond(conn, nil, error_json(status, message), false)
      end
      return
    end
    self:_count("requests", l)
    local ok, bstatus, bmessage = self:_read_body(conn, req)
    if not ok then
      if type(bstatus) == "number" then self:_respond(conn, req, error_json(bstatus, bmessage), false) end
      return
    end
    if not self:_handle(conn, req) then return end
    if self.stopped then return end
  end
end

function Server:_accept(l)
  for _ = 1, 64 do
    local c = l.sock:accept()
    if not c then return end
    if self.nconns >= self.max_connections then
      c:close()
    else
      c:settimeout(0)
      c:setoption("tcp-nodelay", true)
      self:_count("connections", l)
      local ip, port = c:getpeername()
      local conn = { l = l, sock = c, buf = "", remote = tostring(ip) .. ":" .. tostring(port) }
      self.conns[conn] = true
      self.nconns = self.nconns + 1
      local co = coroutine.create(function()
        local ok, err = pcall(self._serve, self, conn)
        if not ok then io.stderr:write("pullsecret sim: connection error: ", tostring(err), "\n") end
        conn.sock:close()
        self.conns[conn] = nil
        self.nconns = self.nconns - 1
      end)
      self:_resume(co)
    end
  end
end

-- Scheduler ---------------------------------------------------------------------------------

function Server:_resume(co, ...)
  local ok, what, sock, deadline = coroutine.resume(co, ...)
  if not ok then
    io.stderr:write("pullsecret sim: coroutine error: ", tostring(what), "\n")
    return
  end
  if coroutine.status(co) == "dead" then return end
  if what == "r" or what == "w" then
    self.waiting[sock] = { co = co, mode = what, deadline = deadline }
  elseif what == "sleep" then
    self.sleeping[#self.sleeping + 1] = { co = co, wake = deadline }
  else
    error("server: unexpected yield from a connection: " .. tostring(what))
  end
end

--- Runs the loop once: waits up to `timeout` seconds (default 1) for activity and serves it.
function Server:step(timeout)
  local now = socket.gettime()
  local limit = timeout or 1
  local recvt, sendt, immediate = {}, {}, {}
  for _, l in ipairs(self.listeners) do recvt[#recvt + 1] = l.sock end
  for sock, w in pairs(self.waiting) do
    if w.mode == "r" then
      if sock.dirty and sock:dirty() then
        immediate[#immediate + 1] = sock
      else
        recvt[#recvt + 1] = sock
      end
    else
      sendt[#sendt + 1] = sock
    end
    if w.deadline then limit = math.min(limit, w.deadline - now) end
  end
  for _, s in ipairs(self.sleeping) do limit = math.min(limit, s.wake - now) end
  if #immediate > 0 or limit < 0 then limit = 0 end
  local r, w = socket.select(recvt, sendt, limit)
  r, w = r or {}, w or {}
  for _, l in ipairs(self.listeners) do
    if r[l.sock] then self:_accept(l) end
  end
  local ready = {}
  for _, sock in ipairs(immediate) do ready[sock] = true end
  for _, sock in ipairs(r) do if self.waiting[sock] then ready[sock] = true end end
  for _, sock in ipairs(w) do if self.waiting[sock] then ready[sock] = true end end
  now = socket.gettime()
  for sock, wt in pairs(self.waiting) do
    if not ready[sock] and wt.deadline and wt.deadline <= now then ready[sock] = false end
  end
  local runs = {}
  for sock, v in pairs(ready) do
    runs[#runs + 1] = { self.waiting[sock].co, v }
    self.waiting[sock] = nil
  end
  local still = {}
  for _, s in ipairs(self.sleeping) do
    if s.wake <= now then runs[#runs + 1] = { s.co, true } else still[#still + 1] = s end
  end
  self.sleeping = still
  for _, run in ipairs(runs) do self:_resume(run[1], run[2]) end
end

--- Serves until srv:stop() (or opts.until_fn() returns true); opts.tick() runs about every `opts.interval` s.
function Server:run(opts)
  opts = opts or {}
  local interval = opts.interval or 0.5
  local next_tick = socket.gettime() + interval
  while not self.stopped do
    self:step(interval)
    if opts.until_fn and opts.until_fn() then break end
    if opts.tick and socket.gettime() >= next_tick then
      next_tick = socket.gettime() + interval
      opts.tick()
    end
  end
end

--- Asks run() to return after the current step.
function Server:stop()
  self.stopped = true
end

--- Closes every listener and connection.
function Server:close()
  self.stopped = true
  for _, l in ipairs(self.listeners) do l.sock:close() end
  self.listeners = {}
  for conn in pairs(self.conns) do conn.sock:close() end
  self.conns, self.waiting, self.sleeping, self.nconns = {}, {}, {}, 0
end

--- Opens a listener (see the module header); returns its base URL and record.
function Server:listen(opts)
  if type(opts) ~= "table" or type(opts.name) ~= "string" or type(opts.handler) ~= "function" then
    error("listen: expected { name = string, handler = function }", 2)
  end
  local host = opts.host or "127.0.0.1"
  local sock, err = (host:find(":") and socket.tcp6 or socket.tcp4)()
  if not sock then return nil, err end
  sock:setoption("reuseaddr", true)
  local ok
  ok, err = sock:bind(host, opts.port or 0)
  if not ok then sock:close() return nil, "bind " .. host .. ": " .. tostring(err) end
  ok, err = sock:listen(128)
  if not ok then sock:close() return nil, err end
  sock:settimeout(0)
  local _, port = sock:getsockname()
  local l = { name = opts.name, handler = opts.handler, sock = sock, port = tonumber(port),
              internal = opts.internal == true }
  local hostpart = host:find(":") and ("[" .. host .. "]") or host
  if opts.tls then
    local t = opts.tls
    local params = {
      mode = "server", protocol = "any", key = t.key_file, certificate = t.cert_file,
      options = { "all", "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1_1" },
      alpn = { "http/1.1" },
    }
    if t.client_cert then
      params.cafile = t.ca_file
      params.verify = t.client_cert == "required" and { "peer", "fail_if_no_peer_cert" } or { "peer" }
      l.client_cert = t.client_cert
    else
      params.verify = "none"
    end
    local ctx, cerr = ssl.newcontext(params)
    if not ctx then sock:close() return nil, "TLS context: " .. tostring(cerr) end
    l.ctx = ctx
    if t.client_cert then
      -- LuaSec cannot set a session-id context, and OpenSSL refuses to resume a session on a
      -- context that verifies peers without one ("tlsv1 alert internal error"). A fresh context
      -- per connection has its own ticket key and session cache, so clients never resume here.
      l.new_ctx = function() return ssl.newcontext(params) end
    end
    l.url = "https://" .. hostpart .. ":" .. port
  else
    l.url = "http://" .. hostpart .. ":" .. port
  end
  self.listeners[#self.listeners + 1] = l
  return l.url, l
end

return server
