-- The pull secret of step 6 is compared, byte for byte, with what real kubectl prints for
-- `kubectl create secret docker-registry ... --dry-run=client -o json` (works offline).
local core = require "pullsecret.core"
local manifest = require "pullsecret.manifest"

local KUBECTL = os.getenv("KUBECTL") or "kubectl"

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- runs kubectl with the given arguments; returns stdout, exit-ok
local function kubectl(args)
  local parts = { "KUBECONFIG=/nonexistent", KUBECTL }
  for _, a in ipairs(args) do parts[#parts + 1] = sh_quote(a) end
  local p = assert(io.popen(table.concat(parts, " ") .. " 2>/dev/null", "r"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

local function kubectl_secret(c)
  local args = {}
  if c.namespace then args[#args + 1] = "--namespace=" .. c.namespace end
  for _, a in ipairs { "create", "secret", "docker-registry", c.name or "s" } do args[#args + 1] = a end
  if c.server then args[#args + 1] = "--docker-server=" .. c.server end
  if c.username then args[#args + 1] = "--docker-username=" .. c.username end
  if c.password then args[#args + 1] = "--docker-password=" .. c.password end
  if c.email then args[#args + 1] = "--docker-email=" .. c.email end
  args[#args + 1] = "--dry-run=client"
  args[#args + 1] = "-o"
  args[#args + 1] = "json"
  return kubectl(args)
end

local JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJqdGkiOiI2MzdiM2Q4Yy1hMDg3LTVhZjktYTYzNi0xNm"
  .. "U3ZWZjNzA5NjciLCJpc3MiOiJyZWdpc3RyeS5jZnNkZWRpY2F0ZWQxLnVzLXNvdXRoLmJsdWVtaXgubmV0In0.c2lnbmF0dXJl"

local long_token = {}
for i = 1, 1200 do long_token[i] = string.char(65 + (i * 7) % 26, 97 + (i * 11) % 26, 48 + i % 10) end
long_token = "tok_" .. table.concat(long_token) .. "_/+=="

local CASES = {
  { what = "the seed's secret", name = "regcred", namespace = "apps",
    server = "registry.cfsdedicated1.us-south.bluemix.net",
    username = "token", password = JWT, email = "a@b.c" },
  { what = "an empty email (left out)", server = "registry.example.com", username = "token", password = JWT },
  { what = "an explicitly empty email",
    server = "registry.example.com", username = "token", password = JWT, email = "" },
  { what = "the default server (Docker Hub)", username = "me", password = "hunter2" },
  { what = "an IBM Cloud API key", server = "us.icr.io", username = "iamapikey",
    password = "0123456789abcdef-_0123456789ABCDEF_xyz", email = "a@b.c", name = "all-icr-io", namespace = "default" },
  { what = "unicode everywhere",
    server = "реестр.пример.рф", username = "jöhn", password = "пароль密码😀", email = "ü@ö.de" },
  { what = "a double quote", server = "r.example.com", username = "u", password = 'pa"ss"' },
  { what = "a backslash", server = "r.example.com", username = "dom\\user", password = "p\\a\\\\ss" },
  { what = "slashes (not escaped)", server = "https://r.example.com/a/b/", username = "u/v", password = "p/q//r" },
  { what = "< > &", server = "r.example.com", username = "<u>", password = "a&b<c>d", email = "<a&b>@c" },
  { what = "U+2028 and U+2029", server = "r.example.com", username = "u", password = "line\u{2028}para\u{2029}end" },
  { what = "short-escaped control characters",
    server = "r.example.com", username = "u", password = "a\tb\nc\rd\be\ff" },
  { what = "other control characters", server = "r.example.com", username = "u\1", password = "\2\3\27\31x" },
  { what = "DEL passes through", server = "r.example.com", username = "u", password = "del\127del" },
  { what = "invalid UTF-8 bytes", server = "r.example.com", username = "u", password = "bad\255\254bytes" },
  { what = "a truncated UTF-8 sequence", server = "r.example.com", username = "u", password = "euro\226\130" },
  { what = "an overlong encoding", server = "r.example.com", username = "u", password = "slash\192\175" },
  { what = "an encoded surrogate", server = "r.example.com", username = "u", password = "sur\237\160\128rogate" },
  { what = "a server with a port and a path",
    server = "registry.example.com:5000/v2/team", username = "u", password = "p" },
  { what = "a URL with scheme, IP and port", server = "https://10.0.0.1:8443/v1/", username = "u", password = "p" },
  { what = "a very long token",
    server = "registry.example.com", username = "token", password = long_token, email = "a@b.c" },
  { what = "a username with a colon (kubectl accepts it)",
    server = "r.example.com", username = "a:b", password = "c:d" },
  { what = "spaces at both ends", server = "r.example.com", username = " u ", password = "  p a s s  ", email = " e " },
  { what = "shell metacharacters", server = "r.example.com", username = "u", password = "$(id) `id` ; | & ' \"" },
  { what = "a literal \\u0000 text", server = "r.example.com", username = "u", password = "\\u0000%00%s" },
  { what = "a server with query and fragment",
    server = "r.example.com/p?q=1&r=2#frag", username = "u", password = "p" },
  { what = "a long dotted name", name = ("a"):rep(60) .. "." .. ("b"):rep(60) .. "." .. ("c"):rep(60) .. ".d-1",
    namespace = ("n"):rep(63), server = "r.example.com", username = "u", password = "p" },
  { what = "a 4-byte emoji in the server", server = "😀.example.com:443", username = "u", password = "p" },
  { what = "base64 with no padding", server = "r", username = "ab", password = "cdef" },
  { what = "base64 with one pad", server = "r", username = "a", password = "bcdefg" },
  { what = "base64 with two pads", server = "r", username = "a", password = "bcdefgh" },
  { what = "a JSON-looking password", server = "r.example.com", username = "u", password = '{"auths":{"x":{}}}' },
  { what = "NBSP, BOM and U+FFFD", server = "r.example.com", username = "\u{a0}u", password = "\u{feff}p\u{fffd}" },
  { what = "C1 control characters", server = "r.example.com", username = "u", password = "\u{85}\u{9f}" },
  { what = "a tab in the email", server = "r.example.com", username = "u", password = "p", email = "a\t@b.c" },
}

describe("pull secret vs kubectl create secret docker-registry --dry-run=client -o json", function()
  it("has at least 30 inputs", function()
    assert.is_true(#CASES >= 30)
  end)

  for i, c in ipairs(CASES) do
    it(string.format("#%d %s: same bytes", i, c.what), function()
      local want, ok = kubectl_secret(c)
      assert.is_truthy(ok, "kubectl failed")
      local secret, text = manifest.pull_secret {
        name = c.name or "s", namespace = c.namespace, server = c.server,
        username = c.username, password = c.password, email = c.email,
      }
      assert.is_table(secret, text and tostring(text))
      assert.are.equal(want, text)

      -- the .dockerconfigjson inside, decoded, is what dockerconfigjson{} returns
      local b64 = want:match('"%.dockerconfigjson": "([^"]*)"')
      local bytes = assert(core.b64decode(b64))
      assert.are.equal(bytes, (manifest.dockerconfigjson {
        server = c.server, username = c.username, password = c.password, email = c.email }))
      assert.are.equal(b64, secret.data[".dockerconfigjson"])
      assert.are.equal("kubernetes.io/dockerconfigjson", secret.type)
      assert.are.equal(c.name or "s", secret.metadata.name)
      assert.are.equal(c.namespace, secret.metadata.namespace)
      assert.is_nil(secret.metadata.creationTimestamp)

      -- auth holds the raw bytes U:P, even when the JSON strings had to replace them
      local auth = bytes:match('"auth":"([^"]*)"')
      assert.are.equal(c.username .. ":" .. c.password, core.b64decode(auth))
      -- and the email key is there only when an email was given
      assert.are.equal(c.email ~= nil and c.email ~= "", bytes:find('"email":', 1, true) ~= nil)
    end)
  end

  it("rejects what kubectl rejects: empty username, password or server", function()
    for _, c in ipairs {
      { field = "username", server = "r", username = "", password = "p" },
      { field = "password", server = "r", username = "u", password = "" },
      { field = "server", server = "", username = "u", password = "p" },
    } do
      local _, ok = kubectl_secret(c)
      assert.is_falsy(ok)
      local secret, err = manifest.pull_secret { name = "s", server = c.server, username = c.username,
                                                 password = c.password }
      assert.is_nil(secret)
      assert.are.equal("input", err.kind)
      assert.are.equal(c.field, err.field)
    end
  end)
end)
