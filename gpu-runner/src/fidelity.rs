//! The miniature fidelity experiment (`moetune-runner fidelity`): the base / SFT / PTQ / SFT+QAT comparison, reproduced on
//! CPU in minutes.
//!
//! 1. Pre-train the tiny MoE from scratch on a synthetic multi-domain task (copy, reverse, sort and
//!    increment a list of digits), router trained under the load-balancing loss, so routing learns
//!    real structure.
//! 2. Fine-tune it on a held-out domain (rotate) with the product's workflow: SFT with the router
//!    frozen, PTQ, QAT to MXFP4. Report base / SFT / PTQ / SFT+QAT exact-match accuracy and routing
//!    agreement.
//! 3. On the same model, train the router at a high learning rate without the aux loss (the monitor
//!    must drop the LR, then stop the run) and with the defaults (it must stay quiet).

use std::path::Path;

use anyhow::Context;
use moetune_types::{Example, EvalPrompt, MoeSftQatOptions, RunnerEventKind, TrainingSpec};
use serde_json::json;

use crate::model::tiny;
use crate::train::{self, JobData, Reporter};

/// Deterministic generator (xorshift64*): the experiment must be the same on every machine.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n
    }
}

const PRETRAIN_DOMAINS: [&str; 4] = ["copy", "reverse", "sort", "increment"];
const HELD_OUT: &str = "rotate";

fn apply(op: &str, digits: &[u64]) -> Vec<u64> {
    let mut out = digits.to_vec();
    match op {
        "reverse" => out.reverse(),
        "sort" => out.sort_unstable(),
        "increment" => out.iter_mut().for_each(|d| *d = (*d + 1) % 10),
        "rotate" => out.rotate_left(1),
        _ => {}
    }
    out
}

fn example(rng: &mut Rng, op: &str) -> Example {
    let digits: Vec<u64> = (0..5).map(|_| rng.below(10)).collect();
    let show = |d: &[u64]| d.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    Example { system: None, instruction: format!("{op}: {}", show(&digits)), input: String::new(), response: show(&apply(op, &digits)), messages: vec![] }
}

/// Collects events (the experiment reads the monitor's and the summary's).
#[derive(Default)]
struct Collect(Vec<RunnerEventKind>);

impl Reporter for Collect {
    fn event(&mut self, event: RunnerEventKind) {
        self.0.push(event);
    }

    fn checkpoint(&mut self, _: &str, _: &str, _: u32, _: &Path) -> anyhow::Result<()> {
        Ok(())
    }
}

fn options(value: serde_json::Value) -> anyhow::Result<MoeSftQatOptions> {
    let options: MoeSftQatOptions = serde_json::from_value(value)?;
    options.validate().map_err(|e| anyhow::anyhow!("{}: {}", e.param, e.message))?;
    Ok(options)
}

fn spec(model: &str, batch_size: u32, moe: MoeSftQatOptions) -> TrainingSpec {
    TrainingSpec { model: model.into(), n_epochs: 1, batch_size, seed: 11, moe, routing_profile: None }
}

