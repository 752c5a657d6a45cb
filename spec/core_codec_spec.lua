-- The C core's codecs: what a caller of pullsecret.core gets back for
-- base64 (RFC 4648), percent/form encoding, JWT parts and Go-style JSON strings.
local core = require "pullsecret.core"

-- RFC 4648 section 10 test vectors.
local rfc4648 = {
  { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
  { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
}

describe("core.b64encode / core.b64decode", function()
  it("encodes the RFC 4648 test vectors with the standard alphabet and padding", function()
    for _, v in ipairs(rfc4648) do
      assert.are.equal(v[2], core.b64encode(v[1]))
    end
  end)

  it("decodes the RFC 4648 test vectors", function()
    for _, v in ipairs(rfc4648) do
      assert.are.equal(v[1], core.b64decode(v[2]))
    end
  end)

  it("uses the URL-safe alphabet without padding for 'url'", function()
    assert.are.equal("Zm9vYg", core.b64encode("foob", "url"))
    assert.are.equal("Zm9vYmE", core.b64encode("fooba", "url"))
    -- bytes 0xfb 0xff 0xbf exercise the two alphabet-specific characters
    assert.are.equal("-_-_", core.b64encode("\251\255\191\251\255\191", "url"):sub(1, 4))
    assert.are.equal("+/+/", core.b64encode("\251\255\191\251\255\191"):sub(1, 4))
    assert.are.equal("\251\255\191", core.b64decode("-_-_", "url"):sub(1, 3))
  end)

  it("accepts base64url with or without padding", function()
    for _, v in ipairs(rfc4648) do
      local unpadded = v[2]:gsub("=", "")
      assert.are.equal(v[1], core.b64decode(unpadded, "url"))
      assert.are.equal(v[1], core.b64decode(v[2], "url"))
    end
  end)

  it("round-trips every byte value", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    for len = 0, 6 do
      local s = all:sub(1, 250 + len)
      assert.are.equal(s, core.b64decode(core.b64encode(s)))
      assert.are.equal(s, core.b64decode(core.b64encode(s, "url"), "url"))
    end
  end)

  it("rejects a character outside the alphabet, naming its 1-based position", function()
    local s, err = core.b64decode("Zm9v*mFy")
    assert.is_nil(s)
    assert.are.equal("invalid base64 at position 5 (character not in the base64 alphabet: '*')", err)
  end)

  it("rejects whitespace and line breaks instead of skipping them", function()
    local s, err = core.b64decode("Zm9v\nYmFy")
    assert.is_nil(s)
    assert.matches("position 5 %(character not in the base64 alphabet: byte 0x0a%)", err)
    assert.is_nil((core.b64decode(" Zm9v")))
  end)

  it("does not mix the two alphabets", function()
    local s, err = core.b64decode("-_-_")
    assert.is_nil(s)
    assert.matches("^invalid base64 at position 1 %(character of the URL%-safe alphabet", err)
    s, err = core.b64decode("+/+/", "url")
    assert.is_nil(s)
    assert.matches("^invalid base64 at position 1 %(character of the standard alphabet", err)
  end)

  it("requires padding in standard base64 and rejects misplaced or excess padding", function()
    local cases = {
      { "Zm9vYg", 7, "input ends without the required '=' padding" },
      { "Zm9vYg=", 7, "wrong amount of padding" },
      { "Zm9v=mFy", 5, "padding '=' before the end of the input" },
      { "Zm9v====", 5, "padding '=' before the end of the input" },
      { "Zm9vYmFy==", 9, "unexpected padding" },
      { "Zg===", 3, "padding '=' before the end of the input" },
    }
    for _, c in ipairs(cases) do
      local s, err = core.b64decode(c[1])
      assert.is_nil(s, c[1])
      assert.are.equal(("invalid base64 at position %d (%s)"):format(c[2], c[3]), err)
    end
    -- url: padding is optional, but when present it must be complete
    local s, err = core.b64decode("Zg=", "url")
    assert.is_nil(s)
    assert.are.equal("invalid base64 at position 3 (wrong amount of padding)", err)
  end)

  it("rejects impossible lengths", function()
    local s, err = core.b64decode("Zm9vY", "url")
    assert.is_nil(s)
    assert.are.equal("invalid base64 at position 5 (a final group of one character cannot encode a byte)", err)
    assert.is_nil((core.b64decode("Zm9vY===")))
  end)

  it("rejects non-zero unused bits, so each byte string has one encoding", function()
    assert.are.equal("f", core.b64decode("Zg=="))
    local s, err = core.b64decode("Zh==")
    assert.is_nil(s)
    assert.are.equal("invalid base64 at position 2 (non-zero unused bits in the final character)", err)
    assert.is_nil((core.b64decode("Zm9=")))
    assert.is_nil((core.b64decode("Zh", "url")))
  end)

  it("accepts only canonical encodings: whatever decodes re-encodes to the same text", function()
    local chars = "ABCZaz09+/-_=*\n"
    local accepted = 0
    math.randomseed(4648)
    for _ = 1, 3000 do
      local t = {}
      for i = 1, math.random(0, 9) do
        local k = math.random(#chars)
        t[i] = chars:sub(k, k)
      end
      local s = table.concat(t)
      local std, url = core.b64decode(s), core.b64decode(s, "url")
      if std then
        accepted = accepted + 1
        assert.are.equal(s, core.b64encode(std))
      end
      if url then assert.are.equal((s:gsub("=", "")), core.b64encode(url, "url")) end
    end
    assert.is_true(accepted > 10)
  end)

  it("raises on wrong argument types or an unknown alphabet", function()
    assert.has_error(function() core.b64encode({}) end)
    assert.has_error(function() core.b64decode(nil) end)
    assert.has_error(function() core.b64encode("x", "base32") end)
  end)
end)

describe("core.urlencode", function()
  it("keeps RFC 3986 unreserved characters and percent-encodes the rest in upper case", function()
    assert.are.equal("AZaz09-._~", core.urlencode("AZaz09-._~"))
    assert.are.equal("a%20b%2Bc%2F%3F%26%3D%25%23", core.urlencode("a b+c/?&=%#"))
    assert.are.equal("%C3%A9%00%FF", core.urlencode("\195\169\0\255"))
    assert.are.equal("", core.urlencode(""))
  end)
end)

describe("core.form_encode", function()
  it("builds application/x-www-form-urlencoded from ordered pairs, space as '+'", function()
    local body = core.form_encode{
      { "grant_type", "password" }, { "username", "me@example.com" }, { "password", "p a&s=s+%" },
    }
    assert.are.equal("grant_type=password&username=me%40example.com&password=p+a%26s%3Ds%2B%25", body)
  end)

  it("keeps the given order and repeated names", function()
    assert.are.equal("b=1&a=2&b=3", core.form_encode{ { "b", "1" }, { "a", "2" }, { "b", "3" } })
    assert.are.equal("", core.form_encode{})
    assert.are.equal("e=", core.form_encode{ { "e", "" } })
  end)

  it("raises when an entry is not a pair of strings", function()
    assert.has_error(function() core.form_encode{ { "a" } } end,
      "form_encode: entry 1 must hold two strings {name, value}")
    assert.has_error(function() core.form_encode{ { "a", "b" }, "c=d" } end,
      "form_encode: entry 2 must be a {name, value} table, got string")
    assert.has_error(function() core.form_encode("a=b") end)
  end)
end)

describe("core.jwt_claims", function()
  it("decodes the header and payload of a well-formed HS256 token", function()
    local token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
      .. "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
      .. "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    local header, payload, sig = core.jwt_claims(token)
    assert.are.equal('{"alg":"HS256","typ":"JWT"}', header)
    assert.are.equal('{"sub":"1234567890","name":"John Doe","iat":1516239022}', payload)
    assert.are.equal("SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", sig)
  end)

  it("decodes the seed document's truncated 2-part token and reports the signature as missing", function()
    local token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
      .. "eyJqdGkiOiI2MzdiM2Q4Yy1hMDg3LTVhZjktYTYzNi0xNmU3ZWZjNzA5NjciLCJpc3MiOiJyZWdpc3RyeS5jZn"
      .. "NkZWRpY2F0ZWQxLnVzLXNvdXRoLmJsdWVtaXgubmV0"
    local header, payload, sig = core.jwt_claims(token)
    assert.are.equal('{"alg":"HS256","typ":"JWT"}', header)
    assert.are.equal('{"jti":"637b3d8c-a087-5af9-a636-16e7efc70967","iss":"registry.cfsdedicated1.us-south.bluemix.net',
      payload)
    assert.is_nil(sig)
  end)

  it("returns an empty signature for an unsigned 3-part token", function()
    local token = core.b64encode('{"alg":"none"}', "url") .. "." .. core.b64encode("{}", "url") .. "."
    local h, p, sig = core.jwt_claims(token)
    assert.are.equal('{"alg":"none"}', h)
    assert.are.equal("{}", p)
    assert.are.equal("", sig)
  end)

  it("refuses tokens without the JWT shape", function()
    local cases = {
      { "", "invalid JWT: empty token" },
      { "abc", "invalid JWT: no '.' separator (a JWT has 3 dot-separated parts)" },
      { "a.b.c.d.e", "invalid JWT: more than 3 dot-separated parts (not a signed JWT)" },
      { ".e30.", "invalid JWT: empty header part" },
      { "e30..", "invalid JWT: empty payload part" },
    }
    for _, c in ipairs(cases) do
      local h, err = core.jwt_claims(c[1])
      assert.is_nil(h, c[1])
      assert.are.equal(c[2], err)
    end
  end)

  it("names the position in the whole token of a base64url error", function()
    -- standard-alphabet '+' in the payload, the 7th character of the token
    local h, err = core.jwt_claims("e30.e3+9.sig")
    assert.is_nil(h)
    assert.are.equal("invalid JWT payload: invalid base64 at position 7 "
      .. "(character of the standard alphabet in base64url input: '+')", err)
    h, err = core.jwt_claims("e30x*.e30.sig")
    assert.is_nil(h)
    assert.matches("^invalid JWT header: invalid base64 at position 5 ", err)
  end)

  it("refuses padded segments: a compact JWT's base64url has no '='", function()
    local h, err = core.jwt_claims("e30=.e30.sig")
    assert.is_nil(h)
    assert.are.equal("invalid JWT header: padding '=' at position 4 (JWT segments are unpadded base64url)", err)
    h, err = core.jwt_claims("e30.eyJhIjoxfQ==.sig")
    assert.is_nil(h)
    assert.are.equal("invalid JWT payload: padding '=' at position 15 (JWT segments are unpadded base64url)", err)
    assert.are.same({ "{}", '{"a":1}', "sig" }, { core.jwt_claims("e30.eyJhIjoxfQ.sig") })
  end)
end)

describe("core.go_json_string", function()
  -- Expected texts checked against kubectl 1.32 (Go encoding/json) by hand; see also the
  -- live kubectl comparison below.
  local cases = {
    { "plain", '"plain"' },
    { "a<b>&c", '"a\\u003cb\\u003e\\u0026c"' },
    { '"\\/', '"\\"\\\\/"' },
    { "\1\b\f\n\r\t\31\127", '"\\u0001\\b\\f\\n\\r\\t\\u001f\127"' },
    { "\0", '"\\u0000"' },
    { "\226\128\168\226\128\169", '"\\u2028\\u2029"' },
    { "é€𝄞", '"é€𝄞"' },
    { "\239\191\189", '"\239\191\189"' },              -- a real U+FFFD passes through
    { "\255", '"\\ufffd"' },                           -- invalid byte
    { "\226\130", '"\\ufffd\\ufffd"' },                -- truncated sequence: one per byte
    { "\226\130A", '"\\ufffd\\ufffdA"' },
    { "\237\160\128", '"\\ufffd\\ufffd\\ufffd"' },     -- surrogate U+D800
    { "\192\175", '"\\ufffd\\ufffd"' },                -- overlong '/'
    { "\244\144\128\128", '"\\ufffd\\ufffd\\ufffd\\ufffd"' }, -- above U+10FFFF
    { "", '""' },
  }

  it("escapes exactly as Go's encoding/json does", function()
    for _, c in ipairs(cases) do
      assert.are.equal(c[2], core.go_json_string(c[1]))
    end
  end)

  it("always produces JSON that decodes back to the input when the input is valid UTF-8", function()
    local cjson = require "cjson"
    local pieces = { "a", "<", ">", "&", '"', "\\", "/", "\0", "\31", "\127", "é", "€", "𝄞", "\226\128\168" }
    math.randomseed(2028)
    for _ = 1, 500 do
      local t = {}
      for i = 1, math.random(0, 12) do t[i] = pieces[math.random(#pieces)] end
      local s = table.concat(t)
      local lit = core.go_json_string(s)
      assert.are.equal(s, cjson.decode("[" .. lit .. "]")[1])
      assert.is_nil(lit:find("[<>&%z\1-\31]"))
    end
  end)

  it("matches kubectl's docker-registry secret byte for byte", function()
    local handle = io.popen("command -v kubectl")
    local found = handle:read("a")
    handle:close()
    if found == "" then
      pending("kubectl not installed")
      return
    end
    local password = "p<a>&s\"s\\/\t\127\226\128\168\255é"
    local quoted = "'" .. password:gsub("'", "'\\''") .. "'"
    local p = io.popen("kubectl create secret docker-registry s --docker-server=X --docker-username=U "
      .. "--docker-password=" .. quoted .. " --dry-run=client -o json")
    local out = p:read("a")
    p:close()
    local b64 = out:match('"%.dockerconfigjson":%s*"([^"]+)"')
    assert.is_string(b64)
    local config = assert(core.b64decode(b64))
    local expected = '{"auths":{"X":{"username":"U","password":' .. core.go_json_string(password)
      .. ',"auth":"' .. core.b64encode("U:" .. password) .. '"}}}'
    assert.are.equal(expected, config)
  end)
end)

describe("core.version", function()
  it("reports the libcurl version and its HTTP/2 and TLS support", function()
    local v = core.version()
    assert.matches("^%d+%.%d+%.%d+", v.curl)
    assert.is_boolean(v.http2)
    assert.is_true(v.tls)
    assert.is_string(v.ssl)
  end)
end)
