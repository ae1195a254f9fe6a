//! The web console at `/console/`: a static page and its scripts, compiled into the binary (no CDN,
//! nothing for a user to build). The assets are public and hold no data; the page signs in with an API
//! key (or token) and calls the same `/v1` API as every other client, so every request it makes is
//! authenticated and scoped exactly like a `curl` call.
//!
//! Assets are looked up by exact name in a fixed table: a path is never joined onto a directory, so no
//! spelling of it can reach anything else.

use actix_web::{web, HttpResponse};

/// Name, content type and body of every asset.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../console/index.html")),
    ("console.css", "text/css; charset=utf-8", include_str!("../console/console.css")),
    ("dom.js", "text/javascript; charset=utf-8", include_str!("../console/dom.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../console/api.js")),
    ("charts.js", "text/javascript; charset=utf-8", include_str!("../console/charts.js")),
    ("options.js", "text/javascript; charset=utf-8", include_str!("../console/options.js")),
    ("views.js", "text/javascript; charset=utf-8", include_str!("../console/views.js")),
    ("job.js", "text/javascript; charset=utf-8", include_str!("../console/job.js")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("../console/console.js")),
];

/// The page may run only its own scripts and styles and talk only to its own origin; it cannot be
/// framed (no clickjacking of the cancel button), and artifact downloads are blob URLs it made.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(|| async { HttpResponse::PermanentRedirect().insert_header(("location", "/console/")).finish() }))
        .route("/console/", web::get().to(|| async { asset("index.html") }))
        .route("/console/{name}", web::get().to(|name: web::Path<String>| async move { asset(&name) }));
}

fn asset(name: &str) -> HttpResponse {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => HttpResponse::Ok()
            .content_type(*content_type)
            .insert_header(("content-security-policy", CSP))
            .insert_header(("x-content-type-options", "nosniff"))
            .insert_header(("referrer-policy", "no-referrer"))
            // Assets change with the binary; revalidating costs one small request per page load.
            .insert_header(("cache-control", "no-cache"))
            .body(*body),
        None => HttpResponse::NotFound().content_type("text/plain; charset=utf-8").body("no such console asset\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};

    #[actix_web::test]
    async fn serves_only_its_own_assets_with_a_strict_policy() {
        let app = test::init_service(App::new().configure(configure)).await;
        let page = test::call_service(&app, test::TestRequest::get().uri("/console/").to_request()).await;
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers().get("content-security-policy").unwrap(), CSP);
        let body = String::from_utf8(test::read_body(page).await.to_vec()).unwrap();
        // Every script the page loads is an asset of the table.
        for script in body.split("src=\"").skip(1).map(|s| s.split('"').next().unwrap()) {
            assert!(ASSETS.iter().any(|(n, _, _)| *n == script), "{script} is not served");
        }
        assert_eq!(test::call_service(&app, test::TestRequest::get().uri("/console").to_request()).await.status(), 308);
        for path in ["/console/..%2Fconfig.default.toml", "/console/%2e%2e/Cargo.toml", "/console/nope.js", "/console/index.html%00"] {
            assert_eq!(test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await.status(), 404, "{path}");
        }
        // Modules import each other by relative name: each import is served.
        for (_, _, body) in ASSETS {
            for import in body.split("from \"./").skip(1).map(|s| s.split('"').next().unwrap()) {
                assert!(ASSETS.iter().any(|(n, _, _)| *n == import), "{import} is imported but not served");
            }
        }
    }
}
