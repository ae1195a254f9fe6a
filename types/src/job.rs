//! Job spec and status: what a user asks for and where the job stands.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::invalid::InvalidOption;
use crate::invalid::check;
use crate::monitor::MonitorOptions;
pub use crate::lora::LoraOptions;

/// FP4 format the QAT stage fake-quantizes expert weights to, and the FP4 checkpoint is exported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QatFormat {
    /// E2M1 elements with one power-of-two (E8M0) scale per 32; exported in the gpt-oss layout.
    Mxfp4,
    /// E2M1 elements with one FP8-E4M3 scale per 16 and one FP32 scale per tensor; modelopt layout.
    Nvfp4,
}

impl QatFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mxfp4 => "mxfp4",
            Self::Nvfp4 => "nvfp4",
        }
    }

    /// The format of a job that names none: the one its FP4 export is loaded in elsewhere. gpt-oss
    /// ships MXFP4 and transformers loads its MXFP4 exports; transformers loads MXFP4 for no other
    /// architecture, while vLLM, TensorRT-LLM and modelopt load NVFP4 for all of them. Activation
    /// quantization exists for NVFP4 only, so asking for it picks NVFP4.
    pub fn default_for(architecture: &str, quantize_activations: bool) -> Self {
        if architecture == "GptOssForCausalLM" && !quantize_activations { Self::Mxfp4 } else { Self::Nvfp4 }
    }

    /// Elements sharing one scale, along a weight's input dimension.
    pub fn block_size(self) -> i64 {
        match self {
            Self::Mxfp4 => 32,
            Self::Nvfp4 => 16,
        }
    }

    /// Whether a model's expert weights can be packed in this format: their input dimensions (the
    /// hidden size for gate/up, the expert intermediate size for down) must be whole blocks. The error
    /// says what to change.
    pub fn check_expert_dims(self, model: &str, hidden_size: i64, expert_intermediate_size: i64) -> Result<(), String> {
        let block = self.block_size();
        if hidden_size % block == 0 && expert_intermediate_size % block == 0 {
            return Ok(());
        }
        let fits: Vec<&str> = [Self::Mxfp4, Self::Nvfp4]
            .into_iter()
            .filter(|f| hidden_size % f.block_size() == 0 && expert_intermediate_size % f.block_size() == 0)
            .map(Self::as_str)
            .collect();
        let instead = if fits.is_empty() { "no FP4 format fits this model".to_string() } else { format!("use format {}", fits.join(" or ")) };
        Err(format!(
            "{model}'s expert weights have input dimensions {hidden_size} (hidden size) and {expert_intermediate_size} (expert intermediate size); {} packs blocks of {block} along the input dimension, so both must be multiples of {block}: {instead}.",
            self.as_str()
        ))
    }
}

/// What the SFT stage trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum SftMethod {
    /// Low-rank adapters on the targeted weights; the base weights stay frozen.
    #[default]
    Lora,
    /// Every attention and expert weight (the router only with `router.mode = train`).
    Full,
}

/// Whether the router is trained during SFT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouterMode {
    /// Router weights are not updated (the default: protects the pre-trained routing).
    #[default]
    Freeze,
    /// Router weights are trained, under the load-balancing loss.
    Train,
}

/// Router protection (docs/design.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RouterOptions {
    pub mode: RouterMode,
    /// λ of the load-balancing loss `λ·N·Σ f_i·P_i`, added when the router is trained. Default 0.001.
    pub aux_loss_coef: f64,
    /// Coefficient of the router z-loss `mean(logsumexp(logits)²)`. Default 0 (off).
    pub z_loss_coef: f64,
    /// Training-only capacity factor: tokens beyond `factor · tokens·k / experts` per expert are dropped.
    pub capacity_factor: Option<f64>,
    /// Multiplicative uniform jitter `U(1−ε, 1+ε)` on router inputs during training. Default 0.
    pub jitter: f64,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self { mode: RouterMode::Freeze, aux_loss_coef: 0.001, z_loss_coef: 0.0, capacity_factor: None, jitter: 0.0 }
    }
}

/// What QAT trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QatTrainable {
    /// The SFT adapters keep training on top of the fake-quantized `W + BA`; merged at the end.
    /// Only adapters (and a trained router) get gradients and optimiser state.
    Lora,
    /// Every weight the full SFT method trains, after the adapters are merged.
    Full,
}

