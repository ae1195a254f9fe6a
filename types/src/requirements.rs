//! What a job needs from the runner that takes it: a kind of device and the memory its estimate says
//! it peaks at. Jobs carry it, the queue's tickets hold it, and runners are matched against it
//! (`placement`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobRequirements {
    pub device: DeviceRequest,
    /// Estimated peak training memory on one GPU of a CUDA runner (bf16 unless the job asks for fp32);
    /// 0 when the model has no recorded estimate.
    pub memory_bytes: i64,
    /// The same on a CPU runner's host memory (fp32 unless the job asks for bf16). Absent in jobs
    /// queued before it existed: `memory_bytes` then stands for both.
    #[serde(default)]
    pub cpu_memory_bytes: i64,
    /// Runners the job trains on at once (data parallel, one rank each); the memory figures are one
    /// rank's. Absent in jobs queued before gangs: 1.
    #[serde(default = "one")]
    pub world_size: u32,
}

fn one() -> u32 {
    1
}

impl Default for JobRequirements {
    fn default() -> Self {
        Self { device: DeviceRequest::Auto, memory_bytes: 0, cpu_memory_bytes: 0, world_size: 1 }
    }
}

impl JobRequirements {
    /// The memory the job needs on a runner of kind `device` (`cuda` or `cpu`).
    pub fn memory_on(&self, device: &str) -> i64 {
        if device == "cuda" || self.cpu_memory_bytes == 0 { self.memory_bytes } else { self.cpu_memory_bytes }
    }
}
