//! Fine-tuning jobs: the request and its resolution (`request`), creation (`create`), the OpenAI job
//! object (`object`), the event log and checkpoints (`history`), the expert-usage checks (`usage`), and cancel, pause and resume
//! (`lifecycle`). Status changes themselves are the job domain's (`moetune_domain::store`).

mod create;
mod history;
mod lifecycle;
mod object;
mod request;
mod usage;

pub use create::{advance_validating, create, file_refusal, submit, FileRefusal};
pub use history::{checkpoints, events, get_owned, parse_event_id, JobCheckpoint, JobEvent};
pub use lifecycle::{cancel, cancel_profile, pause, resume};
pub use object::{artifacts, get, list, Artifact, JobError, JobObject, MethodEcho, SELECT_JOBS};
pub use usage::{expert_usage, ExpertUsage, LayerExpertUsage};
pub use request::{resolve, CreateJobRequest, Hyperparameters, Method, ResolvedHyperparameters, SupervisedMethod, MIN_CHECKPOINT_INTERVAL};
