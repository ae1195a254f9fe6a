//! The runner's service loop: heartbeat, claim a job from Redis (reliably), train, upload, report.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use moetune_types::dataset::JsonlReader;
use moetune_platform::s3::{download_file, prefix_bytes, upload_file};
use moetune_domain::JobQueue;
use moetune_types::{ErrorCode, Example, JobAssignment, JobId, RunnerId, RunnerEvent, RunnerEventKind, RunnerInfo, S3Location};

use crate::config::RunnerConfig;
use crate::{export, gang, train};

pub struct Worker {
    config: RunnerConfig,
    /// `config.runner_id`, parsed.
    runner_id: RunnerId,
    queue: JobQueue,
    s3: aws_sdk_s3::Client,
    device: tch::Device,
    /// Becomes true on shutdown; training in progress checks it before every step.
    stopping: tokio::sync::watch::Sender<bool>,
    metrics: std::sync::Arc<crate::metrics::RunnerMetrics>,
}

/// Reports events for one attempt of one job to the scheduler's stream.
#[derive(Clone)]
struct EventSink {
    queue: JobQueue,
    job_id: JobId,
    attempt: i32,
    runner_id: RunnerId,
    metrics: std::sync::Arc<crate::metrics::RunnerMetrics>,
    /// A gang's ranks other than 0 report nothing: rank 0 speaks for the job.
    muted: bool,
}

impl EventSink {
    /// Sends one event. Free text (messages, failures) loses the runner's local paths and control
    /// characters first: tenants read it.
    async fn emit(&self, kind: RunnerEventKind) -> anyhow::Result<()> {
        if self.muted {
            return Ok(());
        }
        self.metrics.observe(&kind);
        let kind = match kind {
            RunnerEventKind::Message { level, message } => RunnerEventKind::Message { level, message: moetune_types::text::for_tenants(&message) },
            RunnerEventKind::Failed { code, message } => RunnerEventKind::Failed { code, message: moetune_types::text::for_tenants(&message) },
            other => other,
        };
        let event = RunnerEvent { job_id: self.job_id.clone(), attempt: self.attempt, runner_id: self.runner_id.clone(), kind };
        self.queue.report(&event).await
    }
}

impl Worker {
    pub async fn connect(config: RunnerConfig) -> anyhow::Result<Self> {
        let runner_id = RunnerId::parse(&config.runner_id).map_err(|e| anyhow::anyhow!("runner_id: {e}; use letters, digits, '-', '_' or '.'"))?;
        let queue = JobQueue::connect(&config.redis_url, &config.redis_prefix).await?;
        let s3 = config.s3.client();
        let device = config.device()?;
        Ok(Self {
            config,
            runner_id,
            queue,
            s3,
            device,
            stopping: tokio::sync::watch::channel(false).0,
            metrics: Default::default(),
        })
    }

    pub fn metrics(&self) -> std::sync::Arc<crate::metrics::RunnerMetrics> {
        self.metrics.clone()
    }

