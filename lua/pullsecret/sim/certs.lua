--- Throwaway certificates for the simulator, made with the openssl CLI (EC P-256, valid 2 days).
--
--     local certs = require "pullsecret.sim.certs"
--     local dir = assert(certs.tempdir())            -- a new private directory (0700)
--     local files = assert(certs.generate{ dir = dir, client_cn = "sim-admin", client_o = "system:masters" })
--     -- files.ca_crt, files.ca_key, files.server_crt, files.server_key, files.client_crt, files.client_key
--     certs.remove(dir)
--
-- The server certificate is for DNS:localhost, IP:127.0.0.1 and IP:::1; the client certificate
-- (CN client_cn, default "sim-admin"; O client_o when given) is for TLS client authentication.
-- Both are signed by the CA (ca.crt). Keys are written with umask 077.
local errors = require "pullsecret.errors"

local certs = {}

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
certs.shell_quote = shell_quote

--- Creates a private temporary directory (mktemp -d, mode 0700): path | nil, err.
function certs.tempdir(prefix)
  local p = io.popen("mktemp -d " .. shell_quote((os.getenv("TMPDIR") or "/tmp") .. "/" ..
    (prefix or "pullsecret-sim") .. ".XXXXXXXX") .. " 2>/dev/null")
  local dir = p and p:read("l")
  if p then p:close() end
  if not dir or dir == "" then return nil, errors.new("config", "cannot create a temporary directory") end
  return dir
end

--- Removes a directory made by tempdir (refuses anything that does not look like one).
function certs.remove(dir)
  if type(dir) ~= "string" or not dir:find("/pullsecret%-[%w%-]+%.[%w]+$") then return false end
  return os.execute("rm -rf " .. shell_quote(dir)) == true
end

local function subj_escape(s)
  return (tostring(s):gsub("[/\\=+,]", "\\%0"))
end

local function serial()
  local t = {}
  for i = 1, 16 do t[i] = string.format("%02x", math.random(0, 255)) end
  t[1] = string.format("%02x", math.random(16, 127))
  return "0x" .. table.concat(t)
end

--- Writes ca.crt/ca.key, server.crt/server.key, client.crt/client.key into opts.dir.
-- opts: dir (required), client_cn ("sim-admin"), client_o (optional), days (2).
-- Returns a table of paths | nil, err.
function certs.generate(opts)
  if type(opts) ~= "table" or type(opts.dir) ~= "string" then error("certs.generate: opts.dir required", 2) end
  local dir = opts.dir
  local days = tostring(math.tointeger(opts.days or 2) or 2)
  local client_subj = "/CN=" .. subj_escape(opts.client_cn or "sim-admin")
  if opts.client_o then
    local orgs = type(opts.client_o) == "table" and opts.client_o or { opts.client_o }
    for _, o in ipairs(orgs) do client_subj = client_subj .. "/O=" .. subj_escape(o) end
  end
  local ext = io.open(dir .. "/ext.cnf", "w")
  if not ext then return nil, errors.new("config", "cannot write into " .. dir) end
  ext:write([[
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
]])
  ext:close()
  local q = shell_quote
  local newkey = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local script = table.concat({
    "umask 077",
    "cd " .. q(dir),
    "openssl req -x509 " .. newkey .. " -keyout ca.key -out ca.crt -days " .. days ..
      " -subj '/CN=pullsecret simulator CA' -set_serial " .. serial() ..
      " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
    "openssl req " .. newkey .. " -keyout server.key -out server.csr -subj /CN=localhost",
    "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial " .. serial() ..
      " -days " .. days .. " -extfile ext.cnf -extensions server -out server.crt",
    "openssl req " .. newkey .. " -keyout client.key -out client.csr -subj " .. q(client_subj),
    "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -set_serial " .. serial() ..
      " -days " .. days .. " -extfile ext.cnf -extensions client -out client.crt",
    "rm -f server.csr client.csr ext.cnf",
  }, " && ")
  local ok = os.execute("( " .. script .. " ) >" .. q(dir .. "/openssl.log") .. " 2>&1")
  if not ok then
    local f = io.open(dir .. "/openssl.log")
    local log = f and f:read("a") or ""
    if f then f:close() end
    return nil, errors.new("config", "openssl failed making the simulator's certificates: " ..
      (log:gsub("%s+", " "):sub(1, 300)))
  end
  os.remove(dir .. "/openssl.log")
  return {
    ca_crt = dir .. "/ca.crt", ca_key = dir .. "/ca.key",
    server_crt = dir .. "/server.crt", server_key = dir .. "/server.key",
    client_crt = dir .. "/client.crt", client_key = dir .. "/client.key",
  }
end

return certs
