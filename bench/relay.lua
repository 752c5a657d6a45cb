-- A TCP relay on loopback that delays every chunk by DELAY_MS in each direction: a stand-in for
-- the round trip to a remote server, for `make bench`. It forwards bytes untouched (TLS passes
-- through end to end) and stops by itself after MAX_SECONDS.
--
--   lua5.4 bench/relay.lua TARGET_PORT DELAY_MS MAX_SECONDS    -- prints its own port, then serves
local socket = require "socket"

local target = assert(tonumber(arg[1]), "usage: relay.lua TARGET_PORT DELAY_MS MAX_SECONDS")
local delay = assert(tonumber(arg[2])) / 1000
local deadline = socket.gettime() + assert(tonumber(arg[3]))

local srv = assert(socket.bind("127.0.0.1", 0))
srv:settimeout(0)
io.stdout:write(select(2, srv:getsockname()), "\n")
io.stdout:flush()

local socks = { srv }
local peer, queue = {}, {}      -- socket -> the other end; socket -> { { due, bytes }, ... } to send to it

local function drop(s)
  for _, x in ipairs{ s, peer[s] } do
    if x then
      x:close()
      peer[x], queue[x] = nil, nil
      for i = #socks, 1, -1 do if socks[i] == x then table.remove(socks, i) end end
    end
  end
end

while socket.gettime() < deadline do
  local now = socket.gettime()
  local wait = 0.05
  for _, q in pairs(queue) do
    if q[1] then wait = math.min(wait, math.max(0, q[1][1] - now)) end
  end
  local readable = socket.select(socks, nil, wait)
  for _, s in ipairs(readable) do
    if s == srv then
      local c = srv:accept()
      if c then
        local up = socket.tcp()
        up:settimeout(2)
        if up:connect("127.0.0.1", target) then
          for _, x in ipairs{ c, up } do
            x:settimeout(0)
            x:setoption("tcp-nodelay", true)
            socks[#socks + 1], queue[x] = x, {}
          end
          peer[c], peer[up] = up, c
        else
          c:close()
          up:close()
        end
      end
    elseif peer[s] then
      local data, err, partial = s:receive(65536)
      data = data or partial
      if data and #data > 0 then
        local q = queue[peer[s]]
        q[#q + 1] = { socket.gettime() + delay, data }
      end
      if err == "closed" then
        -- what is still queued for the other end goes first, then both close
        local q = queue[peer[s]]
        q[#q + 1] = { socket.gettime() + delay, false }
      end
    end
  end
  now = socket.gettime()
  for s, q in pairs(queue) do
    while q[1] and q[1][1] <= now do
      local bytes = q[1][2]
      if bytes == false then drop(s) break end
      local sent, err, last = s:send(bytes)
      if sent then
        table.remove(q, 1)
      elseif err == "timeout" then
        q[1][2] = bytes:sub((last or 0) + 1)      -- the rest when the socket takes more
        break
      else
        drop(s)
        break
      end
    end
  end
end
