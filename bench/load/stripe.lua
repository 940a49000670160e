-- wrk script for scripts/load: sends prepared, signed requests, each at most once per run.
--
-- Environment (read when wrk loads the script):
--   LOAD_FILE     records from bench/load/gen_requests.py: `<byte length>\n<raw HTTP request>` repeated
--   LOAD_THREADS  wrk's -t (thread i takes records i, i+T, i+2T, ...: disjoint slices, distinct ids)
--   LOAD_LIMIT    optional: use only the first LOAD_LIMIT records of the file
--   (LOAD_FILE.go is the start gate: scripts/load removes it before each run)
--   LOAD_RATE     optional: target requests/s over all threads. Set, a delay() paces each thread on its
--                 own schedule (slot += threads/rate, late slots caught up to 200 ms behind); unset, no
--                 delay() is defined and wrk sends as fast as responses come back. Latency is wrk's: from
--                 the moment a request is written, not from its slot (no coordinated-omission correction
--                 as in wrk2); the achieved rate is reported so a run that fell behind shows it.
--
-- A thread that runs out of records sends `GET /__load_exhausted__` (a 404 that writes nothing) and, when
-- paced, stops sending; the summary reports it and scripts/load fails the run.
-- done() prints one line `LOAD key=value ...` that scripts/load parses, after wrk's own report.

local file = os.getenv("LOAD_FILE") or error("LOAD_FILE is not set")
local nthreads = tonumber(os.getenv("LOAD_THREADS") or "") or error("LOAD_THREADS is not set")
local limit = tonumber(os.getenv("LOAD_LIMIT") or "")
local rate = tonumber(os.getenv("LOAD_RATE") or "")
local gate = file .. ".go"
if rate and rate <= 0 then rate = nil end

local ffi = require("ffi")
ffi.cdef([[
  typedef struct { long tv_sec; long tv_nsec; } load_timespec;
  int clock_gettime(int clk_id, load_timespec *tp);
  int usleep(unsigned int usec);
  typedef struct { long tv_sec; long tv_usec; } load_timeval;
  typedef struct { load_timeval ru_utime; load_timeval ru_stime; long ru_rest[14]; } load_rusage;
  int getrusage(int who, load_rusage *usage);
]])
local ts = ffi.new("load_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

-- CPU time of the whole wrk process (every thread) so far, in microseconds.
local function process_cpu_us()
  local ru = ffi.new("load_rusage")
  ffi.C.getrusage(0, ru) -- RUSAGE_SELF
  return tonumber(ru.ru_utime.tv_sec) * 1e6 + tonumber(ru.ru_utime.tv_usec)
    + tonumber(ru.ru_stime.tv_sec) * 1e6 + tonumber(ru.ru_stime.tv_usec)
end

-- Main state: hand each thread its index; keep the threads for done().
local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

-- Thread state.
local reqs = {}
local idx = 1
local filler = "GET /__load_exhausted__ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
sent = 0
fillers = 0
gate_cpu_us = nil
statuses = {}
-- Each thread's own window, first request (after the start gate) to last 2xx response: wrk's overall
-- duration also counts the wait at the gate.
first_ms = nil
last_ms = nil
ok_count = 0
-- wrk calls request() once on thread 0 before the run to check for pipelining; that record is sent again
-- for real, so it must not be counted or skipped.
local probed = false

function init(args)
  local f = assert(io.open(file, "rb"))
  local i = 0
  while true do
    local line = f:read("*l")
    if not line or line == "" then break end
    local len = tonumber(line) or error("bad record header in " .. file .. ": " .. line)
    if limit and i >= limit then break end
    if i % nthreads == tid then
      reqs[#reqs + 1] = f:read(len)
    else
      f:seek("cur", len)
    end
    i = i + 1
  end
  f:close()
  if #reqs == 0 then error("no records for thread " .. tid .. " in " .. file) end
  -- Start line: wrk runs each thread as soon as its init() returns, while later threads still load their
  -- records. The last thread to load opens the gate; every thread waits for it before its first request.
  if tid == nthreads - 1 then
    -- wrk's CPU so far went to loading records: done() reports only what the run itself used.
    gate_cpu_us = process_cpu_us()
    local g = assert(io.open(gate, "w"))
    g:close()
  end
end

local function wait_gate()
  for _ = 1, 60000 do
    local g = io.open(gate, "r")
    if g then g:close() return end
    ffi.C.usleep(1000)
  end
  error("start gate " .. gate .. " never opened")
end

local function start_once()
  if first_ms == nil then
    wait_gate()
    first_ms = now_ms()
  end
end

function request()
  if tid == 0 and not probed then
    probed = true
    return reqs[1]
  end
  local r = reqs[idx]
  if r == nil then
    fillers = fillers + 1
    return filler
  end
  idx = idx + 1
  sent = sent + 1
  start_once()
  return r
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 200 and status < 300 then
    ok_count = ok_count + 1
    last_ms = now_ms()
  end
end

if rate then
  local interval = 1000 * nthreads / rate
  local max_lag_ms = 200
  local slot = nil

  function delay()
    if reqs[idx] == nil then return 3600 * 1000 end
    start_once()
    local now = now_ms()
    -- Behind schedule (every connection was busy): catch up, as an open-loop sender would, unless the
    -- server is so far behind that the target is out of reach anyway.
    if slot == nil or slot < now - max_lag_ms then slot = now end
    local d = slot - now
    slot = slot + interval
    return math.floor(d + 0.5)
  end
end

function done(summary, latency, requests)
  local total_sent, total_fillers, codes = 0, 0, {}
  -- Throughput: the sum of each thread's 2xx per second over its own window.
  local rps = 0
  for _, t in ipairs(threads) do
    local first, last, ok = t:get("first_ms"), t:get("last_ms"), t:get("ok_count") or 0
    if first and last and last > first then rps = rps + ok * 1000 / (last - first) end
    total_sent = total_sent + (t:get("sent") or 0)
    total_fillers = total_fillers + (t:get("fillers") or 0)
    for code, n in pairs(t:get("statuses") or {}) do
      codes[code] = (codes[code] or 0) + n
    end
  end
  local answered, s202, s2xx, s404 = 0, 0, 0, 0
  local list = {}
  for code, n in pairs(codes) do
    answered = answered + n
    if code == 202 then s202 = s202 + n end
    if code >= 200 and code < 300 then s2xx = s2xx + n end
    if code == 404 then s404 = s404 + n end
    list[#list + 1] = code .. ":" .. n
  end
  table.sort(list)
  local secs = summary.duration / 1e6
  local wrk_cpu_all = process_cpu_us()
  local wrk_cpu = wrk_cpu_all - (threads[#threads]:get("gate_cpu_us") or 0)
  local e = summary.errors
  -- Filler 404s are not webhook answers; any other non-2xx is.
  local non2xx = answered - s2xx - math.min(s404, total_fillers)
  io.write(string.format(
    "LOAD sent=%d answered=%d s202=%d s2xx=%d non2xx=%d fillers=%d secs=%.3f rps=%.0f "
      .. "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f "
      .. "err_connect=%d err_read=%d err_write=%d err_timeout=%d wrk_cpu_us=%d wrk_cpu_all_us=%d statuses=%s\n",
    total_sent, answered, s202, s2xx, non2xx, total_fillers, secs, rps,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.timeout, wrk_cpu, wrk_cpu_all, table.concat(list, ",")))
end
