//! Prometheus metrics of one runner, served at `GET /metrics` on `metrics_addr`: training throughput,
//! steps, and jobs by how they ended. Observed from the events the runner reports, so the figures
//! are the ones the API shows.

use std::sync::Arc;

use moetune_types::RunnerEventKind;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct RunnerMetrics {
    registry: Registry,
    tokens_per_second: Gauge,
    trained_tokens: IntCounter,
    steps: IntCounterVec,
    jobs: IntCounterVec,
    busy: IntGauge,
    monitor_alerts: IntCounter,
}

impl Default for RunnerMetrics {
    fn default() -> Self {
        Self::new().expect("metric definitions are valid")
    }
}

impl RunnerMetrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let metrics = Self {
            tokens_per_second: Gauge::new("moetune_runner_training_tokens_per_second", "Training tokens per second of the latest step")?,
            trained_tokens: IntCounter::new("moetune_runner_trained_tokens_total", "Tokens trained on, over all jobs")?,
            steps: IntCounterVec::new(Opts::new("moetune_runner_steps_total", "Optimiser steps, by stage (sft, qat)"), &["stage"])?,
            jobs: IntCounterVec::new(Opts::new("moetune_runner_jobs_total", "Jobs this runner let go, by outcome"), &["outcome"])?,
            busy: IntGauge::new("moetune_runner_busy", "1 while the runner holds a job")?,
            monitor_alerts: IntCounter::new("moetune_runner_monitor_alerts_total", "Expert-usage monitor alerts (router collapse)")?,
            registry,
        };
        metrics.registry.register(Box::new(metrics.tokens_per_second.clone()))?;
        metrics.registry.register(Box::new(metrics.trained_tokens.clone()))?;
        metrics.registry.register(Box::new(metrics.steps.clone()))?;
        metrics.registry.register(Box::new(metrics.jobs.clone()))?;
        metrics.registry.register(Box::new(metrics.busy.clone()))?;
        metrics.registry.register(Box::new(metrics.monitor_alerts.clone()))?;
        Ok(metrics)
    }

    pub fn set_busy(&self, busy: bool) {
        self.busy.set(busy as i64);
    }

    /// Counts what an event reports.
    pub fn observe(&self, event: &RunnerEventKind) {
        match event {
            RunnerEventKind::Metrics { stage, tokens_per_second, .. } => {
                self.tokens_per_second.set(*tokens_per_second);
                self.steps.with_label_values(&[stage]).inc();
            }
            RunnerEventKind::Monitor { alert: true, .. } => self.monitor_alerts.inc(),
            RunnerEventKind::Succeeded { trained_tokens, .. } => {
                self.trained_tokens.inc_by((*trained_tokens).max(0) as u64);
                self.jobs.with_label_values(&["succeeded"]).inc();
            }
            RunnerEventKind::Failed { .. } => self.jobs.with_label_values(&["failed"]).inc(),
            RunnerEventKind::Paused { .. } => self.jobs.with_label_values(&["paused"]).inc(),
            RunnerEventKind::Released { .. } => self.jobs.with_label_values(&["released"]).inc(),
            _ => {}
        }
    }
}

/// Binds `GET /metrics` and `GET /healthz` on `addr`; the returned server runs when awaited.
pub fn serve(addr: &str, metrics: Arc<RunnerMetrics>) -> anyhow::Result<moetune_platform::metrics::Server> {
    let server = moetune_platform::metrics::serve(addr, metrics.registry.clone())?;
    tracing::info!(addr, "serving runner metrics");
    Ok(server)
}
