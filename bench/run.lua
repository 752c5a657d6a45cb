-- `make bench`: what the C core's connection reuse and concurrency buy, as ratios measured side
-- by side in one run against the simulator on loopback (TLS). Bounded: a few hundred requests.
--
--   1. N sequential HTTPS GETs: a new client per request (a TCP + TLS handshake each time)
--      versus one client (keep-alive and TLS session reuse).
--   2. N requests to an endpoint that answers after a delay (a stand-in for a remote API):
--      one after another versus client:batch with concurrency C.
--   3. HTTP/2 against nghttpd (when installed), through a relay that adds a 10 ms round trip
--      (bench/relay.lua): 64 GETs one stream at a time versus 64 streams multiplexed on one
--      connection.
--   4. Writing a pull secret to K namespaces with pullsecret.kube, against the time
--      client-go's default throttle (5 requests/s, burst 10) needs for the same requests.
--   5. The whole procedure (pullsecret.run: login, token, then read, describe, write and read
--      back the secret in K namespaces) with concurrency 1 versus 16, each Kubernetes answer
--      delayed by DELAY_MS (a stand-in for a remote API server).
local core = require "pullsecret.core"
local sim = require "pullsecret.sim"
local socket = require "socket"

local N = tonumber(os.getenv("BENCH_N")) or 200
local DELAY_MS = 20
local RTT_MS = 10
local CONCURRENCY = 16

local function now() return socket.gettime() end
local function timed(f)
  local t0 = now()
  f()
  return now() - t0
end
local function line(name, a_label, a, b_label, b)
  print(string.format("%-44s %-14s %7.3f s   %-14s %7.3f s   ratio %6.1fx", name, a_label, a, b_label, b, a / b))
end

