//! Checkpoints: everything needed to continue a job exactly where it was — trainable weights (or
//! adapters), optimiser moments, the stage and step, the data order, the monitor's state, and the
//! evaluations already done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::data::BatchPlan;
use super::eval::Scores;
use super::monitor::Monitor;
use super::optim::{AdamW, Trainable};
use crate::export::fp4::ActivationAmax;
use crate::model::ExpertInput;

pub const PROGRESS: &str = "progress.json";
pub const TRAINABLE: &str = "trainable.safetensors";
pub const OPTIMIZER: &str = "optimizer.safetensors";

/// The optimiser state file rank `rank` of `world` writes: rank 0 (and a single process) writes
/// [`OPTIMIZER`], the others `optimizer.rank{r}-of-{world}.safetensors` beside it. Naming the world
/// size keeps a stale shard of an earlier attempt with another world size out of the state.
pub fn optimizer_file(rank: usize, world: usize) -> String {
    if rank == 0 {
        OPTIMIZER.to_string()
    } else {
        format!("optimizer.rank{rank}-of-{world}.safetensors")
    }
}

/// The file rank `rank` of a job of `world` ranks that splits its model writes its share to (its
/// experts under expert parallelism, its shard of every weight when fully sharded): the values and,
/// past a stage's start, their optimiser state.
pub fn split_file(rank: usize, world: usize) -> String {
    format!("split.rank{rank}-of-{world}.safetensors")
}

/// What a split model's per-rank files hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    /// Each rank's experts, whole (expert parallelism).
    Experts,
    /// Each rank's piece of every flattened weight (fully sharded weights).
    Weights,
}

impl SplitKind {
    /// How a job with these options splits its model (when it does).
    pub fn of(options: &moetune_types::MoeSftQatOptions) -> Self {
        if options.fully_sharded { SplitKind::Weights } else { SplitKind::Experts }
    }

    fn describe(self) -> &'static str {
        match self {
            SplitKind::Experts => "its experts across ranks (expert_parallel)",
            SplitKind::Weights => "every weight across ranks (fully_sharded)",
        }
    }
}

/// What expert-parallel checkpoints named [`split_file`] before fully sharded weights existed.
fn legacy_split_file(rank: usize, world: usize) -> String {
    format!("experts.rank{rank}-of-{world}.safetensors")
}

/// This rank's block of a tensor split along dim 0 across `saved` (every saved rank's share, in rank
/// order): the `rows` rows from `rank · rows`, zero-padded where the saved rows end. Both splits lay
/// a tensor out in order along dim 0 — whole experts, or a flattened weight padded at its end — so
/// this is the block rank `rank` holds when the same tensor is split into blocks of `rows`.
fn reshard(saved: &[Tensor], rank: usize, shape: &[i64]) -> anyhow::Result<Tensor> {
    let first = saved.first().map(Tensor::size).unwrap_or_default();
    anyhow::ensure!(
        !first.is_empty() && first[1..] == shape[1..] && saved.iter().all(|t| t.size() == first),
        "the saved ranks' pieces ({:?}, …) do not split a tensor of this job's shape {shape:?}",
        first
    );
    let rows = shape[0];
    let whole = Tensor::cat(saved, 0);
    let start = rank as i64 * rows;
    let available = (whole.size()[0] - start).clamp(0, rows);
    let mut shape = whole.size();
    shape[0] = rows - available;
    Ok(Tensor::cat(&[whole.narrow(0, start.min(whole.size()[0]), available), whole.new_zeros(shape.as_slice(), (whole.kind(), whole.device()))], 0))
}

/// The optimiser state files of a checkpoint (none at a stage's end); every shard the progress
/// names must be there.
fn optimizer_files(dir: &Path, progress: &Progress) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.join(OPTIMIZER).exists() {
        // Only a stage's first checkpoint (where it starts afresh) has no optimiser state.
        anyhow::ensure!(
            progress.step == 0 && progress.optimizer_shards.is_none(),
            "the checkpoint in {} is incomplete: it is at {} step {} but has no {OPTIMIZER}",
            dir.display(),
            progress.stage.name(),
            progress.step
        );
        return Ok(Vec::new());
    }
    let world = progress.optimizer_shards.unwrap_or(1);
    let files: Vec<PathBuf> = (0..world).map(|rank| dir.join(optimizer_file(rank, world))).collect();
    if let Some(missing) = files.iter().find(|f| !f.exists()) {
        anyhow::bail!("the checkpoint in {} is incomplete: its optimiser state has {world} shards and {} is missing", dir.display(), missing.display());
    }
    Ok(files)
}
pub const ADAPTERS: &str = "adapters.safetensors";
pub const SFT_TOP_K: &str = "sft_top_k.safetensors";

