-- wrk script for bench/run's egress figure: egress messages posted to the
-- admin API (POST /v1/messages), each with its own id and its own sender
-- (so no per-sender rate limit holds them back).
--
--   ADMIN_TOKEN=... wrk -s enqueue.lua http://ADMIN_ADDR
local counter = 0
local authorization = "Bearer " .. (os.getenv("ADMIN_TOKEN") or "")

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local n = 0

function request()
  n = n + 1
  local body = string.format(
    '{"id":"bench-%d-%d","to":"+14155550100","from":"+1500%07d","body":"Your code is %d"}',
    id, n, n * 4 + id, n)
  return wrk.format("POST", "/v1/messages", { ["Content-Type"] = "application/json", ["Authorization"] = authorization }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK-JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout))
end
