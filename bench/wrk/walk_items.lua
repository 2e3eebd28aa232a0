-- GET /items/<id> over ids that are not cached: each connection walks its own stretch of ids.
local counter = 0
local first = tonumber(os.getenv("WALK_FIRST") or "1")
local span = tonumber(os.getenv("WALK_SPAN") or "50000")
local threads = 0

function setup(thread)
  thread:set("offset", threads * 1000003)
  threads = threads + 1
end

function request()
  counter = counter + 1
  local id = first + ((offset + counter * 7919) % span)
  return wrk.format("GET", "/items/" .. id)
end
