//! The checked-in contract holds on a running server: schemathesis (from the test venv) generates
//! requests for every operation in openapi/openapi.json, in every phase (explicit examples, coverage
//! of the schema's edge values, random fuzzing, and stateful sequences that feed one response's ids into
//! the next request), and checks that none gets a 5xx, and that every response's status code, content
//! type and body are the ones the schema documents.

use std::process::Command;

use moetune_api::auth::Scope;
use moetune_e2e::TestEnv;
use serde_json::{json, Value};
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn schemathesis_finds_no_server_errors_or_schema_violations(pool: PgPool) {
    // No request rate limit here: generated requests should reach the handlers, not the limiter.
    let env = TestEnv::start_with(pool, |c| c.rate_limits.requests_per_second = 0.0).await;
    // Real resources, so generated requests also reach the paths where ids exist.
    let file: Value = env.upload("fine-tune", "d.jsonl", b"{\"prompt\": \"a\", \"completion\": \"b\"}\n".to_vec()).await.json().await.unwrap();
    env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]})).await;
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    let report = std::env::temp_dir().join(format!("schemathesis-{}", std::process::id()));
    let base = env.base.clone();
    let all_scopes: Vec<Scope> = Scope::TENANT.into_iter().chain([Scope::Admin]).collect();
    let token = env.token_for("acme", Some(&all_scopes)).await;
    // Hypothesis itself occasionally crashes mid-run ("Runtime Error", an IndexError in its optimise
    // pass) after every generated case passed. That is the tool failing, not the API: such a run is
    // repeated with the next seed. Any check failure (a "Failures:" section) fails the test at once.
    let mut seed = 1;
    let output = loop {
        let (spec, base, token, report) = (spec.to_string(), base.clone(), token.clone(), report.clone());
        let output = tokio::task::spawn_blocking(move || {
            Command::new("schemathesis")
                .args(["run", &spec, "--url", &base, "--header", &format!("Authorization: Bearer {token}")])
                .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
                // No example database: each run starts fresh, as in CI (a database replayed against a
                // changed schema is what trips hypothesis up most).
                .args(["--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "50"])
                .args(["--seed", &seed.to_string(), "--workers", "2", "--generation-database", "none", "--no-color", "--report-dir"])
                .arg(&report)
                .output()
        })
        .await
        .unwrap()
        .expect("schemathesis runs (it is installed in the test venv by deploy/test)");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let tool_crashed = stdout.contains("Runtime Error") && !stdout.contains("Failures:");
        if output.status.success() || !tool_crashed || seed == 3 {
            break (output.status.success(), stdout, String::from_utf8_lossy(&output.stderr).to_string());
        }
        eprintln!("schemathesis crashed internally with seed {seed} (no check failed); running again");
        seed += 1;
    };
    let (success, stdout, stderr) = output;
    assert!(success, "schemathesis found problems:\n{stdout}\n{stderr}");
    for phase in ["Coverage", "Fuzzing", "Stateful"] {
        assert!(stdout.contains(&format!("✅ {phase}")), "the {phase} phase did not run:\n{stdout}");
    }
}

/// The spec the server serves is the checked-in one, and the docs page works with nothing from a CDN.
#[sqlx::test(migrations = "../migrations")]
async fn the_served_spec_is_the_checked_in_one_and_docs_are_self_contained(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let served: Value = env.http.get(env.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let checked_in: Value = serde_json::from_str(include_str!("../../openapi/openapi.json")).unwrap();
    assert_eq!(served, checked_in);
    let redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let docs = redirect.get(env.url("/docs")).send().await.unwrap();
    assert_eq!((docs.status().as_u16(), docs.headers()["location"].to_str().unwrap()), (302, "/docs/"));
    let page = env.http.get(env.url("/docs/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(!page.contains("https://"), "the docs page loads something from the network:\n{page}");
    for asset in ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-initializer.js"] {
        let response = env.http.get(env.url(&format!("/docs/{asset}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
    }
}

/// docs/api.md lists every error code with the status and type the code's table gives it.
#[test]
fn every_error_code_is_documented_with_its_status() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    for code in moetune_types::ErrorCode::ALL {
        let row = format!("| `{}` | {} | `{}` |", code.as_str(), code.http_status(), code.error_type().as_str());
        assert!(docs.contains(&row), "docs/api.md lacks the row {row}");
    }
}
