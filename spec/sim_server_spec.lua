-- The simulator's server, as a user of sim.start sees it: real sockets, real TLS, real curl.
local sim = require "pullsecret.sim"
local util = require "pullsecret.sim.util"
local socket = require "socket"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs curl with args (a string); returns stdout, exit code.
local function curl(args)
  local p = io.popen("curl -sS --max-time 10 " .. args .. " 2>/dev/null; printf '\\nEXIT:%s\\n' $?")
  local out = p:read("a")
  p:close()
  local body, code = out:match("^(.*)\nEXIT:(%d+)\n$")
  return body, tonumber(code)
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() return true end
  return false
end

local function proc_gone(pid)
  return not exists("/proc/" .. pid .. "/stat")
end

-- A plain LuaSocket connection to a "http://127.0.0.1:PORT" base URL.
local function connect(url)
  local host, port = url:match("^http://([^:/]+):(%d+)")
  local c = assert(socket.tcp())
  c:settimeout(5)
  assert(c:connect(host, tonumber(port)))
  return c
end

-- Reads one response: status, headers (lower-cased), body | nil, err.
local function read_response(c)
  local line, err = c:receive("*l")
  if not line then return nil, err end
  local status = tonumber(line:match("^HTTP/1%.1 (%d%d%d) "))
  local headers = {}
  while true do
    local h = assert(c:receive("*l"))
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.*)$")
    headers[k:lower()] = v
  end
  local n = tonumber(headers["content-length"] or "0")
  local body = n > 0 and assert(c:receive(n)) or ""
  return status, headers, body
end

-- "closed" when the server has closed the connection (nothing more to read).
local function peer_closed(c)
  local line, err = c:receive("*l")
  return line == nil and err or ("got " .. tostring(line))
end