/// Numeric precision of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 on CUDA, fp32 on CPU (bf16 matmuls are slow on CPUs).
    #[default]
    Auto,
    /// Everything in fp32.
    Fp32,
    /// Weights and activations in bf16; trainable tensors keep fp32 master copies and fp32 AdamW
    /// moments; router logits, softmax, top-k, router losses and the cross-entropy in fp32.
    Bf16,
}

impl SftMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lora => "lora",
            Self::Full => "full",
        }
    }
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        }
    }
}

/// How frozen routed experts are held on the training device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BaseExpertFormat {
    /// Dense, in the training precision (bf16 on CUDA, fp32 on CPU).
    Bf16,
    /// Packed MXFP4 (4.25 bits per weight), dequantised one expert at a time in the forward.
    Mxfp4,
    /// Packed NVFP4 (4.5 bits per weight), dequantised one expert at a time in the forward.
    Nvfp4,
}

impl BaseExpertFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bf16 => "bf16",
            Self::Mxfp4 => "mxfp4",
            Self::Nvfp4 => "nvfp4",
        }
    }
}

/// Quantization-aware training after SFT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QatOptions {
    /// Optimiser steps; 0 skips QAT (the FP4 export is then plain PTQ). Default 500.
    pub steps: u32,
    /// Peak learning rate (cosine annealed). Default 1e-5.
    pub learning_rate: f64,
    /// `mxfp4` or `nvfp4`. Default: `mxfp4` for gpt-oss (the format it ships in), `nvfp4` for the other
    /// architectures (transformers loads MXFP4 for gpt-oss only); `nvfp4` when `quantize_activations`
    /// is set, `mxfp4` when `mxfp4_scale_rule` is `ceil`. The created job shows the format chosen.
    pub format: Option<QatFormat>,
    /// How an MXFP4 block's power-of-two scale follows from its largest magnitude: `ocp` (default) or
    /// `ceil`. MXFP4 only.
    pub mxfp4_scale_rule: Mxfp4ScaleRule,
    /// NVFP4 only: also fake-quantize the experts' input activations, with per-tensor scales from a
    /// calibration pass. Default false (weight-only, `*_MLP_WEIGHT_ONLY`).
    pub quantize_activations: bool,
    /// Batches of training data the calibration pass runs. Default 8.
    pub calibration_batches: u32,
    /// `lora` or `full`. Default: `lora` when `sft_method` is `lora`, else `full`.
    pub trainable: Option<QatTrainable>,
}

impl Default for QatOptions {
    fn default() -> Self {
        Self {
            steps: 500,
            learning_rate: 1e-5,
            format: None,
            mxfp4_scale_rule: Mxfp4ScaleRule::Ocp,
            quantize_activations: false,
            calibration_batches: 8,
            trainable: None,
        }
    }
}

/// The scale of an MXFP4 block of 32 elements, a power of two, from the block's largest magnitude
/// `amax`. Decoding is the same under both rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mxfp4ScaleRule {
    /// `2^(floor(log2 amax) − 2)`, the OCP MX specification's rule: `amax` lands in E2M1's top binade,
    /// and elements above 6 × scale saturate to 6 × scale.
    #[default]
    Ocp,
    /// `2^ceil(log2(amax / 6))`, as modelopt's `MXFP4QTensor` and triton's MXFP4 downcast: the smallest
    /// scale at which nothing saturates.
    Ceil,
}

impl Mxfp4ScaleRule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ocp => "ocp",
            Self::Ceil => "ceil",
        }
    }
}

/// An evaluation prompt with its expected answer (exact match after normalisation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalPrompt {
    pub prompt: String,
    pub answer: String,
}

