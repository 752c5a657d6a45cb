--- HS256 JSON Web Tokens for the simulator, in pure Lua 5.4 (no C core needed).
--
-- SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104, checked against RFC 4231),
-- base64url without padding (RFC 4648 section 5) and HS256 JWTs (RFC 7519).
-- Only the simulated hosts sign tokens; a client never checks a signature.
--
--     local jwt = require "pullsecret.sim.jwt"
--     local t = jwt.sign({ jti = "1f0c...", iss = "registry.sim.example" }, "secret")
--     local claims, why = jwt.verify(t, "secret")   -- claims table, or nil and a reason
--     jwt.hmac_sha256("key", "data")                -- 32 raw bytes
--     jwt.hex(raw), jwt.b64url(raw), jwt.b64url_decode(s)
local util = require "pullsecret.sim.util"

local jwt = {}

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

local M32 = 0xffffffff
local function rotr(x, n) return ((x >> n) | (x << (32 - n))) & M32 end

--- SHA-256 of a string, as 32 raw bytes.
function jwt.sha256(msg)
  local len = #msg
  msg = msg .. "\128" .. string.rep("\0", (55 - len) % 64) .. string.pack(">I8", len * 8)
  local h0, h1, h2, h3 = 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a
  local h4, h5, h6, h7 = 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
  local w = {}
  for chunk = 1, #msg, 64 do
    for i = 0, 15 do w[i] = string.unpack(">I4", msg, chunk + i * 4) end
    for i = 16, 63 do
      local a, b = w[i - 15], w[i - 2]
      local s0 = rotr(a, 7) ~ rotr(a, 18) ~ (a >> 3)
      local s1 = rotr(b, 17) ~ rotr(b, 19) ~ (b >> 10)
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & M32
    end
    local a, b, c, d, e, f, g, h = h0, h1, h2, h3, h4, h5, h6, h7
    for i = 0, 63 do
      local S1 = rotr(e, 6) ~ rotr(e, 11) ~ rotr(e, 25)
      local ch = (e & f) ~ (~e & g)
      local t1 = (h + S1 + ch + K[i + 1] + w[i]) & M32
      local S0 = rotr(a, 2) ~ rotr(a, 13) ~ rotr(a, 22)
      local maj = (a & b) ~ (a & c) ~ (b & c)
      local t2 = (S0 + maj) & M32
      h, g, f, e, d, c, b, a = g, f, e, (d + t1) & M32, c, b, a, (t1 + t2) & M32
    end
    h0, h1, h2, h3 = (h0 + a) & M32, (h1 + b) & M32, (h2 + c) & M32, (h3 + d) & M32
    h4, h5, h6, h7 = (h4 + e) & M32, (h5 + f) & M32, (h6 + g) & M32, (h7 + h) & M32
  end
  return string.pack(">I4I4I4I4I4I4I4I4", h0, h1, h2, h3, h4, h5, h6, h7)
end

local function xor_pad(key, byte)
  return (key:gsub(".", function(c) return string.char(c:byte() ~ byte) end))
end

--- HMAC-SHA256 (RFC 2104) as 32 raw bytes.
function jwt.hmac_sha256(key, data)
  if #key > 64 then key = jwt.sha256(key) end
  key = key .. string.rep("\0", 64 - #key)
  return jwt.sha256(xor_pad(key, 0x5c) .. jwt.sha256(xor_pad(key, 0x36) .. data))
end

function jwt.hex(raw)
  return (raw:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local B64_INDEX = {}
for i = 1, #B64 do B64_INDEX[B64:sub(i, i)] = i - 1 end

--- base64url, no padding (pullsecret.sim.util's).
jwt.b64url = util.b64url

--- Strict base64url decode (padding tolerated); nil, reason on bad input.
function jwt.b64url_decode(s)
  s = s:gsub("=+$", "")
  if #s % 4 == 1 then return nil, "bad base64url length" end
  local out, n, bits = {}, 0, 0
  for i = 1, #s do
    local v = B64_INDEX[s:sub(i, i)]
    if not v then return nil, "bad base64url character at position " .. i end
    n, bits = (n << 6) | v, bits + 6
    if bits >= 8 then
      bits = bits - 8
      out[#out + 1] = string.char((n >> bits) & 0xff)
      n = n & ((1 << bits) - 1)
    end
  end
  return table.concat(out)
end

local HEADER = jwt.b64url('{"alg":"HS256","typ":"JWT"}')

--- Signs `payload` (a table, encoded as JSON) with HS256: "header.payload.signature".
function jwt.sign(payload, secret)
  local body = HEADER .. "." .. jwt.b64url(util.encode(payload))
  return body .. "." .. jwt.b64url(jwt.hmac_sha256(secret, body))
end

-- Constant-time-ish string comparison (the simulator is not a security boundary, but be tidy).
local function same(a, b)
  if #a ~= #b then return false end
  local d = 0
  for i = 1, #a do d = d | (a:byte(i) ~ b:byte(i)) end
  return d == 0
end

--- Checks an HS256 token: claims table, or nil and why ("malformed", "bad signature", ...).
-- Expiry is the caller's business (the claims carry `exp`).
function jwt.verify(token, secret)
  if type(token) ~= "string" then return nil, "malformed" end
  local h, p, s = token:match("^([%w%-_]+)%.([%w%-_]+)%.([%w%-_]+)$")
  if not h then return nil, "malformed" end
  local hjson = jwt.b64url_decode(h)
  local header = hjson and util.decode(hjson)
  if type(header) ~= "table" or header.alg ~= "HS256" then return nil, "unsupported algorithm" end
  if not same(s, jwt.b64url(jwt.hmac_sha256(secret, h .. "." .. p))) then return nil, "bad signature" end
  local pjson = jwt.b64url_decode(p)
  local claims = pjson and util.decode(pjson)
  if type(claims) ~= "table" then return nil, "malformed" end
  return claims
end

return jwt
