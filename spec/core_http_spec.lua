-- The core HTTP client against real servers over real sockets: the simulator (plain and
-- TLS, with its throwaway CA), a one-shot raw server for responses the simulator does not
-- make, and nghttpd for HTTP/2 (pending when nghttpd is not installed).
-- What a caller sees: statuses, bodies, headers, TLS failures that fail closed, connection
-- reuse, batches in input order, the size cap, and injection attempts refused before any
-- byte reaches a server.
local core = require "pullsecret.core"
local sim = require "pullsecret.sim"
local certs = require "pullsecret.sim.certs"
local socket = require "socket"
local cjson = require "cjson.safe"
local host = require "spec.helpers.host"

local q, closed_port = host.q, host.closed_port

-- A server in a child process that accepts ONE connection, reads the request head,
-- optionally sleeps, writes `response` verbatim (with "$REQUEST_LINE" replaced by the
-- request line it received) and closes. Returns its base URL and a
-- function that waits for the child to exit.
local function raw_server(response, delay)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(([[
local socket = require "socket"
local srv = assert(socket.bind("127.0.0.1", 0))
local _, port = srv:getsockname()
io.stdout:write(port, "\n")
io.stdout:flush()
srv:settimeout(10)
local c = srv:accept()
if c then
  c:settimeout(10)
  local first = c:receive("*l")
  local line = first
  while line and line ~= "" do line = c:receive("*l") end
  socket.sleep(%s)
  c:send((%q):gsub("%%$REQUEST_LINE", function() return first or "" end))
  c:close()
end
]]):format(delay or 0, response))
  f:close()
  local p = assert(io.popen("lua5.4 " .. q(script)))
  local port = assert(p:read("l"), "raw server did not start")
  return "http://127.0.0.1:" .. port, function()
    p:close()
    os.remove(script)
  end
end

