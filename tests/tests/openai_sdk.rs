//! Drop-in compatibility: the official `openai` Python SDK (from the test venv), unmodified and
//! pointed at our API with `base_url`, uploads, lists, creates, pauses, resumes and cancels, and every
//! response validates against the SDK's own types (tests/python/openai_sdk_check.py).

use moetune_e2e::{run_ok, TestEnv};
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn the_official_openai_sdk_works_unmodified(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_sdk_check.py");
    let (base, token) = (env.base.clone(), env.token.clone());
    // python3 is the test venv's (deploy/test puts it first on PATH).
    let stdout = tokio::task::spawn_blocking(move || run_ok(std::process::Command::new("python3").arg(script).arg(base).arg(token)))
        .await
        .unwrap();
    assert!(stdout.contains(" ok"), "{stdout}");
}
