//! MoE causal language models. One file per architecture (`mixtral`, `qwen2_moe`, `qwen3_moe`,
//! `gpt_oss`) parses its config and states how it differs; `layers` and `moe` hold the shared blocks.
//! Parameter names are transformers 5's, so loading a checkpoint is a lookup (`checkpoint`).

pub mod adapters;
mod arch;
pub mod checkpoint;
pub mod config;
pub mod fully_sharded;
pub mod gpt_oss;
pub mod inspect;
pub mod layers;
pub mod mixtral;
pub mod moe;
pub mod params;
pub mod qwen2_moe;
pub mod qwen3_moe;
pub mod resident;
pub mod shards;
pub mod tiny;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tch::nn;
use tch::{Device, Kind, Tensor};

pub use config::{ArchConfig, Architecture};
use layers::{rms_norm, rope_tables, Attention, DenseMlp};
pub use moe::RoutingOptions;
pub use adapters::{ActivationHook, Adapters, ExpertInput, LoraPair};
pub use moe::WeightTransform;
pub use moe::{DeferredExperts, ExpertParallel};
use moe::{ExpertHooks, MoeBlock};
use params::{ParamInfo, Params, Role};
pub use resident::PackedFormat;
use resident::PackedExperts;

enum Mlp {
    Sparse(MoeBlock),
    Dense(DenseMlp),
}

struct DecoderLayer {
    input_layernorm: Tensor,
    self_attn: Attention,
    post_attention_layernorm: Tensor,
    mlp: Mlp,
}

/// Output of a forward pass.
pub struct ForwardOutput {
    /// `[batch, seq, vocab]`.
    pub logits: Tensor,
    /// Per MoE layer (decoder layer index, `[tokens, experts]`), for the aux loss and the monitor.
    pub router_logits: Vec<(usize, Tensor)>,
    /// Per MoE layer (decoder layer index, `[tokens, k]`), the experts each token was sent to.
    pub router_top_k: Vec<(usize, Tensor)>,
}

/// How a forward pass runs: evaluation by default.
#[derive(Default, Clone, Copy)]
pub struct ForwardMode<'a> {
    /// Training-only routing options (capacity factor, jitter); `None` at evaluation.
    pub routing: Option<&'a RoutingOptions>,
    /// Applied to expert weights (QAT fake quantization).
    pub expert_transform: Option<WeightTransform<'a>>,
    /// LoRA adapters on top of the base weights.
    pub adapters: Option<&'a Adapters>,
    /// Applied to the experts' input activations (NVFP4 activation QAT and its calibration).
    pub expert_inputs: Option<ActivationHook<'a>>,
    /// Reseeds the random generator before each decoder layer (training): router jitter and LoRA
    /// dropout then draw the same numbers when a checkpointed layer is recomputed in the backward.
    pub seed: Option<i64>,
    /// Routed experts one at a time even where grouped GEMMs apply (the reference path in tests and
    /// the bench).
    pub expert_loop: bool,
}

impl<'a> ForwardMode<'a> {
    /// What the routed experts of a MoE layer see of this mode.
    fn expert_hooks(&self) -> ExpertHooks<'a> {
        ExpertHooks { transform: self.expert_transform, adapters: self.adapters, inputs: self.expert_inputs, expert_loop: self.expert_loop }
    }
}

/// What one decoder layer produced.
pub struct LayerOutput {
    pub hidden: Tensor,
    /// MoE layers: router logits `[tokens, experts]` and chosen experts `[tokens, k]`.
    pub router: Option<(Tensor, Tensor)>,
}

pub struct MoeModel {
    pub config: ArchConfig,
    pub params: Vec<ParamInfo>,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: Tensor,
    /// Every weight split across ranks ([`fully_sharded`]); `None`: held whole.
    sharded: Option<fully_sharded::FullySharded>,
}

/// How routed experts are held on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertStorage {
    /// Dense, in the model's dtype (trainable).
    Dense,
    /// Packed in this FP4 format (frozen), quantised on load unless the checkpoint ships it.
    Packed(PackedFormat),
    /// Packed in the checkpoint's own packed format (gpt-oss: MXFP4), dense if it ships none.
    AsShipped,
}