local s = sim.start{ services = { echo = {}, kube = {} } }
local ok, err = pcall(function()
  local url = s.urls.echo .. "/status/200"
  print(string.format("pullsecret bench: libcurl %s, HTTP/2 %s; N = %d requests", core.version().curl,
    tostring(core.version().http2), N))

  -- 1. reuse
  local fresh = timed(function()
    for _ = 1, N do
      local c = core.client{ ca_file = s.ca_file }
      assert(c:request{ url = url })
      c:close()
    end
  end)
  s:reset_stats()
  local c = core.client{ ca_file = s.ca_file }
  local reused = timed(function()
    for _ = 1, N do assert(c:request{ url = url }).status = 200 end
  end)
  local conns = s:stats().connections.echo
  line("1. sequential GETs (TLS)", "new client", fresh, "one client", reused)
  print(string.format("   one client used %d connection(s) for %d requests", conns, N))

  -- 2. concurrency against a slow endpoint
  s:fault{ listener = "echo", path = "/slow", delay_ms = DELAY_MS, status = 200 }
  local slow = s.urls.echo .. "/slow"
  local M = math.min(N, 100)
  local seq = timed(function()
    for _ = 1, M do assert(c:request{ url = slow }) end
  end)
  local reqs = {}
  for i = 1, M do reqs[i] = { url = slow } end
  local par = timed(function()
    local res = c:batch(reqs, { concurrency = CONCURRENCY })
    for i = 1, M do assert(res[i].status == 200, "batch request " .. i .. " failed") end
  end)
  line(string.format("2. %d requests, %d ms server delay", M, DELAY_MS), "sequential", seq,
    "batch x" .. CONCURRENCY, par)
  s:clear_faults()
  c:close()

  -- 3. HTTP/2 multiplexing (optional)
  if os.execute("command -v nghttpd >/dev/null 2>&1") then
    local port = 40000 + math.random(0, 9999)
    -- nghttpd over TLS with the simulator's certificate, serving the simulator's directory
    local cmd = string.format("nghttpd -d %s %d %s %s >/dev/null 2>&1 & echo $!", s.dir, port,
      s.dir .. "/server.key", s.dir .. "/server.crt")
    local p = io.popen(cmd)
    local pid = p:read("l")
    p:close()
    socket.sleep(0.3)
    -- a relay that adds RTT_MS of round trip, as a remote server has; TLS passes through it
    local rp = io.popen(string.format("exec sh -c 'echo $$; exec lua5.4 bench/relay.lua %d %d 120'", port, RTT_MS // 2))
    local relay_pid = assert(rp:read("l"))
    local relay_port = assert(tonumber(rp:read("l")), "the relay did not start")
    local h2 = core.client{ ca_file = s.ca_file, http2 = true }
    local u = string.format("https://127.0.0.1:%d/ca.crt", relay_port)
    local r2 = h2:request{ url = u }
    if r2 and r2.http_version == "2" then
      local M2 = 64
      local reqs2 = {}
      for i = 1, M2 do reqs2[i] = { url = u } end
      local function all_ok(res)
        for i = 1, M2 do assert(res[i].status == 200 and res[i].http_version == "2", "HTTP/2 request " .. i) end
      end
      local t1 = timed(function() all_ok(h2:batch(reqs2, { concurrency = 1 })) end)
      local t64 = timed(function() all_ok(h2:batch(reqs2, { concurrency = M2 })) end)
      line(string.format("3. %d HTTP/2 GETs, %d ms round trip (nghttpd)", M2, RTT_MS), "1 stream", t1,
        M2 .. " streams", t64)
    else
      print("3. HTTP/2: nghttpd did not answer over h2; skipped")
    end
    h2:close()
    os.execute("kill " .. relay_pid .. " 2>/dev/null")
    rp:close()
    os.execute("kill " .. pid .. " 2>/dev/null")
  else
    print("3. HTTP/2: nghttpd not installed (apt-get install nghttp2-server); skipped")
  end

  -- 4. fan-out to K namespaces versus client-go's default throttle
  local K = 40
  local kube = require "pullsecret.kube"
  local manifest = require "pullsecret.manifest"
  local k = assert(kube.new{ kubeconfig = s.kubeconfig })
  for i = 1, K do assert(k:create{ apiVersion = "v1", kind = "Namespace", metadata = { name = "ns-" .. i } }) end
  s:reset_stats()
  local t = timed(function()
    for i = 1, K do
      local secret = assert(manifest.pull_secret{ name = "regtok", namespace = "ns-" .. i,
        server = "registry.example.com", username = "token", password = "bench-token-" .. i })
      assert(k:upsert_secret(secret))
    end
  end)
  local requests = s:stats().requests.kube
  -- client-go: a token bucket of 5/s with a burst of 10
  local throttle = math.max(0, requests - 10) / 5
  line(string.format("4. pull secret into %d namespaces (%d requests)", K, requests), "client-go 5/s", throttle,
    "pullsecret", t)
  k:close()

  -- 5. pullsecret.run into K namespaces, concurrency 1 versus 16
  local nss = {}
  for i = 1, K do nss[i] = "ns-" .. i end
  local s5 = sim.start{ services = { api = true, login = true, iam = true, registry = true,
                                     kube = { namespaces = nss } } }
  local ok5, err5 = pcall(function()
    s5:fault{ listener = "kube", path = ".*", delay_ms = DELAY_MS }   -- no status: the normal answer, late
    local function fan_out(concurrency)
      s5:reset_stats()
      local secs = timed(function()
        assert(require("pullsecret").run{ api = s5.urls.api, username = "demo@example.com",
          password = "demo-password", org = "demo-org", registry = s5.urls.registry, ca_file = s5.ca_file,
          kubeconfig = s5.kubeconfig, namespaces = nss, secret_name = "regtok-" .. concurrency,
          docker_email = "a@b.c", concurrency = concurrency })
      end)
      return secs, s5:stats().requests.kube
    end
    local t1, n1 = fan_out(1)
    local t16, n16 = fan_out(CONCURRENCY)
    assert(n1 == n16, "both runs make the same requests")
    line(string.format("5. pullsecret.run into %d namespaces", K), "concurrency 1", t1,
      "concurrency " .. CONCURRENCY, t16)
    print(string.format("   each run: login, a new token, %d Kubernetes requests answered after %d ms", n1, DELAY_MS))
  end)
  s5:stop()
  if not ok5 then error(err5, 0) end
end)
s:stop()
if not ok then
  io.stderr:write("bench failed: ", tostring(err), "\n")
  os.exit(1)
end
