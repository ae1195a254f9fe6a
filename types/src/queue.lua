-- The job queue's operations, each atomic (one script run). Called as
--   EVALSHA sha 0 <op> <prefix> <args...>
-- Keys (see docs/architecture.md, "Redis keys"):
--   P:queue:tenants          ZSET tenant -> fair-share score (running * 1e13 + when it was last served)
--   P:queue:tenant:{t}       ZSET job -> order score ((9 - priority) * 1e13 + created ms)
--   P:queue:tickets          HASH job -> "tenant device cuda_bytes cpu_bytes order world" for every waiting or
--                            claimed job (the memory one rank needs on a CUDA and on a CPU runner, and how
--                            many runners it runs on)
--   P:queue:running          HASH tenant -> jobs claimed by runners
--   P:queue:served           HASH tenant -> the claim clock when a runner last took one of its jobs
--   P:queue:clock            STRING counter, one tick per claim
--   P:runner:{id}:claimed    LIST of job ids a runner holds (newest left)
--   P:job:{id}               STRING assignment JSON
--   P:queue:idle             ZSET runner -> until when (ms) it waits for work: runners a gang may take
--   P:queue:idle:info        HASH runner -> "device memory_bytes" of each waiting runner
--   P:queue:gangs            SET of jobs claimed by a gang (a job with world > 1)
--   P:queue:gang:{job}       HASH ranks ("runner0 runner1 ..."), holding (runners whose claimed list has
--                            it), closed (rank 0 let go), rendezvous, error:{rank}; dropped by
--                            `requeue` and `forget` (the scheduler's), never by a runner
--   P:queue:duty:{runner}    STRING the gang job a runner was picked for and has not yet joined
-- Key names are built here from the prefix, so this needs a standalone Redis (or a prefix that is a
-- cluster hash tag, `{moetune}`, putting every key in one slot).

local op, p = ARGV[1], ARGV[2]
local TENANTS, TICKETS, RUNNING = p .. ':queue:tenants', p .. ':queue:tickets', p .. ':queue:running'
local SERVED, CLOCK = p .. ':queue:served', p .. ':queue:clock'
local E13 = 10000000000000

local function tenant_queue(t) return p .. ':queue:tenant:' .. t end
local function claimed(r) return p .. ':runner:' .. r .. ':claimed' end
local IDLE, IDLE_INFO, GANGS = p .. ':queue:idle', p .. ':queue:idle:info', p .. ':queue:gangs'
local function gang_key(job) return p .. ':queue:gang:' .. job end
local function duty(r) return p .. ':queue:duty:' .. r end

-- tenant, device, memory on CUDA, memory on CPU, order, world. Tickets written before the CPU figure
-- existed have one memory figure for both; those written before gangs run on one runner.
local function parse(ticket)
  local t, device, cuda, cpu, order, world = string.match(ticket, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  if not t then
    t, device, cuda, cpu, order = string.match(ticket, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  end
  if not t then
    t, device, cuda, order = string.match(ticket, '^(%S+) (%S+) (%S+) (%S+)$')
    cpu = cuda
  end
  return t, device, tonumber(cuda), tonumber(cpu), tonumber(order), tonumber(world or '1')
end

local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function words(s)
  local out = {}
  for w in string.gmatch(s or '', '%S+') do out[#out + 1] = w end
  return out
end

-- The runners of a job's gang by rank (rank 0 first); empty when the job has none.
local function gang_ranks(job)
  return words(redis.call('HGET', gang_key(job), 'ranks'))
end

-- Withdraws the gang's picks not yet taken up (GETDEL: runner users may run it, not DEL).
local function withdraw_picks(job, ranks)
  for i = 2, #ranks do
    if redis.call('GET', duty(ranks[i])) == job then redis.call('GETDEL', duty(ranks[i])) end
  end
end

-- Drops a gang's record and its picks. (The scheduler's ops only.)
local function drop_gang(job)
  withdraw_picks(job, gang_ranks(job))
  redis.call('DEL', gang_key(job))
  redis.call('SREM', GANGS, job)
end

-- `count` of the `waiting` runners ({id, memory}, of the claimer's device kind) with at least
-- `needs` bytes; nil when there are not that many.
local function idle_runners(waiting, needs, count)
  local chosen = {}
  for _, w in ipairs(waiting) do
    if w[2] >= needs then
      chosen[#chosen + 1] = w[1]
      if #chosen == count then return chosen end
    end
  end
  return nil
end

local function stop_waiting(r)
  redis.call('ZREM', IDLE, r)
  redis.call('HDEL', IDLE_INFO, r)
end

-- Re-scores a tenant from its hashes: fewest jobs held by runners first, ties to the tenant served
-- least recently (round robin, so with one runner tenants alternate); drops it when it has nothing
-- waiting.
local function refresh(t)
  if redis.call('ZCARD', tenant_queue(t)) == 0 then
    redis.call('ZREM', TENANTS, t)
    return
  end
  local running = math.max(0, math.min(tonumber(redis.call('HGET', RUNNING, t) or '0'), 800))
  local served = tonumber(redis.call('HGET', SERVED, t) or '0')
  redis.call('ZADD', TENANTS, running * E13 + served, t)
end

-- Returns the tenant's count before and after.
local function add_running(t, n)
  local now = redis.call('HINCRBY', RUNNING, t, n)
  if now <= 0 then redis.call('HDEL', RUNNING, t) end
  return math.max(0, now - n), math.max(0, now)
end

-- Moves a listed tenant's score from one running count to another, keeping when it was last served:
-- one call where `refresh` takes three, for changes that leave its line (so whether it is listed) as it was.
local function shift_running(t, before, after)
  before, after = math.min(before, 800), math.min(after, 800)
  if after ~= before then redis.call('ZADD', TENANTS, 'XX', 'INCR', (after - before) * E13, t) end
end

-- Puts a job (back) in its tenant's line: ticket, assignment, order.
local function enqueue(job, ticket, assignment)
  local t, _, _, _, order = parse(ticket)
  redis.call('SET', p .. ':job:' .. job, assignment)
  redis.call('HSET', TICKETS, job, ticket)
  redis.call('ZADD', tenant_queue(t), order, job)
  refresh(t)
end

-- Takes a job out of one runner's claimed list; true if it was there (then its tenant runs one fewer).
local function drop_hold(runner, job)
  if runner == '' or redis.call('LREM', claimed(runner), 0, job) == 0 then return false end
  local ticket = redis.call('HGET', TICKETS, job)
  if ticket then
    local t = parse(ticket)
    shift_running(t, add_running(t, -1))
  end
  return true
end

-- The same, and the gang's bookkeeping. When rank 0 of a gang lets go, the gang is closed and picks not yet taken up are withdrawn. (The
-- record itself is dropped by the scheduler's ops, `requeue` and `forget`: runners may not delete keys.)
local function unclaim(runner, job)
  if not drop_hold(runner, job) then return false end
  local gang = gang_key(job)
  if redis.call('EXISTS', gang) == 1 then
    redis.call('HINCRBY', gang, 'holding', -1)
    local ranks = gang_ranks(job)
    if ranks[1] == runner then
      redis.call('HSET', gang, 'closed', '1')
      withdraw_picks(job, ranks)
    end
  end
  return true
end

-- Whether runners still hold the job as a gang (the ticket stays until the last lets go).
local function gang_held(job)
  return tonumber(redis.call('HGET', gang_key(job), 'holding') or '0') > 0
end

-- Takes a job from every runner holding it (each rank of a gang, or its one runner).
local function unclaim_all(runner, job)
  local ranks = gang_ranks(job)
  if #ranks == 0 then return unclaim(runner, job) end
  local any = false
  for _, r in ipairs(ranks) do
    any = drop_hold(r, job) or any
  end
  drop_gang(job)
  return any
end

-- Takes a job out of the waiting lines and drops its assignment. The ticket goes too if the job was
-- waiting; a claimed job keeps it until its runner lets go (`finish`), so its tenant's count stays right.
local function withdraw(job)
  local ticket = redis.call('HGET', TICKETS, job)
  if ticket then
    local t = parse(ticket)
    if redis.call('ZREM', tenant_queue(t), job) == 1 then redis.call('HDEL', TICKETS, job) end
    refresh(t)
  end
  redis.call('DEL', p .. ':job:' .. job)
end

if op == 'enqueue' then
  -- job, ticket, assignment
  enqueue(ARGV[3], ARGV[4], ARGV[5])
  return 1
elseif op == 'requeue' then
  -- runner, job, ticket, assignment: back to the front of its tenant's line (its order is its age),
  -- taken from every rank of its gang
  unclaim_all(ARGV[3], ARGV[4])
  enqueue(ARGV[4], ARGV[5], ARGV[6])
  return 1
elseif op == 'claim' then
  -- runner, device, memory_bytes, tenants to look at, jobs to look at per tenant, how long (ms) the
  -- runner waits before it asks again.
  -- Tenants in fair order; in each, the first job (by priority, then age) this runner fits. The first
  -- few tenants are read alone: one of them nearly always has a job that fits. A job on `world` > 1
  -- runners is taken only when `world` - 1 other waiting runners of this device kind fit it too: they
  -- are picked in the same step (all ranks or none, so no runner is held while a gang forms), this
  -- runner as rank 0. A runner that finds nothing is recorded as waiting until its next ask.
  local runner, device, memory = ARGV[3], ARGV[4], tonumber(ARGV[5])
  local limit, depth, wait_ms = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8] or '0')
  -- Picked for a gang: it joins that first (`join`).
  if redis.call('EXISTS', duty(runner)) == 1 then return false end
  local now = now_ms()
  -- Waiting marks past their time go, with what they declared.
  for _, r in ipairs(redis.call('ZRANGEBYSCORE', IDLE, '-inf', now, 'LIMIT', 0, 256)) do stop_waiting(r) end
  -- The waiting runners, read once: a gang job tests them all.
  local waiting = {}
  for _, r in ipairs(redis.call('ZRANGEBYSCORE', IDLE, now, '+inf', 'LIMIT', 0, 1024)) do
    if r ~= runner then
      local d, m = string.match(redis.call('HGET', IDLE_INFO, r) or '', '^(%S+) (%S+)$')
      if d == device then waiting[#waiting + 1] = { r, tonumber(m) } end
    end
  end
  local first = 0
  while first < limit do
    local last = (first == 0) and math.min(4, limit) - 1 or limit - 1
    local tenants = redis.call('ZRANGE', TENANTS, first, last)
    for _, t in ipairs(tenants) do
      local queue = tenant_queue(t)
      local jobs = redis.call('ZRANGE', queue, 0, depth - 1)
      if #jobs > 0 then
        local tickets = redis.call('HMGET', TICKETS, unpack(jobs))
        for i, job in ipairs(jobs) do
          local fits, members = true, nil
          if tickets[i] then
            local _, wanted, cuda, cpu, _, world = parse(tickets[i])
            local needs = (device == 'cuda') and cuda or cpu
            fits = (wanted == 'auto' or wanted == device) and needs <= memory
            if fits and world > 1 then
              members = idle_runners(waiting, needs, world - 1)
              fits = members ~= nil
            end
          end
          if fits then
            redis.call('ZREM', queue, job)
            redis.call('LPUSH', claimed(runner), job)
            stop_waiting(runner)
            if members then
              local gang = gang_key(job)
              -- A record left from an earlier gang of this job (republished without a requeue) must
              -- not speak for this one.
              redis.call('HDEL', gang, 'closed', 'rendezvous', 'error:0')
              for rank = 1, #members do redis.call('HDEL', gang, 'error:' .. rank, 'ready:' .. rank, 'left:' .. rank) end
              -- The attempt the gang runs, from the published assignment.
              local ok, assignment = pcall(cjson.decode, redis.call('GET', p .. ':job:' .. job) or '')
              local attempt = ok and type(assignment) == 'table' and tonumber(assignment.attempt) or 0
              redis.call('HSET', gang, 'ranks', runner .. ' ' .. table.concat(members, ' '), 'holding', 1, 'attempt', attempt)
              redis.call('SADD', GANGS, job)
              for _, m in ipairs(members) do
                redis.call('SET', duty(m), job)
                stop_waiting(m)
              end
            end
            local clock = redis.call('INCR', CLOCK)
            redis.call('HSET', SERVED, t, clock)
            local _, running = add_running(t, 1)
            -- Fewer jobs than asked for were the whole line; a full read says nothing of the rest.
            local emptied = #jobs == 1 and (depth > 1 or redis.call('ZCARD', queue) == 0)
            if emptied then
              redis.call('ZREM', TENANTS, t)
            else
              redis.call('ZADD', TENANTS, math.min(running, 800) * E13 + clock, t)
            end
            return job
          end
        end
      end
    end
    if #tenants <= last - first then break end
    first = last + 1
  end
  if wait_ms > 0 then
    redis.call('ZADD', IDLE, now + wait_ms, runner)
    redis.call('HSET', IDLE_INFO, runner, device .. ' ' .. memory)
  end
  return false
elseif op == 'join' then
  -- runner: takes up the gang job it was picked for (into its claimed list); false when there is
  -- none, or the gang is gone (the job was requeued, or rank 0 let go).
  local runner = ARGV[3]
  local job = redis.call('GETDEL', duty(runner))
  if not job then return false end
  local gang = gang_key(job)
  local member = false
  for _, r in ipairs(gang_ranks(job)) do member = member or r == runner end
  if not member or redis.call('HGET', gang, 'closed') == '1' then return false end
  redis.call('LPUSH', claimed(runner), job)
  redis.call('HINCRBY', gang, 'holding', 1)
  local ticket = redis.call('HGET', TICKETS, job)
  if ticket then
    local t = parse(ticket)
    shift_running(t, add_running(t, 1))
  end
  return job
elseif op == 'gang_note' then
  -- job, field, value: a rank's note on its gang (the rendezvous address, a rank's error); dropped
  -- when the gang is gone
  local gang = gang_key(ARGV[3])
  if redis.call('EXISTS', gang) == 0 then return 0 end
  redis.call('HSET', gang, ARGV[4], ARGV[5])
  return 1
elseif op == 'leave_idle' then
  -- runner: no longer waiting for work (draining, or shutting down)
  stop_waiting(ARGV[3])
  return 1
elseif op == 'finish' then
  -- runner, job: the runner is done with the job (whatever became of it). The ticket stays while
  -- other ranks of its gang still hold it.
  unclaim(ARGV[3], ARGV[4])
  local ticket = redis.call('HGET', TICKETS, ARGV[4])
  if ticket and not gang_held(ARGV[4]) and not redis.call('ZSCORE', tenant_queue(parse(ticket)), ARGV[4]) then redis.call('HDEL', TICKETS, ARGV[4]) end
  return 1
elseif op == 'withdraw' then
  -- job: cancelled, or paused before it started
  withdraw(ARGV[3])
  return 1
elseif op == 'forget' then
  -- runner (or ''), job: the job is finished. A claimed job is in no waiting line: only its ticket
  -- and assignment are left to drop (and its gang: every rank lets go).
  if unclaim_all(ARGV[3], ARGV[4]) then
    redis.call('HDEL', TICKETS, ARGV[4])
    redis.call('DEL', p .. ':job:' .. ARGV[4])
  else
    withdraw(ARGV[4])
  end
  return 1
elseif op == 'set_running' then
  -- tenant, count, tenant, count, ...: the reconciler's recount from the claimed lists
  redis.call('DEL', RUNNING)
  for i = 3, #ARGV, 2 do
    if tonumber(ARGV[i + 1]) > 0 then redis.call('HSET', RUNNING, ARGV[i], ARGV[i + 1]) end
  end
  for _, t in ipairs(redis.call('ZRANGE', TENANTS, 0, -1)) do refresh(t) end
  return 1
end
return redis.error_reply('unknown queue op ' .. tostring(op))
