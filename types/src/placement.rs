//! What a job needs from a runner and whether a runner has it.
//!
//! `moetune-runner inspect` reports a model's [`MemoryModel`] (parameter counts and activation
//! coefficients, read from config.json alone); the API records it with the model and turns it into a
//! job's [`JobRequirements`] for the job's method, batch and sequence length. Runners declare what they
//! have in [`RunnerInfo`]; placement gives a job only to a runner that [`RunnerInfo::fits`] it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::requirements::{DeviceRequest, JobRequirements};
use crate::{BaseExpertFormat, Precision, QatTrainable, RouterMode, RunnerInfo, SftMethod, TrainingSpec};

/// Everything the memory estimate needs about a model; `inspect` fills it from config.json (and the
/// checkpoint's headers: whether it ships its experts packed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemoryModel {
    pub total_params: i64,
    pub router_params: i64,
    pub expert_params: i64,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    /// Attention heads × head dim, and key/value heads × head dim (LoRA targets' shapes).
    pub q_dim: i64,
    pub kv_dim: i64,
    /// Activation elements kept for backward per token, over all layers.
    pub activation_elements_per_token: i64,
    /// Extra elements per token per token of sequence: attention that keeps its `[heads, seq]`
    /// probabilities. 0 since every architecture's attention runs through SDPA; models registered before
    /// then carry the eager figure.
    pub activation_elements_per_token_per_seq: i64,
    /// Decoder layers with routed experts, experts per layer and their intermediate size (the shapes of
    /// expert LoRA).
    #[serde(default)]
    pub moe_layers: i64,
    #[serde(default)]
    pub num_experts: i64,
    #[serde(default)]
    pub expert_intermediate_size: i64,
    /// `mxfp4` when the checkpoint ships its routed experts packed (gpt-oss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped_expert_format: Option<String>,
}

/// The device kind an estimate is for: it decides the default precision and checkpointing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrainingDevice {
    Cuda,
    Cpu,
}

/// One stage's peak on the training device, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StageMemory {
    pub trainable_params: i64,
    /// Model weights as held (dense in the training dtype, or experts packed).
    pub weights_bytes: i64,
    /// Trainable tensors' gradients, fp32 masters (bf16) and AdamW moments; adapters included.
    pub trainable_bytes: i64,
    /// Activations kept for the backward (layer inputs only with checkpointing, plus one layer).
    pub activations_bytes: i64,
    /// Held only inside one layer or one loss chunk: dequantised or fake-quantised expert weights kept
    /// for the backward, and one cross-entropy chunk's logits.
    pub transient_bytes: i64,
    pub total_bytes: i64,
}

/// A job's memory on one device kind: each stage and the peak over them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobMemory {
    pub device: TrainingDevice,
    pub dtype: &'static str,
    pub activation_checkpointing: bool,
    /// `bf16`/`fp32` (dense) or the packed format of the frozen experts.
    pub base_experts: String,
    /// `sft`, `qat` (when it runs) and, on a CPU runner, `merge` (the dense model for merging and
    /// export).
    pub stages: BTreeMap<&'static str, StageMemory>,
    pub peak_bytes: i64,
    /// Host memory the merge and export take (the dense model in the training dtype, the adapters, one
    /// export shard and one expert tensor in fp32): a CUDA runner merges on the host, so this is not part of its GPU peak.
    pub host_bytes: i64,
    /// Host memory each rank keeps for the whole job under `cpu_offload`: its fp32 weight shards,
    /// their gradients and AdamW moments (0 without). On a CPU runner it is part of the stages.
    #[serde(default)]
    pub offloaded_bytes: i64,
}

/// The runner's export shard size (`export::MAX_SHARD_BYTES`).
const EXPORT_SHARD_BYTES: i64 = 5_000_000_000;

/// Logits per cross-entropy chunk (the runner's `CHUNK_LOGIT_ELEMENTS`).
const CHUNK_LOGIT_ELEMENTS: i64 = 1 << 27;
/// The optimiser state per trainable element (beyond its weight and gradient): fp32 master when the weight is bf16, two fp32
/// moments. What ZeRO-1 splits across ranks.
fn optimiser_state_bytes(weight_bytes: i64) -> i64 {
    (if weight_bytes < 4 { 4 } else { 0 }) + 8
}

