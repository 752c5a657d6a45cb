-- pullsecret: install with
--   luarocks --lua-version=5.4 make --deps-mode=none rockspec/pullsecret-scm-1.rockspec
rockspec_format = "3.0"
package = "pullsecret"
version = "scm-1"
source = {
  url = "git+file:///pullsecret",
}
description = {
  summary = "Registry tokens and Kubernetes image pull secrets, safely and repeatably",
  detailed = [[
Automates IBM Cloud Dedicated's non-expiring registry token procedure (login, OAuth token,
org GUID, registry token, docker-registry secret, pods from templates) and its modern
icr.io API-key variant, with a libcurl C core, a Kubernetes client that reads kubeconfig
like client-go, and a simulator of both services for tests.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "lua-cjson >= 2.1",
  "lyaml >= 6",
  "argparse >= 0.6",
  "luasocket >= 3.0",
  "luasec >= 1.0",
}
test_dependencies = {
  "busted >= 2",
}
external_dependencies = {
  CURL = { library = "curl" },
}
build = {
  type = "builtin",
  modules = {
      ["pullsecret.core"] = {
        sources = { "csrc/b64.c", "csrc/core.c", "csrc/encode.c", "csrc/http.c", "csrc/jwt.c" },
        libraries = { "curl" },
        defines = { "_DEFAULT_SOURCE" },
        incdirs = { "$(CURL_INCDIR)" },
        libdirs = { "$(CURL_LIBDIR)" },
      },
      ["pullsecret"] = "lua/pullsecret/init.lua",
      ["pullsecret.cli"] = "lua/pullsecret/cli.lua",
      ["pullsecret.errors"] = "lua/pullsecret/errors.lua",
      ["pullsecret.http"] = "lua/pullsecret/http.lua",
      ["pullsecret.ibmerr"] = "lua/pullsecret/ibmerr.lua",
      ["pullsecret.icr"] = "lua/pullsecret/icr.lua",
      ["pullsecret.json"] = "lua/pullsecret/json.lua",
      ["pullsecret.kube"] = "lua/pullsecret/kube.lua",
      ["pullsecret.kubeconfig"] = "lua/pullsecret/kubeconfig.lua",
      ["pullsecret.login"] = "lua/pullsecret/login.lua",
      ["pullsecret.manifest"] = "lua/pullsecret/manifest.lua",
      ["pullsecret.org"] = "lua/pullsecret/org.lua",
      ["pullsecret.registry"] = "lua/pullsecret/registry.lua",
      ["pullsecret.run"] = "lua/pullsecret/run.lua",
      ["pullsecret.session"] = "lua/pullsecret/session.lua",
      ["pullsecret.sim"] = "lua/pullsecret/sim/init.lua",
      ["pullsecret.sim.api"] = "lua/pullsecret/sim/api.lua",
      ["pullsecret.sim.certs"] = "lua/pullsecret/sim/certs.lua",
      ["pullsecret.sim.dedicated"] = "lua/pullsecret/sim/dedicated.lua",
      ["pullsecret.sim.echo"] = "lua/pullsecret/sim/echo.lua",
      ["pullsecret.sim.iam"] = "lua/pullsecret/sim/iam.lua",
      ["pullsecret.sim.jwt"] = "lua/pullsecret/sim/jwt.lua",
      ["pullsecret.sim.kube"] = "lua/pullsecret/sim/kube.lua",
      ["pullsecret.sim.kube_patch"] = "lua/pullsecret/sim/kube_patch.lua",
      ["pullsecret.sim.kube_select"] = "lua/pullsecret/sim/kube_select.lua",
      ["pullsecret.sim.login"] = "lua/pullsecret/sim/login.lua",
      ["pullsecret.sim.main"] = "lua/pullsecret/sim/main.lua",
      ["pullsecret.sim.registry"] = "lua/pullsecret/sim/registry.lua",
      ["pullsecret.sim.server"] = "lua/pullsecret/sim/server.lua",
      ["pullsecret.sim.util"] = "lua/pullsecret/sim/util.lua",
      ["pullsecret.yaml"] = "lua/pullsecret/yaml.lua",
  },
  install = {
    bin = { pullsecret = "bin/pullsecret" },
  },
}
test = {
  type = "command",
  command = "make test",
}
