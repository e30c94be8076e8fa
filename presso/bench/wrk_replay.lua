-- wrk script: POST real texts (one JSON string per line of $PRESSO_WRK_TEXTS) as {"text": ...}
-- (or as $PRESSO_WRK_BODY_PREFIX .. text .. $PRESSO_WRK_BODY_SUFFIX, for another server's schema),
-- cycling through the comma-separated paths in $PRESSO_WRK_PATHS (default /ner). Each thread
-- stops after $PRESSO_WRK_MAX_REQUESTS responses (0 = only the -d duration bounds the run);
-- each connection pauses $PRESSO_WRK_DELAY_MS between requests (open-ish loop at a set rate).
-- Prints one line "WRK_RESULT {json}" with counts by status class and latency percentiles.
local texts = {}
local f = io.open(os.getenv("PRESSO_WRK_TEXTS"), "r")
for line in f:lines() do texts[#texts + 1] = line end
f:close()
local paths = {}
for p in string.gmatch(os.getenv("PRESSO_WRK_PATHS") or "/ner", "[^,]+") do paths[#paths + 1] = p end
local max_requests = tonumber(os.getenv("PRESSO_WRK_MAX_REQUESTS") or "0")
-- Milliseconds each connection waits before its next request (0 = closed loop at full speed).
local delay_ms = tonumber(os.getenv("PRESSO_WRK_DELAY_MS") or "0")
local body_prefix = os.getenv("PRESSO_WRK_BODY_PREFIX") or '{"text": '
local body_suffix = os.getenv("PRESSO_WRK_BODY_SUFFIX") or '}'
-- Counters live in each thread's Lua state; done() runs in the main state and reads them.
local n = 0
ok_n, c4xx, c5xx, c429 = 0, 0, 0, 0
local threads = {}

setup = function(thread)
  thread:set("offset", #threads * 7919)
  table.insert(threads, thread)
end

request = function()
  n = n + 1
  local path = paths[(n % #paths) + 1]
  local body = body_prefix .. texts[((n + (offset or 0)) % #texts) + 1] .. body_suffix
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
end

delay = function()
  return delay_ms
end

response = function(status, headers, body)
  if status >= 500 then c5xx = c5xx + 1
  elseif status == 429 then c429 = c429 + 1; c4xx = c4xx + 1
  elseif status >= 400 then c4xx = c4xx + 1
  else ok_n = ok_n + 1 end
  if max_requests > 0 and ok_n + c4xx + c5xx >= max_requests then wrk.thread:stop() end
end

done = function(summary, latency, requests)
  local ok, c4, c5, r429 = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    ok, c4, c5, r429 = ok + t:get("ok_n"), c4 + t:get("c4xx"), c5 + t:get("c5xx"), r429 + t:get("c429")
  end
  io.write(string.format('WRK_RESULT {"ok": %d, "4xx": %d, "429": %d, "5xx": %d, "requests": %d, ' ..
    '"socket_errors": %d, "timeouts": %d, "duration_s": %.3f, "p50_ms": %.2f, "p95_ms": %.2f, "p99_ms": %.2f}\n',
    ok, c4, r429, c5, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(95) / 1e3,
    latency:percentile(99) / 1e3))
end