/// Where a job is in its workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Sft,
    Qat,
    /// Training finished (a checkpoint taken after QAT).
    Done,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sft => "sft",
            Self::Qat => "qat",
            Self::Done => "done",
        }
    }
}

/// Where the job stands. Serialised as `progress.json` in every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    pub stage: StageKind,
    /// Optimiser steps completed in `stage`.
    pub step: u32,
    pub plan: BatchPlan,
    pub monitor: Monitor,
    pub sft_losses: Vec<f64>,
    /// One entry per completed step of each stage.
    pub qat_losses: Vec<f64>,
    pub tokens: i64,
    /// Time spent in the training stages' steps (forward, backward, update, the periodic validation
    /// and monitor checks) over every attempt, for estimates.
    #[serde(default)]
    pub training_seconds: f64,
    pub stop_reason: Option<String>,
    pub base: Option<Scores>,
    /// Per MoE layer, how often the base with its experts packed routes a token to the same top-k
    /// experts as the dense base it was quantised from (jobs that hold their experts packed).
    #[serde(default)]
    pub packed_base_agreement: Option<Vec<f64>>,
    /// SFT and PTQ results, kept so a job resumed in QAT still reports them.
    pub sft_eval: Option<SftEval>,
    pub activation_amax: Option<Vec<(usize, String, f32)>>,
    /// How many files the checkpoint's optimiser state is split into (one per rank of a data-parallel
    /// job with sharded state); absent = one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_shards: Option<usize>,
    /// A split model (expert parallelism, fully sharded weights): each rank's share (values and
    /// state) is in a file of its own ([`split_file`]), one per rank of this many; absent = whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_shards: Option<usize>,
    /// What the split files hold: absent (and in checkpoints from before fully sharded weights) =
    /// experts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_kind: Option<SplitKind>,
    /// The routing drift from the base at which the guardrail last paused the job: resuming accepted
    /// it, so the guardrail measures from there (over both stages).
    #[serde(default)]
    pub accepted_routing_drift: f64,
    /// The training data's routing profile `lora.target_experts: {"from_profile": …}` selects experts
    /// by: measured once, before training, so a resumed job adapts the same experts on any device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_profile: Option<moetune_types::RoutingProfile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftEval {
    pub sft: Scores,
    pub sft_task: Option<f64>,
    pub ptq: Scores,
    pub ptq_task: Option<f64>,
    pub ptq_agreement: Vec<f64>,
}

impl Progress {
    pub fn new(samples: usize, batch: usize, seed: u64) -> Self {
        Self {
            stage: StageKind::Sft,
            step: 0,
            plan: BatchPlan::new(samples, batch, seed),
            monitor: Monitor::default(),
            sft_losses: Vec::new(),
            qat_losses: Vec::new(),
            tokens: 0,
            training_seconds: 0.0,
            stop_reason: None,
            base: None,
            packed_base_agreement: None,
            sft_eval: None,
            activation_amax: None,
            optimizer_shards: None,
            expert_shards: None,
            split_kind: None,
            accepted_routing_drift: 0.0,
            training_profile: None,
        }
    }

    pub fn stopped_early(&self) -> bool {
        self.stop_reason.is_some()
    }

    /// QAT starts with a fresh data order and monitor (its learning rate is its own).
    pub fn enter_qat(&mut self, samples: usize, batch: usize, seed: u64) {
        self.stage = StageKind::Qat;
        self.step = 0;
        self.plan = BatchPlan::new(samples, batch, seed.wrapping_add(1));
        self.monitor = Monitor::default();
    }
}

pub fn amax_to_json(amax: &ActivationAmax) -> Vec<(usize, String, f32)> {
    let mut out: Vec<_> = amax.iter().map(|(&(layer, which), &v)| (layer, format!("{which:?}"), v)).collect();
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    out
}