/// Device and dtype: CUDA bf16 when a GPU is visible, else CPU fp32 (bf16 is ~500× slower there).
pub fn default_placement() -> (Device, Kind) {
    let device = Device::cuda_if_available();
    (device, if device.is_cuda() { Kind::BFloat16 } else { Kind::Float })
}

pub fn parse_kind(name: &str) -> anyhow::Result<Kind> {
    match name {
        "float32" | "fp32" => Ok(Kind::Float),
        "bfloat16" | "bf16" => Ok(Kind::BFloat16),
        "float16" | "fp16" => Ok(Kind::Half),
        other => anyhow::bail!("dtype must be float32, bfloat16 or float16, not {other:?}"),
    }
}

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "float32",
    }
}

impl MoeModel {
    /// `packed_experts`: routed expert weights are created empty, to be loaded packed.
    /// `expert_parallel`: this rank holds its share of the routed experts only.
    fn build(p: &Params, config: ArchConfig, recorded: &RefCell<Vec<ParamInfo>>, packed_experts: bool, expert_parallel: Option<&ExpertParallel>) -> Self {
        let c = &config;
        let model = p.sub("model");
        let layers = (0..c.num_hidden_layers as usize)
            .map(|i| {
                let l = model.sub("layers").sub(i);
                let mlp_path = l.sub("mlp");
                DecoderLayer {
                    input_layernorm: l.norm("input_layernorm", c.hidden_size),
                    self_attn: Attention::new(&l.sub("self_attn"), c, i),
                    post_attention_layernorm: l.norm("post_attention_layernorm", c.hidden_size),
                    mlp: if c.sparse_layers[i] {
                        Mlp::Sparse(MoeBlock::new(&mlp_path, c, i, packed_experts, expert_parallel))
                    } else {
                        Mlp::Dense(DenseMlp::new(&mlp_path, c.hidden_size, c.dense_intermediate_size, Role::DenseMlp))
                    },
                }
            })
            .collect();
        let embed_tokens = model.sub("embed_tokens").param("weight", &[c.vocab_size, c.hidden_size], Role::Embedding, params::normal());
        let norm = model.norm("norm", c.hidden_size);
        let lm_head = if c.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            p.sub("lm_head").param("weight", &[c.vocab_size, c.hidden_size], Role::LmHead, params::normal())
        };
        Self { params: recorded.borrow().clone(), embed_tokens, layers, norm, lm_head, config, sharded: None }
    }

    /// New parameters in `vars` (its device and kind), initialised as transformers initialises them.
    pub fn new(vars: &nn::VarStore, config: ArchConfig) -> Self {
        let recorded = RefCell::new(Vec::new());
        Self::build(&Params::vars(vars.root(), &recorded), config, &recorded, false, None)
    }

    /// New parameters like [`Self::new`], of which this rank holds only its share of the routed
    /// experts (expert parallelism over `ep`'s ranks).
    pub fn new_expert_parallel(vars: &nn::VarStore, config: ArchConfig, ep: &ExpertParallel) -> anyhow::Result<Self> {
        ep.check(config.moe.num_experts)?;
        let recorded = RefCell::new(Vec::new());
        Ok(Self::build(&Params::vars(vars.root(), &recorded), config, &recorded, false, Some(ep)))
    }

    /// Loads a Hugging Face model directory like [`Self::load_dir`], keeping only this rank's share of
    /// the routed experts (expert parallelism over `ep`'s ranks): each expert tensor is read whole, one
    /// at a time, and narrowed.
    pub fn load_dir_expert_parallel(dir: &Path, device: Device, kind: Kind, ep: &ExpertParallel) -> anyhow::Result<(nn::VarStore, Self)> {
        let config = ArchConfig::from_dir(dir)?;
        ep.check(config.moe.num_experts)?;
        let ckpt = checkpoint::Checkpoint::open(dir)?;
        let mut vars = nn::VarStore::new(device);
        vars.set_kind(kind);
        let recorded = RefCell::new(Vec::new());
        let model = tch::no_grad(|| Self::build(&Params::vars(vars.root(), &recorded), config, &recorded, false, Some(ep)));
        checkpoint::load_into(&vars, &model.params, &model.config, &ckpt, &mut |_, _| Ok(false)).with_context(|| format!("loading {}", dir.display()))?;
        Ok((vars, model))
    }

    /// Whether this rank holds only a share of the routed experts.
    pub fn is_expert_parallel(&self) -> bool {
        self.params.iter().any(|p| p.local_rows.is_some())
    }

    /// Splits every weight held whole across `group`'s ranks ([`fully_sharded`]), the shards on
    /// `device` or, with `offload`, in host memory in fp32 (the whole weights may be on the host);
    /// every rank must hold the same values.
    pub fn shard_weights(&mut self, vars: &mut nn::VarStore, group: std::sync::Arc<std::sync::Mutex<moetune_c10d::ProcessGroup>>, device: Device, offload: bool) -> anyhow::Result<()> {
        anyhow::ensure!(self.sharded.is_none(), "the weights are already sharded");
        self.sharded = Some(fully_sharded::FullySharded::new(group, &self.params, vars, self.layers.len(), device, offload)?);
        // Only the emptied parameters move: cheap.
        vars.set_device(device);
        Ok(())
    }

    pub fn fully_sharded(&self) -> Option<&fully_sharded::FullySharded> {
        self.sharded.as_ref()
    }

    /// Whether every rank must run each forward and backward with the others (their layers exchange
    /// tokens or gather weights).
    pub fn runs_in_lockstep(&self) -> bool {
        self.is_expert_parallel() || self.sharded.is_some()
    }

    /// Holds `unit`'s weights whole until the guards drop (none for a model held whole). With tied
    /// embeddings the head's weight is the embedding's: holding the head holds the embedding too.
    pub fn hold(&self, unit: fully_sharded::Unit) -> Vec<fully_sharded::Held<'_>> {
        let Some(sharded) = &self.sharded else { return Vec::new() };
        let tied = unit == fully_sharded::Unit::Head && self.config.tie_word_embeddings;
        let mut held = vec![sharded.hold(unit)];
        held.extend(tied.then(|| sharded.hold(fully_sharded::Unit::Embedding)));
        held
    }

    /// The tensor the optimiser updates for parameter `name` (`param` in `vars`): its shard when the
    /// weights are sharded; set to require a gradient when `trains`.
    pub fn trained_tensor(&self, name: &str, param: &Tensor, trains: bool) -> Tensor {
        let _ = param.shallow_clone().set_requires_grad(trains);
        self.sharded.as_ref().and_then(|s| s.shard(name, trains)).unwrap_or_else(|| param.shallow_clone())
    }

    /// Copies this rank's share of every parameter from `whole`, a model of the same config held whole.
    pub fn copy_share_from(&self, vars: &nn::VarStore, whole: &nn::VarStore) -> anyhow::Result<()> {
        let (mine, theirs) = (vars.variables(), whole.variables());
        tch::no_grad(|| {
            for p in &self.params {
                let source = theirs.get(&p.name).with_context(|| format!("the whole model has no {}", p.name))?;
                let source = match p.local_rows {
                    Some((first, count)) => source.narrow(0, first, count),
                    None => source.shallow_clone(),
                };
                mine[&p.name].shallow_clone().f_copy_(&source).with_context(|| format!("copying {}", p.name))?;
            }
            Ok(())
        })
    }

    /// Every rank's share of the experts gathered into a whole model on the host, in `kind`, for rank
    /// `keep` (the others take part in the exchanges and get `None`). One tensor is gathered at a time.
    pub fn gather_whole(&self, vars: &nn::VarStore, ep: Option<&ExpertParallel>, kind: Kind, keep: usize) -> anyhow::Result<Option<(nn::VarStore, MoeModel)>> {
        let rank = ep.map(ExpertParallel::rank).or(self.sharded.as_ref().map(|s| s.rank())).context("the model is held whole")?;
        let whole = (rank == keep).then(|| {
            // Allocated in `kind` and zeroed, never drawn: every value is copied in below.
            let mut whole_vars = nn::VarStore::new(Device::Cpu);
            whole_vars.set_kind(kind);
            let recorded = RefCell::new(Vec::new());
            let model = tch::no_grad(|| Self::build(&Params::zeroed_vars(whole_vars.root(), &recorded), self.config.clone(), &recorded, false, None));
            // Nothing trains any more: as the trained model is left once training is over.
            whole_vars.freeze();
            (whole_vars, model)
        });
        let mine = vars.variables();
        let theirs = whole.as_ref().map(|(v, _)| v.variables());
        tch::no_grad(|| -> anyhow::Result<()> {
            for p in &self.params {
                let value = match (p.local_rows, ep, &self.sharded) {
                    (Some(_), Some(ep), _) => ep.gather(&mine[&p.name]).with_context(|| format!("gathering {}", p.name))?,
                    (None, _, Some(sharded)) if sharded.is_sharded(&p.name) => sharded.whole(&p.name).with_context(|| format!("gathering {}", p.name))?,
                    _ => mine[&p.name].shallow_clone(),
                };
                if let Some(theirs) = &theirs {
                    theirs[&p.name].shallow_clone().f_copy_(&value.to_device(Device::Cpu))?;
                }
            }
            Ok(())
        })?;
        Ok(whole)
    }

    /// A random model whose routed experts are packed in `format` from the start (random codes): the
    /// dense experts are never allocated. For benchmarks of models too large to hold dense.
    pub fn new_with_random_packed_experts(vars: &nn::VarStore, config: ArchConfig, format: PackedFormat) -> Self {
        let recorded = RefCell::new(Vec::new());
        let model = tch::no_grad(|| Self::build(&Params::vars(vars.root(), &recorded), config, &recorded, true, None));
        let device = vars.device();
        let (e, h, i) = (model.config.moe.num_experts, model.config.hidden_size, model.config.moe.intermediate_size);
        for moe in model.moe_blocks() {
            moe.set_packed(PackedExperts::random([e, 2 * i, h], format, device), PackedExperts::random([e, h, i], format, device));
        }
        model
    }

    /// Names, shapes and roles only; allocates nothing.
    pub fn param_infos(config: &ArchConfig) -> Vec<ParamInfo> {
        let recorded = RefCell::new(Vec::new());
        Self::build(&Params::shapes_only(&recorded), config.clone(), &recorded, false, None).params
    }

    /// Loads a Hugging Face model directory (config.json + safetensors) onto `device` as `kind`.
    pub fn load_dir(dir: &Path, device: Device, kind: Kind) -> anyhow::Result<(nn::VarStore, Self)> {
        Self::load_dir_with(dir, device, kind, ExpertStorage::Dense)
    }

    /// Like `load_dir`, with the routed experts held as `experts` says.
    pub fn load_dir_with(dir: &Path, device: Device, kind: Kind, experts: ExpertStorage) -> anyhow::Result<(nn::VarStore, Self)> {
        let config = ArchConfig::from_dir(dir)?;
        let ckpt = checkpoint::Checkpoint::open(dir)?;
        let format = match experts {
            ExpertStorage::Dense => None,
            ExpertStorage::Packed(format) => Some(format),
            ExpertStorage::AsShipped => checkpoint::shipped_expert_format(&ckpt, &Self::param_infos(&config)),
        };
        let mut vars = nn::VarStore::new(device);
        vars.set_kind(kind);
        let recorded = RefCell::new(Vec::new());
        let model = tch::no_grad(|| Self::build(&Params::vars(vars.root(), &recorded), config, &recorded, format.is_some(), None));
        let mut packed: std::collections::HashMap<String, PackedExperts> = Default::default();
        let mut load_packed = |param: &ParamInfo, used: &mut std::collections::HashSet<String>| -> anyhow::Result<bool> {
            let Some(format) = format.filter(|_| param.role == Role::Expert && param.shape.len() == 3) else { return Ok(false) };
            packed.insert(param.name.clone(), checkpoint::load_packed(&ckpt, param, &model.config, format, device, used)?);
            Ok(true)
        };
        let unused = checkpoint::load_into(&vars, &model.params, &model.config, &ckpt, &mut load_packed).with_context(|| format!("loading {}", dir.display()))?;
        for moe in model.moe_blocks() {
            let (gate_up, down) = moe.expert_names();
            if let (Some(g), Some(d)) = (packed.remove(gate_up), packed.remove(down)) {
                moe.set_packed(g, d);
            }
        }
        if !unused.is_empty() {
            tracing::warn!(count = unused.len(), first = %unused[0], "checkpoint tensors the model does not use");
        }
        Ok((vars, model))
    }

    fn moe_blocks(&self) -> impl Iterator<Item = &MoeBlock> {
        self.layers.iter().filter_map(|l| match &l.mlp {
            Mlp::Sparse(moe) => Some(moe),
            Mlp::Dense(_) => None,
        })
    }

    /// Packs dense routed experts into `format` (quantised with the FP4 codecs), freeing their dense
    /// storage. For models built in memory (the tiny model); checkpoints are packed while loading.
    pub fn pack_experts(&self, format: PackedFormat) -> anyhow::Result<()> {
        anyhow::ensure!(!self.is_expert_parallel(), "experts split across ranks are not packed in FP4");
        for moe in self.moe_blocks() {
            if moe.is_packed() {
                continue;
            }
            let (gate_up, down) = moe.dense_experts();
            let device = gate_up.device();
            let (gate_up, down) = (PackedExperts::quantize(&gate_up, format, device)?, PackedExperts::quantize(&down, format, device)?);
            moe.set_packed(gate_up, down);
        }
        Ok(())
    }

    /// Dequantises packed experts back into dense variables in `kind` (before merging adapters into
    /// them, training them, or exporting).
    pub fn unpack_experts(&self, kind: Kind) {
        for moe in self.moe_blocks() {
            moe.unpack(kind);
        }
    }

    /// Moves the whole model to `device`: the variables in place (the model's handles follow) and the
    /// packed experts.
    pub fn to_device(&self, vars: &mut nn::VarStore, device: Device) {
        vars.set_device(device);
        for moe in self.moe_blocks() {
            moe.move_packed(device);
        }
    }

    pub fn has_packed_experts(&self) -> bool {
        self.moe_blocks().any(MoeBlock::is_packed)
    }

    /// The format packed experts are held in (None when dense).
    pub fn packed_expert_format(&self) -> Option<PackedFormat> {
        self.moe_blocks().find_map(MoeBlock::packed_format)
    }

    /// Bytes the packed experts hold on the device.
    pub fn packed_expert_bytes(&self) -> i64 {
        self.moe_blocks().map(MoeBlock::packed_bytes).sum()
    }

    /// Writes config.json and the weights in the layout transformers saves, sharded above `max_shard_bytes`.
    pub fn save_pretrained(&self, vars: &nn::VarStore, dir: &Path, kind: Kind, max_shard_bytes: u64) -> anyhow::Result<Vec<PathBuf>> {
        anyhow::ensure!(!self.has_packed_experts(), "experts are packed: unpack them before saving");
        anyhow::ensure!(!self.is_expert_parallel(), "this rank holds a share of the experts only: a whole model cannot be saved from it");
        std::fs::create_dir_all(dir)?;
        let mut shards = shards::ShardWriter::new(dir, max_shard_bytes)?;
        checkpoint::for_each_on_disk(&self.params, &vars.variables(), &self.config, kind, |t| shards.push(t))?;
        let mut written = shards.finish()?;
        let mut raw = self.config.raw.clone();
        if let Some(map) = raw.as_object_mut() {
            map.insert("dtype".into(), kind_name(kind).into());
            map.remove("torch_dtype");
            map.remove("quantization_config"); // the weights written are not quantized
        }
        let path = dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&raw)?)?;
        written.push(path);
        Ok(written)
    }

    /// Whether every MoE layer runs its experts as grouped GEMMs in a forward pass with `mode` on
    /// activations of `kind` (else one expert at a time).
    pub fn groups_experts(&self, mode: ForwardMode, kind: Kind) -> bool {
        self.moe_blocks().all(|moe| moe.groups_experts(mode.expert_hooks(), kind))
    }

    /// Decoder layers with a routed MoE block (the ones with a router).
    pub fn moe_layer_indices(&self) -> Vec<usize> {
        self.layers.iter().enumerate().filter(|(_, l)| matches!(l.mlp, Mlp::Sparse(_))).map(|(i, _)| i).collect()
    }

    /// gpt-oss stores expert weights `[E, in, out]` (`x @ W`); the others `[E, out, in]`.
    pub fn experts_transposed(&self) -> bool {
        matches!(self.config.moe.activation, config::ExpertActivation::GptOssClamped { .. })
    }

    /// The routed experts of decoder layer `i` read dense from `ckpt` (the checkpoint the model was
    /// loaded from), on the model's device and in `kind`; `None` unless that layer holds them packed.
    pub fn checkpoint_experts(&self, ckpt: &checkpoint::Checkpoint, i: usize, kind: Kind) -> anyhow::Result<Option<(Tensor, Tensor)>> {
        let Mlp::Sparse(moe) = &self.layers[i].mlp else { return Ok(None) };
        if !moe.is_packed() {
            return Ok(None);
        }
        let device = self.embed_tokens.device();
        let read = |name: &str| -> anyhow::Result<Tensor> {
            let param = self.params.iter().find(|p| p.name == name).with_context(|| format!("no parameter {name}"))?;
            Ok(checkpoint::read_param(ckpt, param, &self.config)?.to_device(device).to_kind(kind))
        };
        let (gate_up, down) = moe.expert_names();
        Ok(Some((read(gate_up)?, read(down)?)))
    }

    /// Runs `f` with decoder layer `i`'s packed experts replaced by the dense `gate_up` and `down`.
    pub fn with_dense_experts<R>(&self, i: usize, gate_up: &Tensor, down: &Tensor, f: impl FnOnce() -> R) -> R {
        match &self.layers[i].mlp {
            Mlp::Sparse(moe) => moe.with_dense_experts(gate_up, down, f),
            Mlp::Dense(_) => f(),
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Token embeddings `[batch, seq, hidden]`.
    pub fn embed(&self, input_ids: &Tensor) -> Tensor {
        let _held = self.hold(fully_sharded::Unit::Embedding);
        Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false)
    }

    /// Whether the embedding is being trained (its gradient must flow back past the first layer).
    pub fn embedding_trainable(&self) -> bool {
        self.embed_tokens.requires_grad()
    }

    /// Rotary tables for `seq` positions, in the dtype of the hidden states.
    pub fn rope(&self, seq: i64, device: Device, kind: Kind) -> (Tensor, Tensor) {
        rope_tables(&self.config.rope, self.config.head_dim, seq, device, kind)
    }

    fn rms(&self, x: &Tensor, weight: &Tensor) -> Tensor {
        rms_norm(x, weight, self.config.rms_norm_eps, self.config.norm_weight_in_fp32)
    }

    /// Decoder layer `i` on hidden states `h`.
    pub fn layer_forward(&self, i: usize, h: &Tensor, rope: &(Tensor, Tensor), mode: ForwardMode) -> LayerOutput {
        self.layer_forward_with(i, h, rope, mode, false).0
    }

    /// [`Self::layer_forward`] for the backward of a recomputed (checkpointed) layer: where nothing in the
    /// routed experts trains but LoRA factors and they run one at a time (packed experts, LoRA-QAT's
    /// per-expert `W + BA`), their contribution is left out of `hidden` and returned to be
    /// backpropagated one expert at a time ([`DeferredExperts::backward`] with the gradient of the
    /// layer's output), so one expert's dequantised weights exist at a time instead of the layer's.
    /// Dense experts that run as grouped GEMMs are not deferred: their weights exist anyway.
    pub fn layer_forward_deferring_experts<'s>(&'s self, i: usize, h: &Tensor, rope: &(Tensor, Tensor), mode: ForwardMode<'s>) -> (LayerOutput, Option<DeferredExperts<'s>>) {
        self.layer_forward_with(i, h, rope, mode, true)
    }

    fn layer_forward_with<'s>(&'s self, i: usize, h: &Tensor, rope: &(Tensor, Tensor), mode: ForwardMode<'s>, defer: bool) -> (LayerOutput, Option<DeferredExperts<'s>>) {
        if let Some(seed) = mode.seed {
            tch::manual_seed(seed.wrapping_add(7919 * i as i64));
        }
        let _held = self.hold(fully_sharded::Unit::Layer(i));
        let layer = &self.layers[i];
        let h = h + layer.self_attn.forward(&self.rms(h, &layer.input_layernorm), &rope.0, &rope.1, mode.adapters);
        let normed = self.rms(&h, &layer.post_attention_layernorm);
        match &layer.mlp {
            Mlp::Sparse(moe) => {
                let hooks = mode.expert_hooks();
                let (out, deferred) = if defer && moe.can_defer_experts() && !moe.groups_experts(hooks, normed.kind()) {
                    let (out, deferred) = moe.forward_deferring_experts(&normed, mode.routing, hooks);
                    (out, Some(deferred))
                } else {
                    (moe.forward(&normed, mode.routing, hooks), None)
                };
                (LayerOutput { hidden: h + out.hidden, router: Some((out.router_logits, out.top_k)) }, deferred)
            }
            Mlp::Dense(mlp) => (LayerOutput { hidden: &h + mlp.forward(&normed), router: None }, None),
        }
    }

    /// Logits of final hidden states (any leading shape): the final norm, then the LM head.
    pub fn head(&self, h: &Tensor) -> Tensor {
        let _held = self.hold(fully_sharded::Unit::Head);
        self.rms(h, &self.norm).linear(&self.lm_head, None::<Tensor>)
    }

    pub fn forward(&self, input_ids: &Tensor, mode: ForwardMode) -> ForwardOutput {
        let mut h = self.embed(input_ids);
        let rope = self.rope(input_ids.size()[1], input_ids.device(), h.kind());
        let (mut router_logits, mut router_top_k) = (Vec::new(), Vec::new());
        for i in 0..self.layers.len() {
            let out = self.layer_forward(i, &h, &rope, mode);
            if let Some((logits, top_k)) = out.router {
                router_logits.push((i, logits));
                router_top_k.push((i, top_k));
            }
            h = out.hidden;
        }
        ForwardOutput { logits: self.head(&h), router_logits, router_top_k }
    }

    /// Greedy decoding without a KV cache (sanity checks and evaluation prompts, not serving): appends
    /// up to `max_new_tokens`, stopping after an end-of-sequence token.
    pub fn generate_greedy(&self, prompt: &[i64], max_new_tokens: usize, device: Device) -> Vec<i64> {
        self.generate_greedy_with(prompt, max_new_tokens, device, ForwardMode::default())
    }

    /// Greedy decoding under `mode` (adapters, fake quantization), e.g. to score the FP4 model.
    pub fn generate_greedy_with(&self, prompt: &[i64], max_new_tokens: usize, device: Device, mode: ForwardMode) -> Vec<i64> {
        let mut ids = prompt.to_vec();
        let stops_early = !self.runs_in_lockstep();
        tch::no_grad(|| {
            for _ in 0..max_new_tokens {
                let input = Tensor::from_slice(&ids).to_device(device).unsqueeze(0);
                let logits = self.forward(&input, mode).logits;
                let next = logits.get(0).get(-1).argmax(-1, false).int64_value(&[]);
                ids.push(next);
                // Ranks of a split model run every forward together: none stops early (their greedy
                // choices could differ on a near-tie); what follows the end token is cut below.
                if stops_early && self.config.eos_token_ids.contains(&next) {
                    break;
                }
            }
        });
        let mut generated = ids.split_off(prompt.len());
        if let Some(end) = generated.iter().position(|t| self.config.eos_token_ids.contains(t)) {
            generated.truncate(end + 1);
        }
        generated
    }
}

/// Random-initialised model (the tiny built-in base model) under `vars`, seeded.
pub fn new_seeded(vars: &nn::VarStore, config: ArchConfig, seed: i64) -> MoeModel {
    tch::manual_seed(seed);
    tch::no_grad(|| MoeModel::new(vars, config))
}
