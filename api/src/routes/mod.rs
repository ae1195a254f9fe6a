//! HTTP handlers: thin adapters from requests to the domain modules.

pub mod admin;
pub mod openapi;
pub mod files;
pub mod jobs;
pub mod models;
pub mod runners;
pub mod uploads;
pub mod webhooks;

use actix_web::http::Method;
use actix_web::{web, HttpResponse};

use crate::auth::{Endpoint, Scope};

use openapi::ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json))
        .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
        .route("/readyz", web::get().to(readyz))
        // Prometheus; the ingress in deploy/k8s routes only /v1, /docs, /console and /openapi.json publicly.
        .route("/metrics", web::get().to(crate::metrics::serve))
        // Swagger UI, served from assets compiled into the binary (no CDN).
        .route("/docs", web::get().to(|| async { HttpResponse::Found().insert_header(("location", "/docs/")).finish() }))
        .service(utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}").config(utoipa_swagger_ui::Config::from("/openapi.json")))
        // The web console: static assets; it calls /v1 with the user's key like any client.
        .configure(crate::console::configure)
        .service(v1_scope());
}

/// The route table: every `/v1` route with the scope it requires, declared once. The same list
/// registers the handlers, is exported as [`V1_ROUTES`] (tests walk it) and is the OpenAPI spec's list
/// of operations ([`V1Paths`], from each handler's `#[utoipa::path]`), so a route cannot be reachable
/// without a declared scope, nor documented without being registered.
macro_rules! v1_routes {
    ($($method:ident $path:literal $scope:ident => $handler:path;)*) => {
        pub const V1_ROUTES: &[Endpoint] = &[$(Endpoint { method: stringify!($method), pattern: concat!("/v1", $path), scope: Scope::$scope }),*];

        /// The operations of the route table, with the schemas they reference; merged into [`ApiDoc`].
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($handler),*))]
        pub struct V1Paths;

        fn register_v1(scope: actix_web::Scope) -> actix_web::Scope {
            scope$(.route($path, secured(
                Endpoint { method: stringify!($method), pattern: concat!("/v1", $path), scope: Scope::$scope },
                web::method(Method::$method).to($handler),
            )))*
        }
    };
}

v1_routes! {
    POST "/files" FilesWrite => files::upload;
    GET "/files" FilesRead => files::list;
    GET "/files/{id}" FilesRead => files::retrieve;
    DELETE "/files/{id}" FilesWrite => files::delete;
    GET "/files/{id}/content" FilesRead => files::content;
    POST "/files/{id}/routing_profile" JobsWrite => files::create_routing_profile;
    GET "/files/{id}/routing_profile" FilesRead => files::routing_profile;
    POST "/files/{id}/routing_profile/cancel" JobsWrite => files::cancel_routing_profile;
    POST "/uploads" FilesWrite => uploads::create;
    GET "/uploads/{id}" FilesRead => uploads::retrieve;
    POST "/uploads/{id}/parts" FilesWrite => uploads::add_part;
    POST "/uploads/{id}/complete" FilesWrite => uploads::complete;
    POST "/uploads/{id}/cancel" FilesWrite => uploads::cancel;
    POST "/fine_tuning/jobs" JobsWrite => jobs::create;
    POST "/fine_tuning/jobs/estimate" JobsWrite => jobs::estimate;
    GET "/fine_tuning/jobs" JobsRead => jobs::list;
    GET "/fine_tuning/jobs/{id}" JobsRead => jobs::retrieve;
    POST "/fine_tuning/jobs/{id}/cancel" JobsWrite => jobs::cancel;
    POST "/fine_tuning/jobs/{id}/pause" JobsWrite => jobs::pause;
    POST "/fine_tuning/jobs/{id}/resume" JobsWrite => jobs::resume;
    GET "/fine_tuning/jobs/{id}/events" JobsRead => jobs::events;
    GET "/fine_tuning/jobs/{id}/expert_usage" JobsRead => jobs::expert_usage;
    GET "/fine_tuning/jobs/{id}/artifacts" JobsRead => jobs::list_artifacts;
    GET "/fine_tuning/jobs/{id}/checkpoints" JobsRead => jobs::list_checkpoints;
    GET "/fine_tuning/jobs/{id}/report" JobsRead => jobs::report;
    GET "/fine_tuning/jobs/{id}/artifacts/{name:.*}/content" JobsRead => jobs::download_artifact;
    POST "/webhook_endpoints" WebhooksWrite => webhooks::create;
    GET "/webhook_endpoints" WebhooksRead => webhooks::list_endpoints;
    GET "/webhook_endpoints/{id}" WebhooksRead => webhooks::retrieve;
    PATCH "/webhook_endpoints/{id}" WebhooksWrite => webhooks::update;
    DELETE "/webhook_endpoints/{id}" WebhooksWrite => webhooks::delete;
    POST "/webhook_endpoints/{id}/rotate_secret" WebhooksWrite => webhooks::rotate_secret;
    GET "/webhook_endpoints/{id}/attempts" WebhooksRead => webhooks::attempts;
    POST "/webhook_endpoints/{id}/events/{event_id}/redeliver" WebhooksWrite => webhooks::redeliver;
    GET "/webhook_events" WebhooksRead => webhooks::events;
    GET "/models" ModelsRead => models::list;
    GET "/models/{id:.*}" ModelsRead => models::retrieve;
    POST "/admin/models" Admin => models::register;
    GET "/runners" Admin => runners::list;
    GET "/runners/{id}" Admin => runners::retrieve;
    POST "/runners/{id}/drain" Admin => runners::drain;
    POST "/runners/{id}/undrain" Admin => runners::undrain;
    POST "/admin/tenants" Admin => admin::upsert_tenant;
    GET "/admin/tenants/{name}" Admin => admin::get_tenant;
    POST "/admin/api_keys" Admin => admin::create_api_key;
    GET "/admin/api_keys" Admin => admin::list_api_keys;
    DELETE "/admin/api_keys/{id}" Admin => admin::revoke_api_key;
}

