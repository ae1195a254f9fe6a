//! HTTP handlers: thin adapters from requests to the domain modules.

pub mod admin;
pub mod files;
pub mod jobs;
pub mod models;
pub mod runners;
pub mod uploads;
pub mod webhooks;

use actix_web::{web, HttpResponse};

use crate::openapi::ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json))
        .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
        .route("/readyz", web::get().to(readyz))
        // Prometheus; the ingress in deploy/k8s routes only /v1, /docs and /openapi.json publicly.
        .route("/metrics", web::get().to(crate::metrics::serve))
        // Swagger UI, served from assets compiled into the binary (no CDN).
        .route("/docs", web::get().to(|| async { HttpResponse::Found().insert_header(("location", "/docs/")).finish() }))
        .service(utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}").config(utoipa_swagger_ui::Config::from("/openapi.json")))
        .service(
            web::scope("/v1")
                .wrap(actix_web::middleware::from_fn(crate::idempotency::middleware))
                .wrap(actix_web::middleware::from_fn(crate::auth::middleware))
                .route("/files", web::post().to(files::upload))
                .route("/files", web::get().to(files::list))
                .route("/files/{id}", web::get().to(files::retrieve))
                .route("/files/{id}", web::delete().to(files::delete))
                .route("/files/{id}/content", web::get().to(files::content))
                .route("/uploads", web::post().to(uploads::create))
                .route("/uploads/{id}", web::get().to(uploads::retrieve))
                .route("/uploads/{id}/parts", web::post().to(uploads::add_part))
                .route("/uploads/{id}/complete", web::post().to(uploads::complete))
                .route("/uploads/{id}/cancel", web::post().to(uploads::cancel))
                .route("/fine_tuning/jobs", web::post().to(jobs::create))
                .route("/fine_tuning/jobs", web::get().to(jobs::list))
                .route("/fine_tuning/jobs/{id}", web::get().to(jobs::retrieve))
                .route("/fine_tuning/jobs/{id}/cancel", web::post().to(jobs::cancel))
                .route("/fine_tuning/jobs/{id}/pause", web::post().to(jobs::pause))
                .route("/fine_tuning/jobs/{id}/resume", web::post().to(jobs::resume))
                .route("/fine_tuning/jobs/{id}/events", web::get().to(jobs::events))
                .route("/fine_tuning/jobs/{id}/artifacts", web::get().to(jobs::list_artifacts))
                .route("/fine_tuning/jobs/{id}/checkpoints", web::get().to(jobs::list_checkpoints))
                .route("/fine_tuning/jobs/{id}/report", web::get().to(jobs::report))
                .route("/fine_tuning/jobs/{id}/artifacts/{name:.*}/content", web::get().to(jobs::download_artifact))
                .route("/webhook_endpoints", web::post().to(webhooks::create))
                .route("/webhook_endpoints", web::get().to(webhooks::list_endpoints))
                .route("/webhook_endpoints/{id}", web::get().to(webhooks::retrieve))
                .route("/webhook_endpoints/{id}", web::patch().to(webhooks::update))
                .route("/webhook_endpoints/{id}", web::delete().to(webhooks::delete))
                .route("/webhook_endpoints/{id}/rotate_secret", web::post().to(webhooks::rotate_secret))
                .route("/webhook_endpoints/{id}/attempts", web::get().to(webhooks::attempts))
                .route("/webhook_endpoints/{id}/events/{event_id}/redeliver", web::post().to(webhooks::redeliver))
                .route("/webhook_events", web::get().to(webhooks::events))
                .route("/models", web::get().to(models::list))
                .route("/models/{id:.*}", web::get().to(models::retrieve))
                .route("/admin/models", web::post().to(models::register))
                .route("/runners", web::get().to(runners::list))
                .route("/runners/{id}", web::get().to(runners::retrieve))
                .route("/runners/{id}/drain", web::post().to(runners::drain))
                .route("/runners/{id}/undrain", web::post().to(runners::undrain))
                .route("/admin/tenants", web::post().to(admin::upsert_tenant))
                .route("/admin/tenants/{name}", web::get().to(admin::get_tenant))
                .route("/admin/api_keys", web::post().to(admin::create_api_key))
                .route("/admin/api_keys", web::get().to(admin::list_api_keys))
                .route("/admin/api_keys/{id}", web::delete().to(admin::revoke_api_key)),
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
