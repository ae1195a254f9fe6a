//! One training stage (SFT or QAT): the optimiser loop with gradient accumulation and clipping, the
//! router losses, the expert-usage monitor, validation, metrics events and periodic checkpoints.

use std::time::Instant;

use anyhow::bail;
use moetune_types::{RouterMode, RunnerEventKind, TrainingSpec};
use tch::{Device, Tensor};

use super::data::Sample;
use super::eval::{self, Batch};
use super::monitor::layer_usage;
use super::optim::{self, AdamW, Trainable};
use super::parallel::DataParallel;
use super::resume::{self, Progress, ResumePoint, StageKind};
use super::step::{self, StepOptions};
use super::{Reporter, StopRequest};
use crate::model::{Adapters, ForwardMode, MoeModel, RoutingOptions};

pub struct Stage<'a> {
    pub kind: StageKind,
    pub steps: u32,
    pub peak_lr: f64,
    pub warmup: u32,
    pub spec: &'a TrainingSpec,
    pub pad: i64,
    pub device: Device,
    /// Activation checkpointing per decoder layer.
    pub checkpointing: bool,
    /// Files every checkpoint of this stage carries besides trainables and optimiser state (QAT: the
    /// SFT adapters and SFT routing, so a job resumed in QAT can still export and report them).
    pub extra: Vec<(&'static str, Vec<(String, Tensor)>)>,
    /// This rank's share of a data-parallel job; `None` = one process.
    pub parallel: Option<&'a DataParallel>,
    /// The parameters of which this rank holds a share: its experts under expert parallelism, every
    /// weight under fully sharded weights; empty otherwise.
    pub expert_shards: &'a std::collections::BTreeSet<String>,
    /// The base model's top-k experts for every validation batch: what the routing drift of each
    /// monitor check is measured against.
    pub base_routing: Option<&'a [Vec<Tensor>]>,
}

/// What one monitor check decided, for every rank alike.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Decision {
    /// Router collapse persisted: stop training (the early stop).
    stop: bool,
    /// The routing-drift guardrail fired: checkpoint and pause, saying why.
    pause: Option<String>,
}