pub fn amax_from_json(saved: &[(usize, String, f32)]) -> anyhow::Result<ActivationAmax> {
    saved
        .iter()
        .map(|(layer, which, v)| {
            let which = match which.as_str() {
                "GateUp" => ExpertInput::GateUp,
                "Down" => ExpertInput::Down,
                other => anyhow::bail!("unknown expert input {other} in checkpoint"),
            };
            Ok(((*layer, which), *v))
        })
        .collect()
}

/// A checkpoint directory to continue from.
pub struct ResumePoint {
    pub dir: PathBuf,
    pub progress: Progress,
    /// A split model: this rank and the world size, whose share it reads from the split files.
    pub expert_shard: Option<(usize, usize)>,
    /// How this job splits its model (with `expert_shard`).
    pub split_kind: SplitKind,
}

impl ResumePoint {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let raw = std::fs::read(dir.join(PROGRESS)).with_context(|| format!("reading {}/{PROGRESS}", dir.display()))?;
        Ok(Self { dir: dir.to_path_buf(), progress: serde_json::from_slice(&raw)?, expert_shard: None, split_kind: SplitKind::Experts })
    }

    /// This rank's share of the split tensors (values and state), when the checkpoint splits its model:
    /// from its own file, or cut from every saved rank's when it was written by another number of
    /// ranks. A checkpoint split where the job holds the model whole, or the reverse, is refused.
    fn split_tensors(&self, wanted: &[(String, Vec<i64>)]) -> anyhow::Result<HashMap<String, Tensor>> {
        let (saved, (rank, world)) = match (self.progress.expert_shards, self.expert_shard) {
            (None, None) => return Ok(HashMap::new()),
            (Some(saved), Some(now)) => {
                let written = self.progress.split_kind.unwrap_or(SplitKind::Experts);
                anyhow::ensure!(
                    written == self.split_kind,
                    "the checkpoint in {} splits {}, and this job splits {}: resume it with the expert_parallel and fully_sharded it was written with",
                    self.dir.display(),
                    written.describe(),
                    self.split_kind.describe()
                );
                (saved, now)
            }
            (saved, now) => anyhow::bail!(
                "the checkpoint in {} holds the model {}, and this job {}: resume it with the expert_parallel and fully_sharded it was written with",
                self.dir.display(),
                saved.map_or("whole".to_string(), |n| format!("split across {n} ranks")),
                now.map_or("holds it whole".to_string(), |(_, n)| format!("splits it across {n} ranks"))
            ),
        };
        let file = |r: usize| -> anyhow::Result<PathBuf> {
            let path = [split_file(r, saved), legacy_split_file(r, saved)].into_iter().map(|f| self.dir.join(f)).find(|p| p.exists());
            path.with_context(|| format!("the checkpoint in {} is incomplete: {} is missing", self.dir.display(), split_file(r, saved)))
        };
        if saved == world {
            return read(&file(rank)?);
        }
        let files = (0..saved).map(|r| file(r).and_then(|p| read(&p))).collect::<anyhow::Result<Vec<_>>>()?;
        let mut out = HashMap::new();
        for (name, shape) in wanted {
            let Some(pieces) = files.iter().map(|f| f.get(name).map(Tensor::shallow_clone)).collect::<Option<Vec<_>>>() else { continue };
            out.insert(name.clone(), reshard(&pieces, rank, shape).with_context(|| format!("{name} in {}", self.dir.display()))?);
        }
        Ok(out)
    }

    /// Copies saved trainable values into the optimiser's tensors and restores its moments (fresh
    /// ones when the checkpoint has none: a stage's final checkpoint is where the next one starts).
    pub fn restore(&self, optimizer: &mut AdamW) -> anyhow::Result<()> {
        self.restore_values(optimizer.params())?;
        let state = optimizer_files(&self.dir, &self.progress)?;
        if !state.is_empty() {
            let wanted: Vec<(String, Vec<i64>)> = optimizer.state(|_| true).into_iter().map(|(name, t)| (name, t.size())).collect();
            optimizer.load(&state, &self.split_tensors(&wanted)?)
        } else {
            optimizer.sync_masters();
            Ok(())
        }
    }
}

