-- pullsecret.json: the one JSON encoder and decoder behind kube.json, manifest.json_encode and
-- the simulator's util.encode/decode. (kube_spec, manifest_spec and sim_server_spec check each
-- caller's bytes; this spec checks what the options change.)
local json = require "pullsecret.json"
local yaml = require "pullsecret.yaml"
local core = require "pullsecret.core"

describe("pullsecret.json", function()
  it("orders keys: marked keys first, then kind, apiVersion, metadata, name, namespace, then sorted", function()
    local v = { z = 1, name = "n", metadata = {}, kind = "K", apiVersion = "v1", b = true, namespace = "s" }
    assert.equal('{"kind":"K","apiVersion":"v1","metadata":{},"name":"n","namespace":"s","b":true,"z":1}',
      json.encode(v))
    assert.equal('{"apiVersion":"v1","b":true,"kind":"K","metadata":{},"name":"n","namespace":"s","z":1}',
      json.encode(v, { order = "sorted" }))
    assert.equal('{"z":1,"b":true,"kind":"K","apiVersion":"v1","metadata":{},"name":"n","namespace":"s"}',
      json.encode(json.object(v, { "z", "b", "absent" })))
    assert.equal('{"b":1,"a":2}', json.encode({ a = 2, b = 1 }, { order = function() return { "b", "a" } end }))
  end)

  it("writes arrays marked by json.array or pullsecret.yaml, and lists, as arrays", function()
    assert.equal('{"a":[],"b":[],"c":{},"d":[1,2],"e":{"1":1,"3":3}}', json.encode({
      a = json.array(), b = yaml.array {}, c = yaml.object {}, d = { 1, 2 }, e = { [1] = 1, [3] = 3 } }))
    local docs = assert(yaml.load("l: []\nm: {}\n"))
    assert.equal('{"l":[],"m":{}}', json.encode(docs[1], { order = "sorted" }))
  end)

  it("decodes a raw DEL in a string (JSON forbids only U+0000..U+001F), so its own output round-trips", function()
    assert.equal("a\127b", json.decode('"a\127b"'))
    assert.same({ "x\127y" }, json.decode(json.encode({ "x\127y" })))
    assert.same({ nil, "control character in string at 3" }, { json.decode('"a\31b"') })
    assert.same({ nil, "control character in string at 3" }, { json.decode('"a\0b"') })
  end)

  it("escapes only what JSON needs unless told to quote as Go does, and indents as MarshalIndent", function()
    assert.equal('["a/b<>&\\n\\u0001\127é"]', json.encode({ "a/b<>&\n\1\127é" }))
    assert.equal('["a/b\\u003c\\u003e\\u0026"]', json.encode({ "a/b<>&" }, { quote = core.go_json_string }))
    assert.equal('{\n  "a": [\n    1,\n    null\n  ],\n  "b": {}\n}',
      json.encode({ a = json.array { 1, json.null }, b = {} }, { indent = "  " }))
    assert.equal('[null,null,1,2,0.1,1e+300]', json.encode({ json.null, yaml.null, 1, 2.0, 0.1, 1e300 }))
  end)

  it("names where a value cannot be encoded", function()
    local cyclic = {}
    cyclic.self = cyclic
    for v, want in pairs { [{ a = { print } }] = "value.a[1]: cannot encode a function",
                           [{ x = 0 / 0 }] = "value.x: not a finite number",
                           [cyclic] = "value.self: a table that contains itself",
                           [{ [true] = 1 }] = "value: a boolean key" } do
      local s, err = json.encode(v)
      assert.is_nil(s)
      assert.equal(want, err)
    end
  end)

  it("decodes with arrays marked, integers as integers and json.null for null", function()
    local v = assert(json.decode('{"a":[],"n":3,"f":2.5,"z":null,"s":"\\u00e9\\/"}'))
    assert.is_true(json.is_array(v.a))
    assert.equal("integer", math.type(v.n))
    assert.equal(2.5, v.f)
    assert.equal(json.null, v.z)
    assert.equal("é/", v.s)
    assert.equal('{"a":[],"f":2.5,"n":3,"s":"é/","z":null}', json.encode(v, { order = "sorted" }))
    local copy = json.copy(v)
    assert.is_true(json.is_array(copy.a))
    assert.are_not.equal(v.a, copy.a)
    assert.is_nil(json.decode("[1,"))
  end)
end)
