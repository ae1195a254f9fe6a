//! The runner protocol: how jobs reach runners and how runners report back, all through Redis.
//!
//! Runners never touch Postgres. They claim work from a Redis list with `BLMOVE` into their own
//! `claimed` list (so a crash cannot lose the job), hold a lease, and append [`RunnerEvent`]s to a
//! Redis stream that the scheduler applies to Postgres, refusing any event whose `attempt` is stale.

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, RunnerId};
use crate::job::TrainingSpec;

/// Redis key layout. Every key starts with a prefix so tests and tenants of a shared Redis cannot collide.
#[derive(Debug, Clone)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// ZSET of tenants with waiting jobs, by fair-share score (fewest claimed jobs first, then the
    /// tenant served least recently). Maintained by [`QUEUE_SCRIPT`], like every `queue:*` key.
    pub fn tenants(&self) -> String {
        format!("{}:queue:tenants", self.prefix)
    }

    /// ZSET of one tenant's waiting jobs by order score (priority, then age).
    pub fn tenant_queue(&self, tenant: &str) -> String {
        format!("{}:queue:tenant:{tenant}", self.prefix)
    }

    /// HASH job id → ticket ([`JobAssignment::ticket`]) for every waiting or claimed job.
    pub fn tickets(&self) -> String {
        format!("{}:queue:tickets", self.prefix)
    }

    /// HASH tenant → number of its jobs runners hold.
    pub fn running(&self) -> String {
        format!("{}:queue:running", self.prefix)
    }

    /// The prefix itself (the queue script builds its key names from it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// LIST of job ids one runner has claimed and not yet finished.
    pub fn claimed(&self, runner_id: &str) -> String {
        format!("{}:runner:{runner_id}:claimed", self.prefix)
    }

    /// SET of runner ids that ever registered (the scheduler scans their claimed lists).
    pub fn runners(&self) -> String {
        format!("{}:runners", self.prefix)
    }

    /// STRING with TTL, refreshed by the runner's heartbeat while it is alive.
    pub fn runner_alive(&self, runner_id: &str) -> String {
        format!("{}:runner:{runner_id}:alive", self.prefix)
    }

    /// STRING (JSON [`RunnerInfo`]) a runner rewrites with every heartbeat; kept a week after it stops,
    /// so a lost runner stays visible to operators.
    pub fn runner_info(&self, runner_id: &str) -> String {
        format!("{}:runner:{runner_id}:info", self.prefix)
    }

    /// STRING set by an operator: the runner finishes what it holds and claims nothing new.
    pub fn runner_drain(&self, runner_id: &str) -> String {
        format!("{}:runner:{runner_id}:drain", self.prefix)
    }

    /// STRING (JSON [`JobAssignment`]) the runner reads after claiming a job id.
    pub fn assignment(&self, job_id: &str) -> String {
        format!("{}:job:{job_id}", self.prefix)
    }

    /// STRING with TTL set when a job is cancelled; the runner working on it checks it every step.
    pub fn cancelled(&self, job_id: &str) -> String {
        format!("{}:job:{job_id}:cancelled", self.prefix)
    }

    /// STRING with TTL holding the attempt that is to pause; that attempt's runner checks it every step,
    /// checkpoints and lets the job go. A later attempt (after `resume`) does not match it.
    pub fn pause(&self, job_id: &str) -> String {
        format!("{}:job:{job_id}:pause", self.prefix)
    }

    /// STREAM of one runner's [`RunnerEvent`]s, consumed by the scheduler's group. Only that runner's
    /// Redis user may write it, so the stream names the sender.
    pub fn runner_events(&self, runner_id: &str) -> String {
        format!("{}:runner:{runner_id}:events", self.prefix)
    }

    /// SET of jobs claimed by a gang of runners (world size > 1).
    pub fn gangs(&self) -> String {
        format!("{}:queue:gangs", self.prefix)
    }

    /// HASH of one gang: `ranks` (runner ids, rank 0 first), `holding`, `closed`, `rendezvous`,
    /// `error:{rank}` (see `queue.lua`).
    pub fn gang(&self, job_id: &str) -> String {
        format!("{}:queue:gang:{job_id}", self.prefix)
    }

    /// STRING: the gang job a runner was picked for and has not yet joined.
    pub fn gang_duty(&self, runner_id: &str) -> String {
        format!("{}:queue:duty:{runner_id}", self.prefix)
    }

    /// ZSET runner id → until when (Unix ms) it waits for work: the runners a gang may be formed from.
    pub fn idle(&self) -> String {
        format!("{}:queue:idle", self.prefix)
    }

    /// STREAM of runner events that could not be applied, each with its error (kept for operators).
    pub fn dead_events(&self) -> String {
        format!("{}:events:dead", self.prefix)
    }
}

