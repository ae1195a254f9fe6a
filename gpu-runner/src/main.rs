use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use moetune_runner::config::RunnerConfig;
use moetune_runner::model::mixtral::Mixtral;
use moetune_runner::{export, train, worker::Worker};
use moetune_types::dataset::parse_line;
use moetune_types::{MoeSftQatOptions, TrainingSpec};
use tracing_subscriber::EnvFilter;

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
    /// Train on a local JSONL file without any services and write the checkpoint to OUT.
    Train {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "moetune/tiny-mixtral")]
        model: String,
        #[arg(long, default_value_t = 20)]
        sft_steps: u32,
        #[arg(long, default_value_t = 5)]
        qat_steps: u32,
    },
    /// Print the logits of a Mixtral checkpoint for comma-separated token ids, as JSON (numerics checks).
    Logits {
        #[arg(long)]
        model_dir: PathBuf,
        #[arg(long, value_delimiter = ',')]
        ids: Vec<i64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    let config = RunnerConfig::load()?;
    if config.threads > 0 {
        tch::set_num_threads(config.threads);
    }
    match Cli::parse().command {
        Some(Command::Train { data, out, model, sft_steps, qat_steps }) => {
            let text = std::fs::read_to_string(&data).with_context(|| format!("reading {}", data.display()))?;
            let examples = text
                .lines()
                .enumerate()
                .map(|(i, l)| parse_line(l).map(|(_, e)| e).map_err(|m| anyhow::anyhow!("line {}: {m}", i + 1)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let moe = MoeSftQatOptions { sft_steps, qat_steps, ..Default::default() };
            let spec = TrainingSpec { model, n_epochs: 100, batch_size: 4, seed: 1, moe };
            let output = train::run(&spec, &examples, config.device()?, |event| println!("{}", serde_json::to_string(&event).unwrap_or_default()))?;
            for path in export::write_hf_checkpoint(&output, &out)? {
                println!("wrote {}", path.display());
            }
            println!("{}", serde_json::to_string_pretty(&output.summary)?);
        }
        Some(Command::Logits { model_dir, ids }) => {
            let (_vars, model) = Mixtral::load_dir(&model_dir, tch::Device::Cpu)?;
            let input = tch::Tensor::from_slice(&ids).unsqueeze(0);
            let logits = tch::no_grad(|| model.forward(&input).logits).squeeze_dim(0);
            let rows: Vec<Vec<f32>> = (0..ids.len() as i64).map(|i| Vec::<f32>::try_from(logits.get(i))).collect::<Result<_, _>>()?;
            println!("{}", serde_json::to_string(&rows)?);
        }
        _ => {
            let worker = Worker::connect(config).await?;
            let shutdown = async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
                tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
                tracing::info!("shutting down after the current job");
            };
            worker.run(shutdown).await?;
        }
    }
    Ok(())
}