/// Native MoE options (`method.moe_sft_qat`). Every field has a documented default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MoeSftQatOptions {
    /// `lora` (default) or `full`.
    pub sft_method: SftMethod,
    pub lora: LoraOptions,
    /// Peak SFT learning rate. Default 1e-5 (the MoE range; dense-LoRA rates collapse routers).
    pub learning_rate: f64,
    /// SFT optimiser steps; default: `n_epochs` passes over the training data.
    pub max_steps: Option<u32>,
    /// Fraction of the SFT steps spent warming up linearly. Default 0.1.
    pub warmup_ratio: f64,
    /// AdamW weight decay (not applied to norms and biases). Default 0.
    pub weight_decay: f64,
    /// Gradients are clipped to this global norm. Default 1.0.
    pub max_grad_norm: f64,
    /// Micro-batches accumulated per optimiser step. Default 1.
    pub gradient_accumulation_steps: u32,
    /// Compute the loss on response tokens only. Default true.
    pub response_only_loss: bool,
    /// Pack several examples into each sequence of `seq_len` tokens. Default false.
    pub packing: bool,
    /// Tokens per training sequence (longer examples are truncated). Default 512.
    pub seq_len: u32,
    /// Fraction of the training file held out for validation when no `validation_file` is given. Default 0.1.
    pub validation_split: f64,
    pub router: RouterOptions,
    pub monitor: MonitorOptions,
    pub qat: QatOptions,
    /// Optional task accuracy: prompts with expected answers, scored by greedy decoding.
    pub eval_prompts: Vec<EvalPrompt>,
    /// Save a resumable checkpoint every this many steps (and at each stage end); 0 = stage ends only.
    /// Default 100; jobs created through the API take 0 or at least 10. A job keeps its newest 3
    /// periodic checkpoints and its stage finals; kept checkpoints count against storage.
    pub checkpoint_every_n_steps: u32,
    /// Emit a metrics event every this many steps. Default 1.
    pub log_every_n_steps: u32,
    /// Which runners may take the job: `auto` (default: any with enough memory), `cpu` or `cuda`.
    pub device: crate::requirements::DeviceRequest,
    /// Runners the job trains on at once, data parallel (one rank each; the losses are one runner's).
    /// Default 1; up to 64, dividing `gradient_accumulation_steps`. `"auto"`: the API chooses the
    /// fewest ranks (2 or more with `expert_parallel` or `fully_sharded`) whose per-rank memory fits
    /// the registered runners, and the job shows the number.
    #[serde(with = "crate::world_size")]
    #[schema(value_type = crate::world_size::WorldSizeRequest)]
    pub world_size: u32,
    /// Split every MoE layer's routed experts across the job's ranks (expert parallelism): each rank
    /// holds `num_experts / world_size` of them, and tokens reach their experts' ranks by all-to-all.
    /// Needs `world_size` of 2 or more, dividing the model's number of experts. Default false: every
    /// rank holds the whole model. Not yet combined with LoRA on the experts, packed base experts or
    /// activation quantization.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expert_parallel: bool,
    /// Split every weight across the job's ranks (FSDP / ZeRO-3): each rank holds 1/`world_size` of
    /// every weight, gradient and optimiser state, and a decoder layer's weights are gathered whole
    /// only while it runs. Needs `world_size` of 2 or more and `sft_method: full`; activation
    /// checkpointing is implied. Default false. Not yet combined with `expert_parallel`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fully_sharded: bool,
    /// With `fully_sharded`: keep each rank's shards in host memory, in fp32, with their gradients and
    /// optimiser state, and run the optimiser step on the CPU (ZeRO-Offload / FSDP's CPU offload).
    /// The GPU then holds only the layer being run, at the cost of host-device copies. Default false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cpu_offload: bool,
    /// `auto` (default: bf16 on CUDA, fp32 on CPU), `fp32` or `bf16`.
    pub precision: Precision,
    /// Recompute each decoder layer in the backward instead of keeping its activations (less memory,
    /// about one more forward of compute). Default: on for CUDA, off on CPU.
    pub gradient_checkpointing: Option<bool>,
    /// How the frozen experts of a LoRA job are held: `bf16`, `mxfp4` or `nvfp4` (packed, quantised
    /// on load unless the checkpoint ships that format). Default: as the checkpoint ships them (gpt-oss:
    /// MXFP4; the others: dense). Experts a job trains (full SFT, full QAT) are always dense.
    pub base_expert_format: Option<BaseExpertFormat>,
}

