use moetune_types::JobId;
use moetune_types::ErrorCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use tokio_util::io::ReaderStream;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::estimate::JobEstimate;
use crate::jobs::{self, Artifact, CreateJobRequest, JobCheckpoint, JobEvent, JobObject};
use crate::{event_stream, AppState};

/// Create a fine-tuning job on an uploaded training file.
#[utoipa::path(post, path = "/v1/fine_tuning/jobs", tag = "fine_tuning",
    request_body = CreateJobRequest,
    responses((status = 200, body = JobObject), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(caller: Principal, state: web::Data<AppState>, body: web::Json<CreateJobRequest>) -> Result<HttpResponse, ApiError> {
    let job = jobs::create(&state, caller.tenant, body.into_inner()).await?;
    // The request span gets the new job's id, the key that joins api, scheduler and runner logs.
    tracing::Span::current().record("job_id", job.id.as_str());
    Ok(HttpResponse::Ok().json(job))
}

/// Estimate a fine-tuning job before creating it: from the same body as `POST /v1/fine_tuning/jobs`,
/// the steps and tokens it would train, the memory it needs per stage, which classes of registered
/// runners fit it (or why none does) and how long it would take on each, from what runners of the
/// class measured on recent jobs of the same model and method. Creates nothing and takes no quota.
#[utoipa::path(post, path = "/v1/fine_tuning/jobs/estimate", tag = "fine_tuning",
    request_body = CreateJobRequest,
    responses((status = 200, body = JobEstimate), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody, description = "A file is still being validated")),
    security(("bearer" = [])))]
pub async fn estimate(caller: Principal, state: web::Data<AppState>, body: web::Json<CreateJobRequest>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(crate::estimate::estimate(&state, caller.tenant, body.into_inner()).await?))
}

/// Retrieve a fine-tuning job.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}", tag = "fine_tuning",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobObject), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retrieve(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = JobId::parse(&id).map_err(ApiError::no_such)?;
    Ok(HttpResponse::Ok().json(jobs::get(&state, caller.tenant, &id).await?))
}

/// Pause a job that has not finished (409 if it has, or is already pausing or paused). One not yet
/// started is `paused` at once; a running one is `pausing` until its runner has stored a checkpoint at
/// its next step and let go, then `paused`. A paused job holds no runner and no concurrent-job slot.
#[utoipa::path(post, path = "/v1/fine_tuning/jobs/{id}/pause", tag = "fine_tuning",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobObject), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn pause(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = JobId::parse(&id).map_err(ApiError::no_such)?;
    Ok(HttpResponse::Ok().json(jobs::pause(&state, caller.tenant, &id).await?))
}

/// Resume a paused job (409 unless `paused`): a new attempt that continues from the job's latest
/// checkpoint, with the same losses it would have had without the pause. It takes a concurrent-job
/// slot again (429 when none is free).
#[utoipa::path(post, path = "/v1/fine_tuning/jobs/{id}/resume", tag = "fine_tuning",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobObject), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resume(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = JobId::parse(&id).map_err(ApiError::no_such)?;
    Ok(HttpResponse::Ok().json(jobs::resume(&state, caller.tenant, &id).await?))
}

/// Query of `GET /v1/fine_tuning/jobs` as documented; the handler reads the raw pairs because
/// `metadata[KEY]` keys are open-ended.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct JobsQuery {
    /// Id of the last job from the previous page.
    after: Option<String>,
    /// Jobs per page, 1–100 (default 20).
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// Always `list`.
    object: &'static str,
    data: Vec<JobObject>,
    has_more: bool,
}

