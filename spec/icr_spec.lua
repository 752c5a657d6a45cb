-- The modern path: pull credentials for <region>.icr.io from an IAM API key (no token call).
local icr = require "pullsecret.icr"

describe("icr.credentials", function()
  it("gives <region>.icr.io, user iamapikey and the key as password", function()
    assert.same({ server = "uk.icr.io", username = "iamapikey", password = "k-123", region = "uk" },
      icr.credentials{ apikey = "k-123", region = "uk" })
    assert.equal("jp2.icr.io", icr.credentials{ apikey = "k", region = "jp2" }.server)
  end)

  it("knows every region of wire-ibm.md, plus the global icr.io", function()
    local want = { us = "us.icr.io", uk = "uk.icr.io", de = "de.icr.io", au = "au.icr.io", jp = "jp.icr.io",
      jp2 = "jp2.icr.io", ca = "ca.icr.io", br = "br.icr.io", global = "icr.io" }
    for region, server in pairs(want) do
      assert.equal(server, (icr.server(region)))
    end
    assert.equal(9, #icr.REGIONS)
  end)

  it("defaults to the global registry and accepts host names and any case", function()
    assert.equal("icr.io", icr.credentials{ apikey = "k" }.server)
    assert.equal("de.icr.io", icr.credentials{ apikey = "k", region = "DE" }.server)
    assert.equal("de.icr.io", icr.credentials{ apikey = "k", region = "de.icr.io" }.server)
    assert.equal("icr.io", icr.credentials{ apikey = "k", region = "icr.io" }.server)
  end)

  it("refuses an unknown region, listing the valid ones", function()
    local c, err = icr.credentials{ apikey = "k-secret-1", region = "mars" }
    assert.is_nil(c)
    assert.equal("input", err.kind)
    assert.equal("region", err.field)
    assert.equal('unknown IBM Cloud Container Registry region "mars": use one of us, uk, de, au, jp, jp2, ca, br, '
      .. "global", err.message)
    assert.falsy(err.message:find("k-secret-1", 1, true))
    c, err = icr.credentials{ apikey = "k", region = "us-south" }
    assert.is_nil(c)
    assert.equal("input", err.kind)
  end)

  it("refuses a missing API key", function()
    local c, err = icr.credentials{ region = "us" }
    assert.is_nil(c)
    assert.equal("input", err.kind)
    assert.equal("apikey", err.field)
    assert.has_error(function() icr.credentials("us") end)
  end)
end)
