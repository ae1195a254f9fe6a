//! Prometheus metrics of the HTTP API, served at `GET /metrics`: request counts and latency by route
//! pattern (never the raw path, whose ids would make a series per job) and status class. Fleet-wide
//! gauges (queue depth, jobs by status, runners by state, webhooks) are the scheduler's.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub struct ApiMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new().expect("metric definitions are valid")
    }
}

impl ApiMetrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(Opts::new("moetune_http_requests_total", "HTTP requests, by method, route pattern and status"), &["method", "route", "status"])?;
        let buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let latency = HistogramVec::new(
            HistogramOpts::new("moetune_http_request_duration_seconds", "Time to the response head, by method and route pattern").buckets(buckets),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self { registry, requests, latency })
    }
}

/// Middleware: counts and times every request.
pub async fn record(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<ApiMetrics>>().cloned();
    let method = req.method().to_string();
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = response.request().match_pattern().unwrap_or_else(|| "unmatched".into());
        let status = response.status().as_u16().to_string();
        metrics.requests.with_label_values(&[&method, &route, &status]).inc();
        metrics.latency.with_label_values(&[&method, &route]).observe(started.elapsed().as_secs_f64());
    }
    Ok(response)
}

pub async fn serve(metrics: web::Data<ApiMetrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(moetune_types::metrics::render(&metrics.registry))
}