/// One rank's share of `bytes` split `ranks` ways (rounded up).
fn share(bytes: i64, ranks: i64) -> i64 {
    (bytes + ranks - 1) / ranks
}

/// The most optimiser state (`state` bytes per element) one rank owns of `elements` split by ZeRO-1.
/// Owners hold whole tensors, assigned largest first to the least-loaded rank, so a rank holds at most
/// the even split plus the largest tensor (`largest` elements).
fn owned_state(elements: i64, largest: i64, state: i64, ranks: i64) -> i64 {
    if ranks <= 1 {
        return elements * state;
    }
    (share(elements, ranks) + largest.min(elements)).min(elements) * state
}

impl MemoryModel {
    /// The peak memory of one rank of the job `spec` describes, on a device of kind `device`. Ranks
    /// beyond one split the optimiser state (ZeRO-1) and, with `expert_parallel`, the routed experts
    /// (weights, gradients and state), or with `fully_sharded` every weight, gradient and state.
    pub fn job_memory(&self, spec: &TrainingSpec, device: TrainingDevice) -> JobMemory {
        let o = &spec.moe;
        let cuda = device == TrainingDevice::Cuda;
        let b: i64 = match o.precision {
            Precision::Fp32 => 4,
            Precision::Bf16 => 2,
            Precision::Auto => if cuda { 2 } else { 4 },
        };
        // Fully sharded weights run layer by layer: recomputed in the backward.
        let checkpointing = o.gradient_checkpointing.unwrap_or(cuda) || o.fully_sharded;
        let packed_bits: Option<(f64, &str)> = if !o.experts_frozen() {
            None
        } else {
            match o.base_expert_format {
                Some(BaseExpertFormat::Mxfp4) => Some((4.25, "mxfp4")),
                Some(BaseExpertFormat::Nvfp4) => Some((4.5, "nvfp4")),
                Some(BaseExpertFormat::Bf16) => None,
                None => self.shipped_expert_format.as_deref().filter(|f| *f == "mxfp4").map(|_| (4.25, "mxfp4")),
            }
        };
        let (all_experts, dense_rest) = (self.expert_params, self.total_params - self.expert_params);
        let ranks = i64::from(o.world_size.max(1));
        let expert_ranks = if o.expert_parallel { ranks } else { 1 };
        // The routed experts this rank holds.
        let experts = share(all_experts, expert_ranks);
        let moe_layers = self.moe_layers.max(1);
        let layer_experts = experts / moe_layers;
        let layers = self.num_hidden_layers.max(1);

        // Activations of one micro-batch.
        let seq = i64::from(o.seq_len);
        let tokens = i64::from(spec.batch_size.max(1)) * seq;
        let per_token = self.activation_elements_per_token + self.activation_elements_per_token_per_seq * seq;
        let activations = if checkpointing {
            tokens * (layers * self.hidden_size + per_token / layers) * b
        } else {
            tokens * per_token * b
        };
        // Held for the backward of the layers alive at once: all of them, or one when recomputed.
        let alive_layers = if checkpointing { 1 } else { moe_layers };
        let chunk_tokens = tokens.min((CHUNK_LOGIT_ELEMENTS / self.vocab_size.max(1)).max(1));
        let loss_chunk = chunk_tokens * self.vocab_size * (b + 8);

        // LoRA adapters (attention targets, and every expert when any is targeted: an expert adapter is
        // allocated for all experts of its layer, at the largest rank among them).
        let r = i64::from(o.lora.r);
        let (h, q, kv) = (self.hidden_size, self.q_dim, self.kv_dim);
        let attention: i64 = o.lora.target_modules.iter().map(|t| match t.as_str() {
            "q_proj" => h + q,
            "k_proj" | "v_proj" => h + kv,
            "o_proj" => q + h,
            _ => 0,
        }).sum();
        let expert_lora = if o.lora.targets_experts() {
            i64::from(o.lora.max_expert_rank()) * moe_layers * self.num_experts * (2 * h + 3 * self.expert_intermediate_size)
        } else {
            0
        };
        let adapters = r * layers * attention + expert_lora;
        let lora = o.sft_method == SftMethod::Lora;

        // The largest tensor every rank holds: the embedding or LM head.
        let largest = self.vocab_size * self.hidden_size;
        // Fully sharded: each rank holds 1/N of every weight, plus one unit gathered whole while it runs
        // (the largest decoder layer — a MoE layer's attention and share of the dense rest, plus its
        // experts — or the embedding or head).
        let sharded = o.fully_sharded && ranks > 1;
        let moe_layer = (dense_rest - 2 * largest).max(0) / layers + all_experts / moe_layers;
        let unit = moe_layer.max(largest);
        // The weights this rank holds (its share of the experts under expert parallelism).
        // With CPU offload the shards are fp32 in host memory, with their gradients and moments (no
        // master: the shard is the fp32 value); the device holds only the gathered unit.
        let offload = sharded && o.cpu_offload;
        let offloaded_weights = if offload { share(dense_rest + experts, ranks) * 4 } else { 0 };
        let on_device = |host: i64| if cuda { 0 } else { host };
        let dense_weights = if offload {
            on_device(offloaded_weights) + unit * b
        } else if sharded {
            share(dense_rest + experts, ranks) * b + unit * b
        } else {
            (dense_rest + experts) * b
        };
        let frozen_weights = match packed_bits {
            Some((bits, _)) => dense_rest * b + (experts as f64 * bits / 8.0).ceil() as i64,
            None => dense_weights,
        };
        // `layer`: what one layer holds for its backward beyond activations. Without checkpointing it is
        // alive with every other layer's when the loss is taken; with it, a layer is recomputed after
        // the loss, so the layer and the loss chunk are never alive together.
        let stage = |trainable_params: i64, weights: i64, trainable: i64, layer: i64| {
            let transient = if checkpointing { layer.max(loss_chunk) } else { layer + loss_chunk };
            StageMemory {
                trainable_params,
                weights_bytes: weights,
                trainable_bytes: trainable,
                activations_bytes: activations,
                transient_bytes: transient,
                total_bytes: weights + trainable + activations + transient,
            }
        };
        // Frozen experts' weight copies kept for the backward (`copies` per expert: dequantised, merged,
        // fake-quantised). Without checkpointing every layer keeps every expert's; a recomputed layer
        // backpropagates its frozen experts one at a time, so one expert's copies exist at once.
        let one_expert = all_experts / moe_layers / self.num_experts.max(1);
        let frozen_expert_copies = |copies: i64| if checkpointing { copies * one_expert * b } else { alive_layers * layer_experts * b };
        // Packed experts are dequantised for their tokens and kept for the input gradient.
        let dequantised = if packed_bits.is_some() { frozen_expert_copies(1) } else { 0 };
        let router = if o.router.mode == RouterMode::Train { self.router_params } else { 0 };
        let full_trainable = dense_rest + experts - self.router_params + router;
        let offloaded_trainable = if offload { share(full_trainable, ranks) * 12 } else { 0 };
        // Gradients are whole on every rank; the optimiser state of a tensor every rank holds is kept by
        // one owner (ZeRO-1), that of a rank's own experts by the rank.
        let own_experts = if o.expert_parallel { experts } else { 0 };
        let state = optimiser_state_bytes(b);
        let full_trainable_bytes = if offload {
            on_device(offloaded_trainable) + 2 * unit * b
        } else if sharded {
            // Gradient and state shards; the gathered unit's whole gradient and its reduce-scatter copy.
            share(full_trainable, ranks) * (b + state) + 2 * unit * b
        } else {
            full_trainable * b + owned_state(full_trainable - own_experts, largest, state, ranks) + own_experts * state
        };
        // fp32 adapters: weight and gradient on every rank, moments split (their tensors are small).
        let adapter_bytes = adapters * 8 + owned_state(adapters, 0, 8, ranks) + router * b + owned_state(router, 0, state, ranks);
        let sft = if lora {
            stage(adapters + router, frozen_weights, adapter_bytes, dequantised)
        } else {
            stage(full_trainable, dense_weights, full_trainable_bytes, 0)
        };
        let mut stages = BTreeMap::from([("sft", sft)]);
        if o.qat.steps > 0 {
            let qat = if lora && o.qat_trainable() == QatTrainable::Lora {
                // Each expert's fake-quantized `W + BA`, kept for its input gradient (the dequantised
                // and merged weights it comes from are not, but exist while it is made).
                stage(adapters + router, frozen_weights, adapter_bytes, frozen_expert_copies(3))
            } else {
                // Fake-quantized copies of the experts kept for the backward.
                stage(full_trainable, dense_weights, full_trainable_bytes, alive_layers * layer_experts * b)
            };
            stages.insert("qat", qat);
        }
        // Merging the adapters and exporting hold the dense model and the adapters, on the host (on a
        // CPU runner that is the training device). The export writes shard by shard: one shard's bytes,
        // and the fp32 values of the largest expert tensor while it is encoded to FP4.
        // Under expert parallelism or fully sharded weights rank 0 gathers every rank's share for the
        // export: the whole model.
        let whole_weights = self.total_params * b;
        let largest_expert_tensor = self.num_experts * 2 * self.expert_intermediate_size * self.hidden_size;
        let export_copy = whole_weights.min(EXPORT_SHARD_BYTES) + largest_expert_tensor * 4;
        let merge = StageMemory {
            weights_bytes: whole_weights,
            trainable_bytes: adapters * 4,
            transient_bytes: export_copy,
            total_bytes: whole_weights + adapters * 4 + export_copy,
            ..Default::default()
        };
        let host_bytes = merge.total_bytes;
        if !cuda {
            stages.insert("merge", merge);
        }
        let peak_bytes = stages.values().map(|s| s.total_bytes).max().unwrap_or(0);
        let base_experts = packed_bits.map_or(if b == 2 { "bf16" } else { "fp32" }, |(_, name)| name).to_string();
        let offloaded_bytes = offloaded_weights + offloaded_trainable;
        JobMemory { device, dtype: if b == 2 { "bf16" } else { "fp32" }, activation_checkpointing: checkpointing, base_experts, stages, peak_bytes, host_bytes, offloaded_bytes }
    }