impl Default for MoeSftQatOptions {
    fn default() -> Self {
        Self {
            sft_method: SftMethod::Lora,
            lora: LoraOptions::default(),
            learning_rate: 1e-5,
            max_steps: None,
            warmup_ratio: 0.1,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            gradient_accumulation_steps: 1,
            response_only_loss: true,
            packing: false,
            seq_len: 512,
            validation_split: 0.1,
            router: RouterOptions::default(),
            monitor: MonitorOptions::default(),
            qat: QatOptions::default(),
            eval_prompts: Vec::new(),
            checkpoint_every_n_steps: 100,
            log_every_n_steps: 1,
            device: crate::requirements::DeviceRequest::Auto,
            world_size: 1,
            expert_parallel: false,
            fully_sharded: false,
            cpu_offload: false,
            precision: Precision::Auto,
            gradient_checkpointing: None,
            base_expert_format: None,
        }
    }
}

/// Everything the runner needs to train, resolved from the user's request (no "auto" left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingSpec {
    pub model: String,
    pub n_epochs: u32,
    pub batch_size: u32,
    pub seed: u64,
    pub moe: MoeSftQatOptions,
    /// Set on a routing-profile job: the runner routes the files through the base model instead of
    /// training (`moe.seq_len` still cuts the examples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_profile: Option<crate::routing::ProfileJob>,
}



impl MoeSftQatOptions {
    /// Whether the routed experts stay frozen through the whole job (so they may be kept packed): LoRA
    /// SFT and LoRA-QAT. (With `qat.trainable: full` the SFT adapters are merged into the experts after
    /// SFT, even when no QAT step follows.)
    pub fn experts_frozen(&self) -> bool {
        self.sft_method == SftMethod::Lora && self.qat_trainable() == QatTrainable::Lora
    }

    /// Fills in the QAT format a job that names none gets on a model of `architecture` (the
    /// transformers class name), so the job shows and the runner uses the format chosen.
    pub fn resolve_qat_format(&mut self, architecture: &str) {
        let qat = &mut self.qat;
        if qat.format.is_none() {
            let wants_mxfp4 = qat.mxfp4_scale_rule != Mxfp4ScaleRule::Ocp;
            qat.format = Some(if wants_mxfp4 { QatFormat::Mxfp4 } else { QatFormat::default_for(architecture, qat.quantize_activations) });
        }
    }

    /// The QAT format: as resolved by [`Self::resolve_qat_format`], else the default of every
    /// architecture but gpt-oss.
    pub fn qat_format(&self) -> QatFormat {
        self.qat.format.unwrap_or_else(|| QatFormat::default_for("", self.qat.quantize_activations))
    }

    /// What QAT trains, defaults resolved.
    pub fn qat_trainable(&self) -> QatTrainable {
        self.qat.trainable.unwrap_or(match self.sft_method {
            SftMethod::Lora => QatTrainable::Lora,
            SftMethod::Full => QatTrainable::Full,
        })
    }