    /// Claims and runs jobs until `shutdown` resolves. A job in progress is then checkpointed at its
    /// next step and handed back (another runner continues it), so a restart loses no training.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let info = self.info();
        tokio::spawn(heartbeat(self.queue.clone(), info.clone(), self.config.heartbeat_ms));
        tracing::info!(runner = %self.config.runner_id, device = ?self.device, "runner ready");
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stopping.send(true);
        });
        let mut stop = self.stopping.subscribe();
        let mut idle_polls = 0u32;
        // What a previous life of this runner id left claimed: a gang cannot take such a job up again
        // (its other ranks lost this one when that process ended), so it is handed back instead.
        let mut inherited: std::collections::HashSet<JobId> = self.queue.claimed_jobs(&self.runner_id).await?.into_iter().collect();
        loop {
            if *stop.borrow() {
                return self.stop_waiting().await;
            }
            // Jobs left in our claimed list by a previous life of this runner id come first, then a
            // gang that picked us while we waited (even if we were drained since: its other ranks
            // count on us).
            let leftover = match self.queue.oldest_claimed(&self.runner_id).await? {
                Some(id) => Some(id),
                None => self.queue.join_gang(&self.runner_id).await?,
            };
            let draining = self.queue.is_draining(&self.runner_id).await?;
            let job_id = match leftover {
                Some(id) => Some(id),
                // Draining: nothing new (an operator may undrain).
                None if draining => None,
                // The claim moves the job id into our claimed list in the same step, so a crash
                // leaves it where the scheduler finds and requeues it.
                None => self.claim(&info, self.config.claim_poll_ms << idle_polls.min(4)).await?,
            };
            match job_id {
                Some(job_id) => {
                    idle_polls = 0;
                    self.metrics.set_busy(true);
                    let span = tracing::info_span!("job", job_id = %job_id, runner = %self.config.runner_id);
                    let from_previous_life = inherited.remove(&job_id);
                    if let Err(e) = tracing::Instrument::instrument(self.handle(&job_id, from_previous_life), span).await {
                        tracing::error!(job = %job_id, error = %e, "job handling failed");
                    }
                    self.metrics.set_busy(false);
                    self.queue.finish(&self.runner_id, &job_id).await?;
                }
                None => {
                    // Back off while nothing fits (a claim that fits nothing scans up to 256 jobs):
                    // claim_poll_ms, doubling to 16x.
                    let wait = self.config.claim_poll_ms << idle_polls.min(4);
                    idle_polls += 1;
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return self.stop_waiting().await,
                        () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    }
                }
            }
        }
    }

    /// On shutdown: no gang picks this runner any more, and a gang that already did is told it left,
    /// so its rank 0 hands the job to another gang at once.
    async fn stop_waiting(&self) -> anyhow::Result<()> {
        self.queue.leave_idle(&self.runner_id).await?;
        if let Some(job) = self.queue.join_gang(&self.runner_id).await? {
            let rank = self.queue.gang(&job).await?.iter().position(|r| *r == self.runner_id);
            if let Some(rank) = rank {
                self.queue.set_gang_note(&job, &format!("left:{rank}"), "the runner shut down").await?;
            }
            self.queue.finish(&self.runner_id, &job).await?;
        }
        Ok(())
    }

    /// The first job, in fair-share order, that this runner fits (see `queue.lua`): in the memory it
    /// declares, or in what is free on its training device now when that is less (another process on
    /// the host or the GPU is using the rest). Finding none, the runner counts as waiting until it asks
    /// again (`wait_ms`, with a margin), so a gang may pick it meanwhile.
    async fn claim(&self, info: &RunnerInfo, wait_ms: u64) -> anyhow::Result<Option<JobId>> {
        let declared = info.training_memory_bytes();
        let free = if self.device.is_cuda() { gpu_available_bytes() } else { host_available_bytes() };
        self.queue.claim(&self.runner_id, &info.device, claim_memory(declared, free), 2 * wait_ms + 1000).await
    }

    /// This runner's seat in the gang of a job on several runners; None (the job is let go) when it is
    /// not, or no longer, one of its ranks.
    async fn seat(&self, job_id: &JobId, world: usize) -> anyhow::Result<Option<gang::Seat>> {
        let ranks = self.queue.gang(job_id).await?;
        let rank = ranks.iter().position(|r| *r == self.runner_id);
        Ok(match rank {
            Some(rank) if ranks.len() == world => Some(gang::Seat { rank, ranks, address: self.config.address.clone(), timeout: Duration::from_secs(self.config.gang_timeout_seconds) }),
            _ => None,
        })
    }

    /// The registry entry: detected hardware plus what the operator configured.
    fn info(&self) -> RunnerInfo {
        let cuda = self.device.is_cuda();
        RunnerInfo {
            runner_id: self.runner_id.clone(),
            device: if cuda { "cuda" } else { "cpu" }.into(),
            gpu_count: if cuda { tch::Cuda::device_count() } else { 0 },
            gpu_model: self.config.gpu_model.clone(),
            gpu_memory_bytes: if self.config.gpu_memory_gib > 0 { (self.config.gpu_memory_gib << 30) as i64 } else if cuda { gpu_memory_bytes() } else { 0 },
            host_memory_bytes: if self.config.host_memory_gib > 0 { (self.config.host_memory_gib << 30) as i64 } else { host_memory_bytes() },
            labels: self.config.labels.clone(),
            address: self.config.address.clone(),
            max_concurrent_jobs: 1,
            methods: vec!["lora".into(), "full".into()],
            qat_formats: vec!["mxfp4".into(), "nvfp4".into()],
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: unix_ms() / 1000,
            last_heartbeat_ms: 0,
        }
    }

    /// Runs one claimed job; `from_previous_life`: it was claimed before this process started.
    async fn handle(&self, job_id: &JobId, from_previous_life: bool) -> anyhow::Result<()> {
        let Some(assignment) = self.queue.assignment(job_id).await? else {
            tracing::warn!(job = %job_id, "claimed job has no assignment (Redis lost it); the scheduler will republish it");
            return Ok(());
        };
        let world = assignment.spec.moe.world_size.max(1) as usize;
        let seat = match world {
            1 => None,
            _ => match self.seat(job_id, world).await? {
                Some(seat) => Some(seat),
                None => {
                    tracing::warn!(job = %job_id, "not one of the job's gang (any more); letting it go");
                    return Ok(());
                }
            },
        };
        let rank = seat.as_ref().map_or(0, |s| s.rank);
        let sink = EventSink {
            queue: self.queue.clone(),
            job_id: job_id.clone(),
            attempt: assignment.attempt,
            runner_id: self.runner_id.clone(),
            metrics: self.metrics.clone(),
            muted: rank != 0,
        };
        if seat.is_some() && from_previous_life {
            tracing::warn!(job = %job_id, rank, "a gang job from before this runner restarted; handing it back");
            let rank_lost = Some(format!("rank {rank}'s runner ({}) restarted during the job", self.runner_id));
            return sink.emit(RunnerEventKind::Released { stage: "sft".into(), step: 0, rank_lost }).await;
        }
        tracing::info!(attempt = assignment.attempt, model = %assignment.spec.model, rank, world, "job started");
        let dtype = crate::model::kind_name(train::training_kind(assignment.spec.moe.precision, self.device));
        let ranks = seat.as_ref().map(|s| s.ranks.iter().map(ToString::to_string).collect()).unwrap_or_default();
        sink.emit(RunnerEventKind::Started { device: format!("{:?}", self.device).to_lowercase(), dtype: dtype.into(), ranks }).await?;
        let latest = gang::LatestCheckpoint::default();
        match self.train_and_upload(&assignment, &sink, seat.as_ref(), &latest).await {
            Ok(Some((trained_tokens, result))) => {
                tracing::info!(trained_tokens, "job succeeded");
                sink.emit(RunnerEventKind::Succeeded { trained_tokens, result }).await
            }
            // A rank other than 0 is done; rank 0 exports and reports.
            Ok(None) => Ok(()),
            Err(e) if e.downcast_ref::<train::Cancelled>().is_some() => {
                tracing::info!(job = %job_id, "job cancelled; stopped training");
                Ok(())
            }
            Err(e) if e.downcast_ref::<train::Checkpointed>().is_some() => {
                let stop = e.downcast_ref::<train::Checkpointed>().expect("checked above");
                let (stage, step, reason) = (stop.stage.to_string(), stop.step, stop.reason.clone());
                tracing::info!(job = %job_id, request = ?stop.request, stage, step, reason, "stopped after a checkpoint");
                match stop.request {
                    train::StopRequest::Release => sink.emit(RunnerEventKind::Released { stage, step, rank_lost: None }).await,
                    _ => sink.emit(RunnerEventKind::Paused { stage, step, reason }).await,
                }
            }
            Err(e) if seat.is_some() && train::parallel::is_peer_lost(&e) => {
                tracing::warn!(job = %job_id, rank, error = format!("{e:#}"), "the job's gang broke");
                match seat.as_ref().filter(|s| s.rank == 0) {
                    Some(seat) => self.report_broken_gang(&sink, seat, &latest, &e).await,
                    None => Ok(()),
                }
            }
            Err(e) => {
                tracing::error!(job = %job_id, error = format!("{e:#}"), "job failed");
                if rank != 0 {
                    // Rank 0 fails the job with this (the same note `gang::Member` leaves, before leaving
                    // the group, for a failure while training; here also one before joining it).
                    self.queue.set_gang_note(job_id, &gang::error_field(rank), &moetune_types::text::for_tenants(&format!("{e:#}"))).await?;
                    return Ok(());
                }
                let (code, message) = match e.downcast_ref::<UserError>() {
                    Some(UserError(message)) => (ErrorCode::InvalidTrainingFile, message.clone()),
                    None => (ErrorCode::TrainingError, format!("{e:#}")),
                };
                sink.emit(RunnerEventKind::Failed { code: code.as_str().into(), message }).await
            }
        }
    }

    /// Rank 0 saw the gang break. A rank that failed on its own left its error in the gang's record
    /// before it left the group: the job fails with it. Otherwise a rank was lost (its runner died, or
    /// could not be reached): the job goes back to the queue, to resume from its latest checkpoint on
    /// a new gang.
    async fn report_broken_gang(&self, sink: &EventSink, seat: &gang::Seat, latest: &gang::LatestCheckpoint, error: &anyhow::Error) -> anyhow::Result<()> {
        for (rank, runner) in seat.ranks.iter().enumerate().skip(1) {
            if let Some(message) = self.queue.gang_note(&sink.job_id, &gang::error_field(rank)).await? {
                let message = format!("rank {rank} (runner {runner}) failed: {message}");
                return sink.emit(RunnerEventKind::Failed { code: ErrorCode::TrainingError.as_str().into(), message }).await;
            }
        }
        let (stage, step) = latest.get().unwrap_or_else(|| ("sft".into(), 0));
        // The tenant reads this: what happened, not the hosts and ports in c10d's error (the log has it).
        tracing::warn!(job = %sink.job_id, error = format!("{error:#}"), "handing the job back: a rank was lost");
        let rank_lost = Some(format!("rank 0 (runner {}) lost contact with the other ranks of the gang", seat.ranks[0]));
        sink.emit(RunnerEventKind::Released { stage, step, rank_lost }).await
    }

    /// Trains (as one rank of a gang with `seat`), then, on rank 0, exports and uploads: the tokens
    /// trained and the summary. Other ranks return None.
    async fn train_and_upload(&self, assignment: &JobAssignment, sink: &EventSink, seat: Option<&gang::Seat>, latest: &gang::LatestCheckpoint) -> anyhow::Result<Option<(i64, serde_json::Value)>> {
        let train_examples = self.download_examples(&assignment.bucket, &assignment.training_file_key, "training").await?;
        let validation = match &assignment.validation_file_key {
            Some(key) => self.download_examples(&assignment.bucket, key, "validation").await?,
            None => Vec::new(),
        };
        sink.emit(RunnerEventKind::Message {
            level: "info".into(),
            message: format!("Loaded {} training and {} validation examples", train_examples.len(), validation.len()),
        })
        .await?;
        let work = Path::new(&self.config.work_dir).join(assignment.job_id.as_str()).join(format!("attempt-{}-{}", assignment.attempt, self.runner_id));
        let resume = self.download_resume_point(assignment, &work.join("resume")).await?;
        if let Some(point) = &resume {
            sink.emit(RunnerEventKind::Message { level: "info".into(), message: format!("Resuming from the checkpoint at {} step {}", point.progress.stage.name(), point.progress.step) }).await?;
        }
        let mut spec = assignment.spec.clone();
        if let Some(location) = &assignment.model_location {
            spec.model = self.fetch_model(location).await?.to_string_lossy().into_owned();
        }
        if let Some(job) = spec.routing_profile.clone() {
            let (device, data) = (self.device, train::JobData { train: train_examples, validation });
            let (tokens, result) = tokio::task::spawn_blocking(move || train::profile::run_job(&spec, &job, &data, device)).await??;
            return Ok(Some((tokens, serde_json::to_value(result)?)));
        }
        let base_model = spec.model.clone();
        let (device, handle) = (self.device, tokio::runtime::Handle::current());
        let mut reporter = S3Reporter {
            rank: seat.map_or(0, |s| s.rank),
            latest: latest.clone(),
            sink: sink.clone(),
            s3: self.s3.clone(),
            bucket: assignment.bucket.clone(),
            prefix: assignment.checkpoint_prefix.clone(),
            handle,
            queue: self.queue.clone(),
            job_id: assignment.job_id.clone(),
            attempt: assignment.attempt,
            stopping: self.stopping.subscribe(),
        };
        let data = train::JobData { train: train_examples, validation };
        let member = seat.map(|seat| gang::Member { seat: seat.clone(), queue: self.queue.clone(), job_id: assignment.job_id.clone(), attempt: assignment.attempt });
        let handle = tokio::runtime::Handle::current();
        let output = tokio::task::spawn_blocking(move || match member {
            None => train::run(&spec, data, device, resume, &mut reporter),
            Some(member) => member.train(&handle, device, |parallel| train::run_on(&spec, data, device, resume, &mut reporter, Some(parallel))),
        })
        .await??;
        if seat.is_some_and(|s| s.rank != 0) {
            let _ = std::fs::remove_dir_all(&work);
            return Ok(None);
        }
        let out_dir = work.join("outputs");
        // With `training_seconds`, what the scheduler keeps for the estimates of jobs like this one;
        // with the serve check, which must pass before anything is uploaded.
        let (trained_tokens, export_spec, dir) = (output.trained_tokens, assignment.spec.clone(), out_dir.clone());
        let exported = tokio::task::spawn_blocking(move || {
            let mut summary = output.summary.clone();
            export::write_checked_outputs(&output, &export_spec, &base_model, &dir, &mut summary).map(|files| (files, summary))
        })
        .await?;
        let (files, mut summary) = exported.inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&work);
        })?;
        for (name, path) in files {
            let key = format!("{}/{name}", assignment.artifact_prefix);
            let (bytes, sha256) = upload_file(&self.s3, &assignment.bucket, &key, &path).await?;
            let uri = format!("s3://{}/{key}", assignment.bucket);
            sink.emit(RunnerEventKind::Artifact { name, uri, bytes, sha256 }).await?;
        }
        let _ = std::fs::remove_dir_all(&work);
        summary["runner_class"] = moetune_types::estimate::runner_class(&self.info()).into();
        Ok(Some((trained_tokens, summary)))
    }

    /// The checkpoint the scheduler chose for this attempt (`resume_from`), downloaded into `dir`.
    async fn download_resume_point(&self, assignment: &JobAssignment, dir: &Path) -> anyhow::Result<Option<train::resume::ResumePoint>> {
        let Some(prefix) = &assignment.resume_from else { return Ok(None) };
        let prefix = format!("{}/", prefix.trim_end_matches('/'));
        let listed = self.s3.list_objects_v2().bucket(&assignment.bucket).prefix(&prefix).send().await?;
        anyhow::ensure!(!listed.contents().is_empty(), "checkpoint s3://{}/{prefix} to resume from is empty", assignment.bucket);
        std::fs::create_dir_all(dir)?;
        for object in listed.contents() {
            let key = object.key().context("listed object without key")?;
            let file = key.strip_prefix(&prefix).context("key outside the prefix")?;
            anyhow::ensure!(!file.contains('/') && !file.starts_with('.'), "checkpoint file name {file:?} is not a plain name");
            download_file(&self.s3, &assignment.bucket, key, &dir.join(file)).await?;
        }
        Ok(Some(train::resume::ResumePoint::open(dir)?))
    }

    /// A registered base model's directory, downloaded once per runner into `work_dir/models/` (files
    /// stream to disk; the directory appears only when complete).
    async fn fetch_model(&self, location: &S3Location) -> anyhow::Result<std::path::PathBuf> {
        let dir = Path::new(&self.config.work_dir).join("models").join(&location.bucket).join(&location.prefix);
        if dir.join("config.json").exists() {
            return Ok(dir);
        }
        let partial = dir.with_extension(format!("partial-{}", std::process::id()));
        std::fs::create_dir_all(&partial)?;
        let prefix = format!("{}/", location.prefix);
        let mut pages = self.s3.list_objects_v2().bucket(&location.bucket).prefix(&prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            for object in page?.contents() {
                let key = object.key().context("listed object without key")?;
                let name = key.strip_prefix(&prefix).context("key outside the prefix")?;
                if name.contains('/') {
                    continue;
                }
                let body = self.s3.get_object().bucket(&location.bucket).key(key).send().await.with_context(|| format!("downloading s3://{}/{key}", location.bucket))?.body;
                let mut file = tokio::fs::File::create(partial.join(name)).await?;
                tokio::io::copy(&mut body.into_async_read(), &mut file).await?;
            }
        }
        if let Err(e) = std::fs::rename(&partial, &dir) {
            // Another worker on this host placed it first.
            let _ = std::fs::remove_dir_all(&partial);
            anyhow::ensure!(dir.join("config.json").exists(), "placing the model in {}: {e}", dir.display());
        }
        Ok(dir)
    }

    /// Streams the stored file through the API's own reader (one line in memory at a time), so the
    /// runner trains on exactly what the API accepted. Files over `max_dataset_bytes` are refused
    /// before any of it is read: examples are held in memory for the whole job.
    async fn download_examples(&self, bucket: &str, key: &str, what: &str) -> anyhow::Result<Vec<Example>> {
        let object = self.s3.get_object().bucket(bucket).key(key).send().await.with_context(|| format!("downloading s3://{bucket}/{key}"))?;
        let size = object.content_length().unwrap_or(0);
        let limit = self.config.max_dataset_bytes;
        if size > limit {
            return Err(UserError(format!("{what} file is {size} bytes; this runner trains on files up to {limit} bytes")).into());
        }
        let mut body = object.body;
        let mut reader = JsonlReader::new();
        let mut read = 0i64;
        while let Some(chunk) = body.try_next().await.with_context(|| format!("reading s3://{bucket}/{key}"))? {
            read += chunk.len() as i64;
            anyhow::ensure!(read <= limit, UserError(format!("{what} file is over {limit} bytes; this runner trains on files up to that size")));
            reader.feed(&chunk);
        }
        match reader.finish() {
            Ok((_, examples)) => Ok(examples),
            Err((errors, _)) => {
                let first = &errors[0];
                Err(UserError(if first.line == 0 { format!("{what} file is empty") } else { format!("{what} file line {}: {}", first.line, first.message) }).into())
            }
        }
    }
}