impl ResumePoint {
    /// Copies the saved values of `trainables` into them (no optimiser state).
    /// Whether the checkpoint holds every weight (full SFT or full QAT train the embeddings, LoRA and
    /// LoRA-QAT never do), not adapters and routers only. Reads the safetensors header only.
    pub fn holds_full_weights(&self) -> anyhow::Result<bool> {
        let path = self.dir.join(TRAINABLE);
        let mut file = std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut len = [0u8; 8];
        std::io::Read::read_exact(&mut file, &mut len)?;
        let len = usize::try_from(u64::from_le_bytes(len))?;
        anyhow::ensure!(len <= 100 << 20, "{}: header of {len} bytes", path.display());
        let mut header = vec![0u8; len];
        std::io::Read::read_exact(&mut file, &mut header)?;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).with_context(|| format!("{}: header", path.display()))?;
        Ok(header.contains_key("model.embed_tokens.weight"))
    }

    pub fn restore_values(&self, trainables: &[Trainable]) -> anyhow::Result<()> {
        let mut saved = read(&self.dir.join(TRAINABLE))?;
        let wanted: Vec<(String, Vec<i64>)> = trainables.iter().map(|p| (p.name.clone(), p.tensor.size())).collect();
        saved.extend(self.split_tensors(&wanted)?);
        tch::no_grad(|| {
            for p in trainables {
                let value = saved.get(&p.name).with_context(|| format!("checkpoint lacks {}", p.name))?;
                super::optim::copy_checked(&mut p.tensor.shallow_clone(), value, &p.name)?;
            }
            Ok(())
        })
    }
}

/// Writes this rank's share of a split model (the trainables `split` marks) with their optimiser
/// state when there is one, as [`split_file`] of `rank` of `world` in `dir`.
pub fn save_split(dir: &Path, rank: usize, world: usize, trainables: &[Trainable], split: &[bool], optimizer: Option<&AdamW>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tensors: Vec<(String, Tensor)> = trainables.iter().zip(split).filter(|(_, &s)| s).map(|(p, _)| (p.name.clone(), p.tensor.detach())).collect();
    if let Some(optimizer) = optimizer {
        // The step count is in every state file alike; the optimiser files carry it.
        tensors.extend(optimizer.state(|i| split[i]).into_iter().filter(|(name, _)| name != "step"));
    }
    let path = dir.join(split_file(rank, world));
    Tensor::write_safetensors(&tensors, &path).with_context(|| format!("writing {}", path.display()))
}

pub fn read(path: &Path) -> anyhow::Result<HashMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display()))?.into_iter().collect())
}

/// Writes a checkpoint into `dir`: progress, trainables, optimiser state (none at a stage's end, where
/// the next stage starts afresh), and `extra` files' tensors. Under expert parallelism, the
/// trainables and state `split` marks (this rank's share of a split model) are left to [`save_split`].
pub fn save(dir: &Path, progress: &Progress, trainables: &[Trainable], split: &[bool], optimizer: Option<&AdamW>, extra: &[(&str, Vec<(String, Tensor)>)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let trainables: Vec<(String, Tensor)> = trainables.iter().zip(split).filter(|(_, &s)| !s).map(|(p, _)| (p.name.clone(), p.tensor.detach())).collect();
    Tensor::write_safetensors(&trainables, dir.join(TRAINABLE))?;
    if let Some(optimizer) = optimizer {
        optimizer.save_where(&dir.join(OPTIMIZER), |i| !split[i])?;
    }
    for (file, tensors) in extra {
        Tensor::write_safetensors(tensors, dir.join(file))?;
    }
    // progress.json last: a directory with it is complete.
    std::fs::write(dir.join(PROGRESS), serde_json::to_vec_pretty(progress)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_of_every_weight_is_told_from_one_of_adapters() {
        let dir = std::env::temp_dir().join(format!("moetune-resume-kind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let point = ResumePoint { dir: dir.clone(), progress: Progress::new(4, 2, 0), expert_shard: None, split_kind: SplitKind::Experts };
        let t = || Tensor::zeros([2, 2], (tch::Kind::Float, tch::Device::Cpu));
        let adapters = [("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", t()), ("model.layers.0.mlp.gate.weight", t())];
        Tensor::write_safetensors(&adapters, dir.join(TRAINABLE)).unwrap();
        assert!(!point.holds_full_weights().unwrap(), "adapters and a trained router are not every weight");
        Tensor::write_safetensors(&[("model.embed_tokens.weight", t()), ("model.layers.0.mlp.gate.weight", t())], dir.join(TRAINABLE)).unwrap();
        assert!(point.holds_full_weights().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