/// List the tenant's fine-tuning jobs, newest first; filter with `metadata[KEY]=VALUE`.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs", tag = "fine_tuning",
    params(JobsQuery, ("metadata[KEY]" = Option<String>, Query, description = "Only jobs whose metadata has KEY = this value")),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(caller: Principal, state: web::Data<AppState>, query: web::Query<Vec<(String, String)>>) -> Result<HttpResponse, ApiError> {
    let (mut after, mut limit, mut metadata) = (None, 20i64, std::collections::HashMap::new());
    for (key, value) in query.into_inner() {
        match key.as_str() {
            "after" => after = Some(value),
            "limit" => limit = value.parse().map_err(|_| ApiError::invalid(ErrorCode::InvalidLimit, "limit", "`limit` must be an integer from 1 to 100."))?,
            _ => match key.strip_prefix("metadata[").and_then(|k| k.strip_suffix(']')) {
                Some(name) => {
                    metadata.insert(name.to_string(), value);
                }
                None => return Err(ApiError::invalid(ErrorCode::UnknownParameter, &key, format!("Unknown query parameter '{key}'; use after, limit or metadata[KEY]."))),
            },
        }
    }
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(ErrorCode::InvalidLimit, "limit", "`limit` must be an integer from 1 to 100."));
    }
    let (data, has_more) = jobs::list(&state, caller.tenant, after.as_deref(), limit, &metadata).await?;
    Ok(HttpResponse::Ok().json(JobList { object: "list", data, has_more }))
}

