//! The job queue behind a small interface: enqueue, claim, locate and requeue jobs in Redis. Every
//! change runs `moetune_types::QUEUE_SCRIPT` (Lua), so each is atomic.

use std::collections::{HashMap, HashSet};

use moetune_types::{JobAssignment, JobId, RedisKeys, RunnerId, CLAIM_DEPTH, CLAIM_TENANTS, QUEUE_SCRIPT};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

#[derive(Clone)]
pub struct JobQueue {
    redis: ConnectionManager,
    keys: RedisKeys,
    script: std::sync::Arc<redis::Script>,
}

/// Where Redis believes jobs are: waiting, or claimed by a runner.
#[derive(Debug, Default)]
pub struct QueueSnapshot {
    pub pending: HashSet<JobId>,
    /// One runner holding each claimed job (rank 0 for a gang that has not fully let go).
    pub claimed: HashMap<JobId, RunnerId>,
    /// Claimed lists per runner: every (job, runner) pair, for the fair-share counts.
    pub holds: Vec<(JobId, RunnerId)>,
    /// Jobs claimed by a gang of runners.
    pub gangs: HashMap<JobId, GangView>,
    pub alive_runners: HashSet<RunnerId>,
    /// job id → ticket (`tenant device memory order`)
    pub tickets: HashMap<JobId, String>,
}

/// A gang as the snapshot saw it.
#[derive(Debug, Default)]
pub struct GangView {
    /// Its runners by rank, rank 0 first.
    pub ranks: Vec<RunnerId>,
    /// The ranks still engaged: holding the job, or picked and not yet taken it up. A rank that
    /// finished its part (while rank 0 exports) is not.
    pub engaged: Vec<RunnerId>,
    /// Rank 0 let go (it reported the outcome; the scheduler settles the rest).
    pub closed: bool,
}

impl QueueSnapshot {
    /// Runners holding each tenant's jobs (from the tickets; a gang counts each rank): the fair-share
    /// counts.
    pub fn claimed_per_tenant(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (job, _) in &self.holds {
            if let Some(tenant) = self.tickets.get(job).and_then(|t| t.split(' ').next()) {
                *counts.entry(tenant.to_string()).or_default() += 1;
            }
        }
        counts
    }
}