/// Reports training events to the job's stream and stores checkpoints in S3 (from the blocking
/// training thread, hence the runtime handle). Each rank of a gang stores its own share of a
/// checkpoint; rank 0 stores the rest last and reports it.
struct S3Reporter {
    rank: usize,
    latest: gang::LatestCheckpoint,
    sink: EventSink,
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    handle: tokio::runtime::Handle,
    queue: JobQueue,
    job_id: JobId,
    attempt: i32,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl train::Reporter for S3Reporter {
    fn event(&mut self, event: RunnerEventKind) {
        if let Err(e) = self.handle.block_on(self.sink.emit(event)) {
            tracing::warn!(error = %e, "could not report training event");
        }
    }

    fn stop_request(&mut self) -> Option<train::StopRequest> {
        if *self.stopping.borrow() {
            return Some(train::StopRequest::Release);
        }
        match self.handle.block_on(self.queue.stop_flags(&self.job_id)) {
            Ok(flags) if flags.cancelled => Some(train::StopRequest::Cancel),
            // The pause names the attempt it is for: a resumed attempt does not stop again.
            Ok(flags) if flags.pause_attempt == Some(self.attempt) => Some(train::StopRequest::Pause),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the job's stop flags; training on");
                None
            }
        }
    }

    fn checkpoint(&mut self, name: &str, stage: &str, step: u32, dir: &Path) -> anyhow::Result<()> {
        let prefix = format!("{}/{name}", self.prefix);
        self.handle.block_on(async {
            // progress.json last: a checkpoint whose event was sent has all its files stored.
            let mut files: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
            files.sort_by_key(|f| f.file_name() == train::resume::PROGRESS);
            for file in files {
                let key = format!("{prefix}/{}", file.file_name().to_string_lossy());
                upload_file(&self.s3, &self.bucket, &key, &file.path()).await?;
            }
            if self.rank != 0 {
                return Ok(());
            }
            // Rank 0 stores last: the size is every rank's share (what the tenant's quota counts).
            let total = prefix_bytes(&self.s3, &self.bucket, &prefix).await?;
            let uri = format!("s3://{}/{prefix}", self.bucket);
            self.sink.emit(RunnerEventKind::Checkpoint { name: name.into(), stage: stage.into(), step, uri, bytes: total }).await?;
            self.latest.set(stage, step);
            Ok(())
        })
    }
}

