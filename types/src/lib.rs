//! Wire types shared by the moetune api, scheduler and runner.
//!
//! Kept free of heavy dependencies (no tokio, sqlx or torch) so every component, and later the
//! generated SDKs' tests, can depend on it.

pub mod dataset;
pub mod error_code;
pub mod estimate;
pub mod gang_size;
pub mod ids;
mod invalid;
pub mod job;
pub mod lora;
pub mod monitor;
pub mod placement;
pub mod protocol;
pub mod requirements;
pub mod results;
pub mod routing;
pub mod status;
pub mod text;
pub mod world_size;

pub use error_code::{ErrorCode, ErrorType};
pub use ids::{FileId, InvalidId, JobId, RunnerId, TenantId, UploadId};
pub use dataset::{DatasetFormat, DatasetSummary, DatasetValidator, Example, LineError};
pub use job::{
    BaseExpertFormat, EvalPrompt, InvalidOption, LoraOptions, MoeSftQatOptions, Mxfp4ScaleRule, Precision, QatFormat, QatOptions, QatTrainable, RouterMode, RouterOptions,
    SftMethod, TrainingSpec,
};
pub use lora::{ExpertTargets, ProfileTargets};
pub use monitor::MonitorOptions;
pub use routing::{LayerProfile, RoutingProfile};
pub use results::{EvalReport, EvalRow, JobResult, RoutingAgreement};
pub use status::{FileStatus, JobStatus, UploadStatus};
pub use placement::MemoryModel;
pub use requirements::{DeviceRequest, JobRequirements};
pub use protocol::{JobAssignment, Placement, CLAIM_DEPTH, CLAIM_TENANTS, QUEUE_SCRIPT, LayerUsage, RedisKeys, RunnerEvent, RunnerEventKind, RunnerInfo, S3Location};
