-- A real registry and a real client accept the pull secret pullsecret writes.
--
-- pullsecret.run mints a permanent token at the simulated registry and writes the secret into the
-- simulated Kubernetes API; real kubectl reads it back; its `.dockerconfigjson` bytes, unchanged, are
-- skopeo's --authfile against a real docker-registry (distribution 2.8) on 127.0.0.1 with TLS (the
-- simulator's server certificate) and htpasswd users "token" (the minted token) and "iamapikey"
-- (the icr.io path's API key). skopeo pushes a hand-built OCI image, then inspects it and lists tags.
--
-- Tools (Debian packages, installed by .ci/deps): docker-registry, skopeo, htpasswd (apache2-utils),
-- kubectl, sha256sum/timeout (coreutils), gzip. A missing tool fails this spec; it never skips.
-- Secrets never go on a command line: htpasswd reads them on stdin, skopeo from authfiles (0600).
-- skopeo runs with a clean environment (env -i, a private HOME and XDG_RUNTIME_DIR, an empty
-- registries.conf, an explicit accept-anything policy), so no credentials of the machine are used.
--
-- What the formats turned out to be (skopeo 1.9 / containers-image):
-- * skopeo reads only `auth` from an auths entry: username/password without `auth` are ignored
--   (Kubernetes' kubelet would use them), and a wrong username/password beside a good `auth` is
--   ignored too. kubectl and pullsecret always write `auth`, so the secret works.
-- * The server key matches as the kubelet's does: scheme and a /v1/ path are dropped, the port must
--   match, a key with a repository path matches that repository.
-- * docker-registry's htpasswd is bcrypt, which reads only the first 72 bytes of a password. A
--   registry token is a JWT of about 180 bytes whose first 72 are the JWT header and the start of
--   the claims ({"iss":"registry.<domain>",...), the same for every token the simulator mints, so
--   the real registry alone cannot tell the token from another one. One spec therefore also
--   checks, on the wire, that skopeo sends exactly "token:<the whole token>".
local sim = require "pullsecret.sim"
local certs = require "pullsecret.sim.certs"
local manifest = require "pullsecret.manifest"
local cjson = require "cjson.safe"
local mime = require "mime"
local jwt = require "pullsecret.sim.jwt"
local util = require "pullsecret.sim.util"
local socket = require "socket"
local ssl = require "ssl"
local host = require "spec.helpers.host"

local q, write, read = host.q, host.write, host.read

local SECRET, ICR_SECRET = "regtok", "all-icr-io"
local ICR_KEY = "sim-icr-key-0123456789abcdefABCDEF0123456789"   -- 44 characters, like an IAM API key
local IMAGE_PATH, TAG = "demo/hello", "1.0"

-- Tools -------------------------------------------------------------------------------------------

local TOOLS = {
  { "docker-registry", "docker-registry" }, { "skopeo", "skopeo" }, { "htpasswd", "apache2-utils" },
  { "kubectl", "kubectl" }, { "sha256sum", "coreutils" }, { "timeout", "coreutils" }, { "gzip", "gzip" },
}

local function check_tools()
  local missing = {}
  for _, t in ipairs(TOOLS) do
    if os.execute("command -v " .. q(t[1]) .. " >/dev/null 2>&1") ~= true then
      missing[#missing + 1] = t[1] .. " (Debian package " .. t[2] .. ")"
    end
  end
  if #missing > 0 then
    error("the registry client check needs " .. table.concat(missing, ", ") ..
      ": run .ci/deps (make test does) or apt-get install them", 0)
  end
end

-- Processes ---------------------------------------------------------------------------------------

local proc_state, wait_dead = util.proc_state, util.wait_dead

-- Starts `cmd` (a shell command line, redirections included) as a direct child: { pid, pipe }.
local function spawn(cmd)
  local pipe = assert(io.popen("echo $$; exec " .. cmd, "r"))
  local pid = tonumber(pipe:read("l"))
  if not pid then pipe:close() error("cannot start: " .. cmd, 2) end
  return { pid = pid, pipe = pipe }
end

-- Direct children of `pid` (Linux /proc).
local function children(pid)
  local out = {}
  for c in (read("/proc/" .. pid .. "/task/" .. pid .. "/children") or ""):gmatch("%d+") do
    out[#out + 1] = tonumber(c)
  end
  return out
end

-- TERM, then KILL, then reap. Idempotent.
local function stop(proc)
  if not proc or proc.stopped then return end
  proc.stopped = true
  local pids = { proc.pid }
  for _, c in ipairs(children(proc.pid)) do pids[#pids + 1] = c end
  for _, pid in ipairs(pids) do
    if proc_state(pid) == "alive" then os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
  end
  for _, pid in ipairs(pids) do
    if not wait_dead(pid, 3) then
      os.execute("kill -KILL " .. pid .. " 2>/dev/null")
      wait_dead(pid, 2)
    end
  end
  proc.pipe:close()   -- reaps the direct child
end

-- Runs a shell command; returns its stdout+stderr and true when it exited 0.
local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

local function sha256_file(path)
  local out, ok = sh("sha256sum " .. q(path))
  assert(ok, "sha256sum failed: " .. out)
  return assert(out:match("^(%x+)"), out)
end

-- The OCI image: one plain file in one gzip'd tar layer --------------------------------------------

local function octal(n, width) return string.format("%0" .. (width - 1) .. "o", n) .. "\0" end

-- A ustar archive holding one regular file (mode 0644, uid/gid 0, mtime 0).
local function tar_one(name, data)
  local function field(s, n) return s .. string.rep("\0", n - #s) end
  local head = field(name, 100) .. octal(420, 8) .. octal(0, 8) .. octal(0, 8) .. octal(#data, 12) ..
    octal(0, 12) .. "        " .. "0" .. field("", 100) .. "ustar\0" .. "00" .. field("root", 32) ..
    field("root", 32) .. octal(0, 8) .. octal(0, 8) .. field("", 155)
  head = field(head, 512)
  local sum = 0
  for i = 1, #head do sum = sum + head:byte(i) end
  head = head:sub(1, 148) .. string.format("%06o", sum) .. "\0 " .. head:sub(157)
  local pad = (512 - #data % 512) % 512
  return head .. data .. string.rep("\0", pad) .. string.rep("\0", 1024)
end

-- Writes an OCI image layout at `dir` with one manifest tagged `ref`; returns its digests.
local function oci_layout(dir, ref)
  assert(os.execute("mkdir -p " .. q(dir .. "/blobs/sha256")))
  local function blob(path)
    local hex = sha256_file(path)
    local size = #read(path)
    assert(os.rename(path, dir .. "/blobs/sha256/" .. hex))
    return "sha256:" .. hex, size
  end
  local tar = write(dir .. "/layer.tar", tar_one("hello.txt", "hello from a pullsecret pull secret\n"))
  local diff_id = "sha256:" .. sha256_file(tar)
  local _, ok = sh("gzip -n -9 " .. q(tar))                    -- -> layer.tar.gz, no name or time
  assert(ok, "gzip failed")
  local layer, layer_size = blob(tar .. ".gz")
  write(dir .. "/config.json", string.format('{"architecture":"amd64","os":"linux","config":{},' ..
    '"rootfs":{"type":"layers","diff_ids":["%s"]}}', diff_id))
  local config, config_size = blob(dir .. "/config.json")
  write(dir .. "/manifest.json", string.format('{"schemaVersion":2,' ..
    '"mediaType":"application/vnd.oci.image.manifest.v1+json",' ..
    '"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},' ..
    '"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}',
    config, config_size, layer, layer_size))
  local digest, size = blob(dir .. "/manifest.json")
  write(dir .. "/oci-layout", '{"imageLayoutVersion":"1.0.0"}')
  write(dir .. "/index.json", string.format('{"schemaVersion":2,"manifests":[{' ..
    '"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d,' ..
    '"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}', digest, size, ref))
  return { manifest = digest, layer = layer, config = config }
end

-- A tiny HTTPS probe: the status line and headers of GET /v2/ (nil when nothing answers yet).
local function probe(port, ca_file)
  local c = socket.tcp4()
  c:settimeout(1)
  if not c:connect("127.0.0.1", port) then c:close() return nil end
  local t = ssl.wrap(c, { mode = "client", protocol = "any", cafile = ca_file, verify = "peer", options = { "all" } })
  if not t then c:close() return nil end
  t:settimeout(2)
  if not t:dohandshake() then t:close() return nil end
  t:send("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:" .. port .. "\r\nConnection: close\r\n\r\n")
  local status = t:receive("*l")
  local headers = {}
  while true do
    local line = t:receive("*l")
    if not line or line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
  end
  t:close()
  return status, headers
end

-- The spec ----------------------------------------------------------------------------------------

describe("a real registry and client (docker-registry, skopeo) accept the pull secret pullsecret writes", function()
  local s, dir, reg, port, server
  local seed, icr = {}, {}       -- { text = .dockerconfigjson bytes, doc = decoded, file = authfile,
                                  --   token = the password }
  local pushed                    -- { ok, out, digest } of the one push, made on first need
  local image                     -- the OCI layout's digests

  local function path(name) return dir .. "/" .. name end

  local function kubectl_secret(name)
    local out, ok = sh("kubectl --kubeconfig " .. q(s.kubeconfig) .. " --cache-dir " .. q(path("kcache")) ..
      " --request-timeout=10s --namespace default get secret " .. q(name) .. " -o json")
    assert(ok, "kubectl get secret " .. name .. " failed: " .. out)
    return assert(cjson.decode(out))
  end

  -- The secret as kubectl reads it: its decoded .dockerconfigjson bytes, written to a 0600 authfile.
  local function read_back(name, into)
    local obj = kubectl_secret(name)
    assert.equal("kubernetes.io/dockerconfigjson", obj.type)
    into.text = assert((mime.unb64(obj.data[".dockerconfigjson"])))
    into.doc = assert(cjson.decode(into.text))
    into.file = path(name .. ".authfile.json")
    write(into.file, into.text)
    assert(os.execute("chmod 600 " .. q(into.file)))
  end

  -- A derived authfile (0600) holding `text`.
  local function authfile(name, text)
    local p = path(name .. ".json")
    write(p, text)
    assert(os.execute("chmod 600 " .. q(p)))
    return p
  end

  local function skopeo(args)
    return sh("env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=" .. q(path("home")) ..
      " XDG_RUNTIME_DIR=" .. q(path("run")) .. " CONTAINERS_REGISTRIES_CONF=" .. q(path("registries.conf")) ..
      " skopeo --command-timeout 30s --policy " .. q(path("policy.json")) .. " " .. args)
  end

  local function ref() return "docker://" .. server .. "/" .. IMAGE_PATH .. ":" .. TAG end
  local function cert_dir() return " --cert-dir " .. q(path("certs")) .. " --tls-verify=true " end

  local function inspect(file)
    return skopeo("inspect" .. cert_dir() .. (file and ("--authfile " .. q(file)) or "--no-creds") .. " " .. ref())
  end

  local function list_tags(file)
    return skopeo("list-tags" .. cert_dir() .. "--authfile " .. q(file) ..
      " docker://" .. server .. "/" .. IMAGE_PATH)
  end

  -- The image is pushed once, with the seed secret's bytes as the authfile.
  local function push()
    if pushed then return pushed end
    local digestfile = path("pushed.digest")
    local out, ok = skopeo("copy --preserve-digests --dest-tls-verify=true --dest-cert-dir " .. q(path("certs")) ..
      " --dest-authfile " .. q(seed.file) .. " --digestfile " .. q(digestfile) ..
      " oci:" .. q(path("oci")) .. ":v1 " .. ref())
    pushed = { ok = ok, out = out, digest = read(digestfile) }
    return pushed
  end

  local function run(extra)
    local o = { api = s.urls.api, ca_file = s.ca_file, username = "demo@example.com", password = "demo-password",
      org = "demo-org", registry = s.urls.registry, docker_server = server, kubeconfig = s.kubeconfig,
      namespace = "default", secret_name = SECRET, docker_email = "a@b.c",
      retry = { attempts = 2, base_ms = 10, max_ms = 20, max_seconds = 2 } }
    for k, v in pairs(extra or {}) do
      if v == false then o[k] = nil else o[k] = v end
    end
    return require("pullsecret").run(o)
  end

  -- Picks a free loopback port, writes both secrets for it, starts the registry on it: true, or
  -- false when the port was taken meanwhile (the caller tries another), raising on other failures.
  local function attempt()
    port = host.closed_port()
    server = "127.0.0.1:" .. port
    local r, err = run()
    assert(r, "pullsecret.run (seed path) failed: " .. tostring(err))
    r, err = run{ api = false, username = false, password = false, org = false, registry = false,
                  secret_name = ICR_SECRET, icr = { region = "uk", apikey = ICR_KEY } }
    assert(r, "pullsecret.run (icr path) failed: " .. tostring(err))
    read_back(SECRET, seed)
    read_back(ICR_SECRET, icr)
    seed.token = seed.doc.auths[server].password
    icr.token = icr.doc.auths[server].password
    -- htpasswd reads each password from stdin (-i), bcrypt (-B), never from argv.
    local htpasswd = path("htpasswd")
    os.remove(htpasswd)
    for i, u in ipairs{ { "token", seed.token }, { "iamapikey", icr.token } } do
      local p = assert(io.popen("htpasswd -iB" .. (i == 1 and "c" or "") .. " " .. q(htpasswd) .. " " .. q(u[1]) ..
        " >" .. q(path("htpasswd.log")) .. " 2>&1", "w"))
      p:write(u[2])
      assert(p:close(), "htpasswd failed: " .. tostring(read(path("htpasswd.log"))))
    end
    assert(os.execute("chmod 600 " .. q(htpasswd)))
    write(path("registry.yml"), table.concat({
      "version: 0.1",
      "log:",
      "  level: info",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      "    rootdirectory: " .. path("storage"),
      "http:",
      "  addr: " .. server,
      "  secret: " .. string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff)),
      "  tls:",
      "    certificate: " .. s.dir .. "/server.crt",
      "    key: " .. s.dir .. "/server.key",
      "auth:",
      "  htpasswd:",
      "    realm: pullsecret-spec",
      "    path: " .. htpasswd,
      "",
    }, "\n"))
    -- `timeout` is a backstop: the registry cannot outlive a spec run that was killed.
    reg = spawn("timeout -k 5 300 docker-registry serve " .. q(path("registry.yml")) ..
      " </dev/null >" .. q(path("registry.log")) .. " 2>&1")
    local deadline = socket.gettime() + 15
    while true do
      local status, headers = probe(port, s.ca_file)
      if status then
        assert.matches("^HTTP/1%.1 401", status)
        assert.equal('Basic realm="pullsecret-spec"', headers["www-authenticate"])
        return true
      end
      if proc_state(reg.pid) ~= "alive" then
        stop(reg)
        local log = read(path("registry.log")) or ""
        if log:find("address already in use", 1, true) then return false end
        error("docker-registry exited at start:\n" .. log, 0)
      end
      if socket.gettime() > deadline then
        stop(reg)
        error("docker-registry did not answer on " .. server .. " within 15 s:\n" ..
          (read(path("registry.log")) or ""), 0)
      end
      socket.sleep(0.05)
    end
  end

  local function cleanup()
    stop(reg)
    if s then s:stop() end
    if dir then certs.remove(dir) end
  end

  lazy_setup(function()
    check_tools()
    local ok, err = pcall(function()
      dir = assert(certs.tempdir("pullsecret-regspec"))
      for _, d in ipairs{ "home", "run", "certs", "storage", "kcache" } do
        assert(os.execute("mkdir -p " .. q(path(d))))
      end
      write(path("registries.conf"), "")
      write(path("policy.json"), '{"default":[{"type":"insecureAcceptAnything"}]}\n')
      s = sim.start{ services = { api = true, login = true, iam = true, registry = true, kube = {} } }
      write(path("certs/ca.crt"), s.ca_pem)
      image = oci_layout(path("oci"), "v1")
      for _ = 1, 5 do
        if attempt() then return end
      end
      error("no free loopback port for docker-registry after 5 tries", 0)
    end)
    if not ok then
      cleanup()
      error(err, 0)
    end
  end)

  lazy_teardown(function()
    local pid = reg and reg.pid
    local kids = pid and children(pid) or {}
    cleanup()
    if pid then
      assert.equal("gone", proc_state(pid))
      for _, c in ipairs(kids) do assert.is_not.equal("alive", proc_state(c)) end
    end
  end)

  it("kubectl reads back a secret for 127.0.0.1:PORT holding the permanent token the registry minted", function()
    local minted
    for _, t in ipairs(s:state("registry").tokens) do
      if t.token == seed.token then minted = t end
    end
    assert(minted, "the secret's token is not one the registry minted")
    assert.is_false(minted.revoked)
    local keys = {}
    for k in pairs(seed.doc.auths) do keys[#keys + 1] = k end
    assert.same({ server }, keys)                           -- the server key exactly as given
    local entry = seed.doc.auths[server]
    assert.equal("token", entry.username)
    assert.equal("a@b.c", entry.email)
    assert.equal(mime.b64("token:" .. seed.token), entry.auth)
    local payload = assert(jwt.b64url_decode(seed.token:match("^[^.]+%.([^.]+)%.")))
    local claims = assert(cjson.decode(payload))
    assert.equal(minted._id, claims.jti)
    assert.is_nil(claims.exp)                                -- permanent
    assert.is_true(#seed.token > 72)                        -- longer than bcrypt reads (72 bytes)
  end)

  it("skopeo pushes an image with the secret's .dockerconfigjson, byte for byte, as its authfile", function()
    assert.equal(seed.text, read(seed.file))
    local p = push()
    assert(p.ok, "skopeo copy failed: " .. p.out)
    assert.equal(image.manifest, p.digest)
  end)

  it("skopeo inspect with the secret sees the image: its digest, tag and layer", function()
    assert(push().ok)
    local out, ok = inspect(seed.file)
    assert(ok, "skopeo inspect failed: " .. out)
    local info = assert(cjson.decode(out), out)
    assert.equal(server .. "/" .. IMAGE_PATH, info.Name)
    assert.equal(image.manifest, info.Digest)
    assert.same({ TAG }, info.RepoTags)
    assert.same({ image.layer }, info.Layers)
    assert.equal("linux", info.Os)
  end)

  it("skopeo list-tags with the secret lists the tag", function()
    assert(push().ok)
    local out, ok = list_tags(seed.file)
    assert(ok, "skopeo list-tags failed: " .. out)
    local info = assert(cjson.decode(out), out)
    assert.equal(server .. "/" .. IMAGE_PATH, info.Repository)
    assert.same({ TAG }, info.Tags)
  end)

  it("the same secret with a wrong password is refused, and so is no credential at all", function()
    assert(push().ok)
    local wrong = assert(manifest.pull_secret{ name = SECRET, namespace = "default", server = server,
      username = "token", password = "wrong", email = "a@b.c" })
    local file = authfile("wrong", assert(mime.unb64(wrong.data[".dockerconfigjson"])))
    local out, ok = inspect(file)
    assert.is_false(ok)
    assert.matches("unauthorized", out, 1, true)
    assert.matches("authentication required", out, 1, true)
    out, ok = list_tags(file)
    assert.is_false(ok)
    assert.matches("authentication required", out, 1, true)
    out, ok = inspect(nil)
    assert.is_false(ok)
    assert.matches("authentication required", out, 1, true)
  end)

  it("the icr.io path's secret (user iamapikey, the API key) is accepted by the same registry", function()
    assert(push().ok)
    local entry = icr.doc.auths[server]
    assert.equal("iamapikey", entry.username)
    assert.equal(ICR_KEY, icr.token)
    assert.equal(mime.b64("iamapikey:" .. ICR_KEY), entry.auth)
    local out, ok = inspect(icr.file)
    assert(ok, "skopeo inspect (iamapikey) failed: " .. out)
    assert.equal(image.manifest, assert(cjson.decode(out), out).Digest)
    out, ok = list_tags(icr.file)
    assert(ok, "skopeo list-tags (iamapikey) failed: " .. out)
    -- the key is checked as the iamapikey user's password only (the key is shorter than 72 bytes)
    local swapped = assert(manifest.pull_secret{ name = ICR_SECRET, namespace = "default", server = server,
      username = "token", password = ICR_KEY })
    out, ok = inspect(authfile("swapped", assert(mime.unb64(swapped.data[".dockerconfigjson"]))))
    assert.is_false(ok)
    assert.matches("authentication required", out, 1, true)
  end)

  it("skopeo uses `auth` only: without it username/password are ignored, beside it they do not matter", function()
    assert(push().ok)
    local entry = seed.doc.auths[server]
    local no_auth = authfile("no-auth", cjson.encode{ auths = { [server] = {
      username = entry.username, password = entry.password } } })
    local out, ok = inspect(no_auth)
    assert.is_false(ok)
    assert.matches("authentication required", out, 1, true)
    local auth_wins = authfile("auth-wins", cjson.encode{ auths = { [server] = {
      username = "nobody", password = "wrong", auth = entry.auth } } })
    out, ok = inspect(auth_wins)
    assert(ok, "skopeo inspect (auth beside wrong username/password) failed: " .. out)
  end)

  it("the server key matches as the kubelet's does: scheme and /v1/ dropped, port required, repo prefix", function()
    assert(push().ok)
    local function with_key(name, key)
      local sec = assert(manifest.pull_secret{ name = SECRET, namespace = "default", server = key,
        username = "token", password = seed.token })
      return inspect(authfile(name, assert(mime.unb64(sec.data[".dockerconfigjson"]))))
    end
    for i, key in ipairs{ "https://" .. server, "https://" .. server .. "/v1/", server .. "/demo" } do
      local out, ok = with_key("key" .. i, key)
      assert(ok, "key " .. key .. " was not matched: " .. out)
    end
    for i, key in ipairs{ "127.0.0.1", server .. "/other" } do
      local out, ok = with_key("nokey" .. i, key)
      assert.is_false(ok, "key " .. key .. " matched")
      assert.matches("authentication required", out, 1, true)
    end
  end)

  it("skopeo sends the whole token, although the registry's bcrypt check reads only its first 72 bytes", function()
    assert(push().ok)
    -- The limit that makes this check necessary: a token with its tail changed still passes.
    local tail = seed.token:sub(1, -2) .. (seed.token:sub(-1) == "A" and "B" or "A")
    local forged = assert(manifest.pull_secret{ name = SECRET, namespace = "default", server = server,
      username = "token", password = tail })
    local out, ok = inspect(authfile("forged", assert(mime.unb64(forged.data[".dockerconfigjson"]))))
    assert(ok, "docker-registry now checks more than 72 bytes of a password; this spec can be simplified: " .. out)

    -- So catch what skopeo sends, with the seed authfile, at a TLS endpoint that answers 401 Basic.
    local srv = assert(socket.bind("127.0.0.1", 0))
    srv:settimeout(0.05)
    local _, cport = srv:getsockname()
    local cap_log = path("capture.log")
    -- the secret's bytes with only the server key moved to the capture port
    local cap_file = authfile("capture", (seed.text:gsub(server:gsub("%p", "%%%0"), "127.0.0.1:" .. cport)))
    local child = spawn("env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=" .. q(path("home")) ..
      " XDG_RUNTIME_DIR=" .. q(path("run")) .. " CONTAINERS_REGISTRIES_CONF=" .. q(path("registries.conf")) ..
      " skopeo --command-timeout 20s --policy " .. q(path("policy.json")) .. " inspect" .. cert_dir() ..
      "--authfile " .. q(cap_file) ..
      " docker://127.0.0.1:" .. cport .. "/" .. IMAGE_PATH .. ":" .. TAG ..
      " </dev/null >" .. q(cap_log) .. " 2>&1")
    local requests, sent = {}, nil
    local params = { mode = "server", protocol = "any", certificate = s.dir .. "/server.crt",
      key = s.dir .. "/server.key", options = { "all" } }
    local ok_run, err = pcall(function()
      local deadline = socket.gettime() + 20
      while not sent and proc_state(child.pid) == "alive" and socket.gettime() < deadline do
        local c = srv:accept()
        if c then
          c:settimeout(5)
          local t = assert(ssl.wrap(c, params))
          if t:dohandshake() then
            local line = t:receive("*l")
            local auth
            while true do
              local h = t:receive("*l")
              if not h or h == "" then break end
              local k, v = h:match("^([^:]+):%s*(.*)$")
              if k and k:lower() == "authorization" then auth = v end
            end
            requests[#requests + 1] = { line = line, auth = auth ~= nil }
            sent = auth
            t:send("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"capture\"\r\n" ..
              "Docker-Distribution-Api-Version: registry/2.0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
          end
          t:close()
        end
      end
    end)
    srv:close()
    stop(child)
    assert(ok_run, err)
    assert(sent, "skopeo sent no Authorization header; requests: " .. cjson.encode(requests) ..
      "; skopeo: " .. tostring(read(cap_log)))
    assert.equal("GET /v2/ HTTP/1.1", requests[1].line)
    assert.is_false(requests[1].auth)
    assert.equal("Basic " .. mime.b64("token:" .. seed.token), sent)
  end)
end)