/// Cancel a job that has not finished (409 if it has); a running job stops at its next step.
#[utoipa::path(post, path = "/v1/fine_tuning/jobs/{id}/cancel", tag = "fine_tuning",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobObject), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = JobId::parse(&id).map_err(ApiError::no_such)?;
    Ok(HttpResponse::Ok().json(jobs::cancel(&state, caller.tenant, &id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Id of the last event from the previous page.
    after: Option<String>,
    /// Events per page, 1–1000 (default 20).
    limit: Option<i64>,
    /// `true`: Server-Sent Events, oldest first, live until the job finishes; resume with the
    /// `Last-Event-ID` header (or `after`).
    stream: Option<bool>,
}

/// One Server-Sent Event of `events?stream=true`, as its fields arrive on the wire.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct StreamedEvent {
    /// `ftevent-N`: send it back as `Last-Event-ID` to resume after it.
    id: Option<String>,
    /// The event's `type` (`message`, `metrics`, `monitor`, `evaluation`), or `done` at the end.
    event: Option<String>,
    /// The event object as JSON text (the same object polling returns); `{}` for `done`.
    data: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// Always `list`.
    object: &'static str,
    data: Vec<JobEvent>,
    has_more: bool,
}

/// List a job's events, newest first: status changes, messages and per-step metrics. With
/// `stream=true`, a `text/event-stream` of the events as they happen (`id: ftevent-N`, `event:` the
/// event type, `data:` the event object), ending with `event: done` once the job has finished.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/events", tag = "fine_tuning",
    params(("id" = String, Path, description = "Job id"), EventsQuery,
           ("Last-Event-ID" = Option<String>, Header, description = "With stream=true: the last event id received; the stream continues after it")),
    responses((status = 200, description = "The events (JSON); with stream=true, Server-Sent Events",
               content((EventList = "application/json"), (StreamedEvent = "text/event-stream"))),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    caller: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    metrics: web::Data<crate::metrics::ApiMetrics>,
    id: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = JobId::parse(&id).map_err(ApiError::no_such)?;
    if query.stream == Some(true) {
        jobs::get_owned(&state, caller.tenant, &id).await?;
        let resume = req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(|v| (v.to_string(), "Last-Event-ID"));
        let last_seq = match resume.or(query.after.clone().map(|a| (a, "after"))) {
            Some((cursor, param)) => jobs::parse_event_id(&cursor, param)?,
            None => 0,
        };
        let slot = state.streams.acquire(caller.tenant, state.config.rate_limits.streams_per_tenant)?;
        return Ok(HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .insert_header(("x-accel-buffering", "no"))
            .streaming(event_stream::stream(state.db.clone(), &state.notifier, metrics.stream_reads(), id, last_seq, slot)));
    }
    let limit = query.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(ErrorCode::InvalidLimit, "limit", "`limit` must be from 1 to 1000."));
    }
    let (data, has_more) = jobs::events(&state, caller.tenant, &id, query.after.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(EventList { object: "list", data, has_more }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ExpertUsageQuery {
    /// Id of the last check from the previous page (`ftevent-N`).
    after: Option<String>,
    /// Checks per page, 1–100 (default 20).
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExpertUsageList {
    /// Always `list`.
    object: &'static str,
    data: Vec<jobs::ExpertUsage>,
    has_more: bool,
}

/// List the job's expert-usage monitor checks, newest first: per MoE layer, every expert's share of
/// the routed tokens, the layer's concentration (`top1_share`, `entropy_norm`, `kl_to_uniform`), and
/// the routing drift from the base model on the validation data that `monitor.max_routing_drift`
/// guards.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/expert_usage", tag = "fine_tuning",
    params(("id" = String, Path, description = "Job id"), ExpertUsageQuery),
    responses((status = 200, body = ExpertUsageList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn expert_usage(caller: Principal, state: web::Data<AppState>, id: web::Path<String>, query: web::Query<ExpertUsageQuery>) -> Result<HttpResponse, ApiError> {
    let id = JobId::parse(&id).map_err(ApiError::no_such)?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(ErrorCode::InvalidLimit, "limit", "`limit` must be from 1 to 100."));
    }
    let (data, has_more) = jobs::expert_usage(&state, caller.tenant, &id, query.after.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(ExpertUsageList { object: "list", data, has_more }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactList {
    /// Always `list`.
    object: &'static str,
    data: Vec<Artifact>,
    has_more: bool,
}

/// List the files a job produced (checkpoint, config, tokenizer) with size and sha256.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/artifacts", tag = "fine_tuning",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = ArtifactList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_artifacts(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = JobId::parse(&id).map_err(ApiError::no_such)?;
    jobs::get_owned(&state, caller.tenant, &id).await?;
    let data = jobs::artifacts(&state, &id).await?;
    Ok(HttpResponse::Ok().json(ArtifactList { object: "list", data, has_more: false }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointList {
    /// Always `list`.
    object: &'static str,
    data: Vec<JobCheckpoint>,
    has_more: bool,
}

/// List the job's resumable checkpoints, newest first.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/checkpoints", tag = "fine_tuning",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = CheckpointList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_checkpoints(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = JobId::parse(&id).map_err(ApiError::no_such)?;
    let data = jobs::checkpoints(&state, caller.tenant, &id).await?;
    Ok(HttpResponse::Ok().json(CheckpointList { object: "list", data, has_more: false }))
}

/// Download one artifact; streamed from storage.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/artifacts/{name}/content", tag = "fine_tuning",
    params(("id" = String, Path, description = "Job id"), ("name" = String, Path, description = "Artifact name, e.g. model.safetensors")),
    responses((status = 200, content_type = "application/octet-stream", body = crate::files::BinaryContent), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn download_artifact(caller: Principal, state: web::Data<AppState>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let id = JobId::parse(&id).map_err(ApiError::no_such)?;
    jobs::get_owned(&state, caller.tenant, &id).await?;
    let artifact = jobs::artifacts(&state, &id)
        .await?
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::not_found("artifact", &name))?;
    let object = state.s3.get_object().bucket(&artifact.s3_bucket).key(&artifact.s3_key).send().await.map_err(ApiError::internal)?;
    let stream = ReaderStream::new(object.body.into_async_read());
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("content-disposition", format!("attachment; filename=\"{name}\"")))
        .insert_header(("content-length", artifact.bytes.to_string()))
        .streaming(stream))
}

/// The job's report as one self-contained HTML page: loss and learning-rate curves, the per-layer
/// expert-usage heatmap over time, monitor alerts, and the base / SFT / PTQ / SFT+QAT table.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/report", tag = "fine_tuning",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, content_type = "text/html", body = String, description = "HTML page, no external resources"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn report(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = JobId::parse(&id).map_err(ApiError::no_such)?;
    let page = crate::report::render(&state, caller.tenant, &id).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // Everything is inline: nothing may load from elsewhere.
        .insert_header(("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"))
        .body(page))
}
