//! The runner registry as Redis holds it: what each runner declared (`runner:{id}:info`, rewritten by
//! its heartbeat), whether it is alive (`runner:{id}:alive`, a TTL key), whether an operator is
//! draining it (`runner:{id}:drain`) and which jobs it holds (`runner:{id}:claimed`).

use moetune_types::RunnerInfo;
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

#[derive(Debug, Clone)]
pub struct RunnerView {
    pub runner_id: String,
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
            views.push(self.view(&id).await?);
        }
        Ok(views)
    }

    /// One runner, if it ever registered.
    pub async fn runner(&self, runner_id: &str) -> anyhow::Result<Option<RunnerView>> {
        let mut redis = self.connection();
        let known: bool = redis.sismember(self.keys().runners(), runner_id).await?;
        Ok(if known { Some(self.view(runner_id).await?) } else { None })
    }

    /// Starts or stops draining a runner; it reads the flag before each claim.
    pub async fn set_draining(&self, runner_id: &str, draining: bool) -> anyhow::Result<()> {
        let mut redis = self.connection();
        let key = self.keys().runner_drain(runner_id);
        if draining {
            let _: () = redis.set(key, "1").await?;
        } else {
            let _: () = redis.del(key).await?;
        }
        Ok(())
    }

    async fn view(&self, runner_id: &str) -> anyhow::Result<RunnerView> {
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
        Ok(RunnerView { runner_id: runner_id.to_string(), state, draining, info, current_jobs })
    }
}
