-- The core HTTP client object's life cycle and argument checking: what a caller sees
-- when it closes a client (explicitly, with <close>, or by dropping it), uses a closed
-- one, or passes options or requests of the wrong type. Requests refused by the
-- input checks never need a server; the ones here go to a URL nobody listens on.
local core = require "pullsecret.core"

describe("core.client life cycle", function()
  it("is a userdata named pullsecret.core.client with request, batch and close", function()
    local c = core.client{}
    assert.are.equal("userdata", type(c))
    assert.are.equal("pullsecret.core.client", getmetatable(c).__name)
    assert.matches("^pullsecret%.core%.client %(0?x?%x+%)$", tostring(c))
    assert.is_function(c.request)
    assert.is_function(c.batch)
    assert.is_function(c.close)
    c:close()
  end)

  it("closes idempotently, and then refuses to be used with 'client is closed'", function()
    local c = core.client{}
    c:close()
    c:close()
    assert.are.equal("pullsecret.core.client (closed)", tostring(c))
    assert.has_error(function() c:request{ url = "http://127.0.0.1:1/" } end, "client is closed")
    assert.has_error(function() c:batch{} end, "client is closed")
  end)

  it("closes at the end of a <close> block", function()
    local escaped
    do
      local c <close> = core.client{}
      escaped = c
      assert.matches("%(0?x?%x+%)$", tostring(escaped))
    end
    assert.are.equal("pullsecret.core.client (closed)", tostring(escaped))
    assert.has_error(function() escaped:request{ url = "http://127.0.0.1:1/" } end, "client is closed")
  end)

  it("is collected when dropped, also after a request", function()
    local weak = setmetatable({}, { __mode = "v" })
    for i = 1, 20 do
      local c = core.client{ insecure = i % 2 == 0 }
      if i == 1 then c:request{ url = "ftp://example.invalid/" } end
      weak[i] = c
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(weak))
  end)

  it("refuses with 'client is closed' when a request's metamethod closes the client", function()
    local c = core.client{}
    local req = setmetatable({ url = "http://127.0.0.1:1/" }, { __index = function(_, k)
      if k == "headers" then c:close() end
    end })
    assert.has_error(function() c:request(req) end, "client is closed")
    local c2 = core.client{}
    local opts = setmetatable({}, { __index = function() c2:close() end })
    assert.has_error(function() c2:batch({ { url = "http://127.0.0.1:1/" } }, opts) end,
      "client is closed")
    local c3 = core.client{}
    local late = setmetatable({ url = "http://127.0.0.1:1/" }, { __index = function(_, k)
      if k == "headers" then c3:close() end
    end })
    assert.has_error(function() c3:batch{ late } end, "client is closed")
  end)

  it("does not accept another object as self", function()
    local c = core.client{}
    assert.has_error(function() c.request({}, { url = "http://x/" }) end)
    assert.has_error(function() c.close("x") end)
    c:close()
  end)
end)

describe("core.client options", function()
  local cases = {
    { { insecure = "yes" }, "client: 'insecure' must be a boolean, got string" },
    { { http2 = 1 }, "client: 'http2' must be a boolean, got number" },
    { { ca_file = 42 }, "client: 'ca_file' must be a string, got number" },
    { { ca_pem = {} }, "client: 'ca_pem' must be a string, got table" },
    { { key_pem = false }, "client: 'key_pem' must be a string, got boolean" },
    { { proxy = true }, "client: 'proxy' must be a string, got boolean" },
    { { user_agent = 1 }, "client: 'user_agent' must be a string, got number" },
    { { ca_file = "a\0b" }, "client: 'ca_file' contains a NUL byte" },
    { { user_agent = "ua/1\r\nX-Injected: yes" }, "client: 'user_agent' contains a control character (byte 5)" },
    { { proxy = "http://p:3128\n" }, "client: 'proxy' contains a control character (byte 14)" },
    { { connect_to = "a:1:b:2" }, "client: 'connect_to' must be a list of strings, got string" },
    { { connect_to = { "a:1:b:2", 3 } }, "client: connect_to[2] must be a string" },
    { { ca_file = "/x", ca_pem = "y" }, "client: 'ca_file' and 'ca_pem' are exclusive" },
    { { cert_file = "/x", cert_pem = "y" }, "client: 'cert_file' and 'cert_pem' are exclusive" },
    { { key_file = "/x", key_pem = "y" }, "client: 'key_file' and 'key_pem' are exclusive" },
    { { ca_pem = "" }, "client: a PEM option is an empty string" },
  }

  it("raises a clear error for each option of the wrong type", function()
    for _, c in ipairs(cases) do
      assert.has_error(function() core.client(c[1]) end, c[2])
    end
    assert.has_error(function() core.client("insecure") end)
  end)

  it("accepts no options, and every option of the right type", function()
    local a = core.client()
    local b = core.client{ insecure = false, http2 = false, proxy = "http://127.0.0.1:1",
      user_agent = "x/1", connect_to = { "a:1:127.0.0.1:2" }, ca_pem = "-----BEGIN CERTIFICATE-----\n" }
    assert.are.equal("userdata", type(a))
    assert.are.equal("userdata", type(b))
    a:close()
    b:close()
  end)
end)

