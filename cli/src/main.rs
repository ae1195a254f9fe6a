//! `moetune`: the command line for the moetune API, built on the generated Rust SDK.
//!
//! Exit codes: 0 done (a followed job succeeded); 1 a followed job failed or was cancelled, or a
//! download did not match its checksum; 2 bad usage; 3 the API refused the request (4xx: the message
//! says why); 4 the API could not be reached or failed (5xx); 5 not logged in.

mod config;
mod follow;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures_util::TryStreamExt;
use moetune_client::{types, Client};
use sha2::Digest;

#[derive(Parser)]
#[command(name = "moetune", version, about = "Fine-tune Mixture-of-Experts models on moetune")]
struct Cli {
    /// API base URL (default: the one saved by `moetune login`).
    #[arg(long, global = true, env = "MOETUNE_API_URL")]
    base_url: Option<String>,
    /// Bearer token or mtk- API key (default: the one saved by `moetune login`).
    #[arg(long, global = true, env = "MOETUNE_API_KEY", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON (one object per line for streams) instead of text, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a credential against the API and save it with the URL (mode 0600).
    Login {
        #[arg(long)]
        base_url: String,
        /// The token or API key; read from stdin when absent.
        #[arg(long)]
        token: Option<String>,
    },
    /// Datasets.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Fine-tuning jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// What jobs produced.
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// The runner pool (needs an admin credential).
    #[command(subcommand)]
    Runners(RunnersCommand),
}

