-- wrk script: POST usage events with unique ids (or authorize calls, or GET /healthz),
-- spread over the keys in KEYS_FILE.
-- env: KEYS_FILE (one API key per line), MODE = "single" | "batch" | "authorize" | "empty",
--      BATCH (events per batch), THINK_MS (a pause after each answer: a load below saturation),
--      OUT (file the summary JSON is appended to), LABEL.
local keys = {}
local mode = os.getenv("MODE") or "single"
local batch = tonumber(os.getenv("BATCH") or "1000")
local counter = 0
local thread_id = 0
local threads = {}
local next_id = 1

for line in io.lines(os.getenv("KEYS_FILE")) do
  if #line > 0 then keys[#keys + 1] = line end
end

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid
  counter = 0
  math.randomseed(os.time() + tid)
end

local models = {"gpt-5", "gpt-5-mini", "claude-sonnet-4-5-20250929", "gemini-2.5-flash", "gpt-4.1"}
local run = tostring(os.time())

local function event()
  counter = counter + 1
  local model = models[(counter % #models) + 1]
  return string.format(
    '{"id":"%s-%d-%d","model":"%s","usage":{"input_tokens":%d,"output_tokens":%d,"cache_read_tokens":%d}}',
    run, thread_id, counter, model, 200 + (counter % 900), 50 + (counter % 400), counter % 128)
end

function request()
  local key = keys[((counter + thread_id) % #keys) + 1]
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}
  if mode == "empty" then
    return wrk.format("GET", "/healthz")
  end
  if mode == "authorize" then
    counter = counter + 1
    return wrk.format("POST", "/api/v1/authorize", headers,
      '{"model":"gpt-4o-mini","estimated_input_tokens":10,"max_output_tokens":10}')
  end
  if mode == "batch" then
    local parts = {}
    for i = 1, batch do parts[i] = event() end
    return wrk.format("POST", "/api/v1/usage/batch", headers, '{"events":[' .. table.concat(parts, ",") .. ']}')
  end
  return wrk.format("POST", "/api/v1/usage", headers, event())
end

local think = tonumber(os.getenv("THINK_MS") or "0")
if think > 0 then
  function delay() return think end
end

function done(summary, latency, requests)
  local f = io.open(os.getenv("OUT"), "a")
  f:write(string.format(
    '{"label":"%s","requests":%d,"duration_us":%d,"errors_status":%d,"errors_connect":%d,"errors_timeout":%d,"errors_read":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    os.getenv("LABEL") or mode, summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect, summary.errors.timeout, summary.errors.read,
    latency:percentile(50), latency:percentile(99), latency.max))
  f:close()
end
