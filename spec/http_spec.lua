-- pullsecret.http: the retry policy and redaction, against the simulator over real TLS.
local core_so = io.open("build/pullsecret/core.so")
assert(core_so, "build/pullsecret/core.so is missing: run `make` first (these specs need the C core)")
core_so:close()

local http = require "pullsecret.http"
local sim = require "pullsecret.sim"
local socket = require "socket"
local closed_port = require("spec.helpers.host").closed_port

describe("pullsecret.http", function()
  local s, h, events, slept, lines

  setup(function() s = sim.start{ services = { echo = true } } end)
  teardown(function() if s then s:stop() end end)

  -- A client whose sleeps are recorded, not waited (the policy is checked, not the clock).
  local function fake_sleep_client(retry)
    return http.new{ ca_file = s.ca_file, retry = retry,
                     on_event = function(ev) events[#events + 1] = ev end,
                     log = function(line) lines[#lines + 1] = line end,
                     sleep = function(sec) slept[#slept + 1] = sec end,
                     random = function() return 1 end }
  end

  before_each(function()
    s:clear_faults()
    s:reset_stats()
    events, slept, lines = {}, {}, {}
  end)
  after_each(function() if h then h:close() end h = nil end)

  describe("retries", function()
    it("honours Retry-After with a real wait, then succeeds", function()
      s:fault{ listener = "echo", method = "GET", path = "/ra", status = 503, retry_after = "1", times = 1 }
      h = http.new{ ca_file = s.ca_file, on_event = function(ev) events[#events + 1] = ev end }
      local t0 = socket.gettime()
      local res, err = h:request{ url = s.urls.echo .. "/ra" }
      local elapsed = socket.gettime() - t0
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      assert.are.equal(2, res.attempts)
      assert.is_true(elapsed >= 0.95 and elapsed < 3, "elapsed " .. elapsed)
      assert.are.equal(1, #events)
      assert.are.equal(1, events[1].delay)
      assert.are.equal(2, s:stats().requests.echo)
    end)

    it("returns the last response at once when Retry-After exceeds the time budget", function()
      s:fault{ path = "/ra", status = 503, retry_after = "5" }
      h = http.new{ ca_file = s.ca_file, retry = { max_seconds = 2 },
                    on_event = function(ev) events[#events + 1] = ev end }
      local t0 = socket.gettime()
      local res = assert(h:request{ url = s.urls.echo .. "/ra" })
      assert.is_true(socket.gettime() - t0 < 1)
      assert.are.equal(503, res.status)
      assert.are.equal("5", res.headers["retry-after"])
      assert.are.equal(1, res.attempts)
      assert.are.same({}, events)
    end)

    it("honours a Retry-After HTTP date", function()
      local now = os.time()
      s:fault{ path = "/date", status = 429, retry_after = os.date("!%a, %d %b %Y %H:%M:%S GMT", now + 3), times = 1 }
      h = http.new{ ca_file = s.ca_file, now = function() return now end,
                    sleep = function(sec) slept[#slept + 1] = sec end }
      local res = assert(h:request{ method = "POST", url = s.urls.echo .. "/date", body = "x" })
      assert.are.equal(200, res.status)
      assert.are.same({ 3 }, slept)
    end)

    it("stops after `attempts`, with exponential backoff between them", function()
      s:fault{ path = "/down", status = 503 }
      h = fake_sleep_client{ attempts = 4, base_ms = 200, max_ms = 500 }
      local res = assert(h:request{ url = s.urls.echo .. "/down" })
      assert.are.equal(503, res.status)
      assert.are.equal(4, res.attempts)
      assert.are.equal(4, s:stats().requests.echo)
      assert.are.same({ 0.2, 0.4, 0.5 }, slept)
      assert.are.equal(3, #events)
    end)

    it("uses full jitter: a wait anywhere between 0 and the cap", function()
      s:fault{ path = "/down", status = 503, times = 2 }
      local draws = { 0.5, 0 }
      h = http.new{ ca_file = s.ca_file, retry = { base_ms = 1000 },
                    sleep = function(sec) slept[#slept + 1] = sec end,
                    random = function() return table.remove(draws, 1) end }
      assert.are.equal(200, assert(h:request{ url = s.urls.echo .. "/down" }).status)
      assert.are.same({ 0.5 }, slept)   -- 0.5 * 1000 ms; then 0 * 2000 ms (no sleep call)
    end)

    it("retries 503 and 429 on POST but not 502", function()
      h = fake_sleep_client()
      s:fault{ method = "POST", path = "/p", status = 503, times = 1 }
      local res = assert(h:request{ method = "POST", url = s.urls.echo .. "/p", body = "a=1" })
      assert.are.equal(200, res.status)
      assert.are.equal("a=1", http.json(res).body)
      assert.are.equal(2, res.attempts)
      s:fault{ method = "POST", path = "/p", status = 429, times = 1 }
      assert.are.equal(200, assert(h:request{ method = "POST", url = s.urls.echo .. "/p" }).status)
      s:fault{ method = "POST", path = "/p", status = 502, times = 1 }
      res = assert(h:request{ method = "POST", url = s.urls.echo .. "/p" })
      assert.are.equal(502, res.status)
      assert.are.equal(1, res.attempts)
      assert.are.equal(5, s:stats().requests.echo)
    end)

    it("retries 502 and 504 for idempotent methods, and for POST marked idempotent", function()
      h = fake_sleep_client()
      s:fault{ method = "GET", path = "/g", status = 502, times = 1 }
      s:fault{ method = "PUT", path = "/g", status = 504, times = 1 }
      s:fault{ method = "POST", path = "/g", status = 504, times = 1 }
      assert.are.equal(2, assert(h:request{ url = s.urls.echo .. "/g" }).attempts)
      assert.are.equal(2, assert(h:request{ method = "PUT", url = s.urls.echo .. "/g", body = "" }).attempts)
      local res = assert(h:request{ method = "POST", url = s.urls.echo .. "/g", idempotent = true })
      assert.are.equal(200, res.status)
      assert.are.equal(2, res.attempts)
    end)

    it("does not retry other statuses", function()
      h = fake_sleep_client()
      local res = assert(h:request{ url = s.urls.echo .. "/status/500" })
      assert.are.equal(500, res.status)
      assert.are.equal(1, res.attempts)
      assert.are.same({}, slept)
    end)

    it("retries transport errors for GET, not for POST", function()
      h = fake_sleep_client{ attempts = 3 }
      local url = "https://127.0.0.1:" .. closed_port() .. "/x"
      local res, err = h:request{ url = url }
      assert.is_nil(res)
      assert.are.equal("transport", err.kind)
      assert.are.equal(3, err.attempts)
      assert.are.equal(2, #events)
      assert.are.equal("transport", events[1].reason)
      events = {}
      res, err = h:request{ method = "POST", url = url, body = "x" }
      assert.is_nil(res)
      assert.are.equal("transport", err.kind)
      assert.are.equal(1, err.attempts)
      assert.are.same({}, events)
    end)

    it("retries a connection closed mid-body and a timeout for GET", function()
      h = fake_sleep_client()
      s:fault{ path = "/bytes/100", close_mid_body = true, times = 1 }
      local res = assert(h:request{ url = s.urls.echo .. "/bytes/100" })
      assert.are.equal(200, res.status)
      assert.are.equal(100, #res.body)
      assert.are.equal("transport", events[1].reason)
      s:fault{ path = "/slow", delay_ms = 1500, times = 1 }
      res = assert(h:request{ url = s.urls.echo .. "/slow", timeout_ms = 300 })
      assert.are.equal(200, res.status)
      assert.are.equal("timeout", events[2].reason)
    end)

    it("never retries TLS failures", function()
      h = http.new{ retry = { attempts = 3 }, on_event = function(ev) events[#events + 1] = ev end }  -- system CAs
      local res, err = h:request{ url = s.urls.echo .. "/" }
      assert.is_nil(res)
      assert.are.equal("tls", err.kind)
      assert.are.equal(1, err.attempts)
      assert.are.same({}, events)
    end)

    it("reports each retry with exactly the documented fields, URL redacted", function()
      s:fault{ path = "/ev", status = 503, retry_after = "0", times = 2 }
      h = fake_sleep_client()
      local res = assert(h:request{ url = s.urls.echo .. "/ev?access_token=tok-SECRET&x=1",
                                    headers = { Authorization = "Bearer hdr-SECRET" } })
      assert.are.equal(200, res.status)
      assert.are.equal(3, res.attempts)
      local url = s.urls.echo .. "/ev?access_token=<redacted>&x=1"
      assert.are.same({ type = "retry", attempt = 2, delay = 0, reason = "status 503", status = 503,
                        method = "GET", url = url }, events[1])
      assert.are.equal(3, events[2].attempt)
      assert.are.equal(3, #lines)
      assert.are.equal("GET " .. url .. " -> 503", lines[1]:match("^(.-) %(%d+ ms%)$"))
      assert.are.equal("GET " .. url .. " -> 200", lines[3]:match("^(.-) %(%d+ ms%)$"))
      assert.are.equal(url, res.url)
    end)

    it("retries within a batch and keeps the input order", function()
      s:fault{ path = "/b/2", status = 503, times = 1 }
      h = fake_sleep_client()
      local reqs = {}
      for i = 1, 4 do reqs[i] = { url = s.urls.echo .. "/b/" .. i } end
      reqs[5] = { url = "https://127.0.0.1:" .. closed_port() .. "/", method = "POST" }
      local results = h:batch(reqs, { concurrency = 3 })
      for i = 1, 4 do
        assert.are.equal(200, results[i].status)
        assert.are.equal("/b/" .. i, http.json(results[i]).path)
      end
      assert.are.equal(2, results[2].attempts)
      assert.are.equal("transport", results[5].error.kind)
      assert.are.equal(1, #events)
    end)

    it("raises once closed", function()
      h = http.new{ ca_file = s.ca_file }
      h:close()
      h:close()
      assert.has_error(function() h:request{ url = s.urls.echo } end, "http client is closed")
    end)
  end)

  describe("json", function()
    it("decodes a JSON body with integers", function()
      h = http.new{ ca_file = s.ca_file }
      local t = assert(http.json(assert(h:request{ url = s.urls.echo .. "/status/201" })))
      assert.are.equal(201, t.status)
      assert.are.equal("integer", math.type(t.status))
    end)

    it("reports anything else as a protocol error naming host, type and size", function()
      h = http.new{ ca_file = s.ca_file }
      local res = assert(h:request{ url = s.urls.echo .. "/bytes/12" })
      local t, err = http.json(res)
      assert.is_nil(t)
      assert.are.equal("protocol", err.kind)
      local host = s.urls.echo:match("^https://(.*)$")
      assert.are.equal("expected a JSON body from " .. host .. " (HTTP 200), got application/octet-stream, 12 bytes",
                       tostring(err))
    end)
  end)

  describe("Retry-After parsing", function()
    it("reads delta seconds and the three HTTP date forms", function()
      assert.are.equal(784111777, http.parse_date("Sun, 06 Nov 1994 08:49:37 GMT"))
      assert.are.equal(784111777, http.parse_date("Sunday, 06-Nov-94 08:49:37 GMT"))
      assert.are.equal(784111777, http.parse_date("Sun Nov  6 08:49:37 1994"))
      assert.are.equal(120, http.retry_after(" 120 "))
      assert.are.equal(60, http.retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40))
      assert.are.equal(0, http.retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 400))
      assert.is_nil(http.retry_after("soon"))
      assert.is_nil(http.retry_after("-1"))
    end)
  end)

  describe("redact", function()
    it("prints a request without any secret value", function()
      local line = http.redact{
        method = "POST",
        url = "https://user:pw-SECRET@iam.example.test/identity/token?token=q-SECRET&Access_Token=q2-SECRET&page=2",
        headers = { Authorization = "Basic au-SECRET", ["Proxy-Authorization"] = "Basic px-SECRET",
                    Cookie = "sid=ck-SECRET", ["Content-Type"] = "application/x-www-form-urlencoded" },
        body = "grant_type=password&username=alice&password=pw2-SECRET&apikey=ak-SECRET&Client_Secret=cs-SECRET",
      }
      assert.is_nil(line:find("SECRET", 1, true), line)
      assert.are.equal("POST https://<redacted>@iam.example.test/identity/token?token=<redacted>" ..
        "&Access_Token=<redacted>&page=2 {Authorization: <redacted>, " ..
        "Content-Type: application/x-www-form-urlencoded, Cookie: <redacted>, Proxy-Authorization: <redacted>} " ..
        "grant_type=password&username=alice&password=<redacted>" ..
        "&apikey=<redacted>&Client_Secret=<redacted>", line)
    end)

    it("redacts secret fields of a JSON body and hides other bodies", function()
      local line = http.redact{ method = "PUT", url = "https://h/x",
                                headers = { ["content-type"] = "application/json" },
                                body = '{"name":"n","passcode":"pc-SECRET","nested":{"refresh_token":"rt-SECRET"}}' }
      assert.is_nil(line:find("SECRET", 1, true), line)
      assert.truthy(line:find('"name":"n"', 1, true))
      assert.truthy(line:find('"passcode":"<redacted>"', 1, true))
      assert.are.equal("GET https://h/ <5 bytes>", http.redact{ url = "https://h/", body = "\1\2\3\4\5" })
    end)

    it("redacts a JWT in the URL path, secrets in the fragment, and keeps the line one line", function()
      local jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJTRUNSRVQifQ.c2lnLVNFQ1JFVA"
      assert.are.equal("https://r.example.test/api/v1/tokens/<redacted>/x?page=2",
        http.redact_url("https://r.example.test/api/v1/tokens/" .. jwt .. "/x?page=2"))
      assert.are.equal("https://r.example.test/api/v1/tokens/<redacted>",
        http.redact_url("https://r.example.test/api/v1/tokens/eyJhbGciOiJIUzI1NiJ9"))
      assert.are.equal("https://h/cb#access_token=<redacted>&state=s1",
        http.redact_url("https://h/cb#access_token=at-SECRET&state=s1"))
      assert.are.equal("https://h/a%0Ab%0D%00c?x=1%0A", http.redact_url("https://h/a\nb\r\0c?x=1\n"))
      local line = http.redact{ method = "GET\nX", url = "https://h/\nINJECTED" }
      assert.is_nil(line:find("%c"), line)
    end)

    it("redacts the credentials of a docker config and of a Kubernetes Secret body", function()
      local line = http.redact{ method = "POST", url = "https://k/api/v1/namespaces/d/secrets",
        headers = { ["Content-Type"] = "application/json" },
        body = '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"all-icr-io"},' ..
               '"type":"kubernetes.io/dockerconfigjson",' ..
               '"data":{".dockerconfigjson":"eyJhdXRocyI6e30-SECRET"},"stringData":{"x":"sd-SECRET"}}' }
      assert.is_nil(line:find("SECRET", 1, true), line)
      assert.truthy(line:find('"name":"all-icr-io"', 1, true), line)
      assert.truthy(line:find('".dockerconfigjson":"<redacted>"', 1, true), line)
      line = http.redact{ method = "PUT", url = "https://h/x", headers = { ["content-type"] = "application/json" },
        body = '{"auths":{"us.icr.io":{"username":"iamapikey","password":"pw-SECRET","auth":"au-SECRET"}}}' }
      assert.is_nil(line:find("SECRET", 1, true), line)
      assert.truthy(line:find('"username":"iamapikey"', 1, true), line)
    end)

    it("hides JSON nested too deep to look through instead of printing its secrets", function()
      local body = '{"password":"pw-SECRET"}'
      for _ = 1, 40 do body = '{"a":' .. body .. '}' end
      local line = http.redact{ url = "https://h/", body = body, headers = { ["Content-Type"] = "application/json" } }
      assert.is_nil(line:find("SECRET", 1, true), line)
      assert.truthy(line:find('^GET https://h/ {Content%-Type: application/json} {"a":{"a":'), line)
    end)

    it("keeps log lines one line when the method or URL holds control characters", function()
      local logged = {}
      local h2 = http.new{ log = function(l) logged[#logged + 1] = l end }
      local res, err = h2:request{ method = "GET", url = "http://127.0.0.1:1/x\nFORGED 200" }
      h2:close()
      assert.is_nil(res)
      assert.are.equal("input", err.kind)
      assert.are.equal(1, #logged)
      assert.is_nil(logged[1]:find("[\r\n]"), logged[1])
    end)

    it("keeps secrets out of the log lines of real requests", function()
      h = http.new{ ca_file = s.ca_file, log = function(l) lines[#lines + 1] = l end }
      assert(h:request{ method = "POST", url = s.urls.echo .. "/t?passcode=pc-SECRET",
                        headers = { Authorization = "Bearer b-SECRET" }, body = "password=p-SECRET" })
      assert.are.equal(1, #lines)
      assert.is_nil(lines[1]:find("SECRET", 1, true), lines[1])
      assert.truthy(lines[1]:find("passcode=<redacted> -> 200 (", 1, true))
    end)
  end)
end)
