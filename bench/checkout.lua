-- wrk script: checkouts from many buyers (one product, quantity 1, a card the simulator
-- accepts). Usage, with `payguard serve` and `payguard gateway-sim` running:
--   wrk -t2 -c32 -d20s -s bench/checkout.lua http://127.0.0.1:18080
-- Products 1, 2, 4 and 5 are used in turn; restock through the admin API for long runs.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local products = {1, 2, 4, 5}
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"items":[{"productId":%d,"quantity":1}],"cardType":"SAMSUNG","cardNo":"1234-5678-9814-1451"}',
    products[(n % 4) + 1])
  wrk.headers["X-USER-ID"] = "buyer-" .. math.random(1, 100000)
  return wrk.format(nil, "/api/v1/orders", nil, body)
end
