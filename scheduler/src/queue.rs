//! The job queue behind a small interface: enqueue, locate and requeue jobs in Redis.

use std::collections::{HashMap, HashSet};

use moetune_types::{JobAssignment, RedisKeys};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

#[derive(Clone)]
pub struct JobQueue {
    redis: ConnectionManager,
    keys: RedisKeys,
}

/// Where Redis believes jobs are: waiting, or claimed by a runner.
#[derive(Debug, Default)]
pub struct QueueSnapshot {
    pub pending: HashSet<String>,
    /// job id → runner id
    pub claimed: HashMap<String, String>,
    pub alive_runners: HashSet<String>,
}

impl JobQueue {
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let redis = ConnectionManager::new(client).await?;
        Ok(Self { redis, keys: RedisKeys::new(prefix) })
    }

    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    pub fn connection(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Publishes the assignment and appends the job to the pending list, atomically.
    /// Round trip to Redis (readiness checks).
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut redis = self.connection();
        let _: String = redis::cmd("PING").query_async(&mut redis).await?;
        Ok(())
    }

    pub async fn enqueue(&self, assignment: &JobAssignment) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        redis::pipe()
            .atomic()
            .set(self.keys.assignment(&assignment.job_id), serde_json::to_string(assignment)?)
            .lpush(self.keys.pending(), &assignment.job_id)
            .query_async::<()>(&mut redis)
            .await?;
        Ok(())
    }

    /// Takes a job back from a runner's claimed list and puts it at the front of the queue.
    pub async fn requeue_from(&self, runner_id: &str, assignment: &JobAssignment) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        redis::pipe()
            .atomic()
            .lrem(self.keys.claimed(runner_id), 0, &assignment.job_id)
            .set(self.keys.assignment(&assignment.job_id), serde_json::to_string(assignment)?)
            .rpush(self.keys.pending(), &assignment.job_id)
            .query_async::<()>(&mut redis)
            .await?;
        Ok(())
    }

    /// Withdraws a cancelled job: out of the pending list, no assignment to read, and a flag the runner
    /// working on it (if any) sees at its next step.
    pub async fn cancel(&self, job_id: &str) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        redis::pipe()
            .atomic()
            .set_ex(self.keys.cancelled(job_id), "1", 86_400)
            .del(self.keys.assignment(job_id))
            .lrem(self.keys.pending(), 0, job_id)
            .query_async::<()>(&mut redis)
            .await?;
        Ok(())
    }

    /// Asks `attempt`'s runner to checkpoint and let the job go at its next step. With `withdraw` (a job
    /// not yet started) the job also leaves the pending list and its assignment is removed, so no
    /// runner claims it; one that already has stops at its first step.
    pub async fn pause(&self, job_id: &str, attempt: i32, withdraw: bool) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.atomic().set_ex(self.keys.pause(job_id), attempt, 86_400);
        if withdraw {
            pipe.del(self.keys.assignment(job_id)).lrem(self.keys.pending(), 0, job_id);
        }
        pipe.query_async::<()>(&mut redis).await?;
        Ok(())
    }

    /// Removes every trace of a finished job.
    pub async fn forget(&self, runner_id: Option<&str>, job_id: &str) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.del(self.keys.assignment(job_id)).lrem(self.keys.pending(), 0, job_id);
        if let Some(runner) = runner_id {
            pipe.lrem(self.keys.claimed(runner), 0, job_id);
        }
        pipe.query_async::<()>(&mut redis).await?;
        Ok(())
    }

    pub async fn snapshot(&self) -> anyhow::Result<QueueSnapshot> {
        let mut redis = self.redis.clone();
        let pending: Vec<String> = redis.lrange(self.keys.pending(), 0, -1).await?;
        let runners: Vec<String> = redis.smembers(self.keys.runners()).await?;
        let mut snapshot = QueueSnapshot { pending: pending.into_iter().collect(), ..Default::default() };
        for runner in runners {
            let claimed: Vec<String> = redis.lrange(self.keys.claimed(&runner), 0, -1).await?;
            for job in claimed {
                snapshot.claimed.insert(job, runner.clone());
            }
            if redis.exists(self.keys.runner_alive(&runner)).await? {
                snapshot.alive_runners.insert(runner);
            }
        }
        Ok(snapshot)
    }
}
