//! Structured request logs: every request gets one root span carrying its request id (also sent back
//! as `x-request-id`), the tenant once authenticated, and the job id when the path names one. Set
//! `MOETUNE_LOG_FORMAT=json` for one JSON object per line.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let job_id = request.path().strip_prefix("/v1/fine_tuning/jobs/").and_then(|rest| rest.split('/').next()).unwrap_or("");
        tracing_actix_web::root_span!(request, tenant_id = tracing::field::Empty, job_id = job_id)
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, actix_web::Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Sends the request id of the log span back as `x-request-id`.
pub async fn request_id_header(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req.extensions().get::<RequestId>().map(|id| format!("req_{}", id.to_string().replace('-', "")));
    let mut response = next.call(req).await?;
    if let Some(value) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(response)
}