/// What a runner declares about itself: detected hardware and the operator's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunnerInfo {
    #[schema(value_type = String)]
    pub runner_id: RunnerId,
    /// `cpu` or `cuda`.
    pub device: String,
    pub gpu_count: i64,
    /// As the operator configured it (e.g. `H100-80GB`); empty on CPU runners.
    pub gpu_model: String,
    /// Where the other ranks of a gang reach this runner's rendezvous (its rank-0 TCP store): a host
    /// name or address. Empty in entries written before gangs.
    #[serde(default)]
    pub address: String,
    /// Memory of one GPU, as configured; 0 on CPU runners.
    pub gpu_memory_bytes: i64,
    /// Physical memory of the host (MemTotal).
    pub host_memory_bytes: i64,
    /// Operator labels, e.g. `zone=eu-1`, for placement constraints.
    pub labels: std::collections::BTreeMap<String, String>,
    pub max_concurrent_jobs: u32,
    /// SFT methods it runs (`lora`, `full`) and QAT formats it exports (`mxfp4`, `nvfp4`).
    pub methods: Vec<String>,
    pub qat_formats: Vec<String>,
    /// Version of the runner binary.
    pub version: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix milliseconds of the heartbeat that wrote this.
    pub last_heartbeat_ms: i64,
}

/// The queue's operations as one Lua script (enqueue, claim, requeue, finish, withdraw, forget,
/// set_running); the api, scheduler and runners all run this same script, so every change to the
/// queue is atomic.
pub const QUEUE_SCRIPT: &str = include_str!("queue.lua");

/// How far a claim looks: the first tenants in fair order, and the first jobs of each. A job that fits
/// a runner further back waits until the jobs ahead of it are taken by runners they fit; the bound
/// keeps a claim's cost independent of the queue's length.
pub const CLAIM_TENANTS: usize = 32;
pub const CLAIM_DEPTH: usize = 8;

/// Where a job waits and what it needs: the queue reads this, the runner ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Placement {
    pub tenant: String,
    /// 0-9, higher first among the tenant's own jobs.
    pub priority: i16,
    /// Unix milliseconds the job was created.
    pub created_at_ms: i64,
    pub requirements: crate::requirements::JobRequirements,
}

/// What a runner receives for a claimed job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAssignment {
    pub job_id: JobId,
    /// Fencing token: incremented each time the job is handed out again.
    pub attempt: i32,
    pub spec: TrainingSpec,
    /// S3 bucket and key of the training JSONL.
    pub bucket: String,
    pub training_file_key: String,
    /// S3 key of the validation JSONL, when the job has a `validation_file`.
    #[serde(default)]
    pub validation_file_key: Option<String>,
    /// Where this attempt stores resumable checkpoints: `s3://{bucket}/{checkpoint_prefix}/{name}/…`.
    /// Each attempt has its own prefix, so a fenced-off runner cannot overwrite what a later one reads.
    pub checkpoint_prefix: String,
    /// The S3 prefix (same bucket) of the checkpoint to resume from: the newest one the scheduler
    /// accepted from a current attempt. Runners never pick a checkpoint by listing S3.
    #[serde(default)]
    pub resume_from: Option<String>,
    /// Where artifacts go: `s3://{bucket}/{artifact_prefix}/...`.
    pub artifact_prefix: String,
    /// For a registered (not built-in) base model: the S3 directory with its config, weights and tokenizer.
    #[serde(default)]
    pub model_location: Option<S3Location>,
    #[serde(default)]
    pub placement: Placement,
}