    /// Checks every option's range; the API refuses a job with the first problem found.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        let lr_ok = |lr: f64| lr > 0.0 && lr < 1.0;
        check(lr_ok(self.learning_rate), "learning_rate", "`learning_rate` must be in (0, 1).")?;
        check(self.max_steps.is_none_or(|s| (1..=1_000_000).contains(&s)), "max_steps", "`max_steps` must be from 1 to 1000000.")?;
        check((0.0..1.0).contains(&self.warmup_ratio), "warmup_ratio", "`warmup_ratio` must be in [0, 1).")?;
        check((0.0..=1.0).contains(&self.weight_decay), "weight_decay", "`weight_decay` must be in [0, 1].")?;
        check(self.max_grad_norm > 0.0, "max_grad_norm", "`max_grad_norm` must be positive.")?;
        check((1..=1024).contains(&self.gradient_accumulation_steps), "gradient_accumulation_steps", "`gradient_accumulation_steps` must be from 1 to 1024.")?;
        check(self.world_size <= crate::world_size::MAX, "world_size", "`world_size` must be \"auto\" or from 1 to 64.")?;
        check(self.gradient_accumulation_steps % self.world_size.max(1) == 0, "world_size", "`world_size` must divide `gradient_accumulation_steps`: each rank computes whole micro-batches of every step (e.g. world_size 4 with gradient_accumulation_steps 4 or 8).")?;
        check((16..=32768).contains(&self.seq_len), "seq_len", "`seq_len` must be from 16 to 32768.")?;
        check((0.0..0.5).contains(&self.validation_split), "validation_split", "`validation_split` must be in [0, 0.5).")?;
        check(self.log_every_n_steps >= 1, "log_every_n_steps", "`log_every_n_steps` must be at least 1.")?;
        self.lora.validate(self.sft_method == SftMethod::Lora)?;
        let router = &self.router;
        check(router.aux_loss_coef >= 0.0 && router.aux_loss_coef <= 1.0, "router.aux_loss_coef", "`router.aux_loss_coef` must be in [0, 1].")?;
        check(router.z_loss_coef >= 0.0 && router.z_loss_coef <= 1.0, "router.z_loss_coef", "`router.z_loss_coef` must be in [0, 1].")?;
        check(router.capacity_factor.is_none_or(|c| c >= 1.0), "router.capacity_factor", "`router.capacity_factor` must be at least 1.")?;
        check((0.0..1.0).contains(&router.jitter), "router.jitter", "`router.jitter` must be in [0, 1).")?;
        self.monitor.validate()?;
        let qat = &self.qat;
        check(qat.steps <= 1_000_000, "qat.steps", "`qat.steps` must be at most 1000000.")?;
        check(lr_ok(qat.learning_rate), "qat.learning_rate", "`qat.learning_rate` must be in (0, 1).")?;
        check(!qat.quantize_activations || qat.format != Some(QatFormat::Mxfp4), "qat.quantize_activations", "activation quantization is available for `nvfp4` only.")?;
        check(
            qat.mxfp4_scale_rule == Mxfp4ScaleRule::Ocp || (qat.format != Some(QatFormat::Nvfp4) && !qat.quantize_activations),
            "qat.mxfp4_scale_rule",
            "`qat.mxfp4_scale_rule` applies to `qat.format: mxfp4` only (NVFP4 scales are FP8, from amax / 6).",
        )?;
        check((1..=1024).contains(&qat.calibration_batches), "qat.calibration_batches", "`qat.calibration_batches` must be from 1 to 1024.")?;
        check(
            !(qat.trainable == Some(QatTrainable::Lora) && self.sft_method == SftMethod::Full),
            "qat.trainable",
            "`qat.trainable: lora` needs `sft_method: lora` (a full SFT has no adapters to train).",
        )?;
        let packed_base = matches!(self.base_expert_format, Some(BaseExpertFormat::Mxfp4 | BaseExpertFormat::Nvfp4));
        check(
            !packed_base || self.experts_frozen(),
            "base_expert_format",
            "packed base experts (`mxfp4`, `nvfp4`) need frozen experts: `sft_method: lora` and `qat.trainable: lora`.",
        )?;
        check(self.eval_prompts.len() <= 1024, "eval_prompts", "at most 1024 eval prompts.")?;
        if self.expert_parallel {
            self.validate_expert_parallel(packed_base)?;
        }
        if self.fully_sharded {
            check(self.world_size >= 2 || self.world_size == crate::world_size::AUTO, "fully_sharded", "`fully_sharded` splits every weight across the job's ranks: set `world_size` to 2 or more.")?;
            check(
                self.sft_method == SftMethod::Full,
                "fully_sharded",
                "`fully_sharded` shards the weights a full fine-tune trains: use `sft_method: full` (a LoRA job's frozen base is not sharded yet).",
            )?;
            check(!self.expert_parallel, "fully_sharded", "`fully_sharded` does not yet combine with `expert_parallel`: set one of them.")?;
            check(
                self.gradient_checkpointing != Some(false),
                "gradient_checkpointing",
                "`fully_sharded` recomputes each layer in the backward (its weights are gathered one layer at a time): leave `gradient_checkpointing` unset or true.",
            )?;
        }
        check(!self.cpu_offload || self.fully_sharded, "cpu_offload", "`cpu_offload` moves the shards of fully sharded weights to host memory: set `fully_sharded: true` (and `world_size` 2 or more).")?;
        Ok(())
    }

    /// What expert parallelism needs of the other options (the model's expert count is checked
    /// against `world_size` where the model is known).
    fn validate_expert_parallel(&self, packed_base: bool) -> Result<(), InvalidOption> {
        check(self.world_size >= 2 || self.world_size == crate::world_size::AUTO, "expert_parallel", "`expert_parallel` splits the experts across the job's ranks: set `world_size` to 2 or more.")?;
        check(
            self.sft_method == SftMethod::Full || !self.lora.targets_experts(),
            "lora.target_experts",
            "`expert_parallel` does not yet combine with LoRA on the experts: set `lora.target_experts` to false (adapters on attention) or use `sft_method: full`.",
        )?;
        check(!packed_base, "base_expert_format", "`expert_parallel` holds the experts dense: leave `base_expert_format` unset or set it to `bf16`.")?;
        check(
            !self.qat.quantize_activations,
            "qat.quantize_activations",
            "`expert_parallel` does not yet combine with activation quantization: set `qat.quantize_activations` to false.",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_base_experts_need_frozen_experts() {
        let packed = |edit: fn(&mut MoeSftQatOptions)| {
            let mut o = MoeSftQatOptions { base_expert_format: Some(BaseExpertFormat::Nvfp4), ..Default::default() };
            edit(&mut o);
            o.validate().map_err(|e| e.param)
        };
        assert_eq!(packed(|_| {}), Ok(()));
        assert_eq!(packed(|o| o.sft_method = SftMethod::Full), Err("method.moe_sft_qat.base_expert_format".into()));
        assert_eq!(packed(|o| o.qat.trainable = Some(QatTrainable::Full)), Err("method.moe_sft_qat.base_expert_format".into()));
        assert_eq!(packed(|o| (o.qat.trainable, o.qat.steps) = (Some(QatTrainable::Full), 0)), Err("method.moe_sft_qat.base_expert_format".into()));
        let dense = MoeSftQatOptions { sft_method: SftMethod::Full, base_expert_format: Some(BaseExpertFormat::Bf16), ..Default::default() };
        assert_eq!(dense.validate().map_err(|e| e.param), Ok(()));
    }

    #[test]
    fn fully_sharded_weights_need_ranks_and_a_full_fine_tune() {
        let sharded = |edit: fn(&mut MoeSftQatOptions)| {
            let mut o = MoeSftQatOptions { fully_sharded: true, sft_method: SftMethod::Full, world_size: 2, gradient_accumulation_steps: 2, ..Default::default() };
            edit(&mut o);
            o.validate().map_err(|e| e.param)
        };
        assert_eq!(sharded(|_| {}), Ok(()));
        for refused in [(|o| o.world_size = 1) as fn(&mut MoeSftQatOptions), |o| o.sft_method = SftMethod::Lora, |o| o.expert_parallel = true] {
            assert_eq!(sharded(refused), Err("method.moe_sft_qat.fully_sharded".into()));
        }
        assert_eq!(sharded(|o| o.gradient_checkpointing = Some(false)), Err("method.moe_sft_qat.gradient_checkpointing".into()));
        assert_eq!(sharded(|o| o.cpu_offload = true), Ok(()));
        assert_eq!(sharded(|o| (o.cpu_offload, o.fully_sharded) = (true, false)), Err("method.moe_sft_qat.cpu_offload".into()));
        assert!(serde_json::to_value(MoeSftQatOptions::default()).unwrap().get("fully_sharded").is_none());
    }

    #[test]
    fn expert_parallelism_needs_ranks_and_dense_unadapted_experts() {
        let split = |edit: fn(&mut MoeSftQatOptions)| {
            let mut o = MoeSftQatOptions { expert_parallel: true, world_size: 2, gradient_accumulation_steps: 2, ..Default::default() };
            edit(&mut o);
            o.validate().map_err(|e| e.param)
        };
        assert_eq!(split(|_| {}), Ok(()));
        assert_eq!(split(|o| o.sft_method = SftMethod::Full), Ok(()));
        assert_eq!(split(|o| o.world_size = 1), Err("method.moe_sft_qat.expert_parallel".into()));
        assert_eq!(split(|o| o.lora.target_experts = crate::ExpertTargets::All(true)), Err("method.moe_sft_qat.lora.target_experts".into()));
        assert_eq!(split(|o| o.base_expert_format = Some(BaseExpertFormat::Mxfp4)), Err("method.moe_sft_qat.base_expert_format".into()));
        assert_eq!(split(|o| (o.qat.quantize_activations, o.qat.format) = (true, Some(QatFormat::Nvfp4))), Err("method.moe_sft_qat.qat.quantize_activations".into()));
        // Left out of the spec unless set, so runners from before it read every other job.
        let plain = serde_json::to_value(MoeSftQatOptions::default()).unwrap();
        assert!(plain.get("expert_parallel").is_none());
        let spec = serde_json::to_value(MoeSftQatOptions { expert_parallel: true, ..Default::default() }).unwrap();
        assert_eq!(spec["expert_parallel"], true);
    }

    #[test]
    fn defaults_are_valid_and_errors_name_the_option() {
        MoeSftQatOptions::default().validate().unwrap();
        let mut options = MoeSftQatOptions::default();
        options.lora.target_modules = vec!["gate".into()];
        let error = options.validate().unwrap_err();
        assert_eq!(error.param, "method.moe_sft_qat.lora.target_modules");
        assert!(error.message.contains("never a LoRA target"));
        let mut options = MoeSftQatOptions::default();
        (options.qat.quantize_activations, options.qat.format) = (true, Some(QatFormat::Mxfp4));
        assert_eq!(options.validate().unwrap_err().param, "method.moe_sft_qat.qat.quantize_activations");
        options.qat.format = None;
        options.validate().unwrap();
        options.qat.mxfp4_scale_rule = Mxfp4ScaleRule::Ceil;
        assert_eq!(options.validate().unwrap_err().param, "method.moe_sft_qat.qat.mxfp4_scale_rule");
        (options.qat.quantize_activations, options.qat.format) = (false, Some(QatFormat::Nvfp4));
        assert_eq!(options.validate().unwrap_err().param, "method.moe_sft_qat.qat.mxfp4_scale_rule");
    }

    #[test]
    fn the_qat_format_defaults_to_what_loads_the_architecture() {
        let resolved = |architecture: &str, edit: fn(&mut QatOptions)| {
            let mut options = MoeSftQatOptions::default();
            edit(&mut options.qat);
            options.resolve_qat_format(architecture);
            options.qat.format.unwrap()
        };
        assert_eq!(resolved("GptOssForCausalLM", |_| {}), QatFormat::Mxfp4);
        assert_eq!(resolved("MixtralForCausalLM", |_| {}), QatFormat::Nvfp4);
        assert_eq!(resolved("Qwen3MoeForCausalLM", |_| {}), QatFormat::Nvfp4);
        assert_eq!(resolved("GptOssForCausalLM", |q| q.quantize_activations = true), QatFormat::Nvfp4);
        assert_eq!(resolved("MixtralForCausalLM", |q| q.mxfp4_scale_rule = Mxfp4ScaleRule::Ceil), QatFormat::Mxfp4);
        assert_eq!(resolved("MixtralForCausalLM", |q| q.format = Some(QatFormat::Mxfp4)), QatFormat::Mxfp4);
    }

    #[test]
    fn partial_json_fills_documented_defaults() {
        let options: MoeSftQatOptions = serde_json::from_str(r#"{"qat": {"format": "nvfp4"}, "router": {"mode": "train"}}"#).unwrap();
        assert_eq!(options.qat.format, Some(QatFormat::Nvfp4));
        assert_eq!(options.qat.steps, 500);
        assert_eq!(options.router.mode, RouterMode::Train);
        assert_eq!(options.router.aux_loss_coef, 0.001);
        assert_eq!(options.learning_rate, 1e-5);
        assert!(serde_json::from_str::<MoeSftQatOptions>(r#"{"sft_steps": 3}"#).is_err());
    }

    #[test]
    fn fp4_formats_need_whole_blocks_along_expert_inputs() {
        assert!(QatFormat::Mxfp4.check_expert_dims("m", 128, 256).is_ok());
        let error = QatFormat::Mxfp4.check_expert_dims("acme/m", 64, 48).unwrap_err();
        assert!(error.contains("48 (expert intermediate size)") && error.ends_with("use format nvfp4."), "{error}");
        assert!(QatFormat::Nvfp4.check_expert_dims("m", 64, 48).is_ok());
        assert!(QatFormat::Nvfp4.check_expert_dims("m", 64, 40).unwrap_err().ends_with("no FP4 format fits this model."));
    }
}