#[derive(Subcommand)]
enum FilesCommand {
    /// Upload a JSONL dataset, with a progress bar; bad lines are reported with their numbers.
    Upload {
        path: PathBuf,
        #[arg(long, default_value = "fine-tune")]
        purpose: String,
    },
    List,
    /// Profile how a base model routes a dataset (a short job on a runner): per MoE layer, every
    /// expert's share of the tokens and the dead experts. --wait polls until it ends and prints it.
    Profile {
        id: String,
        #[arg(long)]
        model: String,
        /// How many examples (the first ones) to route: 1 to 10000 (default 256).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        max_examples: Option<u32>,
        /// Another dataset, such as a job's validation file, profiled the same way.
        #[arg(long)]
        validation_file: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// The newest routing profile of a dataset (under --model, when given).
    RoutingProfile {
        id: String,
        #[arg(long)]
        model: Option<String>,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Create a job from a YAML or JSON spec (the body of POST /v1/fine_tuning/jobs).
    Create {
        /// The spec file; `-` reads stdin.
        #[arg(short = 'f', long = "file")]
        spec: PathBuf,
        /// Upload this dataset first and use it as `training_file`.
        #[arg(long)]
        upload: Option<PathBuf>,
        /// Follow the job until it ends (exit code as `jobs follow`).
        #[arg(long)]
        follow: bool,
    },
    /// Estimate a job from the same spec as `create`, creating nothing: steps, tokens, memory, the
    /// runner classes that fit it and the expected duration on each.
    Estimate {
        /// The spec file; `-` reads stdin.
        #[arg(short = 'f', long = "file")]
        spec: PathBuf,
        /// Upload this dataset first and use it as `training_file`.
        #[arg(long)]
        upload: Option<PathBuf>,
    },
    /// Follow a job live: a progress bar with step, loss, learning rate and ETA; monitor alerts stand out.
    Follow { id: String },
    Get { id: String },
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    Cancel { id: String },
    /// The expert-usage monitor's checks, newest first: per MoE layer, each expert's share of the
    /// routed tokens and the routing drift from the base model.
    Usage {
        id: String,
        #[arg(long, default_value_t = 1)]
        limit: i64,
    },
}

#[derive(Subcommand)]
enum ArtifactsCommand {
    List { job: String },
    /// Download artifacts (all, or the names given), checking each one's sha256.
    Download {
        job: String,
        names: Vec<String>,
        #[arg(short, long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum RunnersCommand {
    List,
}

/// An error with the exit code it means.
struct Failure {
    code: u8,
    message: String,
}

impl<E: serde::Serialize + std::fmt::Debug> From<moetune_client::Error<E>> for Failure {
    fn from(error: moetune_client::Error<E>) -> Self {
        match &error {
            moetune_client::Error::ErrorResponse(response) if response.status().is_client_error() => {
                // The API's error body: its message says what to fix, its code is stable.
                let body = serde_json::to_value(response.as_ref()).unwrap_or_default();
                let message = match (body["error"]["message"].as_str(), body["error"]["code"].as_str()) {
                    (Some(message), Some(code)) => format!("{}: {message} ({code})", response.status()),
                    _ => format!("{}: {:?}", response.status(), response.as_ref()),
                };
                Failure { code: 3, message }
            }
            _ if error.status().is_some_and(|s| s.is_client_error()) => Failure { code: 3, message: error.to_string() },
            _ => Failure { code: 4, message: error.to_string() },
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure { code: 4, message: format!("{error:#}") }
    }
}

impl From<moetune_client::UploadError> for Failure {
    fn from(error: moetune_client::UploadError) -> Self {
        let code = match &error {
            moetune_client::UploadError::Api { status, .. } if status.is_client_error() => 3,
            _ => 4,
        };
        let mut message = error.to_string();
        if let moetune_client::UploadError::Api { body, .. } = &error {
            for line in body.error.lines.iter().flatten() {
                message.push_str(&format!("\n  line {}: {}", line.line, line.message));
            }
        }
        Failure { code, message }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("moetune: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// The client from the flags, the environment or the saved login.
fn connect(cli: &Cli) -> Result<(Client, String, String), Failure> {
    let saved = config::load()?;
    let base = cli.base_url.clone().or_else(|| saved.as_ref().map(|c| c.base_url.clone()));
    let token = cli.token.clone().or_else(|| saved.as_ref().map(|c| c.token.clone()));
    let (Some(base), Some(token)) = (base, token) else {
        return Err(Failure { code: 5, message: "not logged in: run `moetune login --base-url URL` (or set MOETUNE_API_URL and MOETUNE_API_KEY)".into() });
    };
    let client = Client::with_token(&base, &token).map_err(|e| Failure { code: 4, message: e.to_string() })?;
    Ok((client, base, token))
}

fn print<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string(value).expect("API objects serialize"));
    } else {
        println!("{}", text());
    }
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    if let Command::Login { base_url, token } = &cli.command {
        return login(base_url, token.clone()).await;
    }
    let (client, base, token) = connect(&cli)?;
    let json = cli.json;
    match cli.command {
        Command::Login { .. } => unreachable!("handled above"),
        Command::Files(FilesCommand::Upload { path, purpose }) => {
            let file = upload(&client, &path, &purpose, json).await?;
            print(json, &file, || format!("{}  {} examples ({}), {} bytes", file.id, file.example_count.unwrap_or(0), file.format.clone().unwrap_or_default(), file.bytes));
        }
        Command::Files(FilesCommand::List) => {
            let files = client.files_list().send().await?.into_inner();
            for file in &files.data {
                print(json, file, || format!("{}  {:>10} bytes  {:<9}  {}", file.id, file.bytes, file.status, file.filename));
            }
        }
        Command::Files(FilesCommand::Profile { id, model, max_examples, validation_file, wait }) => {
            let request = types::CreateRoutingProfileRequest { model: model.clone(), max_examples: max_examples.and_then(std::num::NonZeroU32::new), validation_file, seq_len: None };
            let mut profile = client.files_create_routing_profile().id(&id).body(request).send().await?.into_inner();
            while wait && !finished(&profile.status) {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                profile = client.files_routing_profile().id(&id).model(&model).send().await?.into_inner();
            }
            print(json, &profile, || describe_profile(&profile));
            if wait && profile.status.to_string() != "succeeded" {
                return Ok(1);
            }
        }
        Command::Files(FilesCommand::RoutingProfile { id, model }) => {
            let mut request = client.files_routing_profile().id(&id);
            if let Some(model) = &model {
                request = request.model(model);
            }
            let profile = request.send().await?.into_inner();
            print(json, &profile, || describe_profile(&profile));
        }
        Command::Jobs(JobsCommand::Create { spec, upload: dataset, follow }) => {
            let request = job_request(&client, &spec, dataset, json).await?;
            let job = client.fine_tuning_create().body(request).send().await?.into_inner();
            print(json, &job, || format!("{}  {}", job.id, job.status));
            if follow {
                return follow::follow(&client, &base, &token, &job.id, json).await;
            }
        }
        Command::Jobs(JobsCommand::Estimate { spec, upload: dataset }) => {
            let request = job_request(&client, &spec, dataset, json).await?;
            let estimate = client.fine_tuning_estimate().body(request).send().await?.into_inner();
            print(json, &estimate, || describe_estimate(&estimate));
        }
        Command::Jobs(JobsCommand::Follow { id }) => return follow::follow(&client, &base, &token, &id, json).await,
        Command::Jobs(JobsCommand::Get { id }) => {
            let job = client.fine_tuning_retrieve().id(&id).send().await?.into_inner();
            print(json, &job, || serde_json::to_string_pretty(&job).expect("serializes"));
        }
        Command::Jobs(JobsCommand::List { limit }) => {
            let jobs = client.fine_tuning_list().limit(limit).send().await?.into_inner();
            for job in &jobs.data {
                print(json, job, || format!("{}  {:<16}  {}", job.id, job.status.to_string(), job.fine_tuned_model.clone().unwrap_or_else(|| job.model.clone())));
            }
        }
        Command::Jobs(JobsCommand::Cancel { id }) => {
            let job = client.fine_tuning_cancel().id(&id).send().await?.into_inner();
            print(json, &job, || format!("{}  {}", job.id, job.status));
        }
        Command::Jobs(JobsCommand::Usage { id, limit }) => {
            let checks = client.fine_tuning_expert_usage().id(&id).limit(limit).send().await?.into_inner();
            for check in &checks.data {
                print(json, check, || describe_usage(check));
            }
        }
        Command::Artifacts(ArtifactsCommand::List { job }) => {
            for artifact in client.fine_tuning_list_artifacts().id(&job).send().await?.into_inner().data {
                print(json, &artifact, || format!("{:<32}  {:>12} bytes  sha256 {}", artifact.name, artifact.bytes, artifact.sha256));
            }
        }
        Command::Artifacts(ArtifactsCommand::Download { job, names, out }) => return download(&client, &job, &names, &out, json).await,
        Command::Runners(RunnersCommand::List) => {
            for runner in client.admin_list_runners().send().await?.into_inner().data {
                print(json, &runner, || format!("{:<24}  {:<8}  jobs {:?}", runner.id, runner.state, runner.current_jobs));
            }
        }
    }
    Ok(0)
}

fn finished(status: &types::JobStatus) -> bool {
    matches!(status.to_string().as_str(), "succeeded" | "failed" | "cancelled")
}

/// A routing profile: its state, then per file and MoE layer the dead experts, the concentration and
/// each expert's share of the top-k choices in percent.
fn describe_profile(p: &types::RoutingProfileObject) -> String {
    let mut lines = vec![format!("{} under {}: {} ({} examples at most)", p.file_id, p.model, p.status, p.max_examples)];
    if let Some(error) = &p.error {
        lines.push(format!("  error: {}", error.message));
    }
    for (what, profile) in [("training", &p.training), ("validation", &p.validation)] {
        let Some(profile) = profile else { continue };
        lines.push(format!("{what}: {} tokens of {} examples, top-{}", profile.tokens, profile.examples, profile.top_k));
        for layer in &profile.layers {
            let shares: Vec<String> = layer.topk_share.iter().map(|s| format!("{:.0}", 100.0 * s)).collect();
            lines.push(format!(
                "  layer {:>3}: entropy {:.3}  KL {:.3}  dead {:?}  top-k shares % [{}]",
                layer.layer,
                layer.entropy_norm,
                layer.kl_to_uniform,
                layer.dead_experts,
                shares.join(" ")
            ));
        }
    }
    lines.join("\n")
}

/// One monitor check: the means and the drift, then each layer's expert shares in percent.
fn describe_usage(check: &types::ExpertUsage) -> String {
    let drift = check.routing_drift.map(|d| format!("  routing drift {d:.3}")).unwrap_or_default();
    let verdict = match (check.alert, check.drift_exceeded) {
        (true, true) => "  ALERT: router collapse; routing drift over monitor.max_routing_drift",
        (true, false) => "  ALERT: router collapse",
        (false, true) => "  ALERT: routing drift over monitor.max_routing_drift",
        (false, false) => "",
    };
    let mut lines = vec![format!(
        "{} step {} (attempt {}): top1_share {:.3}  entropy_norm {:.3}{drift}{verdict}{}",
        check.stage,
        check.step,
        check.attempt,
        check.mean_top1_share,
        check.mean_entropy_norm,
        check.action.as_ref().map(|a| format!("  action: {a}")).unwrap_or_default()
    )];
    for layer in &check.layers {
        let shares: Vec<String> = layer.shares.iter().map(|s| format!("{:.0}", 100.0 * s)).collect();
        let agreement = layer.base_agreement.map(|a| format!("  base agreement {a:.3}")).unwrap_or_default();
        lines.push(format!("  layer {:>3}: top1 {:.3}  entropy {:.3}{agreement}  shares % [{}]", layer.layer, layer.top1_share, layer.entropy_norm, shares.join(" ")));
    }
    lines.join("\n")
}

/// An estimate as a few lines: the plan, the memory, then one line per runner class.
fn describe_estimate(e: &types::JobEstimate) -> String {
    let gib = |bytes: i64| bytes as f64 / (1u64 << 30) as f64;
    let mut lines = vec![
        format!(
            "{} ({}): {} SFT + {} QAT steps of {} sequences, ~{} trained tokens",
            e.model, e.method, e.plan.sft_steps, e.plan.qat_steps, e.plan.sequences_per_step, e.expected_trained_tokens
        ),
        format!("memory: {:.2} GiB on a GPU, {:.2} GiB on a CPU host", gib(e.requirements.memory_bytes), gib(e.requirements.cpu_memory_bytes.unwrap_or(e.requirements.memory_bytes))),
    ];
    if let Some(reason) = &e.reason {
        lines.push(format!("does not fit: {reason}"));
    }
    for class in &e.runner_classes {
        let duration = match (class.expected_duration_seconds, class.measured.as_ref()) {
            (Some(seconds), Some(m)) => format!("~{:.0} s ({:.0} tokens/s over {} recent jobs)", seconds, m.tokens_per_second, m.jobs),
            _ => "no recent job of this model and method to time it by".into(),
        };
        let fit = class.reason.clone().unwrap_or_else(|| "fits".into());
        lines.push(format!("  {:<20} {} runner(s)  {fit}; {duration}", class.class, class.runners));
    }
    lines.join("\n")
}

async fn login(base_url: &str, token: Option<String>) -> Result<u8, Failure> {
    let token = match token {
        Some(token) => token,
        None => {
            eprintln!("Paste your token or API key:");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the token")?;
            line.trim().to_string()
        }
    };
    let client = Client::with_token(base_url, &token).map_err(|e| Failure { code: 4, message: e.to_string() })?;
    // Any authenticated read proves the credential; the model list needs only models:read.
    client.models_list().send().await?;
    let path = config::save(&config::Credentials { base_url: base_url.trim_end_matches('/').to_string(), token })?;
    eprintln!("Logged in to {base_url}; saved to {}", path.display());
    Ok(0)
}

/// The job body in `spec`, with `dataset` uploaded first as its `training_file` when given.
async fn job_request(client: &Client, spec: &PathBuf, dataset: Option<PathBuf>, quiet: bool) -> Result<types::CreateJobRequest, Failure> {
    let mut body = read_spec(spec)?;
    if let Some(path) = dataset {
        let file = upload(client, &path, "fine-tune", quiet).await?;
        body["training_file"] = serde_json::Value::String(file.id);
    }
    serde_json::from_value(body).map_err(|e| Failure { code: 3, message: format!("{}: {e}", spec.display()) })
}

fn read_spec(path: &PathBuf) -> Result<serde_json::Value, Failure> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the spec from stdin")?
    } else {
        std::fs::read_to_string(path).map_err(|e| Failure { code: 2, message: format!("{}: {e}", path.display()) })?
    };
    // YAML is a superset of JSON: one parser reads both.
    serde_yaml_ng::from_str(&text).map_err(|e| Failure { code: 2, message: format!("{} is neither YAML nor JSON: {e}", path.display()) })
}

async fn upload(client: &Client, path: &PathBuf, purpose: &str, quiet: bool) -> Result<types::FileObject, Failure> {
    let file = tokio::fs::File::open(path).await.map_err(|e| Failure { code: 2, message: format!("{}: {e}", path.display()) })?;
    let length = file.metadata().await.context("reading the file's size")?.len();
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(length) };
    bar.set_style(indicatif::ProgressStyle::with_template("uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}").expect("valid template").progress_chars("=> "));
    let counter = bar.clone();
    let stream = tokio_util::io::ReaderStream::new(file).inspect_ok(move |chunk| counter.inc(chunk.len() as u64));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data.jsonl".into());
    let result = client.upload_file(purpose, &name, reqwest::Body::wrap_stream(stream), length).await;
    bar.finish_and_clear();
    Ok(result?)
}

async fn download(client: &Client, job: &str, names: &[String], out: &std::path::Path, json: bool) -> Result<u8, Failure> {
    let artifacts = client.fine_tuning_list_artifacts().id(job).send().await?.into_inner().data;
    if let Some(missing) = names.iter().find(|n| !artifacts.iter().any(|a| &a.name == *n)) {
        return Err(Failure { code: 3, message: format!("job {job} has no artifact {missing}; `moetune artifacts list {job}` shows them") });
    }
    let mut mismatched = false;
    for artifact in artifacts.iter().filter(|a| names.is_empty() || names.contains(&a.name)) {
        let target = out.join(&artifact.name);
        std::fs::create_dir_all(target.parent().expect("under out")).context("creating the output directory")?;
        let stream = client.fine_tuning_download_artifact().id(job).name(&artifact.name).send().await?.into_inner();
        let partial = PathBuf::from(format!("{}.partial", target.display()));
        let mut file = tokio::fs::File::create(&partial).await.context("creating the output file")?;
        let mut hasher = sha2::Sha256::new();
        let mut body = stream.into_inner();
        while let Some(chunk) = body.try_next().await.map_err(|e| Failure { code: 4, message: format!("downloading {}: {e}", artifact.name) })? {
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await.context("writing")?;
        }
        let ok = hex::encode(hasher.finalize()) == artifact.sha256;
        if ok {
            // Only a verified file takes the name: a failed download leaves no file that looks complete.
            std::fs::rename(&partial, &target).context("placing the file")?;
        }
        mismatched |= !ok;
        let report = serde_json::json!({"name": artifact.name, "path": target, "bytes": artifact.bytes, "sha256_ok": ok});
        print(json, &report, || format!("{} {}  ({} bytes)", if ok { "saved" } else { "CHECKSUM MISMATCH, kept as .partial:" }, target.display(), artifact.bytes));
    }
    Ok(if mismatched { 1 } else { 0 })
}
