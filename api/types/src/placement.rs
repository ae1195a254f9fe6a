//! What a job needs from a runner and whether a runner has it.
//!
//! `moetune-runner inspect` reports a model's [`MemoryModel`] (parameter counts and activation
//! coefficients, read from config.json alone); the API records it with the model and turns it into a
//! job's [`JobRequirements`] for the job's method, batch and sequence length. Runners declare what they
//! have in [`RunnerInfo`]; placement gives a job only to a runner that [`RunnerInfo::fits`] it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{RunnerInfo, SftMethod, TrainingSpec};

/// The runner trains in fp32 on every device (bf16 matmuls are ~500× slower on CPU, and one dtype keeps
/// results identical across runners), so requirements are for 4-byte elements.
pub const TRAINING_DTYPE_BYTES: i64 = 4;

/// Everything the memory estimate needs about a model; `inspect` fills it from config.json.
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
    /// Extra elements per token per token of sequence (eager attention keeps its probabilities).
    pub activation_elements_per_token_per_seq: i64,
}

/// Training settings an estimate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstimateInput {
    pub batch: i64,
    pub seq_len: i64,
    /// Bytes per element of the training dtype (2 for bf16).
    pub dtype_bytes: i64,
    pub lora_rank: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    pub trainable_params: i64,
    pub weights_bytes: i64,
    pub gradients_bytes: i64,
    pub optimizer_bytes: i64,
    pub activations_bytes: i64,
    pub total_bytes: i64,
}

impl MemoryModel {
    /// Peak training memory for `lora` and `full` SFT and for `qat`.
    pub fn estimate(&self, input: EstimateInput) -> BTreeMap<&'static str, MemoryEstimate> {
        let b = input.dtype_bytes;
        let tokens = input.batch * input.seq_len;
        // Logits in the training dtype, their fp32 copy for the loss and its gradient.
        let logits = tokens * self.vocab_size * (b + 8);
        let per_token = self.activation_elements_per_token + self.activation_elements_per_token_per_seq * input.seq_len;
        let activations = tokens * per_token * b + logits;
        let weights = self.total_params * b;
        // Mixed precision keeps an fp32 master copy next to AdamW's two fp32 moments.
        let optimizer_per_param = 8 + if b < 4 { 4 } else { 0 };
        let full_trainable = self.total_params - self.router_params;
        let full = MemoryEstimate {
            trainable_params: full_trainable,
            weights_bytes: weights,
            gradients_bytes: full_trainable * b,
            optimizer_bytes: full_trainable * optimizer_per_param,
            activations_bytes: activations,
            total_bytes: 0,
        };
        // LoRA on q/k/v/o: r · (in + out) per projection; adapters, their gradients and moments in fp32.
        let (h, q, kv) = (self.hidden_size, self.q_dim, self.kv_dim);
        let lora_trainable = self.num_hidden_layers * input.lora_rank * ((h + q) + 2 * (h + kv) + (q + h));
        let lora = MemoryEstimate {
            trainable_params: lora_trainable,
            weights_bytes: weights + lora_trainable * 4,
            gradients_bytes: lora_trainable * 4,
            optimizer_bytes: lora_trainable * 8,
            activations_bytes: activations,
            total_bytes: 0,
        };
        // QAT trains like full fine-tuning and also keeps every layer's fake-quantized expert weights for backward.
        let qat = MemoryEstimate { activations_bytes: activations + self.expert_params * b, ..full.clone() };
        let mut out = BTreeMap::from([("lora", lora), ("full", full), ("qat", qat)]);
        for e in out.values_mut() {
            e.total_bytes = e.weights_bytes + e.gradients_bytes + e.optimizer_bytes + e.activations_bytes;
        }
        out
    }

    /// The job's peak: the larger of its SFT stage and its QAT stage.
    pub fn peak_bytes(&self, spec: &TrainingSpec) -> i64 {
        let input = EstimateInput {
            batch: i64::from(spec.batch_size.max(1)),
            seq_len: i64::from(spec.moe.seq_len),
            dtype_bytes: TRAINING_DTYPE_BYTES,
            lora_rank: i64::from(spec.moe.lora.r),
        };
        let stages = self.estimate(input);
        let sft = match spec.moe.sft_method {
            SftMethod::Lora => "lora",
            SftMethod::Full => "full",
        };
        stages[sft].total_bytes.max(stages["qat"].total_bytes)
    }
}

