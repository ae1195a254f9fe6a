//! The runner registry as Redis holds it: what each runner declared (`runner:{id}:info`, rewritten by
//! its heartbeat), whether it is alive (`runner:{id}:alive`, a TTL key), whether an operator is
//! draining it (`runner:{id}:drain`) and which jobs it holds (`runner:{id}:claimed`).

use std::collections::BTreeMap;

use moetune_types::{RunnerId, RunnerInfo};
use redis::AsyncCommands;
use serde::Serialize;

use crate::JobQueue;


#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerState {
    /// Alive, holds no job, takes new ones.
    Idle,
    /// Alive and working on a job.
    Busy,
    /// Alive; finishes what it holds and takes nothing new.
    Draining,
    /// Stopped heartbeating; its jobs are requeued by the reconciler.
    Lost,
}

impl RunnerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Draining => "draining",
            Self::Lost => "lost",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunnerView {
    pub runner_id: RunnerId,
    pub state: RunnerState,
    pub draining: bool,
    /// Absent for a runner older than the registry, or whose entry expired.
    pub info: Option<RunnerInfo>,
    pub current_jobs: Vec<String>,
}

impl JobQueue {
    /// Every runner that registered, by id.
    pub async fn runners(&self) -> anyhow::Result<Vec<RunnerView>> {
        let mut redis = self.connection();
        let mut ids: Vec<String> = redis.smembers(self.keys().runners()).await?;
        ids.sort();
        let mut views = Vec::with_capacity(ids.len());
        for id in ids {
            // The set only holds ids runners registered with, which parse; anything else is skipped.
            match RunnerId::parse(&id) {
                Ok(id) => views.push(self.view(&id).await?),
                Err(e) => tracing::warn!(error = %e, "skipping a malformed entry of the runner registry"),
            }
        }
        Ok(views)
    }

    /// One runner, if it ever registered.
    pub async fn runner(&self, runner_id: &RunnerId) -> anyhow::Result<Option<RunnerView>> {
        let mut redis = self.connection();
        let known: bool = redis.sismember(self.keys().runners(), runner_id.as_str()).await?;
        Ok(if known { Some(self.view(runner_id).await?) } else { None })
    }

    /// Starts or stops draining a runner; it reads the flag before each claim.
    pub async fn set_draining(&self, runner_id: &RunnerId, draining: bool) -> anyhow::Result<()> {
        let mut redis = self.connection();
        let key = self.keys().runner_drain(runner_id);
        if draining {
            let _: () = redis.set(key, "1").await?;
            self.leave_idle(runner_id).await?;
        } else {
            let _: () = redis.del(key).await?;
        }
        Ok(())
    }

    async fn view(&self, runner_id: &RunnerId) -> anyhow::Result<RunnerView> {
        let keys = self.keys();
        let mut redis = self.connection();
        let (alive, draining, info, current_jobs): (bool, bool, Option<String>, Vec<String>) = redis::pipe()
            .exists(keys.runner_alive(runner_id))
            .exists(keys.runner_drain(runner_id))
            .get(keys.runner_info(runner_id))
            .lrange(keys.claimed(runner_id), 0, -1)
            .query_async(&mut redis)
            .await?;
        let state = match (alive, draining, current_jobs.is_empty()) {
            (false, _, _) => RunnerState::Lost,
            (true, true, _) => RunnerState::Draining,
            (true, false, false) => RunnerState::Busy,
            (true, false, true) => RunnerState::Idle,
        };
        let info = info.and_then(|raw| serde_json::from_str(&raw).ok());
        Ok(RunnerView { runner_id: runner_id.clone(), state, draining, info, current_jobs })
    }
}

/// The Redis ACL rules of one runner's own user: the queue and job keys it needs, its own
/// `runner:{id}:*` keys and nothing of other runners; job assignments and stop flags read-only; no
/// admin, no `KEYS`/`FLUSHALL`, no Postgres at all (runners never see its credentials).
pub fn runner_acl_rules(prefix: &str, runner_id: &RunnerId) -> Vec<String> {
    let commands = [
        "-@all", "+@connection", "+evalsha", "+eval", "+script|load", "+script|exists",
        "+get", "+mget", "+exists", "+set", "+setex", "+psetex", "+sadd", "+lindex", "+lrange", "+xadd",
        // What the queue script runs for `claim`, `join`, `gang_note` and `finish`.
        "+zrange", "+zrem", "+zadd", "+zscore", "+hget", "+hmget", "+hset", "+hdel", "+hexists", "+hincrby", "+lpush", "+lrem", "+zcard", "+incr",
        "+time", "+zrangebyscore", "+zremrangebyscore", "+getdel",
    ];
    let keys = [
        format!("~{prefix}:queue:*"),
        format!("~{prefix}:runner:{runner_id}:*"),
        format!("~{prefix}:runners"),
        format!("%R~{prefix}:job:*"),
    ];
    commands.iter().map(|c| c.to_string()).chain(keys).collect()
}

/// Creates (or resets) the Redis user `{prefix}-runner-{id}` with [`runner_acl_rules`] and `password`;
/// returns the user name. Needs a connection allowed to run `ACL SETUSER`.
/// The id is a [`RunnerId`], so it holds only letters, digits, `-`, `_` and `.`: nothing that could
/// widen the key pattern of its rules.
pub async fn create_runner_user(queue: &JobQueue, runner_id: &RunnerId, password: &str) -> anyhow::Result<String> {
    let prefix = queue.keys().prefix();
    let user = format!("{prefix}-runner-{runner_id}");
    let mut command = redis::cmd("ACL");
    command.arg("SETUSER").arg(&user).arg("reset").arg("on").arg(format!(">{password}"));
    for rule in runner_acl_rules(prefix, runner_id) {
        command.arg(rule);
    }
    let mut redis = queue.connection();
    let () = command.query_async(&mut redis).await?;
    Ok(user)
}
/// What the runners that are not lost declared: the ones placement, the estimate and the waiting
/// reasons count.
pub fn live_runners(runners: &[RunnerView]) -> Vec<&RunnerInfo> {
    runners.iter().filter(|r| r.state != RunnerState::Lost).filter_map(|r| r.info.as_ref()).collect()
}

/// The largest training memory per device kind among runners that are not lost.
pub fn largest_runners(runners: &[RunnerView]) -> BTreeMap<String, i64> {
    let mut largest: BTreeMap<String, i64> = BTreeMap::new();
    for info in live_runners(runners) {
        let entry = largest.entry(info.device.clone()).or_default();
        *entry = (*entry).max(info.training_memory_bytes());
    }
    largest
}