local function get(c, path, extra)
  assert(c:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n" .. (extra or "") .. "\r\n"))
  return read_response(c)
end

describe("sim server over plain HTTP", function()
  local s
  setup(function() s = sim.start{ tls = false, services = { echo = true } } end)
  teardown(function() if s then s:stop() end end)
  before_each(function()
    s:clear_faults()
    s:reset_stats()
  end)

  it("serves N sequential requests on one kept-alive connection, counted as 1 connection", function()
    local c = connect(s.urls.echo)
    for i = 1, 5 do
      local status, headers, body = get(c, "/n/" .. i .. "?i=" .. i)
      assert.are.equal(200, status)
      assert.are.equal(tostring(#body), headers["content-length"])
      assert.truthy(headers.date:match("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$"))
      local echoed = util.decode(body)
      assert.are.equal("/n/" .. i, echoed.path)
      assert.are.equal(tostring(i), echoed.params.i)
    end
    c:close()
    local st = s:stats()
    assert.are.equal(1, st.connections.echo)
    assert.are.equal(5, st.requests.echo)
    assert.are.equal(5, #st.log)
    assert.are.same({ listener = "echo", method = "GET", path = "/n/3", query = "i=3", status = 200 }, st.log[3])
  end)

  it("serves concurrent connections; a stalled client does not stall others", function()
    local stalled = connect(s.urls.echo)
    assert(stalled:send("GET /stalled HTTP/1.1\r\nHost: x\r\n"))   -- head never finished
    local conns = {}
    for i = 1, 10 do conns[i] = connect(s.urls.echo) end
    for i = 10, 1, -1 do assert(conns[i]:send("GET /c/" .. i .. " HTTP/1.1\r\nHost: x\r\n\r\n")) end
    local t0 = socket.gettime()
    for i = 1, 10 do
      local status, _, body = read_response(conns[i])
      assert.are.equal(200, status)
      assert.are.equal("/c/" .. i, util.decode(body).path)
      conns[i]:close()
    end
    assert.is_true(socket.gettime() - t0 < 2)
    stalled:close()
    assert.are.equal(11, s:stats().connections.echo)
  end)

  it("answers a delayed route while serving another connection at once", function()
    s:fault{ listener = "echo", path = "/slow", delay_ms = 600 }
    local a, b = connect(s.urls.echo), connect(s.urls.echo)
    local t0 = socket.gettime()
    assert(a:send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
    local status_b = get(b, "/fast")
    local t_fast = socket.gettime() - t0
    local status_a = read_response(a)
    local t_slow = socket.gettime() - t0
    a:close(); b:close()
    assert.are.equal(200, status_b)
    assert.are.equal(200, status_a)
    assert.is_true(t_slow >= 0.58, "slow request took " .. t_slow)
    assert.is_true(t_fast < t_slow - 0.3, "fast request took " .. t_fast .. " s, slow " .. t_slow .. " s")
  end)

  it("accepts chunked and Content-Length request bodies and answers Expect: 100-continue", function()
    local c = connect(s.urls.echo)
    assert(c:send("POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                  "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"))
    local status, _, body = read_response(c)
    assert.are.equal(200, status)
    assert.are.equal("hello, world", util.decode(body).body)
    assert(c:send("PUT /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"))
    assert.are.equal("HTTP/1.1 100 Continue", c:receive("*l"))
    assert.are.equal("", c:receive("*l"))
    assert(c:send("abc"))
    status, _, body = read_response(c)
    assert.are.equal(200, status)
    assert.are.equal("abc", util.decode(body).body)
    assert.are.equal("PUT", util.decode(body).method)
    c:close()
  end)

  it("answers malformed requests with 400 and closes the connection", function()
    local c = connect(s.urls.echo)
    assert(c:send("GARBAGE\r\n\r\n"))
    local status, headers, body = read_response(c)
    assert.are.equal(400, status)
    assert.are.equal("close", headers.connection)
    assert.are.equal(400, util.decode(body).status)
    assert.are.equal("closed", peer_closed(c))
    c:close()
    c = connect(s.urls.echo)
    assert(c:send("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"))
    assert.are.equal(400, (read_response(c)))
    c:close()
  end)

  it("enforces its size limits: head (431) and body (413)", function()
    local c = connect(s.urls.echo)
    assert(c:send("GET / HTTP/1.1\r\nX-Big: " .. string.rep("a", 70 * 1024) .. "\r\n\r\n"))
    assert.are.equal(431, (read_response(c)))
    c:close()
    c = connect(s.urls.echo)
    assert(c:send("POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n"))
    assert.are.equal(413, (read_response(c)))
    c:close()
  end)

  it("closes after the response when asked (Connection: close, HTTP/1.0)", function()
    local c = connect(s.urls.echo)
    local status, headers = get(c, "/", "Connection: close\r\n")
    assert.are.equal(200, status)
    assert.are.equal("close", headers.connection)
    assert.are.equal("closed", peer_closed(c))
    c:close()
    c = connect(s.urls.echo)
    assert(c:send("GET / HTTP/1.0\r\n\r\n"))
    assert.are.equal(200, (read_response(c)))
    assert.are.equal("closed", peer_closed(c))
    c:close()
  end)

  it("answers a raising handler with 500 and keeps serving", function()
    local c = connect(s.urls.echo)
    local status, headers, body = get(c, "/raise")
    assert.are.equal(500, status)
    assert.are.equal("application/json", headers["content-type"])
    assert.truthy(util.decode(body).message:find("raised on purpose", 1, true))
    assert.are.equal(200, (get(c, "/after")))
    c:close()
  end)

  it("never logs request bodies or Authorization values", function()
    local c = connect(s.urls.echo)
    assert(c:send("POST /login?user=u HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t-bearer\r\n" ..
                  "Content-Length: 20\r\n\r\npassword=hunter2hunt"))
    assert.are.equal(200, (read_response(c)))
    c:close()
    local st = s:stats()
    local text = util.encode(st)
    assert.is_nil(text:find("s3cr3t", 1, true))
    assert.is_nil(text:find("hunter2", 1, true))
    assert.are.same({ listener = "echo", method = "POST", path = "/login", query = "user=u", status = 200 }, st.log[1])
  end)

  it("resets its counters and reports service state", function()
    assert.are.equal(200, (get(connect(s.urls.echo), "/")))
    assert.are.equal(1, s:stats().requests.echo)
    s:reset_stats()
    local st = s:stats()
    assert.is_nil(st.requests.echo)
    assert.are.same({}, st.log)
    assert.is_true(s:state("echo").requests >= 1)
    assert.has_error(function() s:state("nosuch") end)
  end)
end)

describe("sim server over TLS", function()
  local s
  setup(function() s = sim.start{ services = { echo = true } } end)
  teardown(function() if s then s:stop() end end)
  before_each(function()
    s:clear_faults()
    s:reset_stats()
  end)

  it("is verified by curl with the sim CA, and refused without it", function()
    assert.truthy(s.urls.echo:find("^https://127%.0%.0%.1:%d+$"))
    assert.truthy(s.ca_pem:find("^%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-"))
    local body, code = curl("--cacert " .. sh_quote(s.ca_file) .. " " .. s.urls.echo .. "/tls")
    assert.are.equal(0, code)
    assert.are.equal("/tls", util.decode(body).path)
    local localhost = s.urls.echo:gsub("127%.0%.0%.1", "localhost")
    body, code = curl("--cacert " .. sh_quote(s.ca_file) .. " " .. localhost .. "/tls")
    assert.are.equal(0, code)
    assert.are.equal("/tls", util.decode(body).path)
    body, code = curl(s.urls.echo .. "/tls")
    assert.are.equal("", body)
    assert.are.equal(60, code)   -- CURLE_PEER_FAILED_VERIFICATION
  end)

  it("is not stalled by a client that never starts its TLS handshake", function()
    local host, port = s.urls.echo:match("^https://([^:/]+):(%d+)")
    local idle = assert(socket.tcp())
    idle:settimeout(5)
    assert(idle:connect(host, tonumber(port)))
    local t0 = socket.gettime()
    local body, code = curl("--cacert " .. sh_quote(s.ca_file) .. " " .. s.urls.echo .. "/while-idle")
    idle:close()
    assert.are.equal(0, code)
    assert.are.equal("/while-idle", util.decode(body).path)
    assert.is_true(socket.gettime() - t0 < 2)
  end)

  it("keeps one TLS connection alive for N sequential curl requests", function()
    local urls = {}
    for i = 1, 4 do urls[i] = s.urls.echo .. "/k/" .. i end
    local out, code = curl("--cacert " .. sh_quote(s.ca_file) .. " -w '%{http_code} ' -o /dev/null " ..
                           table.concat(urls, " -o /dev/null "))
    assert.are.equal(0, code)
    assert.are.equal("200 200 200 200", (out:gsub("%s+$", "")))
    local st = s:stats()
    assert.are.equal(1, st.connections.echo)
    assert.are.equal(4, st.requests.echo)
  end)

  describe("faults", function()
    local ca
    before_each(function() ca = "--cacert " .. sh_quote(s.ca_file) .. " " end)

    it("answers a given status with a JSON body and Retry-After, `times` times", function()
      s:fault{ listener = "echo", method = "GET", path = "/flaky/%d+", status = 503, retry_after = "7", times = 2 }
      for _ = 1, 2 do
        local out = curl(ca .. "-i " .. s.urls.echo .. "/flaky/1")
        assert.truthy(out:find("^HTTP/1%.1 503 "))
        assert.truthy(out:find("\r\nRetry%-After: 7\r\n"))
        local body = out:match("\r\n\r\n(.*)$")
        assert.are.same({ error = "simulated fault", status = 503 }, util.decode(body))
      end
      assert.are.equal("200", curl(ca .. "-o /dev/null -w '%{http_code}' " .. s.urls.echo .. "/flaky/1"))
    end)

    it("matches listener, method and the anchored path only", function()
      s:fault{ listener = "echo", method = "POST", path = "/only", status = 418 }
      s:fault{ listener = "other", path = "/.*", status = 500 }
      local code = function(args) return (curl(ca .. "-o /dev/null -w '%{http_code}' " .. args)) end
      assert.are.equal("200", code(s.urls.echo .. "/only"))
      assert.are.equal("418", code("-X POST " .. s.urls.echo .. "/only"))
      assert.are.equal("200", code("-X POST " .. s.urls.echo .. "/only/not"))
      assert.are.equal("200", code("-X POST " .. s.urls.echo .. "/x/only"))
    end)

    it("delays a response", function()
      s:fault{ path = "/delayed", delay_ms = 400, times = 1 }
      local t0 = socket.gettime()
      local body = curl(ca .. s.urls.echo .. "/delayed")
      assert.is_true(socket.gettime() - t0 >= 0.38)
      assert.are.equal("/delayed", util.decode(body).path)
    end)

    it("closes the connection mid-body", function()
      s:fault{ path = "/bytes/1000", close_mid_body = true, times = 1 }
      local out, code = curl(ca .. "-o /dev/null -w '%{size_download}' " .. s.urls.echo .. "/bytes/1000")
      assert.are.equal(18, code)   -- CURLE_PARTIAL_FILE
      assert.are.equal("500", out)
      out, code = curl(ca .. s.urls.echo .. "/bytes/1000")
      assert.are.equal(0, code)
      assert.are.equal(1000, #out)
    end)

    it("sends an oversized body", function()
      s:fault{ path = "/small", oversize = 3 * 1024 * 1024 }
      local out, code = curl(ca .. "-o /dev/null -w '%{http_code} %{size_download}' " .. s.urls.echo .. "/small")
      assert.are.equal(0, code)
      assert.are.equal("200 3145728", out)
    end)

    it("rejects a malformed fault", function()
      assert.has_error(function() s:fault{ path = "/x", status = 99 } end)
      assert.has_error(function() s:fault{ path = "[" } end)
    end)
  end)
end)

describe("sim client certificates", function()
  local s
  after_each(function() if s then s:stop() end s = nil end)

  it("requires a certificate signed by the sim CA and exposes its subject", function()
    s = sim.start{ client_ca = { echo = "required" }, client_cert = { cn = "alice", o = "devs" },
                   services = { echo = true } }
    local ca = "--cacert " .. sh_quote(s.ca_file) .. " "
    local body, code = curl(ca .. "--cert " .. sh_quote(s.client_cert_file) .. " --key " ..
                            sh_quote(s.client_key_file) .. " " .. s.urls.echo .. "/me")
    assert.are.equal(0, code)
    local cert = util.decode(body).client_cert
    assert.are.equal("alice", cert.cn)
    assert.are.equal("devs", cert.o)
    assert.are.equal("CN=alice,O=devs", cert.subject)
    assert.truthy(s.client_cert_pem:find("BEGIN CERTIFICATE", 1, true))
    assert.truthy(s.client_key_pem:find("PRIVATE KEY", 1, true))
    body, code = curl(ca .. s.urls.echo .. "/me")
    assert.are.equal("", body)
    assert.are_not.equal(0, code)
  end)

  it("asks for but does not require a certificate in optional mode", function()
    s = sim.start{ client_ca = { echo = "optional" }, services = { echo = true } }
    local ca = "--cacert " .. sh_quote(s.ca_file) .. " "
    local body, code = curl(ca .. s.urls.echo .. "/anon")
    assert.are.equal(0, code)
    assert.is_nil(util.decode(body).client_cert)
    body, code = curl(ca .. "--cert " .. sh_quote(s.client_cert_file) .. " --key " ..
                      sh_quote(s.client_key_file) .. " " .. s.urls.echo .. "/me")
    assert.are.equal(0, code)
    assert.are.equal("sim-admin", util.decode(body).client_cert.cn)
  end)
end)

describe("sim child process", function()
  it("is gone, reaped and its directory removed after stop; stop is idempotent", function()
    local s = sim.start{ services = { echo = true } }
    local ok, err = pcall(function()
      assert.is_true(exists(s.dir .. "/ca.crt"))
      assert.is_true(s:alive())
      s:stop()
      assert.is_true(proc_gone(s.pid))
      assert.is_false(exists(s.dir .. "/ca.crt"))
      assert.is_false(s:alive())
      s:stop()
      assert.has_error(function() s:stats() end)
    end)
    s:stop()
    assert(ok, err)
  end)

  it("stops cleanly when the child was already killed", function()
    local s = sim.start{ services = { echo = true } }
    local ok, err = pcall(function()
      os.execute("kill -KILL " .. s.pid)
      local deadline = socket.gettime() + 3
      while s:alive() and socket.gettime() < deadline do socket.sleep(0.02) end
      assert.is_false(s:alive())
      assert.is_true(exists(s.dir .. "/ca.crt"))   -- killed: it could not clean up
      s:stop()
      assert.is_true(proc_gone(s.pid))
      assert.is_false(exists(s.dir .. "/ca.crt"))
    end)
    s:stop()
    assert(ok, err)
  end)

  it("writes a kubeconfig for the kube service", function()
    local s = sim.start{ services = { kube = { users = { { name = "admin", token = "tok-1" } } } } }
    local ok, err = pcall(function()
      local f = assert(io.open(s.kubeconfig))
      local text = f:read("a")
      f:close()
      assert.truthy(text:find('server: "' .. s.urls.kube .. '"', 1, true))
      assert.truthy(text:find('certificate-authority: "' .. s.ca_file .. '"', 1, true))
      assert.truthy(text:find('token: "tok-1"', 1, true))
      assert.truthy(text:find("current-context: sim", 1, true))
    end)
    s:stop()
    assert(ok, err)
  end)

  it("exits by itself when its parent dies", function()
    local code = "local s = require('pullsecret.sim').start{ services = { echo = true } } " ..
                 "io.write(s.pid, ' ', s.dir, '\\n') os.exit(0)"
    local p = io.popen("LUA_PATH=" .. sh_quote(package.path) .. " LUA_CPATH=" .. sh_quote(package.cpath) ..
                       " lua5.4 -e " .. sh_quote(code))
    local line = p:read("l")
    p:close()
    local pid, dir = line:match("^(%d+) (%S+)$")
    assert.truthy(pid)
    local deadline = socket.gettime() + 5
    while not proc_gone(pid) and socket.gettime() < deadline do socket.sleep(0.05) end
    assert.is_true(proc_gone(pid))
    assert.is_false(exists(dir .. "/ca.crt"))
  end)

  it("stops the child of a handle its program dropped, when that program ends", function()
    local code = "local s = require('pullsecret.sim').start{ services = { echo = true } } " ..
                 "io.write(s.pid, ' ', s.dir, '\\n')"
    local t0 = socket.gettime()
    local p = io.popen("LUA_PATH=" .. sh_quote(package.path) .. " LUA_CPATH=" .. sh_quote(package.cpath) ..
                       " timeout 30 lua5.4 -e " .. sh_quote(code))
    local line = p:read("l")
    p:close()
    assert.is_true(socket.gettime() - t0 < 5)
    local pid, dir = line:match("^(%d+) (%S+)$")
    assert.is_true(proc_gone(pid))
    assert.is_false(exists(dir .. "/ca.crt"))
  end)

  it("raises with the child's stderr when it cannot start", function()
    local ok, err = pcall(sim.start, { services = { no_such_service = true } })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("pullsecret.sim.no_such_service", 1, true))
  end)

  it("refuses a config it cannot serialise", function()
    assert.has_error(function() sim.start{ services = { echo = { f = print } } } end)
  end)
end)

describe("sim util", function()
  it("encodes compact, sorted JSON without escaping '/'", function()
    assert.are.equal('{"a":[1,2.5,"x/y"],"b":{},"c":[],"d":"q\\"\\\\\\n\\u0001"}',
                     util.encode{ d = 'q"\\\n\1', c = util.array(), b = {}, a = { 1, 2.5, "x/y" } })
    local resp = util.json(201, { url = "https://h/p" }, { Location = "/x" })
    assert.are.same({ status = 201, body = '{"url":"https://h/p"}',
                      headers = { ["Content-Type"] = "application/json", Location = "/x" } }, resp)
    assert.are.same({ n = 3, list = { 1, 2 } }, util.decode('{"n":3,"list":[1,2.0]}'))
    assert.are.equal("integer", math.type(util.decode('{"n":3}').n))
  end)

  it("parses queries and forms", function()
    local q, list = util.parse_query("a=1&b=x%2By+z&a=2&flag")
    assert.are.same({ a = "2", b = "x+y+z", flag = "" }, q)
    assert.are.same({ { "a", "1" }, { "b", "x+y+z" }, { "a", "2" }, { "flag", "" } }, list)
    assert.are.same({ user = "a b", pass = "p&q=" }, (util.parse_form("user=a+b&pass=p%26q%3D")))
    assert.are.equal("user=a+b&pass=p%26q%3D", util.form_encode{ { "user", "a b" }, { "pass", "p&q=" } })
    assert.are.equal("aGk_", util.b64url("hi?"))
    assert.are.equal("hi?", util.unb64("aGk_"))
  end)
end)

describe("sim server with client certificates asked for", function()
  it("serves many new TLS connections from one client (no failed session resumption)", function()
    local core = require "pullsecret.core"
    local s = require("pullsecret.sim").start{ services = { echo = {} }, client_ca = { echo = "optional" } }
    local c = core.client{ ca_file = s.ca_file }
    local ok, err = pcall(function()
      for _ = 1, 3 do
        local reqs = {}
        for i = 1, 6 do reqs[i] = { url = s.urls.echo .. "/status/200" } end
        local res = c:batch(reqs, { concurrency = 6 })
        for i = 1, 6 do
          assert.is_nil(res[i].error and res[i].error.message)
          assert.equal(200, res[i].status)
        end
      end
    end)
    c:close()
    s:stop()
    assert(ok, err)
  end)
end)
