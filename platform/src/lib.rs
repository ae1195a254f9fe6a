//! Runtime plumbing the moetune binaries share and the wire types must not carry: settings loading
//! (a commented defaults file, then environment overrides) with log setup, the S3 client, and the
//! Prometheus `/metrics` server of the scheduler and runners. Each part is a feature, so a binary
//! links only what it uses.

#[cfg(feature = "metrics")]
pub mod metrics;

#[cfg(feature = "s3")]
pub mod s3;

#[cfg(feature = "settings")]
pub mod settings;