impl JobQueue {
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let redis = ConnectionManager::new(client).await?;
        Ok(Self { redis, keys: RedisKeys::new(prefix), script: std::sync::Arc::new(redis::Script::new(QUEUE_SCRIPT)) })
    }

    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    pub fn connection(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Round trip to Redis (readiness checks).
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut redis = self.connection();
        let _: String = redis::cmd("PING").query_async(&mut redis).await?;
        Ok(())
    }

    /// Runs one operation of the queue script (`moetune_types::QUEUE_SCRIPT`).
    pub(crate) async fn op<T: redis::FromRedisValue>(&self, op: &str, args: &[&str]) -> anyhow::Result<T> {
        let mut redis = self.redis.clone();
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(op).arg(self.keys.prefix());
        for arg in args {
            invocation.arg(*arg);
        }
        Ok(invocation.invoke_async(&mut redis).await?)
    }

    /// Publishes the assignment and puts the job in its tenant's line, atomically.
    pub async fn enqueue(&self, assignment: &JobAssignment) -> anyhow::Result<()> {
        let json = serde_json::to_string(assignment)?;
        self.op::<()>("enqueue", &[assignment.job_id.as_str(), &assignment.ticket(), &json]).await
    }

    /// Takes a job back from a runner's claimed list and puts it back in its tenant's line, where its
    /// age puts it ahead of the tenant's later jobs of the same priority.
    pub async fn requeue_from(&self, runner_id: &RunnerId, assignment: &JobAssignment) -> anyhow::Result<()> {
        let json = serde_json::to_string(assignment)?;
        self.op::<()>("requeue", &[runner_id.as_str(), assignment.job_id.as_str(), &assignment.ticket(), &json]).await
    }

    /// What a runner does to take work: the first job, in fair order, that a runner with `device` and
    /// `memory_bytes` fits, within the claim window (`CLAIM_TENANTS` × `CLAIM_DEPTH`). A job on several
    /// runners is taken only with enough waiting runners to make up its gang (this one as rank 0). When
    /// nothing is taken the runner counts as waiting for `wait_ms`, so a gang may pick it meanwhile
    /// ([`JobQueue::join_gang`]); 0 keeps it out of gangs.
    pub async fn claim(&self, runner_id: &RunnerId, device: &str, memory_bytes: i64, wait_ms: u64) -> anyhow::Result<Option<JobId>> {
        let (memory, tenants, depth) = (memory_bytes.to_string(), CLAIM_TENANTS.to_string(), CLAIM_DEPTH.to_string());
        let job: Option<String> = self.op("claim", &[runner_id.as_str(), device, &memory, &tenants, &depth, &wait_ms.to_string()]).await?;
        self.parsed_claim(runner_id, job).await
    }

    /// The gang job this runner was picked for, moved into its claimed list; None when it was picked
    /// for none, or the gang is gone.
    pub async fn join_gang(&self, runner_id: &RunnerId) -> anyhow::Result<Option<JobId>> {
        let job: Option<String> = self.op("join", &[runner_id.as_str()]).await?;
        self.parsed_claim(runner_id, job).await
    }

    /// The runners of the job's gang by rank (rank 0 first); empty when no gang holds it.
    pub async fn gang(&self, job_id: &JobId) -> anyhow::Result<Vec<RunnerId>> {
        let mut redis = self.redis.clone();
        let ranks: Option<String> = redis.hget(self.keys.gang(job_id.as_str()), "ranks").await?;
        Ok(ranks.unwrap_or_default().split_whitespace().filter_map(|r| parsed(RunnerId::parse(r))).collect())
    }

    /// One field of the job's gang record (`rendezvous`, `error:{rank}`); None when unset or the gang is gone.
    pub async fn gang_note(&self, job_id: &JobId, field: &str) -> anyhow::Result<Option<String>> {
        let mut redis = self.redis.clone();
        Ok(redis.hget(self.keys.gang(job_id.as_str()), field).await?)
    }

    /// Several fields of the job's gang record at once; None when the gang is gone.
    pub async fn gang_notes(&self, job_id: &JobId, fields: &[String]) -> anyhow::Result<Option<HashMap<String, Option<String>>>> {
        let mut redis = self.redis.clone();
        let key = self.keys.gang(job_id.as_str());
        let (exists, values): (bool, Vec<Option<String>>) = redis::pipe().exists(&key).hget(&key, fields).query_async(&mut redis).await?;
        Ok(exists.then(|| fields.iter().cloned().zip(values).collect()))
    }

    /// Sets one field of the job's gang record, unless the gang is gone; true when it was set.
    pub async fn set_gang_note(&self, job_id: &JobId, field: &str, value: &str) -> anyhow::Result<bool> {
        let set: i64 = self.op("gang_note", &[job_id.as_str(), field, value]).await?;
        Ok(set == 1)
    }

    /// The runner no longer waits for work: no gang picks it.
    pub async fn leave_idle(&self, runner_id: &RunnerId) -> anyhow::Result<()> {
        self.op::<()>("leave_idle", &[runner_id.as_str()]).await
    }

    /// Withdraws a cancelled job: out of its line, no assignment to read, and a flag the runner
    /// working on it (if any) sees at its next step.
    pub async fn cancel(&self, job_id: &JobId) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let _: () = redis.set_ex(self.keys.cancelled(job_id), "1", 86_400).await?;
        self.op::<()>("withdraw", &[job_id.as_str()]).await
    }

    /// Whether `runner_id`'s claimed list holds the job.
    pub async fn holds(&self, runner_id: &RunnerId, job_id: &JobId) -> anyhow::Result<bool> {
        let mut redis = self.redis.clone();
        let position: Option<i64> = redis::cmd("LPOS").arg(self.keys.claimed(runner_id)).arg(job_id.as_str()).query_async(&mut redis).await?;
        Ok(position.is_some())
    }

    /// Whether the job's cancel flag is set.
    pub async fn is_cancelled(&self, job_id: &JobId) -> anyhow::Result<bool> {
        let mut redis = self.redis.clone();
        Ok(redis.exists(self.keys.cancelled(job_id)).await?)
    }

    /// Asks `attempt`'s runner to checkpoint and let the job go at its next step. With `withdraw` (a job
    /// not yet started) the job also leaves its line and its assignment is removed, so no runner claims
    /// it; one that already has stops at its first step.
    pub async fn pause(&self, job_id: &JobId, attempt: i32, withdraw: bool) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let _: () = redis.set_ex(self.keys.pause(job_id), attempt, 86_400).await?;
        if withdraw {
            self.op::<()>("withdraw", &[job_id.as_str()]).await?;
        }
        Ok(())
    }

    /// Removes every trace of a finished job.
    pub async fn forget(&self, runner_id: Option<&RunnerId>, job_id: &JobId) -> anyhow::Result<()> {
        self.op::<()>("forget", &[runner_id.map_or("", RunnerId::as_str), job_id.as_str()]).await
    }

    /// Rewrites the per-tenant count of claimed jobs (the reconciler's recount) and re-scores tenants.
    pub async fn set_running(&self, running: &HashMap<String, usize>) -> anyhow::Result<()> {
        let counts: Vec<String> = running.iter().flat_map(|(tenant, n)| [tenant.clone(), n.to_string()]).collect();
        let args: Vec<&str> = counts.iter().map(String::as_str).collect();
        self.op::<()>("set_running", &args).await
    }

    /// How many jobs each tenant has waiting.
    pub async fn waiting_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let mut redis = self.redis.clone();
        let tenants: Vec<String> = redis.zrange(self.keys.tenants(), 0, -1).await?;
        let mut pipe = redis::pipe();
        for tenant in &tenants {
            pipe.zcard(self.keys.tenant_queue(tenant));
        }
        let counts: Vec<i64> = if tenants.is_empty() { Vec::new() } else { pipe.query_async(&mut redis).await? };
        Ok(tenants.into_iter().zip(counts).collect())
    }

    /// Jobs waiting, per tenant, in the order they will be taken within the tenant.
    pub async fn waiting(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let mut redis = self.redis.clone();
        let tenants: Vec<String> = redis.zrange(self.keys.tenants(), 0, -1).await?;
        let mut out = Vec::with_capacity(tenants.len());
        for tenant in tenants {
            let jobs: Vec<String> = redis.zrange(self.keys.tenant_queue(&tenant), 0, -1).await?;
            out.push((tenant, jobs));
        }
        Ok(out)
    }

    /// Where Redis believes jobs are. Its entries were written by the queue script from parsed ids;
    /// one that does not parse is left out (and logged) rather than acted on.
    pub async fn snapshot(&self) -> anyhow::Result<QueueSnapshot> {
        let mut redis = self.redis.clone();
        let pending = self.waiting().await?.into_iter().flat_map(|(_, jobs)| jobs).filter_map(|job| parsed(JobId::parse(&job))).collect();
        let runners: Vec<String> = redis.smembers(self.keys.runners()).await?;
        let tickets: HashMap<String, String> = redis.hgetall(self.keys.tickets()).await?;
        let tickets = tickets.into_iter().filter_map(|(job, ticket)| Some((parsed(JobId::parse(&job))?, ticket))).collect();
        let mut snapshot = QueueSnapshot { pending, tickets, ..Default::default() };
        for runner in runners.iter().filter_map(|r| parsed(RunnerId::parse(r))) {
            let claimed: Vec<String> = redis.lrange(self.keys.claimed(&runner), 0, -1).await?;
            snapshot.holds.extend(claimed.iter().filter_map(|j| parsed(JobId::parse(j))).map(|job| (job, runner.clone())));
            if redis.exists(self.keys.runner_alive(&runner)).await? {
                snapshot.alive_runners.insert(runner);
            }
        }
        let gangs: Vec<String> = redis.smembers(self.keys.gangs()).await?;
        for job in gangs.iter().filter_map(|j| parsed(JobId::parse(j))) {
            let ranks = self.gang(&job).await?;
            let closed: Option<String> = redis.hget(self.keys.gang(job.as_str()), "closed").await?;
            let mut engaged = Vec::new();
            for rank in &ranks {
                let holding = snapshot.holds.iter().any(|(held, by)| *held == job && by == rank);
                let picked: Option<String> = redis.get(self.keys.gang_duty(rank.as_str())).await?;
                if holding || picked.as_deref() == Some(job.as_str()) {
                    engaged.push(rank.clone());
                }
            }
            if !ranks.is_empty() {
                snapshot.gangs.insert(job, GangView { ranks, engaged, closed: closed.as_deref() == Some("1") });
            }
        }
        // A gang's job counts as rank 0's while rank 0 holds it.
        for (job, runner) in &snapshot.holds {
            let rank0 = snapshot.gangs.get(job).and_then(|gang| gang.ranks.first());
            if rank0.is_none_or(|r| r == runner) || !snapshot.claimed.contains_key(job) {
                snapshot.claimed.insert(job.clone(), runner.clone());
            }
        }
        Ok(snapshot)
    }
}

fn parsed<T>(id: Result<T, moetune_types::InvalidId>) -> Option<T> {
    id.map_err(|e| tracing::warn!(error = %e, "ignoring a malformed id in the queue")).ok()
}