/// `/v1`: authentication for every request, then the route table; a path no route matches is a 404
/// (after authentication, so a caller without a credential cannot probe which paths exist).
fn v1_scope() -> actix_web::Scope<impl actix_web::dev::ServiceFactory<actix_web::dev::ServiceRequest, Config = (), Response = actix_web::dev::ServiceResponse, Error = actix_web::Error, InitError = ()>> {
    register_v1(web::scope("/v1")).default_service(web::to(unknown_route)).wrap(actix_web::middleware::from_fn(crate::auth::middleware))
}

/// A route wrapped with its scope check (outermost) and, for POSTs, idempotency keys.
fn secured(endpoint: Endpoint, route: actix_web::Route) -> actix_web::Route {
    route
        .wrap(actix_web::middleware::from_fn(crate::idempotency::middleware))
        .wrap(actix_web::middleware::from_fn(move |req, next| crate::auth::require(endpoint, req, next)))
}

async fn unknown_route() -> Result<HttpResponse, crate::error::ApiError> {
    Err(crate::error::ApiError::unknown_route())
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(ApiDoc::json())
}

/// Ready when Postgres, Redis and S3 all answer; 503 naming the ones that do not. Their errors go to
/// the log only: they can carry hosts, bucket names and credentials' ids.
async fn readyz(state: web::Data<crate::AppState>) -> Result<HttpResponse, crate::error::ApiError> {
    let mut failing = Vec::new();
    if let Err(error) = sqlx::query("SELECT 1").execute(&state.db).await {
        tracing::warn!(%error, "readyz: postgres");
        failing.push("postgres");
    }
    if let Err(error) = state.queue.ping().await {
        tracing::warn!(%error, "readyz: redis");
        failing.push("redis");
    }
    if let Err(error) = state.s3.head_bucket().bucket(&state.config.s3.bucket).send().await {
        tracing::warn!(error = %aws_sdk_s3::error::DisplayErrorContext(&error), "readyz: s3");
        failing.push("s3");
    }
    if failing.is_empty() {
        Ok(HttpResponse::Ok().body("ready"))
    } else {
        Err(crate::error::ApiError::unavailable(format!("Not ready: {} unavailable.", failing.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use actix_web::{test as actix_test, App};

    use super::*;
    use crate::auth::Principal;

    /// Every operation of the OpenAPI spec is a route of the table, and every route is documented.
    #[test]
    fn the_route_table_is_the_openapi_spec() {
        let spec: serde_json::Value = serde_json::from_str(&ApiDoc::json()).unwrap();
        let documented: BTreeSet<(String, String)> = spec["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |method| (method.to_uppercase(), path.clone())))
            .filter(|(_, path)| path.starts_with("/v1/"))
            .collect();
        let declared: BTreeSet<(String, String)> =
            V1_ROUTES.iter().map(|r| (r.method.to_string(), r.pattern.replace("{id:.*}", "{id}").replace("{name:.*}", "{name}"))).collect();
        assert_eq!(declared, documented);
    }

    /// A handler registered without the table's scope check cannot act for anyone.
    #[actix_web::test]
    async fn a_handler_without_a_declared_scope_is_denied() {
        let app = actix_test::init_service(App::new().route("/undeclared", web::get().to(|_: Principal| async { "reached" }))).await;
        let response = actix_test::call_service(&app, actix_test::TestRequest::get().uri("/undeclared").to_request()).await;
        assert_eq!(response.status(), 403);
    }
}