/// Which kind of runner may take a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceRequest {
    /// Any runner with enough memory.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DeviceRequest {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Auto, Self::Cpu, Self::Cuda].into_iter().find(|d| d.as_str() == s)
    }

    pub fn allows(self, device: &str) -> bool {
        self == Self::Auto || self.as_str() == device
    }
}

/// What a job needs from the runner that takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct JobRequirements {
    pub device: DeviceRequest,
    /// Estimated peak training memory (GPU memory on CUDA, host memory on CPU); 0 when the model has
    /// no recorded estimate.
    pub memory_bytes: i64,
}

impl RunnerInfo {
    /// The memory a job trains in on this runner: one GPU's, or the host's.
    pub fn training_memory_bytes(&self) -> i64 {
        if self.device == "cuda" { self.gpu_memory_bytes } else { self.host_memory_bytes }
    }

    pub fn fits(&self, needs: &JobRequirements) -> bool {
        needs.device.allows(&self.device) && needs.memory_bytes <= self.training_memory_bytes()
    }
}

/// Why no registered runner fits `needs`, given the largest training memory per device kind among
/// runners that are not lost; None when one does.
pub fn unplaceable_reason(needs: &JobRequirements, largest: &BTreeMap<String, i64>) -> Option<String> {
    let candidates: Vec<(&String, &i64)> = largest.iter().filter(|(device, _)| needs.device.allows(device)).collect();
    if candidates.iter().any(|(_, memory)| needs.memory_bytes <= **memory) {
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
            gib(needs.memory_bytes),
            gib(**memory)
        ),
    })
}

fn gib(bytes: i64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(device: &str, gib: i64) -> RunnerInfo {
        RunnerInfo {
            runner_id: "r".into(),
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
            last_heartbeat_ms: 0,
        }
    }

    #[test]
    fn a_cuda_runner_is_judged_by_its_gpu_memory() {
        let needs = JobRequirements { device: DeviceRequest::Auto, memory_bytes: 40 << 30 };
        assert!(runner("cuda", 80).fits(&needs));
        assert!(!runner("cuda", 24).fits(&needs), "host memory must not count for a GPU job");
        assert!(!runner("cpu", 24).fits(&JobRequirements { device: DeviceRequest::Cuda, memory_bytes: 1 }));
    }

    #[test]
    fn the_reason_names_the_gap() {
        let largest = BTreeMap::from([("cpu".to_string(), 24i64 << 30)]);
        let small = JobRequirements { device: DeviceRequest::Auto, memory_bytes: 1 << 30 };
        assert_eq!(unplaceable_reason(&small, &largest), None);
        let cuda = JobRequirements { device: DeviceRequest::Cuda, memory_bytes: 1 << 30 };
        assert_eq!(unplaceable_reason(&cuda, &largest).unwrap(), "Waiting for a cuda runner: none is registered.");
        let big = JobRequirements { device: DeviceRequest::Auto, memory_bytes: 30 << 30 };
        assert!(unplaceable_reason(&big, &largest).unwrap().contains("30.00 GiB of training memory: the largest registered cpu runner has 24.00 GiB"));
    }

    #[test]
    fn qat_dominates_and_activations_grow_with_tokens() {
        let model = MemoryModel {
            total_params: 1000,
            router_params: 10,
            expert_params: 800,
            vocab_size: 100,
            hidden_size: 8,
            num_hidden_layers: 2,
            q_dim: 8,
            kv_dim: 4,
            activation_elements_per_token: 50,
            activation_elements_per_token_per_seq: 0,
        };
        let input = EstimateInput { batch: 2, seq_len: 16, dtype_bytes: 4, lora_rank: 8 };
        let e = model.estimate(input);
        assert_eq!(e["full"].activations_bytes, 32 * 50 * 4 + 32 * 100 * 12);
        assert_eq!(e["qat"].total_bytes, e["full"].total_bytes + 800 * 4);
        let doubled = model.estimate(EstimateInput { batch: 4, ..input });
        assert_eq!(doubled["full"].activations_bytes, 2 * e["full"].activations_bytes);
    }
}