describe("client:request arguments", function()
  local c
  before_each(function() c = core.client{} end)
  after_each(function() c:close() end)

  it("raises for requests of the wrong shape", function()
    local cases = {
      { {}, "request: 'url' must be a string, got nil" },
      { { url = 1 }, "request: 'url' must be a string, got number" },
      { { url = "http://x/", method = true }, "request: 'method' must be a string, got boolean" },
      { { url = "http://x/", body = {} }, "request: 'body' must be a string, got table" },
      { { url = "http://x/", headers = "A: b" }, "request: 'headers' must be a table, got string" },
      { { url = "http://x/", headers = { A = 1 } },
        "request: 'headers' must map strings to strings (got string = number)" },
      { { url = "http://x/", headers = { "A: b" } },
        "request: 'headers' must map strings to strings (got number = string)" },
      { { url = "http://x/", timeout_ms = 1.5 }, "request: 'timeout_ms' must be an integer, got number" },
      { { url = "http://x/", timeout_ms = "10" }, "request: 'timeout_ms' must be an integer, got string" },
      { { url = "http://x/", timeout_ms = 0 }, "request: 'timeout_ms' must be between 1 and 2147483647" },
      { { url = "http://x/", connect_timeout_ms = -1 },
        "request: 'connect_timeout_ms' must be between 1 and 2147483647" },
      { { url = "http://x/", max_body_bytes = -1 }, "request: 'max_body_bytes' must be between 0 and " },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(c.request, c, case[1])
      assert.is_false(ok)
      assert.are.equal(case[2], tostring(err):sub(1, #case[2]))
    end
    assert.has_error(function() c:request("http://x/") end)
  end)

  it("raises for batches of the wrong shape", function()
    assert.has_error(function() c:batch({ { url = "http://x/" }, "http://y/" }) end,
      "batch: request 2 must be a table, got string")
    assert.has_error(function() c:batch({ { url = "http://x/" }, { url = 2 } }) end,
      "batch: request 2: 'url' must be a string, got number")
    assert.has_error(function() c:batch({}, { concurrency = 0 }) end,
      "batch: 'concurrency' must be between 1 and 1024")
    assert.has_error(function() c:batch("x") end)
  end)

  it("returns an empty list for an empty batch", function()
    assert.are.same({}, c:batch({}))
  end)

  it("returns kind 'input' with code 0 for a refused URL or method, without raising", function()
    local cases = {
      { { url = "ftp://example.com/" }, "URL must start with http:// or https://" },
      { { url = "file:///etc/passwd" }, "URL must start with http:// or https://" },
      { { url = "example.com/" }, "URL must start with http:// or https://" },
      { { url = "http://x/a\r\nHost: y" }, "URL contains CR, LF or NUL (at position 11)" },
      { { url = "http://x/a b" }, "URL contains a space or control character (at position 11)" },
      { { url = "http://x/", method = "GET /evil HTTP/1.1\r\n" }, "method is not an HTTP token" },
      { { url = "http://x/", method = "" }, "method is not an HTTP token" },
      { { url = "http://x/", headers = { ["X-A\r\nX-B"] = "1" } }, "a header name is not an HTTP token" },
      { { url = "http://x/", headers = { ["X A"] = "1" } }, "a header name is not an HTTP token" },
      { { url = "http://x/", headers = { [""] = "1" } }, "a header name is not an HTTP token" },
      { { url = "http://x/", headers = { ["X-A"] = "1\r\nX-B: 2" } }, "header X-A: value contains CR, LF or NUL" },
      { { url = "http://x/", headers = { ["X-A"] = "1\0" } }, "header X-A: value contains CR, LF or NUL" },
      { { url = "http://x/", headers = { ["X-A"] = "1\27" } }, "header X-A: value contains a control character" },
      { { url = "http://x/", method = "HEAD", body = "x" }, "a HEAD request cannot have a body" },
      { { url = "http://x/", method = ("X"):rep(32) }, "method is longer than 31 characters" },
    }
    for _, case in ipairs(cases) do
      local res, err = c:request(case[1])
      assert.is_nil(res)
      assert.are.same({ kind = "input", code = 0, message = case[2] }, err)
    end
  end)

  it("returns kind 'input' with libcurl's code for a URL libcurl cannot parse", function()
    local res, err = c:request{ url = "http://[::1/" }
    assert.is_nil(res)
    assert.are.same({ "input", 3 }, { err.kind, err.code })   -- CURLE_URL_MALFORMAT
  end)

  it("accepts the schemes in any case", function()
    -- nothing listens on port 1: the request gets as far as connecting
    for _, url in ipairs{ "HTTP://127.0.0.1:1/", "Https://127.0.0.1:1/" } do
      local res, err = c:request{ url = url, connect_timeout_ms = 2000 }
      assert.is_nil(res)
      assert.are.equal("transport", err.kind)
      assert.are.equal(7, err.code)      -- CURLE_COULDNT_CONNECT
      assert.is_string(err.message)
      assert.is_nil(err.message:find("\n"))
    end
  end)
end)
