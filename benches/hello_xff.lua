-- GET /hello from many clients: each request claims a random client address
-- (switchboard runs with SWITCHBOARD_TRUST_PROXY=true), so the rate limiter
-- sees many keys, as in production.
math.randomseed(os.time())
request = function()
  wrk.headers["X-Forwarded-For"] = "10." .. math.random(0, 255) .. "." .. math.random(0, 255) .. "." .. math.random(1, 254)
  return wrk.format("GET", "/hello")
end
