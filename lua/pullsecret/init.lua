--- pullsecret: registry tokens and Kubernetes image pull secrets, safely and repeatably.
--
--     local pullsecret = require "pullsecret"
--     local result = assert(pullsecret.run{ api = "api.example.com", username = "me@example.com",
--       password = os.getenv("PULLSECRET_PASSWORD"), org = "myorg", namespace = "apps",
--       secret_name = "registry-token" })
--     print(result.token, result.token_id)        --> new   637b3d8c-a087-5af9-a636-16e7efc70967
--
-- The modules, one per step of the procedure (each documents itself at its top):
--   pullsecret.login, .session         step 1 and 2: log in, the OAuth token
--   pullsecret.org                     step 3: the org GUID
--   pullsecret.registry, .icr          step 4: registry tokens; the icr.io API-key path
--   pullsecret.kubeconfig, .kube       steps 5-7: configuration and the Kubernetes API
--   pullsecret.manifest                step 6 and 7: the docker-registry secret, pods from templates
--   pullsecret.run                     all of it; pullsecret.http: the retrying HTTP client
--   pullsecret.sim                     the simulator of IBM Cloud Dedicated and the Kubernetes API
local pullsecret = { _VERSION = "pullsecret scm" }

local lazy = { login = true, session = true, org = true, registry = true, icr = true, kubeconfig = true,
               kube = true, manifest = true, http = true, errors = true, sim = true, core = true }

setmetatable(pullsecret, {
  __index = function(t, k)
    if lazy[k] then
      local m = require("pullsecret." .. k)
      rawset(t, k, m)
      return m
    end
  end,
})

--- Runs the whole procedure: see pullsecret.run.
function pullsecret.run(opts, on_event)
  return require("pullsecret.run").run(opts, on_event)
end

return pullsecret
