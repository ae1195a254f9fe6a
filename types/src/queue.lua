-- The job queue's operations, each atomic (one script run). Called as
--   EVALSHA sha 0 <op> <prefix> <args...>
-- Keys (see docs/architecture.md, "Redis keys"):
--   P:queue:tenants          ZSET tenant -> fair-share score (running * 1e13 + when it was last served)
--   P:queue:tenant:{t}       ZSET job -> order score ((9 - priority) * 1e13 + created ms)
--   P:queue:tickets          HASH job -> "tenant device cuda_bytes cpu_bytes order" for every waiting or claimed
--                            job (the memory it needs on a CUDA and on a CPU runner)
--   P:queue:running          HASH tenant -> jobs claimed by runners
--   P:queue:served           HASH tenant -> the claim clock when a runner last took one of its jobs
--   P:queue:clock            STRING counter, one tick per claim
--   P:runner:{id}:claimed    LIST of job ids a runner holds (newest left)
--   P:job:{id}               STRING assignment JSON
-- Key names are built here from the prefix, so this needs a standalone Redis (or a prefix that is a
-- cluster hash tag, `{moetune}`, putting every key in one slot).

local op, p = ARGV[1], ARGV[2]
local TENANTS, TICKETS, RUNNING = p .. ':queue:tenants', p .. ':queue:tickets', p .. ':queue:running'
local SERVED, CLOCK = p .. ':queue:served', p .. ':queue:clock'
local E13 = 10000000000000

local function tenant_queue(t) return p .. ':queue:tenant:' .. t end
local function claimed(r) return p .. ':runner:' .. r .. ':claimed' end

-- tenant, device, memory on CUDA, memory on CPU, order. Tickets written before the CPU figure
-- existed have one memory figure for both.
local function parse(ticket)
  local t, device, cuda, cpu, order = string.match(ticket, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  if not t then
    t, device, cuda, order = string.match(ticket, '^(%S+) (%S+) (%S+) (%S+)$')
    cpu = cuda
  end
  return t, device, tonumber(cuda), tonumber(cpu), tonumber(order)
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

-- Takes a job out of a runner's claimed list; true if it was there (then its tenant runs one fewer).
local function unclaim(runner, job)
  if runner == '' or redis.call('LREM', claimed(runner), 0, job) == 0 then return false end
  local ticket = redis.call('HGET', TICKETS, job)
  if ticket then
    local t = parse(ticket)
    shift_running(t, add_running(t, -1))
  end
  return true
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
  -- runner, job, ticket, assignment: back to the front of its tenant's line (its order is its age)
  unclaim(ARGV[3], ARGV[4])
  enqueue(ARGV[4], ARGV[5], ARGV[6])
  return 1
elseif op == 'claim' then
  -- runner, device, memory_bytes, tenants to look at, jobs to look at per tenant.
  -- Tenants in fair order; in each, the first job (by priority, then age) this runner fits. The first
  -- few tenants are read alone: one of them nearly always has a job that fits.
  local runner, device, memory = ARGV[3], ARGV[4], tonumber(ARGV[5])
  local limit, depth = tonumber(ARGV[6]), tonumber(ARGV[7])
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
          local fits = true
          if tickets[i] then
            local _, wanted, cuda, cpu = parse(tickets[i])
            local needs = (device == 'cuda') and cuda or cpu
            fits = (wanted == 'auto' or wanted == device) and needs <= memory
          end
          if fits then
            redis.call('ZREM', queue, job)
            redis.call('LPUSH', claimed(runner), job)
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
  return false
elseif op == 'finish' then
  -- runner, job: the runner is done with the job (whatever became of it)
  unclaim(ARGV[3], ARGV[4])
  local ticket = redis.call('HGET', TICKETS, ARGV[4])
  if ticket and not redis.call('ZSCORE', tenant_queue(parse(ticket)), ARGV[4]) then redis.call('HDEL', TICKETS, ARGV[4]) end
  return 1
elseif op == 'withdraw' then
  -- job: cancelled, or paused before it started
  withdraw(ARGV[3])
  return 1
elseif op == 'forget' then
  -- runner (or ''), job: the job is finished. A claimed job is in no waiting line: only its ticket
  -- and assignment are left to drop.
  if unclaim(ARGV[3], ARGV[4]) then
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
