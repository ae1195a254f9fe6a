//! Prometheus metrics of the HTTP API, served at `GET /metrics`: request counts and latency by route
//! pattern (never the raw path, whose ids would make a series per job) and status class. Fleet-wide
//! gauges (queue depth, jobs by status, runners by state, webhooks) are the scheduler's.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::http::Method;
use actix_web::{web, HttpMessage, HttpResponse};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

pub struct ApiMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    stream_reads: IntCounter,
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
        let stream_reads = IntCounter::new("moetune_event_stream_reads_total", "Postgres reads by open event streams (SSE); idle streams make none")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(stream_reads.clone()))?;
        Ok(Self { registry, requests, latency, stream_reads })
    }

    /// The counter event streams add their reads to.
    pub fn stream_reads(&self) -> IntCounter {
        self.stream_reads.clone()
    }
}

/// Middleware: counts and times every request.
pub async fn record(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<ApiMetrics>>().cloned();
    let method = method_label(req.method());
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = route_label(response.request());
        let status = response.status().as_u16().to_string();
        metrics.requests.with_label_values(&[method, &route, &status]).inc();
        metrics.latency.with_label_values(&[method, &route]).observe(started.elapsed().as_secs_f64());
    }
    Ok(response)
}

/// The method as a label: one of the methods the API serves, or `other`, so made-up methods cannot
/// add series.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 7] = [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];
    KNOWN.iter().find(|known| *known == method).map_or("other", |known| known.as_str())
}

/// The route the router matched (the route table's pattern for `/v1`, the registered pattern for the
/// rest), or `unmatched`: a finite set whatever paths callers send.
fn route_label(req: &actix_web::HttpRequest) -> String {
    if let Some(endpoint) = req.extensions().get::<crate::auth::Endpoint>() {
        return endpoint.pattern.to_string();
    }
    req.match_pattern().unwrap_or_else(|| "unmatched".into())
}

pub async fn serve(metrics: web::Data<ApiMetrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(moetune_platform::metrics::render(&metrics.registry))
}