/// Runs the experiment, writes `fidelity.json` under `out` and returns it.
pub fn run(out: &Path, device: tch::Device, log: &mut dyn FnMut(&str)) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(out)?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let pretrain: Vec<Example> = (0..2000).map(|i| example(&mut rng, PRETRAIN_DOMAINS[i % 4])).collect();
    let held: Vec<Example> = (0..600).map(|_| example(&mut rng, HELD_OUT)).collect();
    let held_validation: Vec<Example> = (0..64).map(|_| example(&mut rng, HELD_OUT)).collect();
    let eval_prompts: Vec<EvalPrompt> = (0..256)
        .map(|_| {
            let e = example(&mut rng, HELD_OUT);
            EvalPrompt { prompt: e.instruction, answer: e.response }
        })
        .collect();

    log("1/3 pre-training the tiny MoE on copy/reverse/sort/increment (router trained, aux loss 0.01)");
    let pre_options = options(json!({
        "sft_method": "full", "learning_rate": 3e-3, "max_steps": 1500, "warmup_ratio": 0.05, "seq_len": 64,
        "router": {"mode": "train", "aux_loss_coef": 0.01}, "qat": {"steps": 0},
        "monitor": {"enabled": false}, "checkpoint_every_n_steps": 0,
    }))?;
    let pretrained = train::run(&spec(tiny::NAME, 16, pre_options), JobData { train: pretrain, validation: vec![] }, device, None, &mut Collect::default())?;
    let base_dir = out.join("pretrained");
    crate::export::write_hf_checkpoint(&pretrained.model, &pretrained.vars, &pretrained.codec, &base_dir)?;
    std::fs::write(base_dir.join("tokenizer_config.json"), json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}).to_string())?;
    let base = base_dir.to_str().context("non-UTF-8 path")?.to_string();
    let data = || JobData { train: held.clone(), validation: held_validation.clone() };

    log("2/3 SFT (router frozen) → PTQ → QAT (MXFP4) on the held-out domain (rotate)");
    let ft_options = options(json!({
        "sft_method": "full", "learning_rate": 3e-4, "max_steps": 400, "seq_len": 64,
        "qat": {"steps": 200, "learning_rate": 1e-4, "format": "mxfp4"},
        "monitor": {"every_n_steps": 100}, "checkpoint_every_n_steps": 0, "eval_prompts": eval_prompts,
    }))?;
    let fine_tuned = train::run(&spec(&base, 16, ft_options), data(), device, None, &mut Collect::default())?;
    let table = fine_tuned.report["table"].clone();
    let accuracy = |row: usize| table[row]["task_accuracy"].as_f64().unwrap_or(0.0);
    let (sft, ptq, qat) = (accuracy(1), accuracy(2), accuracy(3));

    log("3/3 the expert-usage monitor: router trained at a high learning rate without aux loss, then the defaults");
    // Whether, and when, a router collapses at a given learning rate is chaotic: the last bits of the
    // CPU's float sums decide it (at 3e-2 one machine collapsed and another did not). So the collapse
    // run climbs a short ladder of aggressive settings until one collapses; the acceptance is about
    // what the monitor does then.
    const COLLAPSE_LADDER: [(f64, u32); 3] = [(2e-1, 60), (2e-1, 120), (1e-1, 120)];
    let collapse_options = |(learning_rate, max_steps): (f64, u32)| {
        options(json!({
            "sft_method": "full", "learning_rate": learning_rate, "max_steps": max_steps, "seq_len": 64,
            "router": {"mode": "train", "aux_loss_coef": 0.0}, "qat": {"steps": 0},
            "monitor": {"every_n_steps": 4, "cooldown_steps": 8}, "checkpoint_every_n_steps": 0,
        }))
    };
    let defaults = options(json!({
        "learning_rate": 3e-4, "max_steps": 60, "seq_len": 64, "qat": {"steps": 0},
        "monitor": {"every_n_steps": 4}, "checkpoint_every_n_steps": 0,
    }))?;
    let monitor_run = |moe: MoeSftQatOptions| -> anyhow::Result<serde_json::Value> {
        let mut events = Collect::default();
        let output = train::run(&spec(&base, 16, moe), data(), device, None, &mut events)?;
        let checks: Vec<serde_json::Value> = events
            .0
            .iter()
            .filter_map(|e| match e {
                RunnerEventKind::Monitor { step, mean_top1_share, mean_entropy_norm, alert, action, learning_rate, .. } => Some(json!({
                    "step": step, "mean_top1_share": mean_top1_share, "mean_entropy_norm": mean_entropy_norm,
                    "alert": alert, "action": action, "learning_rate": learning_rate,
                })),
                _ => None,
            })
            .collect();
        Ok(json!({ "checks": checks, "stop_reason": output.summary["stop_reason"], "sft_steps": output.summary["sft"]["steps"] }))
    };
    let mut collapse = serde_json::Value::Null;
    for rung in COLLAPSE_LADDER {
        collapse = monitor_run(collapse_options(rung)?)?;
        collapse["learning_rate"] = json!(rung.0);
        collapse["max_steps"] = json!(rung.1);
        if collapse["stop_reason"] == "early_stop_router_collapse" {
            break;
        }
    }
    let quiet = monitor_run(defaults)?;

    let actions: Vec<&str> = collapse["checks"].as_array().into_iter().flatten().filter_map(|c| c["action"].as_str()).collect();
    let dropped_then_stopped = actions.iter().position(|a| a.starts_with("lr_decayed")).zip(actions.iter().position(|a| *a == "early_stop")).is_some_and(|(d, s)| d < s);
    let quiet_ok = quiet["checks"].as_array().is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["alert"] == false));
    let acceptance = json!({
        "qat_at_least_99_percent_of_sft": qat >= 0.99 * sft,
        "qat_above_ptq": qat > ptq,
        "monitor_drops_lr_then_stops_on_collapse": dropped_then_stopped && collapse["stop_reason"] == "early_stop_router_collapse",
        "monitor_quiet_under_defaults": quiet_ok && quiet["stop_reason"] == "completed",
    });
    let result = json!({
        "task": { "pretrain_domains": PRETRAIN_DOMAINS, "held_out": HELD_OUT, "eval_prompts": 256 },
        "table": table,
        "routing_agreement": fine_tuned.report["routing_agreement"],
        "monitor": { "collapse": collapse, "defaults": quiet },
        "acceptance": acceptance,
        "passed": acceptance.as_object().is_some_and(|a| a.values().all(|v| v == true)),
    });
    std::fs::write(out.join("fidelity.json"), serde_json::to_vec_pretty(&result)?)?;
    Ok(result)
}

/// The four-row table and the acceptance, as text.
pub fn render(result: &serde_json::Value) -> String {
    let mut text = String::from("model      exact match  token acc  val loss\n");
    for row in result["table"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "{:<10} {:>11.3}  {:>9.3}  {:>8.4}\n",
            row["model"].as_str().unwrap_or(""),
            row["task_accuracy"].as_f64().unwrap_or(0.0),
            row["token_accuracy"].as_f64().unwrap_or(0.0),
            row["validation_loss"].as_f64().unwrap_or(0.0)
        ));
    }
    let agreement = &result["routing_agreement"];
    text.push_str(&format!(
        "routing agreement with SFT (top-k sets, per layer mean): PTQ {:.3}, SFT+QAT {:.3}\n",
        agreement["ptq_mean"].as_f64().unwrap_or(0.0),
        agreement["sft_qat_mean"].as_f64().unwrap_or(0.0)
    ));
    text.push_str(&format!("acceptance: {}\n", result["acceptance"]));
    text
}