impl Stage<'_> {
    /// Trains `trainables` under `mode` from `progress.step` to `steps`, updating `progress`.
    #[allow(clippy::too_many_arguments)]
    pub fn train(
        &self,
        model: &MoeModel,
        mode: ForwardMode,
        trainables: Vec<Trainable>,
        samples: &[Sample],
        eval_batches: &[Batch],
        diagnostic: &[Batch],
        progress: &mut Progress,
        resume: Option<&ResumePoint>,
        adapters: Option<&Adapters>,
        reporter: &mut dyn Reporter,
    ) -> anyhow::Result<AdamW> {
        let options = &self.spec.moe;
        // This rank's share of a split model (its experts, its weight shards): its own to update, never exchanged.
        let own: Vec<bool> = trainables.iter().map(|t| self.expert_shards.contains(&t.name)).collect();
        let split = own.iter().any(|&o| o);
        let owners = self.parallel.map(|dp| dp.owners_except(&trainables, &own));
        let mut optimizer = match (&owners, self.parallel) {
            (Some(owners), Some(dp)) => {
                let owned = owners.iter().map(|&o| o == dp.rank()).collect();
                AdamW::sharded(trainables, options.weight_decay, owned)
            }
            _ => AdamW::new(trainables, options.weight_decay),
        };
        if let Some(point) = resume.filter(|r| r.progress.stage == self.kind) {
            point.restore(&mut optimizer)?;
            reporter.event(RunnerEventKind::Message {
                level: "info".into(),
                message: format!("Resumed {} at step {}/{} from checkpoint", self.kind.name(), progress.step, self.steps),
            });
        }
        let routing = RoutingOptions { capacity_factor: options.router.capacity_factor, jitter: options.router.jitter };
        let train_mode = ForwardMode { routing: Some(&routing), ..mode };
        let router_trained = options.router.mode == RouterMode::Train;
        let step_options = StepOptions {
            checkpointing: self.checkpointing,
            chunk_tokens: None,
            aux_loss_coef: if router_trained { options.router.aux_loss_coef } else { 0.0 },
            z_loss_coef: options.router.z_loss_coef,
            grad_scale: 1.0 / f64::from(options.gradient_accumulation_steps),
            always_backward: model.runs_in_lockstep(),
        };
        let top_k = i64::from(options.monitor.top_k);
        while progress.step < self.steps {
            match self.agreed_stop(reporter.stop_request())? {
                Some(StopRequest::Cancel) => return Err(super::Cancelled.into()),
                Some(request) => {
                    // Pause or release. The state at the top of a step is what a periodic checkpoint
                    // after the last one holds.
                    let name = format!("{}-step-{:06}", self.kind.name(), progress.step);
                    self.checkpoint(&name, progress, &optimizer, reporter)?;
                    return Err(super::Checkpointed { request, stage: self.kind.name(), step: progress.step, reason: None }.into());
                }
                None => {}
            }
            let step = progress.step;
            let started = Instant::now();
            // Per-step seeding: dropout and jitter draw the same numbers whether or not the job resumed.
            let step_seed = (self.spec.seed as i64).wrapping_mul(1_000_003).wrapping_add(i64::from(step)) ^ (self.kind as i64) << 40;
            tch::manual_seed(step_seed);
            let lr = self.peak_lr * optim::warmup_cosine(step, self.warmup, self.steps) * progress.monitor.lr_multiplier;
            optimizer.zero_grad();
            let (mut losses, mut step_tokens) = (Vec::new(), 0i64);
            let accumulation = options.gradient_accumulation_steps;
            // Every micro-batch is copied to the device before the step's first kernel: a copy from the
            // host between micro-batches would wait for the previous one's backward. Every rank draws
            // the whole step's batches (the data order is the same everywhere) and keeps its share.
            let batches: Vec<(i64, Batch)> = (0..accumulation as usize)
                .filter_map(|index| {
                    let picked: Vec<&Sample> = progress.plan.next_batch().into_iter().map(|i| &samples[i]).collect();
                    let mine = self.parallel.is_none_or(|dp| dp.owns_micro_batch(index));
                    mine.then(|| (index as i64 + 1, Batch::new(&picked, self.pad, self.device)))
                })
                .collect();
            for (number, batch) in &batches {
                // Each micro-batch's layers draw their random numbers from seeds of their own, so a
                // layer recomputed by activation checkpointing draws the same jitter and dropout (and a
                // micro-batch draws the same on whichever rank computes it).
                let seeded = ForwardMode { seed: Some(step_seed.wrapping_mul(31).wrapping_add(*number)), ..train_mode };
                // LoRA dropout is active in training forwards only.
                let set_training = |on: bool| if let Some(a) = adapters { a.training.set(on) };
                set_training(true);
                losses.push(step::forward_backward(model, batch, seeded, &step_options));
                set_training(false);
                step_tokens += batch.tokens();
            }
            if let Some(dp) = self.parallel {
                dp.sync_grads_except(optimizer.params(), &own)?;
            }
            match self.parallel.filter(|_| split) {
                Some(dp) => optimizer.clip_grad_norm_split(options.max_grad_norm, &own, |shares| dp.sum_on_device(shares))?,
                None => optimizer.clip_grad_norm(options.max_grad_norm),
            }
            optimizer.step(lr);
            if let (Some(dp), Some(owners)) = (self.parallel, &owners) {
                dp.broadcast_params_except(optimizer.params(), owners, &own)?;
            }
            // The losses are read once the whole step is queued: reading one between micro-batches would
            // make the host wait for the device in the middle of the step. A non-finite loss fails the
            // job before anything of this step is kept (no checkpoint holds it).
            let mut step_loss: f64 = losses.iter().map(|loss| loss.double_value(&[]) / f64::from(accumulation)).sum();
            if let Some(dp) = self.parallel {
                let totals = dp.sum(&[step_loss, step_tokens as f64])?;
                (step_loss, step_tokens) = (totals[0], totals[1] as i64);
            }
            if !step_loss.is_finite() {
                bail!("{} loss became {step_loss} at step {}; lower the learning rate", self.kind.name(), step + 1);
            }
            let step_seconds = started.elapsed().as_secs_f64();
            progress.step += 1;
            progress.tokens += step_tokens;
            match self.kind {
                StageKind::Sft => progress.sft_losses.push(step_loss),
                _ => progress.qat_losses.push(step_loss),
            }
            let done = progress.step == self.steps;
            let validate = done || progress.step % options.monitor.every_n_steps == 0;
            let validation = validate.then(|| eval::score(model, mode, eval_batches));
            if progress.step % options.log_every_n_steps == 0 || done || validate {
                reporter.event(RunnerEventKind::Metrics {
                    stage: self.kind.name().into(),
                    step: progress.step,
                    total_steps: self.steps,
                    train_loss: step_loss,
                    learning_rate: lr,
                    tokens_per_second: step_tokens as f64 / step_seconds,
                    validation_loss: validation.as_ref().map(|(s, _)| s.loss),
                    validation_token_accuracy: validation.as_ref().map(|(s, _)| s.token_accuracy),
                });
            }
            let checked = options.monitor.enabled && progress.step % options.monitor.every_n_steps == 0;
            let mut decision = Decision::default();
            if checked {
                // The validation tokens' routing next to the base model's: how far training moved it.
                let agreement = match (self.base_routing, &validation) {
                    (Some(base), Some((_, top_k))) if !eval_batches.is_empty() => Some(eval::routing_agreement(base, top_k, eval_batches)),
                    _ => None,
                };
                decision = self.monitor(model, mode, diagnostic, agreement, progress, lr, top_k, reporter);
            }
            if let (true, Some(dp)) = (checked, self.parallel) {
                // Rank 0's verdict and monitor state (learning-rate decay, accepted drift) hold for every
                // rank: GPUs need not score bit-identically, and ranks that disagreed would stop at
                // different steps.
                let state = (decision, progress.monitor.clone(), progress.accepted_routing_drift);
                (decision, progress.monitor, progress.accepted_routing_drift) = dp.from_rank_zero(&state)?;
            }
            // The stage's time per step, its periodic validation and monitor checks included (they grow
            // with the steps): what estimates of later jobs scale by.
            progress.training_seconds += started.elapsed().as_secs_f64();
            if decision.stop {
                progress.stop_reason = Some("early_stop_router_collapse".into());
                break;
            }
            if let Some(reason) = decision.pause {
                // The state after this step, like a pause request at the top of the next one.
                let name = format!("{}-step-{:06}", self.kind.name(), progress.step);
                self.checkpoint(&name, progress, &optimizer, reporter)?;
                return Err(super::Checkpointed { request: StopRequest::Pause, stage: self.kind.name(), step: progress.step, reason: Some(reason) }.into());
            }
            let every = options.checkpoint_every_n_steps;
            if every > 0 && progress.step % every == 0 && !done {
                let name = format!("{}-step-{:06}", self.kind.name(), progress.step);
                self.checkpoint(&name, progress, &optimizer, reporter)?;
            }
        }
        Ok(optimizer)
    }

    /// Runs the diagnostic prompts and applies the alert rule and the routing-drift guardrail
    /// (`agreement`: per MoE layer, the validation tokens routed as the base routes them).
    #[allow(clippy::too_many_arguments)]
    fn monitor(&self, model: &MoeModel, mode: ForwardMode, diagnostic: &[Batch], agreement: Option<Vec<f64>>, progress: &mut Progress, lr: f64, top_k: i64, reporter: &mut dyn Reporter) -> Decision {
        let options = &self.spec.moe.monitor;
        let mut layers = tch::no_grad(|| {
            let outputs: Vec<_> = diagnostic.iter().map(|b| (model.forward(&b.ids, mode), &b.valid)).collect();
            let layer_ids: Vec<usize> = outputs.first().map(|(o, _)| o.router_logits.iter().map(|(l, _)| *l).collect()).unwrap_or_default();
            layer_ids
                .iter()
                .enumerate()
                .map(|(i, &layer)| {
                    let logits = Tensor::cat(&outputs.iter().map(|(o, _)| o.router_logits[i].1.shallow_clone()).collect::<Vec<_>>(), 0);
                    let valid = Tensor::cat(&outputs.iter().map(|(_, v)| (*v).shallow_clone()).collect::<Vec<_>>(), 0);
                    layer_usage(layer, &logits, &valid, top_k)
                })
                .collect::<Vec<_>>()
        });
        let verdict = progress.monitor.check(options, &layers, progress.step, lr);
        let routing_drift = agreement.as_ref().filter(|a| !a.is_empty()).map(|a| 1.0 - a.iter().sum::<f64>() / a.len() as f64);
        if let Some(agreement) = agreement.filter(|a| a.len() == layers.len()) {
            for (layer, agreed) in layers.iter_mut().zip(agreement) {
                layer.base_agreement = Some(agreed);
            }
        }
        let accepted = progress.accepted_routing_drift;
        let drift_exceeded = !verdict.stop && routing_drift.is_some_and(|drift| options.drift_exceeded(drift, accepted));
        let pause = routing_drift.filter(|_| drift_exceeded).map(|drift| {
            // Resuming accepts this drift: the checkpoint carries it.
            progress.accepted_routing_drift = drift;
            format!(
                "routing drift {drift:.3} at {} step {} exceeds monitor.max_routing_drift {}{}: {:.1}% of validation tokens now go to different experts than the base model sends them to",
                self.kind.name(),
                progress.step,
                options.max_routing_drift.unwrap_or_default(),
                if accepted > 0.0 { format!(" over the {accepted:.3} accepted on resume") } else { String::new() },
                100.0 * drift
            )
        });
        let actions: Vec<String> = match (verdict.stop, verdict.new_lr) {
            (true, _) => vec!["early_stop".into()],
            (false, new_lr) => new_lr.map(|lr| format!("lr_decayed to {lr:.3e}")).into_iter().chain(drift_exceeded.then(|| "paused".to_string())).collect(),
        };
        let action = (!actions.is_empty()).then(|| actions.join("; "));
        reporter.event(RunnerEventKind::Monitor {
            stage: self.kind.name().into(),
            step: progress.step,
            layers,
            mean_top1_share: verdict.mean_top1_share,
            mean_entropy_norm: verdict.mean_entropy_norm,
            alert: verdict.alert,
            action,
            learning_rate: lr,
            routing_drift,
            drift_exceeded,
        });
        Decision { stop: verdict.stop, pause }
    }

    /// The stop request every rank acts on: the most drastic any rank received (a single process acts
    /// on its own). Ranks must stop at the same step, or the others would wait in a collective.
    fn agreed_stop(&self, request: Option<StopRequest>) -> anyhow::Result<Option<StopRequest>> {
        let Some(dp) = self.parallel else { return Ok(request) };
        let code = |r: Option<StopRequest>| match r {
            None => 0,
            Some(StopRequest::Release) => 1,
            Some(StopRequest::Pause) => 2,
            Some(StopRequest::Cancel) => 3,
        };
        Ok(match dp.max(code(request))? {
            0 => None,
            1 => Some(StopRequest::Release),
            2 => Some(StopRequest::Pause),
            _ => Some(StopRequest::Cancel),
        })
    }

    /// Saves a checkpoint locally and hands it to the reporter (which stores it).
    pub fn checkpoint(&self, name: &str, progress: &Progress, optimizer: &AdamW, reporter: &mut dyn Reporter) -> anyhow::Result<()> {
        self.checkpoint_with(name, progress, optimizer.params(), Some(optimizer), reporter)
    }

    /// A checkpoint of `trainables` with `optimizer`'s state, or with none (the start of a stage).
    ///
    /// Data parallel: ranks other than 0 store only their share of the optimiser state, then rank 0
    /// stores the rest (weights are the same on every rank) once they all have, so a checkpoint the
    /// reporter records as complete is complete.
    ///
    /// A split model (expert parallelism, fully sharded weights): every rank also stores its share
    /// (values and state) in a file of its own; the other files leave them out.
    pub fn checkpoint_with(&self, name: &str, progress: &Progress, trainables: &[Trainable], optimizer: Option<&AdamW>, reporter: &mut dyn Reporter) -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("moetune-ckpt-{}-{name}", std::process::id()));
        let split: Vec<bool> = trainables.iter().map(|t| self.expert_shards.contains(&t.name)).collect();
        // A split model: each rank writes its share to a file of its own.
        let split_over = self.parallel.filter(|_| !self.expert_shards.is_empty());
        let save_share = || match split_over {
            Some(dp) => resume::save_split(&dir, dp.rank(), dp.world_size(), trainables, &split, optimizer),
            None => Ok(()),
        };
        let result = match self.parallel {
            Some(dp) if dp.rank() != 0 => {
                let stored = match (optimizer, split_over) {
                    (None, None) => Ok(()),
                    _ => std::fs::create_dir_all(&dir)
                        .map_err(anyhow::Error::from)
                        .and_then(|()| match optimizer {
                            Some(optimizer) => optimizer.save_where(&dir.join(resume::optimizer_file(dp.rank(), dp.world_size())), |i| !split[i]),
                            None => Ok(()),
                        })
                        .and_then(|()| save_share())
                        .and_then(|()| reporter.checkpoint(name, progress.stage.name(), progress.step, &dir)),
                };
                // Tell the others even after a failure, so rank 0 does not record the checkpoint (nor
                // wait out the timeout); then every rank stops.
                match dp.all_succeeded(stored.is_ok()) {
                    Ok(true) => Ok(()),
                    Ok(false) => stored.and_then(|()| anyhow::bail!("checkpoint {name}: another rank could not store its share")),
                    Err(e) => stored.and(Err(e)),
                }
            }
            _ => {
                if let Some(dp) = self.parallel {
                    anyhow::ensure!(dp.all_succeeded(true)?, "checkpoint {name}: a rank could not store its share of the optimiser state (see its log); the checkpoint was not recorded");
                }
                // The shards this checkpoint's optimiser state has (a resumed job's progress may name
                // those of the attempt it came from).
                let mut progress = progress.clone();
                progress.optimizer_shards = self.parallel.filter(|dp| optimizer.is_some() && dp.world_size() > 1).map(|dp| dp.world_size());
                progress.expert_shards = split_over.map(|dp| dp.world_size());
                progress.split_kind = split_over.map(|_| resume::SplitKind::of(&self.spec.moe));
                save_share()
                    .and_then(|()| resume::save(&dir, &progress, trainables, &split, optimizer, &self.extra))
                    .and_then(|()| reporter.checkpoint(name, progress.stage.name(), progress.step, &dir))
            }
        };
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}
