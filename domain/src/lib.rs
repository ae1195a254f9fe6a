//! The job domain, shared by the api (which creates, pauses and cancels jobs), the scheduler (which
//! applies runner events and requeues lost work) and the runners (which claim work and report on it).
//! Neither HTTP nor libtorch reaches in here.
//!
//! * `queue`: the Redis job queue behind a small interface; every change runs the queue script.
//! * `registry`: runners as Redis knows them (declared hardware, liveness, draining).
//! * `runner`: the queue as a runner uses it (claimed jobs, events, stop flags, heartbeat).
//! * `store` (Postgres): the job status machine, job events and what a runner needs to start.
//! * `webhooks`: event types, the outbox written in the same transaction, signing, network policy.

pub mod queue;
pub mod registry;
pub mod runner;
#[cfg(feature = "postgres")]
pub mod store;
pub mod webhooks;

pub use queue::JobQueue;
