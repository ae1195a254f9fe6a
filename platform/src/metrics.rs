//! Prometheus exposition shared by the binaries: the text format of a registry, and the small
//! `/metrics` + `/healthz` server the scheduler and runners listen on (the api serves `/metrics` on its
//! own port instead).

pub use actix_web::dev::Server;
use prometheus::{Encoder, Registry, TextEncoder};

/// The registry's metrics in the text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out).expect("text encoding cannot fail");
    String::from_utf8(out).expect("prometheus text is UTF-8")
}

/// Binds `GET /metrics` (the registry) and `GET /healthz` on `addr`; the server runs when awaited.
pub fn serve(addr: &str, registry: Registry) -> std::io::Result<Server> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(registry.clone()))
            .route("/metrics", web::get().to(|r: web::Data<Registry>| async move { HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(render(&r)) }))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?;
    Ok(server.run())
}
