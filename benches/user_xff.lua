-- GET /users/{id} for a random id of the first 1000, from many clients.
math.randomseed(os.time())
request = function()
  wrk.headers["X-Forwarded-For"] = "10." .. math.random(0, 255) .. "." .. math.random(0, 255) .. "." .. math.random(1, 254)
  return wrk.format("GET", "/users/" .. math.random(1, 1000))
end
