-- The rockspec installs every module of the tree and the C core from every C file.
describe("rockspec/pullsecret-scm-1.rockspec", function()
  local env = {}
  local chunk = assert(loadfile("rockspec/pullsecret-scm-1.rockspec", "t", env))
  chunk()

  local function files(dir, ext)
    local out = {}
    local p = assert(io.popen("find " .. dir .. " -name '*." .. ext .. "' | sort"))
    for line in p:lines() do out[#out + 1] = line end
    p:close()
    return out
  end

  it("lists every Lua module under its require name", function()
    local listed = {}
    for name, src in pairs(env.build.modules) do
      if type(src) == "string" then listed[src] = name end
    end
    local lua = files("lua", "lua")
    assert.is_true(#lua > 10)
    for _, path in ipairs(lua) do
      local want = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
      assert.equal(want, listed[path], path .. " is not in the rockspec")
    end
  end)

  it("builds pullsecret.core from every C source and declares libcurl as an external dependency", function()
    local core = env.build.modules["pullsecret.core"]
    local srcs = {}
    for _, s in ipairs(core.sources) do srcs[s] = true end
    for _, c in ipairs(files("csrc", "c")) do assert.is_true(srcs[c], c .. " missing") end
    assert.same({ library = "curl" }, env.external_dependencies.CURL)
    assert.equal("bin/pullsecret", env.build.install.bin.pullsecret)
  end)
end)
