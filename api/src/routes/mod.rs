//! HTTP handlers: thin adapters from requests to the domain modules.

pub mod files;
pub mod jobs;

use actix_web::{web, HttpResponse};

use crate::openapi::ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json))
        .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
        .route("/readyz", web::get().to(readyz))
        .service(
            web::scope("/v1")
                .route("/files", web::post().to(files::upload))
                .route("/files", web::get().to(files::list))
                .route("/files/{id}", web::get().to(files::retrieve))
                .route("/files/{id}", web::delete().to(files::delete))
                .route("/files/{id}/content", web::get().to(files::content))
                .route("/fine_tuning/jobs", web::post().to(jobs::create))
                .route("/fine_tuning/jobs", web::get().to(jobs::list))
                .route("/fine_tuning/jobs/{id}", web::get().to(jobs::retrieve))
                .route("/fine_tuning/jobs/{id}/cancel", web::post().to(jobs::cancel))
                .route("/fine_tuning/jobs/{id}/events", web::get().to(jobs::events))
                .route("/fine_tuning/jobs/{id}/artifacts", web::get().to(jobs::list_artifacts))
                .route("/fine_tuning/jobs/{id}/checkpoints", web::get().to(jobs::list_checkpoints))
                .route("/fine_tuning/jobs/{id}/artifacts/{name:.*}/content", web::get().to(jobs::download_artifact)),
        );
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(ApiDoc::json())
}

/// Ready when Postgres, Redis and S3 all answer; 503 naming the ones that do not.
async fn readyz(state: web::Data<crate::AppState>) -> Result<HttpResponse, crate::error::ApiError> {
    let mut failing = Vec::new();
    if let Err(e) = sqlx::query("SELECT 1").execute(&state.db).await {
        failing.push(format!("postgres: {e}"));
    }
    if let Err(e) = state.queue.ping().await {
        failing.push(format!("redis: {e}"));
    }
    if let Err(e) = state.s3.head_bucket().bucket(&state.config.s3.bucket).send().await {
        failing.push(format!("s3: {e}"));
    }
    if failing.is_empty() {
        Ok(HttpResponse::Ok().body("ready"))
    } else {
        Err(crate::error::ApiError::unavailable(format!("Not ready: {}", failing.join("; "))))
    }
}
