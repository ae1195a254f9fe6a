//! HTTP handlers: thin adapters from requests to the domain modules.

pub mod files;
pub mod jobs;

use actix_web::{web, HttpResponse};

use crate::openapi::ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json))
        .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
        .service(
            web::scope("/v1")
                .route("/files", web::post().to(files::upload))
                .route("/files/{id}", web::get().to(files::retrieve))
                .route("/fine_tuning/jobs", web::post().to(jobs::create))
                .route("/fine_tuning/jobs/{id}", web::get().to(jobs::retrieve))
                .route("/fine_tuning/jobs/{id}/events", web::get().to(jobs::events))
                .route("/fine_tuning/jobs/{id}/artifacts", web::get().to(jobs::list_artifacts))
                .route("/fine_tuning/jobs/{id}/checkpoints", web::get().to(jobs::list_checkpoints))
                .route("/fine_tuning/jobs/{id}/artifacts/{name:.*}/content", web::get().to(jobs::download_artifact)),
        );
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(ApiDoc::json())
}
