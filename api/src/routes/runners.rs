//! Operator endpoints for the runner pool (scope `admin`): the registry and draining.

use moetune_types::RunnerId;
use actix_web::{web, HttpResponse};
use moetune_domain::registry::RunnerView;
use moetune_types::RunnerInfo;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// A runner as the registry sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerObject {
    pub id: String,
    /// Always `runner`.
    pub object: &'static str,
    /// `idle`, `busy`, `draining` (finishes its jobs, takes no new) or `lost` (stopped heartbeating).
    #[schema(value_type = String)]
    pub state: &'static str,
    pub draining: bool,
    /// Unix milliseconds of its last heartbeat; null when it has not published its capabilities.
    pub last_heartbeat_ms: Option<i64>,
    /// Ids of the jobs it holds.
    pub current_jobs: Vec<String>,
    /// What it declared: device, GPUs, memory, labels, methods; null for a runner that never did.
    pub capabilities: Option<RunnerInfo>,
}

impl From<RunnerView> for RunnerObject {
    fn from(view: RunnerView) -> Self {
        Self {
            last_heartbeat_ms: view.info.as_ref().map(|i| i.last_heartbeat_ms),
            id: view.runner_id.into(),
            object: "runner",
            state: view.state.as_str(),
            draining: view.draining,
            current_jobs: view.current_jobs,
            capabilities: view.info,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerList {
    /// Always `list`.
    object: &'static str,
    data: Vec<RunnerObject>,
    has_more: bool,
}

/// Every runner that registered, with its state, last heartbeat, capabilities and current jobs.
#[utoipa::path(get, path = "/v1/runners", operation_id = "admin_list_runners", tag = "admin",
    responses((status = 200, body = RunnerList)),
    security(("bearer" = [])))]
pub async fn list(_admin: Principal, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let data = state.queue.runners().await?.into_iter().map(RunnerObject::from).collect();
    Ok(HttpResponse::Ok().json(RunnerList { object: "list", data, has_more: false }))
}

/// One runner.
#[utoipa::path(get, path = "/v1/runners/{id}", operation_id = "admin_retrieve_runner", tag = "admin",
    params(("id" = String, Path, description = "Runner id")),
    responses((status = 200, body = RunnerObject), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retrieve(_admin: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let view = state.queue.runner(&RunnerId::parse(&id).map_err(ApiError::no_such)?).await?.ok_or_else(|| ApiError::not_found("runner", &id))?;
    Ok(HttpResponse::Ok().json(RunnerObject::from(view)))
}

/// Drain a runner: it finishes the jobs it holds and claims no new ones until undrained.
#[utoipa::path(post, path = "/v1/runners/{id}/drain", operation_id = "admin_drain_runner", tag = "admin",
    params(("id" = String, Path, description = "Runner id")),
    responses((status = 200, body = RunnerObject), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn drain(admin: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    set_draining(admin, state, &id, true).await
}

/// Undrain a runner: it takes new jobs again.
#[utoipa::path(post, path = "/v1/runners/{id}/undrain", operation_id = "admin_undrain_runner", tag = "admin",
    params(("id" = String, Path, description = "Runner id")),
    responses((status = 200, body = RunnerObject), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn undrain(admin: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    set_draining(admin, state, &id, false).await
}

async fn set_draining(_admin: Principal, state: web::Data<AppState>, path: &str, draining: bool) -> Result<HttpResponse, ApiError> {
    let id = &RunnerId::parse(path).map_err(ApiError::no_such)?;
    state.queue.runner(id).await?.ok_or_else(|| ApiError::not_found("runner", id))?;
    state.queue.set_draining(id, draining).await?;
    tracing::info!(runner = %id, draining, "runner drain flag changed");
    let view = state.queue.runner(id).await?.ok_or_else(|| ApiError::not_found("runner", id))?;
    Ok(HttpResponse::Ok().json(RunnerObject::from(view)))
}