    /// The job's peak on a CUDA runner (`memory_bytes`) and on a CPU runner (`cpu_memory_bytes`).
    pub fn requirements(&self, spec: &TrainingSpec) -> JobRequirements {
        JobRequirements {
            device: spec.moe.device,
            memory_bytes: self.job_memory(spec, TrainingDevice::Cuda).peak_bytes,
            cpu_memory_bytes: self.job_memory(spec, TrainingDevice::Cpu).peak_bytes,
            world_size: spec.moe.world_size,
        }
    }
}

impl RunnerInfo {
    /// The memory a job trains in on this runner: one GPU's, or the host's.
    pub fn training_memory_bytes(&self) -> i64 {
        if self.device == "cuda" { self.gpu_memory_bytes } else { self.host_memory_bytes }
    }

    pub fn fits(&self, needs: &JobRequirements) -> bool {
        needs.device.allows(&self.device) && needs.memory_on(&self.device) <= self.training_memory_bytes()
    }
}

/// Why no registered runner fits `needs`, given the largest training memory per device kind among
/// runners that are not lost; None when one does.
pub fn unplaceable_reason(needs: &JobRequirements, largest: &BTreeMap<String, i64>) -> Option<String> {
    let candidates: Vec<(&String, &i64)> = largest.iter().filter(|(device, _)| needs.device.allows(device)).collect();
    if candidates.iter().any(|(device, memory)| needs.memory_on(device) <= **memory) {
        return None;
    }
    let wanted = match needs.device {
        DeviceRequest::Auto => "runner".to_string(),
        device => format!("{} runner", device.as_str()),
    };
    Some(match candidates.iter().max_by_key(|(_, memory)| **memory) {
        None => format!("Waiting for a {wanted}: none is registered."),
        Some((device, memory)) => format!(
            "Waiting for a {wanted} with {} of training memory: the largest registered {device} runner has {}. Lower batch_size or seq_len, use sft_method=lora, or add a larger runner.",
            gib(needs.memory_on(device)),
            gib(**memory)
        ),
    })
}

