--- The modern path: pull credentials for IBM Cloud Container Registry (`<region>.icr.io`).
--
-- No token call is needed: a pull secret for <region>.icr.io uses the user name
-- "iamapikey" and an IAM API key as the password.
--
--     local icr = require "pullsecret.icr"
--     local c, err = icr.credentials{ apikey = os.getenv("IBMCLOUD_API_KEY"), region = "uk" }
--       --> { server = "uk.icr.io", username = "iamapikey", password = <the key>, region = "uk" }
--     icr.credentials{ apikey = k }                    -- region "global": server "icr.io"
--     icr.server("jp2")                                --> "jp2.icr.io"
--     icr.REGIONS  --> { "us", "uk", "de", "au", "jp", "jp2", "ca", "br", "global" }
--
-- `region` may also be given as the host ("uk.icr.io", "icr.io"), any case.
-- Errors: kind "input": a missing API key, or an unknown region (the message lists the valid ones).
local errors = require "pullsecret.errors"

local icr = {}

icr.REGIONS = { "us", "uk", "de", "au", "jp", "jp2", "ca", "br", "global" }
local VALID = {}
for _, r in ipairs(icr.REGIONS) do VALID[r] = true end

local function region_of(region)
  if region == nil then return "global" end
  if type(region) ~= "string" then return nil end
  local r = region:lower():gsub("^%s+", ""):gsub("%s+$", "")
  if r == "icr.io" or r == "" then return "global" end
  r = r:gsub("%.icr%.io$", "")
  return VALID[r] and r or nil
end

--- The registry host of a region: "uk.icr.io", "icr.io" | nil, err.
function icr.server(region)
  local r = region_of(region)
  if not r then
    return nil, errors.new("input", "unknown IBM Cloud Container Registry region \"" .. tostring(region) ..
      "\": use one of " .. table.concat(icr.REGIONS, ", "), { field = "region", valid = icr.REGIONS })
  end
  return r == "global" and "icr.io" or (r .. ".icr.io"), r
end

--- { server, username = "iamapikey", password = apikey, region } | nil, err.
function icr.credentials(opts)
  if type(opts) ~= "table" then error("icr.credentials: expects an option table", 2) end
  if type(opts.apikey) ~= "string" or opts.apikey == "" then
    return nil, errors.new("input", "the IBM Cloud API key is missing: give it from the environment or a file",
      { field = "apikey" })
  end
  local server, region = icr.server(opts.region)
  if not server then return nil, region end
  return { server = server, username = "iamapikey", password = opts.apikey, region = region }
end

return icr
