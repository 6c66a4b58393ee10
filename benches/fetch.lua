-- POST /fetch of 10 URLs on the local upstream; a counter keeps every URL
-- distinct so each one is really fetched (no cache hits).
-- Each thread's id carries the run's start time, so no two runs share a URL.
local counter = 0
local threads = 0
function setup(thread)
  thread:set("id", os.time() .. "-" .. threads)
  threads = threads + 1
end
function request()
  counter = counter + 1
  local urls = {}
  for i = 1, 10 do
    urls[i] = string.format('"http://127.0.0.1:%s/item/%s-%d-%d"', upstream_port or "18300", id, counter, i)
  end
  wrk.headers["Content-Type"] = "application/json"
  return wrk.format("POST", "/fetch", nil, '{"urls":[' .. table.concat(urls, ",") .. ']}')
end