/// A problem with the user's input rather than with the runner.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UserError(String);

/// MemTotal from /proc/meminfo (0 where there is none).
fn host_memory_bytes() -> i64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo_kib(&meminfo, "MemTotal:").unwrap_or(0) * 1024
}

/// The memory a claim may fill: the declared size, capped by the free memory when that is known.
fn claim_memory(declared: i64, free: Option<i64>) -> i64 {
    free.map_or(declared, |free| declared.min(free))
}

/// MemAvailable from /proc/meminfo: what the host can give a job without swapping.
fn host_available_bytes() -> Option<i64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_kib(&meminfo, "MemAvailable:").map(|kib| kib * 1024)
}

fn meminfo_kib(meminfo: &str, field: &str) -> Option<i64> {
    meminfo.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What GPU 0 can give a job: its free memory plus what this process holds (libtorch keeps freed
/// blocks cached for reuse, so after a job they count as used to nvidia-smi but are ours to reuse).
/// None when nvidia-smi cannot be read.
fn gpu_available_bytes() -> Option<i64> {
    let query = |args: &[&str]| {
        let output = std::process::Command::new("nvidia-smi").args(args).output().ok().filter(|o| o.status.success())?;
        String::from_utf8(output.stdout).ok()
    };
    let free = query(&["--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", "0"])?;
    let apps = query(&["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits", "-i", "0"]).unwrap_or_default();
    gpu_available_mib(&free, &apps, std::process::id()).map(|mib| mib << 20)
}

/// `free`: nvidia-smi's `memory.free` in MiB; `apps`: its `pid, used_memory` lines in MiB.
fn gpu_available_mib(free: &str, apps: &str, own_pid: u32) -> Option<i64> {
    let free: i64 = free.trim().parse().ok()?;
    let own: i64 = apps
        .lines()
        .filter_map(|line| line.split_once(','))
        .filter(|(pid, _)| pid.trim().parse::<u32>().ok() == Some(own_pid))
        .filter_map(|(_, used)| used.trim().parse::<i64>().ok())
        .sum();
    Some(free + own)
}

/// Memory of GPU 0 as nvidia-smi reports it (0 when it cannot be read: then set `gpu_memory_gib`).
fn gpu_memory_bytes() -> i64 {
    let output = std::process::Command::new("nvidia-smi").args(["--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"]).output();
    let mib = output.ok().and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse::<i64>().ok());
    mib.unwrap_or(0) << 20
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Keeps the runner in the registry: its alive key lives five periods, so one late beat does not lose it.
async fn heartbeat(queue: JobQueue, mut info: RunnerInfo, period_ms: u64) {
    loop {
        info.last_heartbeat_ms = unix_ms();
        if let Err(e) = queue.heartbeat(&info, period_ms * 5).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        tokio::time::sleep(Duration::from_millis(period_ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_fits_the_declared_memory_capped_by_what_is_free() {
        assert_eq!(claim_memory(80 << 30, Some(30 << 30)), 30 << 30);
        assert_eq!(claim_memory(16 << 30, Some(30 << 30)), 16 << 30);
        assert_eq!(claim_memory(16 << 30, None), 16 << 30);
        // This process's own (cached) GPU memory counts as available; another process's does not.
        assert_eq!(gpu_available_mib("1000\n", "4242, 30000\n777, 5000\n", 4242), Some(31_000));
        assert_eq!(gpu_available_mib("1000", "", 4242), Some(1000));
        assert_eq!(gpu_available_mib("[N/A]", "", 4242), None);
        let meminfo = "MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_kib(meminfo, "MemAvailable:"), Some(20_000_000));
        assert_eq!(meminfo_kib(meminfo, "MemTotal:"), Some(24_000_000));
        assert!(host_available_bytes().is_some_and(|b| b > 0 && b <= host_memory_bytes()));
    }
}
