-- POST /items with a bearer token (BENCH_TOKEN), as a client creating data would.
wrk.method = "POST"
wrk.body = '{"name": "bench", "description": "created by make bench", "price_cents": 100}'
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("BENCH_TOKEN")
if token then
  wrk.headers["Authorization"] = "Bearer " .. token
end
