-- wrk script for the autoscaling step: POST real test sentences to /ner and /classify in turn,
-- count responses by status class, print the totals as one JSON line when done.
local texts = {}
local f = io.open(os.getenv("PRESSO_WRK_TEXTS"), "r")
for line in f:lines() do texts[#texts + 1] = line end
f:close()
-- Counters live in each thread's Lua state; done() runs in the main state and reads them.
local n = 0
ok_n, c4xx, c5xx = 0, 0, 0
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

request = function()
  n = n + 1
  local path = (n % 2 == 0) and "/ner" or "/classify"
  local body = '{"text": ' .. texts[(n % #texts) + 1] .. '}'
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
end

response = function(status, headers, body)
  if status >= 500 then c5xx = c5xx + 1
  elseif status >= 400 then c4xx = c4xx + 1
  else ok_n = ok_n + 1 end
end

done = function(summary, latency, requests)
  local ok, c4, c5 = 0, 0, 0
  for _, t in ipairs(threads) do
    ok, c4, c5 = ok + t:get("ok_n"), c4 + t:get("c4xx"), c5 + t:get("c5xx")
  end
  io.write(string.format('WRK_RESULT {"ok": %d, "4xx": %d, "5xx": %d, "requests": %d, "socket_errors": %d, ' ..
    '"timeouts": %d, "duration_s": %.2f, "p50_ms": %.1f, "p99_ms": %.1f}\n',
    ok, c4, c5, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
