-- wrk script for the bench harness: a POST with a JSON body and optional
-- Authorization header; prints one machine-readable line at the end.
--   BENCH_BODY  file holding the request body
--   BENCH_AUTH  value of the Authorization header ("" for none)
--   BENCH_PATH  request path (default /v1/chat/completions)
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, ' ..
    '"err_timeout": %d, "lat_p50": %d, "lat_p90": %d, "lat_p99": %d, ' ..
    '"lat_max": %d, "lat_mean": %.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
