-- wrk script: POST /v1/chat with varied rule-answered questions of the demo shop.
--
-- Each wrk thread cycles through 5,000 sessions of its own, so no session comes near
-- the per-session rate limit (20/s) at 40k requests a second, and the session store
-- sees a realistic mix of known and new conversations. Whole requests (line, headers,
-- body) are built once in init(): building them per request would measure Lua rather
-- than kefu, on the same two cores.
--
--   wrk -t2 -c64 -d20s --latency -s benches/chat.lua http://127.0.0.1:8080

local questions = {
  "这件T恤洗了会缩水吗",
  "这个是什么面料",
  "有哪些颜色可选",
  "现在还有货吗",
  "什么时候发货",
  "包邮吗",
  "发什么快递",
  "有尺码表吗",
}

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

local requests = {}
local n = 0
local i = 0

function init(args)
  local sessions = tonumber(args[1]) or 5000
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  for s = 1, sessions do
    local q = questions[(s % #questions) + 1]
    local body = string.format('{"session_id":"load-%d-%d","message":"%s","user":{"segment":"vip","orders":3}}', tid, s, q)
    requests[s] = wrk.format(nil, "/v1/chat", nil, body)
  end
  n = sessions
end

function request()
  i = (i % n) + 1
  return requests[i]
end
