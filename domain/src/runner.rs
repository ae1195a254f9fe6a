//! The queue as a runner uses it: the jobs it holds, the assignment it reads, the events it reports,
//! the stop flags it polls between steps and the heartbeat that keeps it in the registry. The runner's
//! Redis user may only touch its own keys (`registry::runner_acl_rules`), which these operations respect.

use moetune_types::{JobAssignment, JobId, RunnerEvent, RunnerId, RunnerInfo};
use redis::streams::StreamMaxlen;
use redis::AsyncCommands;

use crate::JobQueue;

/// A runner's event stream keeps about this many entries; the scheduler consumes them within seconds.
const EVENT_STREAM_MAXLEN: usize = 100_000;

/// A runner's `info` entry outlives its heartbeat so an operator still sees a lost runner's hardware.
const INFO_TTL_SECS: u64 = 7 * 86_400;

/// What the api asked of a job in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopFlags {
    pub cancelled: bool,
    /// The attempt a pause is for: a resumed attempt does not stop again.
    pub pause_attempt: Option<i32>,
}

impl JobQueue {
    /// The oldest job in the runner's claimed list: one a previous life of this runner id left behind.
    pub async fn oldest_claimed(&self, runner_id: &RunnerId) -> anyhow::Result<Option<JobId>> {
        let mut redis = self.connection();
        let job: Option<String> = redis.lindex(self.keys().claimed(runner_id), -1).await?;
        self.parsed_claim(runner_id, job).await
    }

    /// Every job in the runner's claimed list (ids that do not parse are left out).
    pub async fn claimed_jobs(&self, runner_id: &RunnerId) -> anyhow::Result<Vec<JobId>> {
        let mut redis = self.connection();
        let jobs: Vec<String> = redis.lrange(self.keys().claimed(runner_id), 0, -1).await?;
        Ok(jobs.iter().filter_map(|job| JobId::parse(job).ok()).collect())
    }

    /// A job id the queue handed this runner, parsed. One that is no job id (only something other than
    /// moetune writing into Redis makes one) is taken out of the claimed list and logged, so the runner
    /// goes on instead of failing on it at every restart.
    pub(crate) async fn parsed_claim(&self, runner_id: &RunnerId, job: Option<String>) -> anyhow::Result<Option<JobId>> {
        let Some(job) = job else { return Ok(None) };
        match JobId::parse(&job) {
            Ok(id) => Ok(Some(id)),
            Err(e) => {
                tracing::error!(error = %e, runner = %runner_id, "dropping a malformed entry from the runner's claimed jobs");
                self.op::<()>("finish", &[runner_id.as_str(), &job]).await?;
                Ok(None)
            }
        }
    }

    /// Whether an operator is draining the runner (it finishes what it holds and takes nothing new).
    pub async fn is_draining(&self, runner_id: &RunnerId) -> anyhow::Result<bool> {
        let mut redis = self.connection();
        Ok(redis.exists(self.keys().runner_drain(runner_id)).await?)
    }

    /// The runner is done with the job: out of its claimed list, its tenant's running count lowered.
    pub async fn finish(&self, runner_id: &RunnerId, job_id: &JobId) -> anyhow::Result<()> {
        self.op::<()>("finish", &[runner_id.as_str(), job_id.as_str()]).await
    }

    /// The job's published assignment; none once the job was withdrawn (cancelled, paused before it started).
    pub async fn assignment(&self, job_id: &JobId) -> anyhow::Result<Option<JobAssignment>> {
        let mut redis = self.connection();
        let raw: Option<String> = redis.get(self.keys().assignment(job_id)).await?;
        Ok(raw.map(|raw| serde_json::from_str(&raw)).transpose()?)
    }

    /// Appends an event to the runner's stream, which the scheduler's ingester applies.
    pub async fn report(&self, event: &RunnerEvent) -> anyhow::Result<()> {
        let mut redis = self.connection();
        let stream = self.keys().runner_events(&event.runner_id);
        let _: String = redis.xadd_maxlen(stream, StreamMaxlen::Approx(EVENT_STREAM_MAXLEN), "*", &[("event", serde_json::to_string(event)?)]).await?;
        Ok(())
    }

    /// The job's cancel and pause flags, in one round trip.
    pub async fn stop_flags(&self, job_id: &JobId) -> anyhow::Result<StopFlags> {
        let mut redis = self.connection();
        let keys = [self.keys().cancelled(job_id), self.keys().pause(job_id)];
        let (cancelled, pause_attempt): (Option<String>, Option<i32>) = redis.mget(&keys).await?;
        Ok(StopFlags { cancelled: cancelled.is_some(), pause_attempt })
    }

    /// One heartbeat: the runner is registered, alive for `alive_ms`, and its info current.
    pub async fn heartbeat(&self, info: &RunnerInfo, alive_ms: u64) -> anyhow::Result<()> {
        let mut redis = self.connection();
        let keys = self.keys();
        redis::pipe()
            .sadd(keys.runners(), info.runner_id.as_str())
            .pset_ex(keys.runner_alive(&info.runner_id), "1", alive_ms)
            .set_ex(keys.runner_info(&info.runner_id), serde_json::to_string(info)?, INFO_TTL_SECS)
            .query_async::<()>(&mut redis)
            .await?;
        Ok(())
    }
}
