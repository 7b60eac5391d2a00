-- wrk script for bench/run: signed inbound-SMS webhooks, each with its own
-- MessageSid, never replayed. bench/run writes the signatures beforehand
-- (`sid<TAB>signature<TAB>account` lines, signed for this server's URL by
-- that account's token); each wrk thread
-- takes every Nth line. When a thread runs out it asks for
-- /bench-exhausted, which every server answers 404: the run is then marked
-- as too short for the server's speed instead of replaying a sid.
--
--   wrk -s webhooks.lua URL -- SIGNATURES THREADS [HOST]
--
-- HOST, when given, is sent as the Host header: a server on another port
-- than the one the webhooks were signed for then sees the signed URL.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local lines, next_line, prefix, host

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  host = args[3]
  lines, next_line = {}, 1
  local n = 0
  for line in io.lines(file) do
    if n % nthreads == id then
      lines[#lines + 1] = line
    end
    n = n + 1
  end
  prefix = "ToCountry=US&NumMedia=0&SmsStatus=received&Body=Hello%2C+this+is+a+benchmark+message"
    .. "&To=%2B15005550006&NumSegments=1"
    .. "&From=%2B14155550100&ApiVersion=2010-04-01&FromCity=SAN+FRANCISCO"
end

function request()
  local line = lines[next_line]
  if not line then
    return wrk.format("GET", "/bench-exhausted")
  end
  next_line = next_line + 1
  local sid, signature, account = line:match("^(%S+)\t(%S+)\t(%S+)$")
  local body = prefix .. "&AccountSid=" .. account .. "&SmsMessageSid=" .. sid .. "&SmsSid=" .. sid .. "&MessageSid=" .. sid
  return wrk.format("POST", "/twilio/messaging", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Twilio-Signature"] = signature,
    ["Host"] = host,
  }, body)
end

-- One JSON line with what run.py reads: counts, errors, latency percentiles.
function done(summary, latency, requests)
  local points = {}
  for _, p in ipairs({ 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99 }) do
    points[#points + 1] = string.format('"%s": %d', tostring(p), latency:percentile(p))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
      .. '"timeouts": %d, "latency_us": {%s}}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    table.concat(points, ", ")))
end