describe("core client over HTTP and TLS (simulator)", function()
  local s, plain
  setup(function()
    s = sim.start{ services = { echo = true } }
    plain = sim.start{ tls = false, services = { echo = true } }
  end)
  teardown(function()
    if s then s:stop() end
    if plain then plain:stop() end
  end)

  describe("plain HTTP", function()
    it("returns status, body, lower-cased headers and timing", function()
      local c <close> = core.client{}
      assert.matches("^http://127%.0%.0%.1:%d+$", plain.urls.echo)
      local res, err = c:request{ url = plain.urls.echo .. "/hello?x=1&y=a%20b",
                                  headers = { ["X-Trace"] = "abc", ["X-Empty"] = "" } }
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      assert.are.equal("1.1", res.http_version)
      assert.are.equal("application/json", res.headers["content-type"])
      assert.are.equal(tostring(#res.body), res.headers["content-length"])
      assert.is_number(res.seconds)
      assert.is_true(res.seconds > 0 and res.seconds < 10)
      local names = {}
      for _, h in ipairs(res.raw_headers) do
        assert.are.equal(h[1]:lower(), h[1])
        names[#names + 1] = h[1]
      end
      assert.are.same({ "content-type", "content-length", "date" }, { names[1], names[2], names[3] })
      local echo = assert(cjson.decode(res.body))
      assert.are.equal("GET", echo.method)
      assert.are.equal("/hello", echo.path)
      assert.are.same({ x = "1", y = "a b" }, echo.params)
      assert.are.equal("abc", echo.headers["x-trace"])
      assert.are.equal("", echo.headers["x-empty"])
      assert.are.equal("pullsecret/0.1", echo.headers["user-agent"])
    end)

    it("sends methods and bodies exactly as given, with no invented Content-Type", function()
      local c <close> = core.client{ user_agent = "spec/1" }
      local res = assert(c:request{ method = "PUT", url = plain.urls.echo .. "/put",
        body = '{"a":1}', headers = { ["Content-Type"] = "application/json" } })
      local echo = cjson.decode(res.body)
      assert.are.same({ "PUT", '{"a":1}', "application/json", "7", "spec/1" },
        { echo.method, echo.body, echo.headers["content-type"], echo.headers["content-length"],
          echo.headers["user-agent"] })
      res = assert(c:request{ url = plain.urls.echo .. "/post", body = "raw bytes \0\1" })
      echo = cjson.decode(res.body)
      assert.are.equal("POST", echo.method)          -- a body without a method is a POST
      assert.are.equal("raw bytes \0\1", echo.body)
      assert.is_nil(echo.headers["content-type"])
      assert.is_nil(echo.headers["expect"])
      res = assert(c:request{ method = "DELETE", url = plain.urls.echo .. "/thing" })
      assert.are.equal("DELETE", cjson.decode(res.body).method)
      res = assert(c:request{ method = "POST", url = plain.urls.echo .. "/empty" })
      echo = cjson.decode(res.body)
      assert.are.same({ "POST", "", "0" }, { echo.method, echo.body, echo.headers["content-length"] })
      res = assert(c:request{ method = "HEAD", url = plain.urls.echo .. "/bytes/100" })
      assert.are.same({ 200, "", "100" }, { res.status, res.body, res.headers["content-length"] })
    end)

    it("sends the fields a request table's __index computes, even if the collector runs meanwhile", function()
      local c <close> = core.client{}
      local junk, n = {}, 0
      local function url()
        n = n + 1
        return plain.urls.echo .. "/computed/" .. string.format("%08d", n) .. ("p"):rep(40)
      end
      local len = #url()
      -- url, body and method come from __index (referenced by nothing else); while the
      -- headers are read, the collector runs and strings of the same sizes take their memory.
      local req = setmetatable({}, { __index = function(_, k)
        if k == "url" then return url()
        elseif k == "body" then return ("b"):rep(24) .. string.format("%08d", n)
        elseif k == "method" then return ("PUT"):lower():upper()
        elseif k == "headers" then
          collectgarbage()
          collectgarbage()
          for i = 1, 200 do junk[i] = ("\1"):rep(len - 8) .. string.format("%08d", i) end
          for i = 201, 400 do junk[i] = ("\1"):rep(24) .. string.format("%08d", i) end
          return { ["X-Made"] = ("made by __index"):sub(1) }
        end
      end })
      local res, err = c:request(req)
      assert.is_nil(err)
      local echo = assert(cjson.decode(res.body))
      assert.are.same({ "PUT", "/computed/00000002" .. ("p"):rep(40), ("b"):rep(24) .. "00000002",
                        "made by __index" },
        { echo.method, echo.path, echo.body, echo.headers["x-made"] })
      assert.are.equal(400, #junk)
    end)

    it("returns 4xx and 5xx statuses as results, not errors", function()
      local c <close> = core.client{}
      for _, code in ipairs{ 404, 409, 503 } do
        local res, err = c:request{ url = plain.urls.echo .. "/status/" .. code }
        assert.is_nil(err)
        assert.are.equal(code, res.status)
        assert.are.equal(code, cjson.decode(res.body).status)
      end
    end)

    it("uses one connection for sequential requests on one client", function()
      s:reset_stats()
      plain:reset_stats()
      local c <close> = core.client{}
      for i = 1, 5 do
        assert.are.equal(200, assert(c:request{ url = plain.urls.echo .. "/n/" .. i }).status)
      end
      local st = plain:stats()
      assert.are.equal(5, st.requests.echo)
      assert.are.equal(1, st.connections.echo)
      -- and a second client opens its own
      local c2 <close> = core.client{}
      assert(c2:request{ url = plain.urls.echo .. "/other" })
      assert.are.equal(2, plain:stats().connections.echo)
    end)
  end)

  describe("TLS", function()
    it("verifies the server against a CA given as PEM text or as a file", function()
      for _, opts in ipairs{ { ca_pem = s.ca_pem }, { ca_file = s.ca_file } } do
        local c <close> = core.client(opts)
        local res, err = c:request{ url = s.urls.echo .. "/tls" }
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        assert.are.equal("/tls", cjson.decode(res.body).path)
      end
    end)

    it("uses one connection (and one handshake) for sequential requests", function()
      s:reset_stats()
      local c <close> = core.client{ ca_pem = s.ca_pem }
      for i = 1, 4 do assert(c:request{ url = s.urls.echo .. "/seq/" .. i }) end
      local st = s:stats()
      assert.are.equal(4, st.requests.echo)
      assert.are.equal(1, st.connections.echo)
    end)

    it("fails closed with kind 'tls' when the CA is unknown", function()
      local dir = assert(certs.tempdir())
      local other = assert(certs.generate{ dir = dir })
      finally(function() certs.remove(dir) end)
      for _, opts in ipairs{ {}, { ca_file = other.ca_crt }, { insecure = false, ca_file = other.ca_crt } } do
        local c <close> = core.client(opts)
        local res, err = c:request{ url = s.urls.echo .. "/secret" }
        assert.is_nil(res)
        assert.are.equal("tls", err.kind)
        assert.are.equal(60, err.code)                 -- CURLE_PEER_FAILED_VERIFICATION
        assert.matches("certificate", err.message)
      end
    end)

    it("fails closed when the certificate is for another host name", function()
      -- the sim's certificate names localhost and 127.0.0.1; connect_to sends a request for
      -- wrong.example to the same listener, so only the name differs
      local port = s.urls.echo:match(":(%d+)$")
      local c <close> = core.client{ ca_pem = s.ca_pem, connect_to = {
        "wrong.example:" .. port .. ":127.0.0.1:" .. port, "localhost:" .. port .. ":127.0.0.1:" .. port } }
      local res, err = c:request{ url = "https://wrong.example:" .. port .. "/x" }
      assert.is_nil(res)
      assert.are.equal("tls", err.kind)
      assert.are.equal(60, err.code)
      assert.matches("wrong%.example", err.message)
      -- the same listener under a name the certificate holds is fine
      res, err = c:request{ url = "https://localhost:" .. port .. "/x" }
      assert.is_nil(err)
      assert.are.equal(200, res.status)
    end)

    it("skips verification only when insecure = true", function()
      local port = s.urls.echo:match(":(%d+)$")
      local c <close> = core.client{ insecure = true,
        connect_to = { "wrong.example:" .. port .. ":127.0.0.1:" .. port } }
      assert.are.equal(200, assert(c:request{ url = s.urls.echo .. "/insecure" }).status)
      assert.are.equal(200, assert(c:request{ url = "https://wrong.example:" .. port .. "/x" }).status)
      local strict <close> = core.client{ insecure = false }
      local _, err = strict:request{ url = s.urls.echo .. "/strict" }
      assert.are.equal("tls", err.kind)
    end)

    it("presents a client certificate from PEM text or from files", function()
      local m = sim.start{ services = { echo = true }, client_ca = { echo = "optional" } }
      finally(function() m:stop() end)
      local pem <close> = core.client{ ca_pem = m.ca_pem, cert_pem = m.client_cert_pem,
                                       key_pem = m.client_key_pem }
      local res = assert(pem:request{ url = m.urls.echo .. "/whoami" })
      local cert = cjson.decode(res.body).client_cert
      assert.is_table(cert)
      assert.matches("sim%-admin", cert.subject)
      local files <close> = core.client{ ca_file = m.ca_file, cert_file = m.client_cert_file,
                                         key_file = m.client_key_file }
      res = assert(files:request{ url = m.urls.echo .. "/whoami" })
      assert.matches("sim%-admin", cjson.decode(res.body).client_cert.subject)
      local none <close> = core.client{ ca_file = m.ca_file }
      res = assert(none:request{ url = m.urls.echo .. "/whoami" })
      assert.is_nil(cjson.decode(res.body).client_cert)
    end)

    it("reports a client key that does not parse as kind 'tls'", function()
      local c <close> = core.client{ ca_pem = s.ca_pem, cert_pem = s.client_cert_pem,
                                     key_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" }
      local res, err = c:request{ url = s.urls.echo .. "/x" }
      assert.is_nil(res)
      assert.are.equal("tls", err.kind)
    end)
  end)

  describe("batch", function()
    it("returns results in input order, with per-request failures", function()
      s:reset_stats()
      local c <close> = core.client{ ca_pem = s.ca_pem }
      local dead = "http://127.0.0.1:" .. closed_port() .. "/"
      local results = c:batch({
        { url = s.urls.echo .. "/bytes/3" },
        { url = s.urls.echo .. "/x", headers = { ["X-A"] = "1\r\nX-Injected: 1" } },
        { url = s.urls.echo .. "/status/404" },
        { url = "gopher://127.0.0.1/" },
        { url = dead, connect_timeout_ms = 2000 },
        { url = s.urls.echo .. "/bytes/5", method = "GET" },
      }, { concurrency = 2 })
      assert.are.equal(6, #results)
      assert.are.same({ 200, "abc" }, { results[1].status, results[1].body })
      assert.are.same({ kind = "input", code = 0, message = "header X-A: value contains CR, LF or NUL" },
        results[2].error)
      assert.are.equal(404, results[3].status)
      assert.are.equal("input", results[4].error.kind)
      assert.are.same({ "transport", 7 }, { results[5].error.kind, results[5].error.code })
      assert.are.same({ 200, "abcde" }, { results[6].status, results[6].body })
      assert.are.equal(3, s:stats().requests.echo)   -- the refused ones never left
    end)

    it("keeps an earlier request's header strings alive while a later request is read", function()
      local c <close> = core.client{}
      local stamp = string.format("%d", os.time())
      local h1 = { [("X-Name-"):rep(3) .. stamp] = ("header-value-"):rep(4) .. stamp }
      local reused = {}
      -- request 2's __index empties request 1's headers table and collects its strings
      local second = setmetatable({}, { __index = function(_, k)
        if k == "url" then
          for name in pairs(h1) do h1[name] = nil end
          collectgarbage()
          collectgarbage()
          for i = 1, 2000 do reused[i] = ("\1"):rep(60) .. i end      -- new strings take the freed memory
          return plain.urls.echo .. "/second"
        end
      end })
      local results = c:batch({ { url = plain.urls.echo .. "/first", headers = h1 }, second })
      local echo = assert(cjson.decode(results[1].body))
      assert.are.equal(("header-value-"):rep(4) .. stamp, echo.headers[("x-name-"):rep(3) .. stamp])
      assert.are.equal("/second", cjson.decode(results[2].body).path)
      assert.are.equal(2000, #reused)
    end)

    it("runs a plain-HTTP batch fully concurrently (HTTP/2 enabled waits only for TLS connections)", function()
      plain:fault{ listener = "echo", path = "/slow/.*", delay_ms = 300 }
      plain:reset_stats()
      local c <close> = core.client{}                     -- http2 = true by default
      local reqs = {}
      for i = 1, 4 do reqs[i] = { url = plain.urls.echo .. "/slow/" .. i } end
      local results = c:batch(reqs, { concurrency = 4 })
      plain:clear_faults()
      for i = 1, 4 do assert.are.equal(200, results[i].status) end
      assert.are.equal(4, plain:stats().max_in_flight.echo)
    end)

    it("keeps the input order for many concurrent requests", function()
      local c <close> = core.client{ ca_pem = s.ca_pem }
      local reqs = {}
      for i = 1, 24 do reqs[i] = { url = s.urls.echo .. "/item/" .. i } end
      local results = c:batch(reqs, { concurrency = 6 })
      assert.are.equal(24, #results)
      for i = 1, 24 do
        assert.are.equal("/item/" .. i, cjson.decode(results[i].body).path)
      end
    end)
  end)

  describe("size cap", function()
    it("returns a body of exactly max_body_bytes and refuses one byte more with 'too_large'", function()
      local c <close> = core.client{ ca_pem = s.ca_pem }
      local res = assert(c:request{ url = s.urls.echo .. "/bytes/1000", max_body_bytes = 1000 })
      assert.are.equal(1000, #res.body)
      local err
      res, err = c:request{ url = s.urls.echo .. "/bytes/1001", max_body_bytes = 1000 }
      assert.is_nil(res)
      assert.are.equal("too_large", err.kind)
      assert.are.equal("response body larger than max_body_bytes (1000 bytes)", err.message)
    end)

    it("applies a 16 MiB cap by default", function()
      local c <close> = core.client{ ca_pem = s.ca_pem }
      local res, err = c:request{ url = s.urls.echo .. "/bytes/" .. (16 * 1024 * 1024 + 1) }
      assert.is_nil(res)
      assert.are.equal("too_large", err.kind)
      assert.matches("16777216 bytes", err.message)
    end)

    it("refuses a body without Content-Length while it streams in", function()
      local url, wait = raw_server("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" .. ("z"):rep(5000))
      local c <close> = core.client{}
      local res, err = c:request{ url = url .. "/stream", max_body_bytes = 4096 }
      wait()
      assert.is_nil(res)
      assert.are.equal("too_large", err.kind)
      assert.are.equal(23, err.code)                  -- CURLE_WRITE_ERROR: aborted by the cap
    end)

    it("reports a body cut off mid-way as an error, never as a short body", function()
      local c <close> = core.client{ ca_pem = s.ca_pem }
      s:fault{ listener = "echo", path = "/cut", close_mid_body = true, times = 1 }
      local res, err = c:request{ url = s.urls.echo .. "/cut" }
      s:clear_faults()
      assert.is_nil(res)
      assert.are.equal("transport", err.kind)
      assert.are.equal(18, err.code)                  -- CURLE_PARTIAL_FILE
    end)
  end)

  describe("injection", function()
    it("refuses CR/LF/NUL in headers and URLs and bad schemes before anything is sent", function()
      s:reset_stats()
      local c <close> = core.client{ ca_pem = s.ca_pem }
      local base = s.urls.echo
      local attempts = {
        { url = base .. "/x", headers = { ["X-A"] = "v\r\nX-Injected: yes" } },
        { url = base .. "/x", headers = { ["X-A"] = "v\nX-Injected: yes" } },
        { url = base .. "/x", headers = { ["X-A"] = "v\rX-Injected: yes" } },
        { url = base .. "/x", headers = { ["X-A"] = "v\0X-Injected: yes" } },
        { url = base .. "/x", headers = { ["X-A\r\nX-Injected"] = "yes" } },
        { url = base .. "/x", headers = { ["X-A: v\r\n"] = "yes" } },
        { url = base .. "/x\r\nX-Injected: yes" },
        { url = base .. "/x HTTP/1.1\r\nX-Injected: yes\r\n\r\nGET /y" },
        { url = base .. "/x\0" },
        { url = base .. "/x", method = "GET /y HTTP/1.1\r\nX-Injected: yes\r\n\r\nGET" },
        { url = base:gsub("^https", "ftp") .. "/x" },
        { url = base:gsub("^https", "file") .. "/x" },
      }
      for i, req in ipairs(attempts) do
        local res, err = c:request(req)
        assert.is_nil(res, "attempt " .. i)
        assert.are.same({ "input", 0 }, { err.kind, err.code }, "attempt " .. i)
      end
      local results = c:batch(attempts)
      for i = 1, #attempts do assert.are.equal("input", results[i].error.kind) end
      local st = s:stats()
      assert.are.equal(0, st.requests.echo or 0)
      assert.are.equal(0, st.connections.echo or 0)
    end)
  end)
end)

describe("core client against a raw server", function()
  it("lower-cases header names, joins repeated headers with ', ' and keeps every occurrence", function()
    local url, wait = raw_server("HTTP/1.1 201 Created\r\nX-Dup: one\r\nSet-Cookie: a=1\r\n"
      .. "x-dup:  two  \r\nSet-Cookie: b=2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    local c <close> = core.client{}
    local res = assert(c:request{ url = url .. "/" })
    wait()
    assert.are.equal(201, res.status)
    assert.are.equal("ok", res.body)
    assert.are.equal("one, two", res.headers["x-dup"])
    assert.are.equal("a=1, b=2", res.headers["set-cookie"])
    assert.are.same({ { "x-dup", "one" }, { "set-cookie", "a=1" }, { "x-dup", "two" }, { "set-cookie", "b=2" },
      { "content-length", "2" }, { "connection", "close" } }, res.raw_headers)
  end)

  it("unfolds obsolete continuation lines and keeps only the final response's headers after 1xx", function()
    local url, wait = raw_server("HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n"
      .. "HTTP/1.1 200 OK\r\nX-Long: part one\r\n \t part two\r\n"
      .. "X-Empty:\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    local c <close> = core.client{}
    local res = assert(c:request{ url = url .. "/" })
    wait()
    assert.are.equal(200, res.status)
    assert.is_nil(res.headers["x-interim"])
    assert.are.equal("part one part two", res.headers["x-long"])
    assert.are.equal("", res.headers["x-empty"])
    assert.are.same({ "x-long", "x-empty", "content-length", "connection" },
      { res.raw_headers[1][1], res.raw_headers[2][1], res.raw_headers[3][1], res.raw_headers[4][1] })
    assert.are.equal(4, #res.raw_headers)
  end)

  it("sends requests through the proxy given as an option", function()
    local proxy, wait = raw_server("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n$REQUEST_LINE")
    local c <close> = core.client{ proxy = proxy }
    local res = assert(c:request{ url = "http://registry.example.invalid/v2/?q=1" })
    wait()
    assert.are.equal(200, res.status)
    assert.are.equal("GET http://registry.example.invalid/v2/?q=1 HTTP/1.1", res.body)
  end)

  it("does not follow redirects", function()
    local url, wait = raw_server("HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\n"
      .. "Content-Length: 0\r\nConnection: close\r\n\r\n")
    local c <close> = core.client{}
    local res = assert(c:request{ url = url .. "/" })
    wait()
    assert.are.equal(302, res.status)
    assert.are.equal("http://127.0.0.1:1/elsewhere", res.headers.location)
  end)

  it("times out with kind 'timeout'", function()
    local url, wait = raw_server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1)
    local c <close> = core.client{}
    local t0 = socket.gettime()
    local res, err = c:request{ url = url .. "/slow", timeout_ms = 300 }
    local took = socket.gettime() - t0
    wait()
    assert.is_nil(res)
    assert.are.same({ "timeout", 28 }, { err.kind, err.code })   -- CURLE_OPERATION_TIMEDOUT
    assert.is_true(took < 1.5)
  end)

  it("reports a refused connection as kind 'transport'", function()
    local c <close> = core.client{}
    local res, err = c:request{ url = "http://127.0.0.1:" .. closed_port() .. "/" }
    assert.is_nil(res)
    assert.are.same({ "transport", 7 }, { err.kind, err.code })
  end)
end)

describe("core client over HTTP/2 (nghttpd)", function()
  local s, pid, port, docroot, log

  -- TLS connections nghttpd has accepted so far (from its verbose log)
  local function handshakes()
    local f = assert(io.open(log))
    local text = f:read("a")
    f:close()
    local n = 0
    for _ in text:gmatch("SSL/TLS handshake completed") do n = n + 1 end
    return n
  end

  local function have_nghttpd()
    local p = io.popen("command -v nghttpd")
    local found = p:read("a")
    p:close()
    return found ~= ""
  end

  setup(function()
    if not have_nghttpd() then return end
    s = sim.start{ services = {} }
    docroot = assert(certs.tempdir())
    local f = assert(io.open(docroot .. "/hello.txt", "w"))
    f:write("hello over h2\n")
    f:close()
    port = closed_port()
    log = os.tmpname()
    local p = io.popen(("nghttpd -v -a 127.0.0.1 -d %s %d %s %s >%s 2>&1 & echo $!"):format(
      q(docroot), port, q(s.dir .. "/server.key"), q(s.dir .. "/server.crt"), q(log)))
    pid = tonumber(p:read("l"))
    p:close()
    for _ = 1, 100 do                                  -- wait until it listens
      local t = socket.tcp()
      t:settimeout(0.1)
      local ok = t:connect("127.0.0.1", port)
      t:close()
      if ok then break end
      socket.sleep(0.05)
    end
  end)

  teardown(function()
    if pid then os.execute("kill " .. pid) end
    if docroot then certs.remove(docroot) end
    if log then os.remove(log) end
    if s then s:stop() end
  end)

  it("negotiates HTTP/2 over TLS, and does not offer it when http2 = false", function()
    if not pid then
      pending("nghttpd (Debian package nghttp2-server) is not installed")
      return
    end
    local url = "https://127.0.0.1:" .. port .. "/hello.txt"
    local c <close> = core.client{ ca_pem = s.ca_pem }
    local res = assert(c:request{ url = url })
    assert.are.same({ 200, "2", "hello over h2\n" }, { res.status, res.http_version, res.body })
    assert.are.equal("14", res.headers["content-length"])
    -- nghttpd speaks only h2: a client that does not offer it gets no answer
    local c1 <close> = core.client{ ca_pem = s.ca_pem, http2 = false }
    local err
    res, err = c1:request{ url = url }
    assert.is_nil(res)
    assert.are.same({ "transport", 52 }, { err.kind, err.code })   -- CURLE_GOT_NOTHING
  end)

  it("multiplexes a batch over HTTP/2 and keeps the input order", function()
    if not pid then
      pending("nghttpd (Debian package nghttp2-server) is not installed")
      return
    end
    local c <close> = core.client{ ca_pem = s.ca_pem }
    local reqs = {}
    for i = 1, 12 do
      reqs[i] = { url = "https://127.0.0.1:" .. port .. (i % 3 == 0 and "/missing-" .. i or "/hello.txt") }
    end
    local before = handshakes()
    local results = c:batch(reqs, { concurrency = 12 })
    for i = 1, 12 do
      assert.are.equal("2", results[i].http_version)
      assert.are.equal(i % 3 == 0 and 404 or 200, results[i].status)
    end
    assert(c:request{ url = reqs[1].url })
    assert.are.equal(1, handshakes() - before)     -- 13 requests, one connection
  end)
end)