pub(crate) fn gib(bytes: i64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(device: &str, gib: i64) -> RunnerInfo {
        RunnerInfo::for_tests(device, gib)
    }

    #[test]
    fn a_cuda_runner_is_judged_by_its_gpu_memory() {
        let needs = JobRequirements { device: DeviceRequest::Auto, memory_bytes: 40 << 30, ..Default::default() };
        assert!(runner("cuda", 80).fits(&needs));
        assert!(!runner("cuda", 24).fits(&needs), "host memory must not count for a GPU job");
        assert!(!runner("cpu", 24).fits(&JobRequirements { device: DeviceRequest::Cuda, memory_bytes: 1, ..Default::default() }));
    }

    #[test]
    fn the_reason_names_the_gap() {
        let largest = BTreeMap::from([("cpu".to_string(), 24i64 << 30)]);
        let small = JobRequirements { device: DeviceRequest::Auto, memory_bytes: 1 << 30, ..Default::default() };
        assert_eq!(unplaceable_reason(&small, &largest), None);
        let cuda = JobRequirements { device: DeviceRequest::Cuda, memory_bytes: 1 << 30, ..Default::default() };
        assert_eq!(unplaceable_reason(&cuda, &largest).unwrap(), "Waiting for a cuda runner: none is registered.");
        let big = JobRequirements { device: DeviceRequest::Auto, memory_bytes: 30 << 30, ..Default::default() };
        assert!(unplaceable_reason(&big, &largest).unwrap().contains("30.00 GiB of training memory: the largest registered cpu runner has 24.00 GiB"));
    }

    #[test]
    fn a_cpu_runner_is_judged_by_the_cpu_estimate() {
        let needs = JobRequirements { device: DeviceRequest::Auto, memory_bytes: 10 << 30, cpu_memory_bytes: 20 << 30, world_size: 1 };
        assert!(runner("cuda", 12).fits(&needs));
        assert!(!runner("cpu", 16).fits(&needs));
        let largest = BTreeMap::from([("cpu".to_string(), 16i64 << 30)]);
        assert!(unplaceable_reason(&needs, &largest).unwrap().contains("20.00 GiB of training memory"));
        // Queued before the CPU figure existed: one figure for both.
        assert!(runner("cpu", 16).fits(&JobRequirements { memory_bytes: 10 << 30, ..needs }.with_cpu(0)));
    }

    impl JobRequirements {
        fn with_cpu(mut self, bytes: i64) -> Self {
            self.cpu_memory_bytes = bytes;
            self
        }
    }

    fn model() -> MemoryModel {
        MemoryModel {
            total_params: 10_000_000,
            router_params: 1_000,
            expert_params: 8_000_000,
            vocab_size: 1_000,
            hidden_size: 64,
            num_hidden_layers: 4,
            q_dim: 64,
            kv_dim: 32,
            activation_elements_per_token: 4_000,
            activation_elements_per_token_per_seq: 0,
            moe_layers: 4,
            num_experts: 8,
            expert_intermediate_size: 128,
            shipped_expert_format: None,
        }
    }

    fn spec(edit: impl FnOnce(&mut crate::MoeSftQatOptions)) -> TrainingSpec {
        let mut moe = crate::MoeSftQatOptions::default();
        edit(&mut moe);
        TrainingSpec { model: "m".into(), n_epochs: 1, batch_size: 2, seed: 0, moe, routing_profile: None }
    }

    #[test]
    fn the_job_estimate_follows_precision_packing_and_checkpointing() {
        let m = model();
        let lora = m.job_memory(&spec(|_| {}), TrainingDevice::Cuda);
        assert_eq!((lora.dtype, lora.activation_checkpointing, lora.base_experts.as_str()), ("bf16", true, "bf16"));
        assert_eq!(lora.stages["sft"].weights_bytes, 10_000_000 * 2);
        // On CPU: fp32 and no checkpointing by default.
        let cpu = m.job_memory(&spec(|_| {}), TrainingDevice::Cpu);
        assert_eq!(cpu.stages["sft"].weights_bytes, 10_000_000 * 4);
        assert!(cpu.stages["sft"].activations_bytes > lora.stages["sft"].activations_bytes * 2);
        // Packed MXFP4 experts: 4.25 bits each, and one layer's experts dequantised at a time.
        let packed = m.job_memory(&spec(|o| o.base_expert_format = Some(BaseExpertFormat::Mxfp4)), TrainingDevice::Cuda);
        assert_eq!(packed.base_experts, "mxfp4");
        assert_eq!(packed.stages["sft"].weights_bytes, 2_000_000 * 2 + 8_000_000 * 17 / 32);
        // Without checkpointing (CPU) every layer's dequantised experts are alive with the loss chunk.
        let packed_cpu = m.job_memory(&spec(|o| o.base_expert_format = Some(BaseExpertFormat::Mxfp4)), TrainingDevice::Cpu);
        assert_eq!(packed_cpu.stages["sft"].transient_bytes - cpu.stages["sft"].transient_bytes, 4 * 2_000_000 * 4);
        // As shipped: gpt-oss-like checkpoints stay MXFP4 unless the experts train.
        let shipped = MemoryModel { shipped_expert_format: Some("mxfp4".into()), ..m.clone() };
        assert_eq!(shipped.job_memory(&spec(|_| {}), TrainingDevice::Cuda).base_experts, "mxfp4");
        assert_eq!(shipped.job_memory(&spec(|o| o.sft_method = SftMethod::Full), TrainingDevice::Cuda).base_experts, "bf16");
        // Full SFT: every weight but the frozen router with gradient, fp32 master and moments.
        let full = m.job_memory(&spec(|o| o.sft_method = SftMethod::Full), TrainingDevice::Cuda);
        assert_eq!(full.stages["sft"].trainable_bytes, (10_000_000 - 1_000) * (2 + 4 + 8));
        assert!(full.peak_bytes > lora.peak_bytes);
        // No QAT stage when it does not run. The merge holds the dense model: on the host, which on a
        // CPU runner is the device.
        assert!(!m.job_memory(&spec(|o| o.qat.steps = 0), TrainingDevice::Cuda).stages.contains_key("qat"));
        assert!(!lora.stages.contains_key("merge"));
        assert_eq!(packed.host_bytes, lora.host_bytes);
        assert!(lora.host_bytes > 10_000_000 * (2 + 2));
        assert_eq!(cpu.stages["merge"].weights_bytes, 10_000_000 * 4);
        // Activations grow with tokens.
        let longer = m.job_memory(&spec(|o| o.seq_len = 1024), TrainingDevice::Cuda);
        assert_eq!(longer.stages["sft"].activations_bytes, 2 * lora.stages["sft"].activations_bytes);
        let requirements = m.requirements(&spec(|_| {}));
        assert_eq!((requirements.memory_bytes, requirements.cpu_memory_bytes), (lora.peak_bytes, cpu.peak_bytes));
    }

    #[test]
    fn ranks_split_the_optimiser_state_and_expert_parallel_ranks_the_experts() {
        let m = model();
        let cuda = |edit: fn(&mut crate::MoeSftQatOptions)| m.job_memory(&spec(edit), TrainingDevice::Cuda);
        let one = cuda(|o| o.sft_method = SftMethod::Full);
        // ZeRO-1 over 4 ranks: weights and gradients whole, the fp32 masters and moments a quarter.
        let zero1 = cuda(|o| {
            o.sft_method = SftMethod::Full;
            o.world_size = 4;
        });
        let trainable: i64 = 10_000_000 - 1_000;
        assert_eq!(zero1.stages["sft"].weights_bytes, one.stages["sft"].weights_bytes);
        // Owners hold whole tensors: at most the even split plus the largest (the 1,000 × 64 embedding).
        assert_eq!(zero1.stages["sft"].trainable_bytes, trainable * 2 + (share(trainable, 4) + 64_000) * 12);
        // Expert parallelism over 4 ranks: a quarter of the experts with their gradients and state; the
        // rest whole, its optimiser state a quarter.
        let ep = cuda(|o| {
            o.sft_method = SftMethod::Full;
            o.world_size = 4;
            o.expert_parallel = true;
        });
        let (rest, experts): (i64, i64) = (2_000_000, 8_000_000 / 4);
        assert_eq!(ep.stages["sft"].weights_bytes, (rest + experts) * 2);
        assert_eq!(ep.stages["sft"].trainable_bytes, (rest + experts - 1_000) * 2 + (share(rest - 1_000, 4) + 64_000) * 12 + experts * 12);
        assert!(ep.peak_bytes < zero1.peak_bytes && zero1.peak_bytes < one.peak_bytes);
        // The export gathers the whole model on rank 0's host.
        assert_eq!(ep.host_bytes, one.host_bytes);
        // LoRA: the adapters' state is split too; the frozen experts under expert parallelism.
        let lora_ep = cuda(|o| {
            o.world_size = 2;
            o.expert_parallel = true;
        });
        assert_eq!(lora_ep.stages["sft"].weights_bytes, (rest + 8_000_000 / 2) * 2);
    }

    #[test]
    fn fully_sharded_ranks_hold_a_share_of_everything_and_one_unit_whole() {
        let m = model();
        let full = |ranks: u32| {
            let edit = |o: &mut crate::MoeSftQatOptions| {
                o.sft_method = SftMethod::Full;
                o.world_size = ranks;
                o.fully_sharded = ranks > 1;
            };
            m.job_memory(&spec(edit), TrainingDevice::Cuda)
        };
        let (one, four) = (full(1), full(4));
        // The largest unit, a MoE layer: its share of the dense rest, (2M − 2 × 64,000) / 4, and its
        // experts, 8M / 4; above the embedding's 64,000.
        let unit: i64 = (2_000_000 - 128_000) / 4 + 8_000_000 / 4;
        assert_eq!(four.stages["sft"].weights_bytes, share(10_000_000, 4) * 2 + unit * 2);
        let trainable: i64 = 10_000_000 - 1_000;
        assert_eq!(four.stages["sft"].trainable_bytes, share(trainable, 4) * (2 + 12) + 2 * unit * 2);
        assert!(four.activation_checkpointing);
        assert!(four.peak_bytes < one.peak_bytes / 2, "{} vs {}", four.peak_bytes, one.peak_bytes);
        // More ranks, less each: the unit gathered whole is the floor.
        assert!(full(8).peak_bytes < four.peak_bytes);
        assert_eq!(four.host_bytes, one.host_bytes);
        assert_eq!(four.offloaded_bytes, 0);
    }

    #[test]
    fn cpu_offload_moves_the_shards_and_their_state_to_host_memory() {
        let m = model();
        let offloaded = |device: TrainingDevice| {
            let edit = |o: &mut crate::MoeSftQatOptions| {
                (o.sft_method, o.world_size, o.fully_sharded, o.cpu_offload) = (SftMethod::Full, 4, true, true);
            };
            m.job_memory(&spec(edit), device)
        };
        let (unit, trainable): (i64, i64) = ((2_000_000 - 128_000) / 4 + 8_000_000 / 4, 10_000_000 - 1_000);
        // fp32 shards of every weight; gradient and two moments of every trainable one.
        let host = share(10_000_000, 4) * 4 + share(trainable, 4) * 12;
        let gpu = offloaded(TrainingDevice::Cuda);
        assert_eq!((gpu.stages["sft"].weights_bytes, gpu.stages["sft"].trainable_bytes), (unit * 2, 2 * unit * 2), "the GPU holds the gathered unit only");
        assert_eq!(gpu.offloaded_bytes, host);
        // A CPU runner trains in host memory: the offloaded shards are in its stages.
        let cpu = offloaded(TrainingDevice::Cpu);
        assert_eq!(cpu.stages["sft"].weights_bytes + cpu.stages["sft"].trainable_bytes, host + 3 * unit * 4);
    }
}
