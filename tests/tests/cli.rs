//! The `moetune` CLI against the real server: login, uploads (bad lines reported), a job created from
//! a YAML spec and followed to the end, artifacts downloaded and checked, runners, `--json`, and exit
//! codes that mean something.

use std::process::{Command, Output};

use moetune_e2e::{spawn_runner, workspace_binary, TestEnv};
use sqlx::PgPool;

struct Cli {
    config_dir: std::path::PathBuf,
    base: String,
}

impl Cli {
    fn new(base: &str) -> Self {
        let config_dir = std::env::temp_dir().join(format!("moetune-cli-{}", uuid::Uuid::new_v4().simple()));
        Self { config_dir, base: base.to_string() }
    }

    /// Runs `moetune ARGS` (blocking, off the async runtime) with its own config directory.
    async fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(workspace_binary("moetune"));
        command.args(args).env("MOETUNE_CONFIG_DIR", &self.config_dir).env_remove("MOETUNE_API_URL").env_remove("MOETUNE_API_KEY");
        tokio::task::spawn_blocking(move || command.output().expect("moetune runs")).await.unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert_eq!(output.status.code(), Some(0), "moetune {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_cli_runs_a_job_from_login_to_artifacts(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let _runner = spawn_runner(&env, "cli-runner");
    let cli = Cli::new(&env.base);

    assert_eq!(cli.run(&["jobs", "list"]).await.status.code(), Some(5), "not logged in");
    assert_eq!(cli.run(&["login", "--base-url", &cli.base, "--token", "not-a-token"]).await.status.code(), Some(3));
    cli.ok(&["login", "--base-url", &cli.base, "--token", &env.token]).await;
    let saved = cli.config_dir.join("credentials.toml");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&saved).unwrap().permissions()) & 0o777, 0o600);

    // A bad dataset: exit 3, the line at fault named.
    let bad = cli.config_dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": 7}\n").unwrap();
    let refused = cli.run(&["files", "upload", bad.to_str().unwrap()]).await;
    assert_eq!(refused.status.code(), Some(3));
    assert!(text(&refused.stderr).contains("line 2"), "{}", text(&refused.stderr));

    // A job from a YAML spec, uploaded and followed to the end in one command.
    let spec = cli.config_dir.join("job.yaml");
    std::fs::write(&spec, "model: moetune/tiny-mixtral\nsuffix: cli\nmethod:\n  type: moe_sft_qat\n  moe_sft_qat:\n    max_steps: 6\n    qat: {steps: 2}\n").unwrap();
    let dataset = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo/finance-alpaca-mini.jsonl");
    let followed = cli.run(&["jobs", "create", "-f", spec.to_str().unwrap(), "--upload", dataset, "--follow"]).await;
    let (stdout, stderr) = (text(&followed.stdout), text(&followed.stderr));
    assert_eq!(followed.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("succeeded") && stdout.contains(":cli:"), "{stdout}");
    assert!(stderr.contains("sft step 6/6: loss") && stderr.contains("qat step 2/2"), "progress without a terminal is one line per step:\n{stderr}");
    let job_id = stdout.split_whitespace().next().unwrap().to_string();

    // --json: one object per line.
    let listed = cli.ok(&["--json", "jobs", "list"]).await;
    let jobs: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(jobs[0]["id"], job_id.as_str());
    assert_eq!(jobs[0]["status"], "succeeded");

    let out = cli.config_dir.join("artifacts");
    let saved = cli.ok(&["--json", "artifacts", "download", &job_id, "merged/config.json", "adapter/adapter_model.safetensors", "-o", out.to_str().unwrap()]).await;
    assert_eq!(saved.lines().count(), 2);
    assert!(saved.lines().all(|l| l.contains("\"sha256_ok\":true")), "{saved}");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("merged/config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "MixtralForCausalLM");
    assert_eq!(cli.run(&["artifacts", "download", &job_id, "no/such/file"]).await.status.code(), Some(3));

    // An estimate of a longer job on the same file, timed by what the first one measured; then that
    // job, whose duration the estimate is compared with.
    let job = serde_json::from_str::<serde_json::Value>(&cli.ok(&["--json", "jobs", "get", &job_id]).await).unwrap();
    let longer = cli.config_dir.join("longer.yaml");
    let training_file = job["training_file"].as_str().unwrap();
    std::fs::write(&longer, format!("model: moetune/tiny-mixtral\ntraining_file: {training_file}\nmethod:\n  type: moe_sft_qat\n  moe_sft_qat:\n    max_steps: 60\n    log_every_n_steps: 5\n    qat: {{steps: 15}}\n")).unwrap();
    let described = cli.ok(&["jobs", "estimate", "-f", longer.to_str().unwrap()]).await;
    assert!(described.contains("60 SFT + 15 QAT steps") && described.contains("cpu") && described.contains("fits;") && described.contains("over 1 recent jobs"), "{described}");
    let estimate: serde_json::Value = serde_json::from_str(&cli.ok(&["--json", "jobs", "estimate", "-f", longer.to_str().unwrap()]).await).unwrap();
    let cpu = estimate["runner_classes"].as_array().unwrap().iter().find(|c| c["class"] == "cpu").expect("the CPU class").clone();
    assert_eq!(cpu["measured"]["jobs"], 1, "{estimate:#}");
    // Calibrated by the first job, the plan's tokens are what that job trained per planned token.
    let first_ratio = job["trained_tokens"].as_f64().unwrap() / (8.0 * 4.0 * estimate["plan"]["tokens_per_sequence"].as_f64().unwrap());
    assert!((estimate["tokens_per_estimated_token"].as_f64().unwrap() / first_ratio - 1.0).abs() < 0.01, "{estimate:#}");
    let created = cli.ok(&["--json", "jobs", "create", "-f", longer.to_str().unwrap(), "--follow"]).await;
    let longer_id = serde_json::from_str::<serde_json::Value>(created.lines().next().unwrap()).unwrap()["id"].as_str().unwrap().to_string();
    let (trained_tokens, actual): (i64, f64) =
        sqlx::query_as("SELECT trained_tokens, extract(epoch FROM finished_at - started_at)::float8 FROM jobs WHERE id = $1").bind(&longer_id).fetch_one(&pool).await.unwrap();
    let expected = cpu["expected_duration_seconds"].as_f64().unwrap();
    let expected_tokens = estimate["expected_trained_tokens"].as_f64().unwrap();
    eprintln!("estimate: {expected:.1} s and {expected_tokens} tokens; the job: {actual:.1} s and {trained_tokens} tokens");
    assert!((0.4..2.5).contains(&(expected / actual)), "estimated {expected:.1} s, took {actual:.1} s");
    assert!((0.7..1.4).contains(&(expected_tokens / trained_tokens as f64)), "estimated {expected_tokens} tokens, trained {trained_tokens}");

    // Its expert-usage check (step 50): the means and drift, then a line per MoE layer.
    let usage = cli.ok(&["jobs", "usage", &longer_id]).await;
    let lines: Vec<&str> = usage.lines().collect();
    assert!(lines[0].starts_with("sft step 50 (attempt 1): top1_share ") && lines[0].contains("routing drift 0."), "{usage}");
    assert_eq!(lines.iter().filter(|l| l.trim_start().starts_with("layer ") && l.contains("shares % [")).count(), 2, "{usage}");
    let check: serde_json::Value = serde_json::from_str(&cli.ok(&["--json", "jobs", "usage", &longer_id]).await).unwrap();
    assert_eq!((check["object"].as_str(), check["layers"][0]["shares"].as_array().map(Vec::len)), (Some("fine_tuning.job.expert_usage"), Some(4)), "{check:#}");

    // The routing profile of the dataset the first job trained on: run and waited for, then read back.
    let job: serde_json::Value = serde_json::from_str(&cli.ok(&["--json", "jobs", "get", &job_id]).await).unwrap();
    let file = job["training_file"].as_str().unwrap();
    let profiled = cli.ok(&["files", "profile", file, "--model", "moetune/tiny-mixtral", "--max-examples", "16", "--wait"]).await;
    assert!(profiled.lines().next().unwrap().contains("succeeded"), "{profiled}");
    assert_eq!(profiled.lines().filter(|l| l.trim_start().starts_with("layer ") && l.contains("top-k shares % [")).count(), 2, "{profiled}");
    let read: serde_json::Value = serde_json::from_str(&cli.ok(&["--json", "files", "routing-profile", file]).await).unwrap();
    assert_eq!((read["status"].as_str(), read["training"]["examples"].as_u64()), (Some("succeeded"), Some(16)), "{read:#}");
    assert_eq!(cli.run(&["files", "profile", file, "--model", "moetune/tiny-mixtral", "--max-examples", "0"]).await.status.code(), Some(2), "bad usage");

    // A cancelled job: follow ends with exit 1.
    let created = cli.ok(&["--json", "jobs", "create", "-f", spec.to_str().unwrap(), "--upload", dataset]).await;
    let cancelled_id = serde_json::from_str::<serde_json::Value>(created.lines().last().unwrap()).unwrap()["id"].as_str().unwrap().to_string();
    cli.ok(&["jobs", "cancel", &cancelled_id]).await;
    assert_eq!(cli.run(&["jobs", "follow", &cancelled_id]).await.status.code(), Some(1));

    // Runners need an admin credential: refused (403 → exit 3), then listed with one.
    assert_eq!(cli.run(&["runners", "list"]).await.status.code(), Some(3));
    let admin = env.admin_token().await;
    let runners = cli.ok(&["--token", &admin, "runners", "list"]).await;
    assert!(runners.contains("cli-runner"), "{runners}");
    let unknown = cli.run(&["jobs", "get", "ftjob-nope"]).await;
    assert_eq!(unknown.status.code(), Some(3));
    assert!(text(&unknown.stderr).contains("No fine-tuning job found with id 'ftjob-nope'. (not_found)"), "{}", text(&unknown.stderr));
    std::fs::remove_dir_all(&cli.config_dir).ok();
}