impl JobAssignment {
    /// The queue's record of the job: `tenant device cuda_bytes cpu_bytes order [world]` (the memory one
    /// rank needs on a CUDA and on a CPU runner, and, for a gang, how many runners it trains on), where the order score sorts a tenant's jobs by priority, then age
    /// (both fit a double exactly).
    pub fn ticket(&self) -> String {
        let p = &self.placement;
        let order = i64::from(9 - p.priority.clamp(0, 9)) * 10_000_000_000_000 + p.created_at_ms;
        let tenant = if p.tenant.is_empty() { "-" } else { p.tenant.as_str() };
        let needs = &p.requirements;
        let (device, cuda, cpu) = (needs.device.as_str(), needs.memory_on("cuda"), needs.memory_on("cpu"));
        // One runner: the five-field form every earlier queue script reads, so runners and schedulers
        // of the previous release keep placing single-runner jobs during a rolling upgrade.
        match needs.world_size {
            0 | 1 => format!("{tenant} {device} {cuda} {cpu} {order}"),
            world => format!("{tenant} {device} {cuda} {cpu} {order} {world}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

/// Expert usage of one MoE layer over the diagnostic prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerUsage {
    pub layer: usize,
    /// Share of routed (token, slot) pairs taken by the busiest expert.
    pub top1_share: f64,
    /// Entropy of the usage distribution divided by ln(experts): 1 = uniform.
    pub entropy_norm: f64,
    pub kl_to_uniform: f64,
    /// Mean entropy of the per-token router softmax.
    pub avg_token_entropy: f64,
    /// Routed (token, choice) pairs per expert, by expert index.
    pub counts: Vec<u64>,
    /// Fraction of the held-out validation tokens this layer sends to the same top-k experts as the
    /// base model does (1 = routing unchanged by training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_agreement: Option<f64>,
}

/// One report from a runner about one attempt of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerEvent {
    pub job_id: JobId,
    pub attempt: i32,
    pub runner_id: RunnerId,
    #[serde(flatten)]
    pub kind: RunnerEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerEventKind {
    /// The runner started working on the job; `ranks` are the runners of its gang by rank (rank 0, the
    /// sender, first), empty on one runner.
    Started {
        device: String,
        dtype: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ranks: Vec<String>,
    },
    /// A human-readable progress message.
    Message { level: String, message: String },
    /// Training metrics for one optimiser step.
    Metrics {
        stage: String,
        step: u32,
        total_steps: u32,
        train_loss: f64,
        learning_rate: f64,
        tokens_per_second: f64,
        /// Validation loss and next-token accuracy, on the steps they are measured.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validation_loss: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validation_token_accuracy: Option<f64>,
    },
    /// One expert-usage monitor check (docs/design.md): per-layer figures, the alert, and what was done.
    Monitor {
        stage: String,
        step: u32,
        layers: Vec<LayerUsage>,
        mean_top1_share: f64,
        mean_entropy_norm: f64,
        alert: bool,
        /// `lr_decayed`, `early_stop`, `paused` (routing drift) or absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
        learning_rate: f64,
        /// Fraction of held-out tokens (mean over MoE layers) whose top-k experts differ from the
        /// base model's; absent when the job has no validation batches to measure it on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        routing_drift: Option<f64>,
        /// The drift crossed `monitor.max_routing_drift` (over what a resume accepted): the job pauses.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        drift_exceeded: bool,
    },
    /// The evaluation report (base / SFT / PTQ / SFT+QAT); also stored as `eval_report.json`.
    Evaluation { report: serde_json::Value },
    /// A resumable checkpoint, complete in S3 under `uri` (a prefix).
    Checkpoint { name: String, stage: String, step: u32, uri: String, bytes: i64 },
    /// A file the runner stored in S3 for the job.
    Artifact { name: String, uri: String, bytes: i64, sha256: String },
    /// The runner stopped after storing a checkpoint at `stage` `step`: for a pause request, or, with
    /// `reason`, because the routing-drift guardrail paused the job (the reason says why).
    Paused {
        stage: String,
        step: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The runner is shutting down (SIGTERM): it stored a checkpoint at `stage` `step` and handed the
    /// job back, to be continued from there as the job's next attempt. With `rank_lost`, rank 0 of a
    /// gang saw another rank fail or exit: the job goes back to continue from its latest checkpoint
    /// (`stage` `step`) on a new gang, and this counts as a lost runner.
    Released {
        stage: String,
        step: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rank_lost: Option<String>,
    },
    /// The job finished; `result` summarises it (losses, steps, timings).
    Succeeded { trained_tokens: i64, result: serde_json::Value },
    /// The job failed; `code` is machine readable, `message` tells the user what went wrong.
    Failed { code: String, message: String },
}

impl RunnerEventKind {
    /// The event's `type`, for messages about it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::Message { .. } => "message",
            Self::Metrics { .. } => "metrics",
            Self::Monitor { .. } => "monitor",
            Self::Evaluation { .. } => "evaluation",
            Self::Checkpoint { .. } => "checkpoint",
            Self::Artifact { .. } => "artifact",
            Self::Paused { .. } => "paused",
            Self::Released { .. } => "released",
            Self::Succeeded { .. } => "succeeded",
            Self::Failed { .. } => "failed",
        }
    }
}

#[cfg(test)]
impl RunnerInfo {
    /// A runner for unit tests: `device` with `gib` GiB of training memory (a CUDA one with 1 TiB of
    /// host memory besides).
    pub(crate) fn for_tests(device: &str, gib: i64) -> Self {
        Self {
            runner_id: crate::RunnerId::parse("r").unwrap(),
            device: device.into(),
            gpu_count: i64::from(device == "cuda"),
            gpu_model: String::new(),
            gpu_memory_bytes: if device == "cuda" { gib << 30 } else { 0 },
            host_memory_bytes: if device == "cuda" { 1 << 40 } else { gib << 30 },
            labels: Default::default(),
            max_concurrent_jobs: 1,
            methods: vec![],
            qat_formats: vec![],
            version: String::new(),
            started_at: 0,
            address: String::new(),
            last_heartbeat_ms: 0,
        }
    }
}
