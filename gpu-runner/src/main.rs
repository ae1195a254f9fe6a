use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use moetune_runner::config::RunnerConfig;
use moetune_runner::{commands, export, model, train, worker::Worker};
use moetune_types::{MoeSftQatOptions, Mxfp4ScaleRule, QatFormat, TrainingSpec};

#[derive(Parser)]
#[command(name = "moetune-runner", about = "moetune GPU runner: MoE SFT → QAT with libtorch")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Claim jobs from Redis and run them (the default).
    Serve,
    /// Run the SFT → QAT workflow on local JSONL files without any services; writes every job output
    /// (merged/, adapter/, mxfp4|nvfp4/, eval_report.json) under OUT.
    Train {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        validation_data: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "moetune/tiny-mixtral")]
        model: String,
        /// `method.moe_sft_qat` options as JSON (inline or @file), exactly as the API takes them.
        #[arg(long, default_value = "{}")]
        options: String,
        #[arg(long, default_value_t = 4)]
        batch_size: u32,
        #[arg(long, default_value_t = 1)]
        n_epochs: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Keep checkpoints here (DIR/<name>/, DIR/latest).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Continue from a checkpoint directory.
        #[arg(long)]
        resume: Option<PathBuf>,
        #[command(flatten)]
        parallel: DataParallelArgs,
    },
    /// The miniature fidelity experiment: pre-train the tiny MoE on synthetic domains, fine-tune on a
    /// held-out one through SFT → PTQ → QAT, and exercise the expert-usage monitor. Writes OUT/fidelity.json;
    /// exits non-zero when an acceptance check fails.
    Fidelity {
        #[arg(long)]
        out: PathBuf,
    },
    /// Post-training quantization: write MODEL_DIR's FP4 checkpoint (MXFP4 gpt-oss layout or NVFP4
    /// modelopt layout) to OUT.
    Quantize {
        model_dir: PathBuf,
        #[arg(long, value_parser = ["mxfp4", "nvfp4"])]
        format: String,
        /// MXFP4 block scales: `ocp` 2^(floor(log2 amax) - 2), or `ceil` 2^ceil(log2(amax / 6)) as modelopt.
        #[arg(long, value_parser = ["ocp", "ceil"], default_value = "ocp")]
        mxfp4_scale_rule: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Describe a Hugging Face model directory as JSON: architecture, parameter counts (total and
    /// active per token), dtype on disk and estimated peak training memory for lora, full and qat.
    Inspect {
        model_dir: PathBuf,
        /// Sequences per micro-batch of the job the estimate is for.
        #[arg(long, default_value_t = 1)]
        batch: u32,
        /// The job's `method.moe_sft_qat` options as JSON (sft_method, lora, seq_len, precision,
        /// gradient_checkpointing, base_expert_format, qat, ...); defaults as in a job.
        #[arg(long, default_value = "{}")]
        options: String,
    },
    /// Forward pass on token ids: IDS.json is a list of equal-length lists of ids. Writes `logits`
    /// [B,T,V] f32 and `router_topk.{layer}` [B·T,k] i64 per MoE layer to OUT (safetensors).
    Logits {
        model_dir: PathBuf,
        /// A PEFT LoRA adapter directory applied on top of MODEL_DIR.
        #[arg(long)]
        adapter: Option<PathBuf>,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        placement: Placement,
    },
    /// Greedy generation (no sampling, no KV cache): for sanity checks and evaluation prompts.
    Generate {
        model_dir: PathBuf,
        /// Text to continue (tokenised without special tokens; BOS added when the tokenizer has one).
        #[arg(long, conflicts_with = "ids")]
        prompt: Option<String>,
        /// Comma-separated token ids to continue.
        #[arg(long, value_delimiter = ',')]
        ids: Option<Vec<i64>>,
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        #[command(flatten)]
        placement: Placement,
    },
    /// Show what the model trains on for each line of a JSONL dataset: the rendered prompt and
    /// response (chat template or plain template), token ids and labels (-100 = no loss).
    Tokenize {
        model_dir: PathBuf,
        #[arg(long)]
        data: PathBuf,
    },
    /// The routing profile of a dataset under MODEL_DIR (JSON on stdout): per MoE layer, every
    /// expert's share of the first choices and of the top-k choices, dead experts, entropy and KL to
    /// uniform. Of the first --max-examples examples of --data, or of the token ids in --input.
    RoutingProfile {
        model_dir: PathBuf,
        #[arg(long, conflicts_with = "input")]
        data: Option<PathBuf>,
        /// A JSON list of equal-length lists of token ids (every position counted).
        #[arg(long)]
        input: Option<PathBuf>,
        #[arg(long, default_value_t = 256)]
        max_examples: usize,
        #[arg(long, default_value_t = 2048)]
        seq_len: usize,
        #[command(flatten)]
        placement: Placement,
    },
    /// Write every parameter under its in-memory name (fused experts) as f32 safetensors.
    DumpWeights {
        model_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Data-parallel training across processes (one per GPU, or CPU processes with Gloo): start the same
/// command once per rank with its `--rank`. Rank 0 serves the rendezvous store at `--rendezvous`; rank 0
/// alone prints events, records checkpoints as complete and writes the outputs. On CUDA each rank takes
/// the GPU `LOCAL_RANK` names (else its rank modulo the GPUs visible).
#[derive(clap::Args)]
struct DataParallelArgs {
    /// Processes training the job together.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    world_size: u32,
    /// This process's rank, 0 ≤ rank < world size.
    #[arg(long, default_value_t = 0)]
    rank: u32,
    /// HOST:PORT of the rendezvous store that rank 0 serves (needed when the world size is over 1).
    #[arg(long)]
    rendezvous: Option<String>,
    /// The address this rank's Gloo transport binds to (default: what the host name resolves to).
    #[arg(long)]
    bind: Option<String>,
    /// Seconds to wait for the other ranks to join, and for any collective.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout_seconds: u64,
}

impl DataParallelArgs {
    fn rendezvous(&self) -> anyhow::Result<Option<moetune_c10d::Rendezvous>> {
        anyhow::ensure!(self.rank < self.world_size, "--rank {} must be below --world-size {}", self.rank, self.world_size);
        if self.world_size == 1 {
            let stray = [("--rendezvous", self.rendezvous.is_some()), ("--bind", self.bind.is_some())].into_iter().find(|(_, given)| *given);
            if let Some((flag, _)) = stray {
                anyhow::bail!("{flag} is for a data-parallel run: give --world-size (the number of ranks) too");
            }
            return Ok(None);
        }
        let address = self.rendezvous.as_deref().context("--rendezvous HOST:PORT is required with --world-size over 1")?;
        let (host, port) = address.rsplit_once(':').context("--rendezvous must be HOST:PORT")?;
        anyhow::ensure!(!host.is_empty(), "--rendezvous must name a host: HOST:PORT, not {address:?}");
        let port: u16 = port.parse().ok().filter(|&p| p > 0).context("--rendezvous port must be 1-65535")?;
        Ok(Some(moetune_c10d::Rendezvous {
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
            rank: self.rank as usize,
            world_size: self.world_size as usize,
            timeout: std::time::Duration::from_secs(self.timeout_seconds),
            prefix: "train".into(),
            gloo_host: self.bind.clone(),
        }))
    }
}

/// Where the model runs: CUDA bf16 when a GPU is visible, else CPU fp32, unless overridden.
#[derive(clap::Args)]
struct Placement {
    /// auto, cpu or cuda
    #[arg(long, default_value = "auto")]
    device: String,
    /// auto, float32, bfloat16 or float16
    #[arg(long, default_value = "auto")]
    dtype: String,
}

impl Placement {
    fn resolve(&self) -> anyhow::Result<(tch::Device, tch::Kind)> {
        let (auto_device, _) = model::default_placement();
        let device = match self.device.as_str() {
            "auto" => auto_device,
            "cpu" => tch::Device::Cpu,
            "cuda" if tch::Cuda::is_available() => tch::Device::Cuda(0),
            "cuda" => anyhow::bail!("--device cuda: no CUDA device is visible"),
            other => anyhow::bail!("--device must be auto, cpu or cuda, not {other:?}"),
        };
        let kind = match self.dtype.as_str() {
            "auto" if device.is_cuda() => tch::Kind::BFloat16,
            "auto" => tch::Kind::Float,
            other => model::parse_kind(other)?,
        };
        Ok((device, kind))
    }
}

/// A hash of what every rank of a data-parallel run must agree on: the spec, the data files, the
/// resume point and whether checkpoints are kept (63 bits, so its negation is exact).
fn job_fingerprint(spec: &TrainingSpec, data: &std::path::Path, validation: Option<&std::path::Path>, resume: Option<&std::path::Path>, checkpoints: bool) -> anyhow::Result<i64> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(serde_json::to_vec(spec)?);
    for path in std::iter::once(data).chain(validation) {
        hash.update(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    }
    if let Some(dir) = resume {
        let progress = train::resume::ResumePoint::open(dir)?.progress;
        hash.update(format!("resume {} {}", progress.stage.name(), progress.step));
    }
    hash.update([u8::from(checkpoints)]);
    let bytes: [u8; 8] = hash.finalize()[..8].try_into().expect("8 bytes");
    Ok(i64::from_le_bytes(bytes) & i64::MAX)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    moetune_runner::host_memory::keep_freed_memory();
    moetune_platform::settings::init_logging("info");
    let config = RunnerConfig::load()?;
    if config.threads > 0 {
        tch::set_num_threads(config.threads);
    }
    match Cli::parse().command {
        Some(Command::Train { data, validation_data, out, model, options, batch_size, n_epochs, seed, checkpoints, resume, parallel }) => {
            let options = if let Some(path) = options.strip_prefix('@') { std::fs::read_to_string(path)? } else { options };
            let moe: MoeSftQatOptions = serde_json::from_str(&options).context("--options is not valid method.moe_sft_qat JSON")?;
            moe.validate().map_err(|e| anyhow::anyhow!("{}: {}", e.param, e.message))?;
            let spec = TrainingSpec { model, n_epochs, batch_size, seed, moe, routing_profile: None };
            let rendezvous = parallel.rendezvous()?;
            let fingerprint = rendezvous.is_some().then(|| job_fingerprint(&spec, &data, validation_data.as_deref(), resume.as_deref(), checkpoints.is_some())).transpose()?;
            let validation = validation_data.as_deref().map(commands::read_examples).transpose()?.unwrap_or_default();
            let data = train::JobData { train: commands::read_examples(&data)?, validation };
            let resume = resume.as_deref().map(train::resume::ResumePoint::open).transpose()?;
            let device = match (config.device()?, &rendezvous) {
                // One GPU per rank: the rank's place on its host (LOCAL_RANK, as torchrun sets it, or
                // the rank modulo the GPUs visible).
                (tch::Device::Cuda(_), Some(r)) => {
                    let local = std::env::var("LOCAL_RANK").ok().map(|v| v.parse::<usize>().context("LOCAL_RANK must be a number")).transpose()?;
                    let gpus = tch::Cuda::device_count().max(1) as usize;
                    let index = local.unwrap_or(r.rank % gpus);
                    anyhow::ensure!(index < gpus, "LOCAL_RANK {index} but only {gpus} GPUs are visible");
                    tch::Device::Cuda(index)
                }
                (device, _) => device,
            };
            let parallel = rendezvous.map(|r| train::parallel::DataParallel::join(&r, device)).transpose()?;
            if let (Some(dp), Some(fingerprint)) = (&parallel, fingerprint) {
                dp.check_same_job(fingerprint ^ i64::from(device.is_cuda()))?;
            }
            let rank = parallel.as_ref().map_or(0, |dp| dp.rank());
            let mut reporter = commands::LocalReporter { checkpoints, rank };
            let output = train::run_on(&spec, data, device, resume, &mut reporter, parallel.as_ref())?;
            if rank != 0 {
                return Ok(());
            }
            let mut summary = output.summary.clone();
            for (name, _) in export::write_checked_outputs(&output, &spec, &spec.model, &out, &mut summary)? {
                eprintln!("wrote {name}");
            }
            println!("{}", serde_json::to_string(&serde_json::json!({ "type": "summary", "summary": summary }))?);
        }
        Some(Command::Fidelity { out }) => {
            let result = moetune_runner::fidelity::run(&out, config.device()?, &mut |m| eprintln!("[fidelity] {m}"))?;
            print!("{}", moetune_runner::fidelity::render(&result));
            anyhow::ensure!(result["passed"] == true, "fidelity acceptance failed: {}", result["acceptance"]);
        }
        Some(Command::Quantize { model_dir, format, mxfp4_scale_rule, out }) => {
            let format = if format == "nvfp4" { QatFormat::Nvfp4 } else { QatFormat::Mxfp4 };
            let rule = if mxfp4_scale_rule == "ceil" { Mxfp4ScaleRule::Ceil } else { Mxfp4ScaleRule::Ocp };
            anyhow::ensure!(rule == Mxfp4ScaleRule::Ocp || format == QatFormat::Mxfp4, "--mxfp4-scale-rule applies to --format mxfp4 only");
            for path in commands::quantize(&model_dir, format, rule, &out)? {
                println!("wrote {}", path.display());
            }
        }
        Some(Command::Inspect { model_dir, batch, options }) => {
            let moe: moetune_types::MoeSftQatOptions = serde_json::from_str(&options).context("--options must be the job's moe_sft_qat options as JSON")?;
            moe.validate().map_err(|e| anyhow::anyhow!("{}: {}", e.param, e.message))?;
            let spec = moetune_types::TrainingSpec { model: model_dir.display().to_string(), n_epochs: 1, batch_size: batch.max(1), seed: 0, moe, routing_profile: None };
            println!("{}", serde_json::to_string_pretty(&model::inspect::inspect(&model_dir, &spec)?)?);
        }
        Some(Command::Logits { model_dir, adapter, input, out, placement }) => commands::logits(&model_dir, adapter.as_deref(), &input, &out, placement.resolve()?)?,
        Some(Command::Generate { model_dir, prompt, ids, max_new_tokens, placement }) => {
            commands::generate(&model_dir, prompt.as_deref(), ids, max_new_tokens, placement.resolve()?)?
        }
        Some(Command::Tokenize { model_dir, data }) => commands::tokenize(&model_dir, &data)?,
        Some(Command::RoutingProfile { model_dir, data, input, max_examples, seq_len, placement }) => {
            commands::routing_profile(&model_dir, data.as_deref(), input.as_deref(), max_examples, seq_len, placement.resolve()?)?
        }
        Some(Command::DumpWeights { model_dir, out }) => commands::dump_weights(&model_dir, &out)?,
        _ => {
            let metrics_addr = config.metrics_addr.clone();
            let worker = Worker::connect(config).await?;
            if !metrics_addr.is_empty() {
                tokio::spawn(moetune_runner::metrics::serve(&metrics_addr, worker.metrics())?);
            }
            let shutdown = async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
                tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
                tracing::info!("shutting down: a job in progress is checkpointed and handed back");
            };
            worker.run(shutdown).await?;
        }
    }
    Ok(())
}
