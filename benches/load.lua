-- wrk script for every scenario of benches/suite.py; SCENARIO picks one:
--   hello, health   GET /hello, GET /health
--   get             GET /users/{random id of the seeded USERS}
--   list            GET /users?limit=50
--   create          POST /users, every email unique (TAG names the run)
--   update          PATCH /users/{random id}, a new name
--   mixed           90% get, 10% update
--   email           GET /users?email=user{random n}@EXAMPLE.com (seeded
--                   users are user{n}@example.com; the case differs)
--   deep            GET /users?after={random id in the last tenth}&limit=50
--   delete          DELETE /users/{id}, each id once: FIRST, FIRST+1, ...
--                   shared out among wrk's THREADS (default 2) threads
--   conditional     PATCH /users/{id} with If-Match: the ETag its last
--                   answer gave (each thread patches 500 users of its own,
--                   at most one request per user in flight; a user's first
--                   patch, before its ETag is known, is unconditional)
-- ACCEPT_ENCODING, if set, is sent as Accept-Encoding (compressed answers).
-- TOKENS, if set, is a file of bearer tokens (benches/tokens.py): each
-- request sends one of them at random.
-- Every request claims a random client address (X-Forwarded-For; the suite
-- runs switchboard with SWITCHBOARD_TRUST_PROXY=true), so the rate limiter
-- sees many clients, as behind a load balancer.
local scenario = os.getenv("SCENARIO") or "hello"
local users = tonumber(os.getenv("USERS") or "10000")
local tag = os.getenv("TAG") or tostring(os.time())
local counter = 0

-- setup runs in wrk's main Lua state; each thread gets its own number.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

local tokens = {}
function init()
  math.randomseed(os.time() + thread_number * 7919)
  local file = os.getenv("TOKENS")
  if file then
    for line in io.lines(file) do tokens[#tokens + 1] = "Bearer " .. line end
  end
end

local function client()
  return "10." .. math.random(0, 255) .. "." .. math.random(0, 255) .. "." .. math.random(1, 254)
end

local function get_user()
  return wrk.format("GET", "/users/" .. math.random(1, users))
end

local function update_user()
  counter = counter + 1
  return wrk.format("PATCH", "/users/" .. math.random(1, users), nil,
    '{"name":"Renamed ' .. counter .. '"}')
end

local builders = {
  hello = function() return wrk.format("GET", "/hello") end,
  health = function() return wrk.format("GET", "/health") end,
  get = get_user,
  list = function() return wrk.format("GET", "/users?limit=50") end,
  create = function()
    counter = counter + 1
    local email = "bench-" .. tag .. "-" .. thread_number .. "-" .. counter .. "@example.com"
    return wrk.format("POST", "/users", nil,
      '{"name":"Bench User","email":"' .. email .. '"}')
  end,
  update = update_user,
  email = function()
    return wrk.format("GET", "/users?email=user" .. math.random(1, users) .. "@EXAMPLE.com")
  end,
  deep = function()
    local after = math.random(users - math.floor(users / 10), users - 50)
    return wrk.format("GET", "/users?after=" .. after .. "&limit=50")
  end,
  mixed = function()
    if math.random(1, 10) == 1 then return update_user() end
    return get_user()
  end,
}
local first = tonumber(os.getenv("FIRST") or "1")
local threads_total = tonumber(os.getenv("THREADS") or "2")
builders.delete = function()
  counter = counter + 1
  local id = first + (thread_number - 1) + threads_total * (counter - 1)
  return wrk.format("DELETE", "/users/" .. id)
end
-- conditional: what each thread knows of its users.
local etags, in_flight = {}, {}
builders.conditional = function()
  local span = 500
  local low = (thread_number - 1) * span + 1
  local id
  repeat id = math.random(low, low + span - 1) until not in_flight[id]
  in_flight[id] = true
  counter = counter + 1
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["If-Match"] = etags[id]
  return wrk.format("PATCH", "/users/" .. id, headers, '{"name":"Renamed ' .. counter .. '"}')
end
if scenario == "conditional" then
  function response(status, headers, body)
    local id = tonumber(string.match(body or "", '"id":(%d+)'))
    if id then
      in_flight[id] = nil
      etags[id] = headers["etag"] or headers["ETag"]
    end
  end
end
local build = builders[scenario] or error("unknown SCENARIO " .. scenario)

wrk.headers["Content-Type"] = "application/json"
if os.getenv("ACCEPT_ENCODING") then
  wrk.headers["Accept-Encoding"] = os.getenv("ACCEPT_ENCODING")
end

function request()
  wrk.headers["X-Forwarded-For"] = client()
  if #tokens > 0 then wrk.headers["Authorization"] = tokens[math.random(1, #tokens)] end
  return build()
end
