//! The SFT → QAT workflow through `moetune-runner train` on CPU, checked against the reference tools:
//! PEFT loads the LoRA adapter, transformers loads the merged and MXFP4 checkpoints, modelopt's own
//! NVFP4 quantization reproduces the exported codes and scales bit for bit, and every one of them
//! computes the logits the runner computes (`tests/python/export_reference.py` is the oracle).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use moetune_e2e::{run_ok, scratch_dir, train_losses, workspace_binary};
use safetensors::SafeTensors;

const TOLERANCE: f32 = 1e-4;
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo/finance-alpaca-mini.jsonl");
const ORACLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/export_reference.py");
const IDS: &str = "[[1,40,311,7,620,93,250,5,18,777,64,2,300,301,302,9],[1,9,8,7,6,5,4,3,10,11,12,13,14,15,16,17]]";

fn scratch(name: &str) -> PathBuf {
    scratch_dir("workflow", name)
}

fn runner() -> Command {
    Command::new(workspace_binary("moetune-runner"))
}

/// Runs `train` and returns its JSON-line events.
fn train(args: &[&str], options: &str, out: &Path) -> Vec<serde_json::Value> {
    let stdout = run_ok(runner().args(["train", "--data", DATA, "--options", options]).args(args).arg("--out").arg(out));
    stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn logits(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(name).unwrap();
    view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn ours(model_dir: &Path, adapter: Option<&Path>, ids: &Path, out: &Path) -> Vec<f32> {
    let mut command = runner();
    command.arg("logits").arg(model_dir).arg("--input").arg(ids).arg("--out").arg(out).args(["--device", "cpu"]);
    if let Some(adapter) = adapter {
        command.arg("--adapter").arg(adapter);
    }
    run_ok(&mut command);
    logits(out, "logits")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// PEFT on the base model with the job's adapter computes what the runner computes with it, and
/// transformers on the merged checkpoint what the runner computes from that.
fn peft_and_merged_match_the_oracle(out: &Path, base: &Path, ids: &Path) {
    let oracle = out.join("oracle.safetensors");
    let peft = max_diff(&ours(base, Some(&out.join("adapter")), ids, &out.join("a.safetensors")), &logits(&oracle, "peft"));
    assert!(peft < TOLERANCE, "PEFT differs by {peft}");
    let merged = max_diff(&ours(&out.join("merged"), None, ids, &out.join("m.safetensors")), &logits(&oracle, "merged"));
    assert!(merged < TOLERANCE, "merged differs by {merged}");
}

/// Makes a tiny HF base model, trains on it, runs the oracle on the outputs; returns (dir, base, ids).
fn trained_on(arch: &str, options: &str, format: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = scratch(arch);
    let base = dir.join("base");
    run_ok(Command::new("python3").arg(ORACLE).arg("base").arg(&base).arg(arch));
    let out = dir.join("out");
    let events = train(&["--model", base.to_str().unwrap()], options, &out);
    assert!(events.iter().any(|e| e["type"] == "evaluation"), "no evaluation report");
    let ids = dir.join("ids.json");
    std::fs::write(&ids, IDS).unwrap();
    let stdout = run_ok(Command::new("python3").arg(ORACLE).arg("check").arg(&out).arg(&base).arg(&ids).arg(format));
    assert!(stdout.contains("ok"), "{stdout}");
    (out, base, ids)
}

#[test]
fn lora_on_attention_and_experts_with_nvfp4_loads_in_peft_and_matches_modelopt() {
    let options = r#"{"learning_rate": 3e-3, "max_steps": 6, "lora": {"target_experts": true, "use_rslora": true, "r": 4},
                      "qat": {"steps": 3, "learning_rate": 1e-4, "format": "nvfp4"}, "checkpoint_every_n_steps": 0}"#;
    let (out, base, ids) = trained_on("mixtral", options, "nvfp4");
    let oracle = out.join("oracle.safetensors");
    peft_and_merged_match_the_oracle(&out, &base, &ids);
    // The NVFP4 export dequantized by modelopt computes what the runner computes from it.
    let fp4 = max_diff(&ours(&out.join("nvfp4"), None, &ids, &out.join("f.safetensors")), &logits(&oracle, "fp4"));
    assert!(fp4 < TOLERANCE, "NVFP4 differs by {fp4}");
    let adapter_config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(adapter_config["target_parameters"], serde_json::json!(["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]));
    let quant: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("nvfp4/hf_quant_config.json")).unwrap()).unwrap();
    assert_eq!(quant["quantization"]["quant_algo"], "W4A16_NVFP4");
    assert!(quant["quantization"]["exclude_modules"].as_array().unwrap().iter().any(|m| m == "lm_head"));
}

/// Full SFT and QAT on gpt-oss, with MXFP4 scales by modelopt's ceil rule: the export is what
/// modelopt's MXFP4QTensor makes of the QAT weights, and transformers loads it.
#[test]
fn full_sft_with_trained_router_exports_mxfp4_that_transformers_loads() {
    let options = r#"{"sft_method": "full", "learning_rate": 1e-3, "max_steps": 6, "router": {"mode": "train", "z_loss_coef": 0.001},
                      "qat": {"steps": 3, "learning_rate": 1e-4, "mxfp4_scale_rule": "ceil"}, "checkpoint_every_n_steps": 0}"#;
    let (out, _, ids) = trained_on("gpt_oss", options, "mxfp4");
    let oracle = out.join("oracle.safetensors");
    let merged = max_diff(&ours(&out.join("merged"), None, &ids, &out.join("m.safetensors")), &logits(&oracle, "merged"));
    assert!(merged < TOLERANCE, "merged differs by {merged}");
    let fp4 = max_diff(&ours(&out.join("mxfp4"), None, &ids, &out.join("f.safetensors")), &logits(&oracle, "fp4"));
    assert!(fp4 < TOLERANCE, "transformers' MXFP4 load differs by {fp4}");
    let bytes = std::fs::read(out.join("mxfp4/model.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let blocks = tensors.tensor("model.layers.0.mlp.experts.gate_up_proj_blocks").unwrap();
    assert_eq!(blocks.shape(), [4, 128, 2, 16]); // [E, 2I, H/32, 16]
    assert!(!tensors.names().iter().any(|n| *n == "model.layers.0.mlp.experts.gate_up_proj"));
    let stdout = run_ok(Command::new("python3").arg(ORACLE).arg("mxfp4-modelopt").arg(out.join("mxfp4")).arg(out.join("merged")));
    assert!(stdout.contains("scales equal modelopt's"), "{stdout}");
}

/// `quantize --mxfp4-scale-rule ceil` on a checkpoint of bf16 values, where elements often fall exactly
/// between two E2M1 values: the scales are modelopt's byte for byte, the elements too except those ties
/// (rounded to even, where modelopt rounds toward zero), and transformers loads the export.
#[test]
fn quantize_command_follows_modelopts_mxfp4_scale_rule() {
    let dir = scratch("quantize-ceil");
    let base = dir.join("out/merged");
    run_ok(Command::new("python3").arg(ORACLE).arg("base").arg(&base).arg("gpt_oss").arg("bf16-grid"));
    let fp4_dir = dir.join("out/mxfp4");
    run_ok(runner().arg("quantize").arg(&base).args(["--format", "mxfp4", "--mxfp4-scale-rule", "ceil", "--out"]).arg(&fp4_dir));
    let stdout = run_ok(Command::new("python3").arg(ORACLE).arg("mxfp4-modelopt").arg(&fp4_dir).arg(&base));
    let ties: u64 = stdout.split(" but ").nth(1).and_then(|t| t.split_whitespace().next()).and_then(|n| n.parse().ok()).expect(&stdout);
    assert!(ties > 0, "bf16 weights should produce exact midpoints: {stdout}");
    let ids = dir.join("ids.json");
    std::fs::write(&ids, IDS).unwrap();
    run_ok(Command::new("python3").arg(ORACLE).arg("check").arg(dir.join("out")).arg(&base).arg(&ids).arg("mxfp4"));
    let fp4 = max_diff(&ours(&fp4_dir, None, &ids, &dir.join("f.safetensors")), &logits(&dir.join("out/oracle.safetensors"), "fp4"));
    assert!(fp4 < TOLERANCE, "transformers' load of the ceil-rule export differs by {fp4}");
    let refused = runner().arg("quantize").arg(&base).args(["--format", "nvfp4", "--mxfp4-scale-rule", "ceil", "--out"]).arg(dir.join("x")).output().unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("applies to --format mxfp4 only"), "{}", String::from_utf8_lossy(&refused.stderr));
}

/// LoRA on gpt-oss with its frozen experts held packed in MXFP4 on the device (quantised on load: the
/// oracle's base is fp32): the artifacts are still what PEFT and transformers compute from them, and the
/// summary says how the experts were held.
#[test]
fn lora_over_packed_mxfp4_experts_exports_what_peft_and_transformers_compute() {
    let dir = scratch("packed");
    let base = dir.join("base");
    run_ok(Command::new("python3").arg(ORACLE).arg("base").arg(&base).arg("gpt_oss"));
    // With activation checkpointing: each recomputed layer backpropagates its packed experts one at a time.
    let options = r#"{"learning_rate": 3e-3, "max_steps": 6, "base_expert_format": "mxfp4", "lora": {"target_experts": true, "r": 4},
                      "qat": {"steps": 3, "learning_rate": 1e-4, "format": "mxfp4"}, "checkpoint_every_n_steps": 0, "gradient_checkpointing": true}"#;
    let out = dir.join("out");
    let events = train(&["--model", base.to_str().unwrap()], options, &out);
    let summary = &events.iter().find(|e| e["type"] == "summary").expect("summary")["summary"];
    assert_eq!(summary["base_experts"]["format"], "mxfp4", "{summary}");
    assert_eq!(summary["activation_checkpointing"], true, "{summary}");
    assert!(summary["base_experts"]["bytes_on_device"].as_i64().unwrap() > 0, "{summary}");
    // Quantised on load (the base is fp32): how much of the dense base's routing survived, per MoE layer.
    let agreement = summary["base_experts"]["routing_agreement_with_dense"].as_array().expect("routing agreement with the dense base");
    assert_eq!(agreement.len(), 2, "{summary}");
    // The first layer's router sees no expert output, quantised or not; the second sees the first's.
    assert_eq!(agreement[0].as_f64(), Some(1.0), "{summary}");
    assert!(agreement[1].as_f64().is_some_and(|a| a > 0.0 && a <= 1.0), "{summary}");
    assert!(events.iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains("routing of the dense base is kept for"))), "no event reports the agreement");
    let ids = dir.join("ids.json");
    std::fs::write(&ids, IDS).unwrap();
    let stdout = run_ok(Command::new("python3").arg(ORACLE).arg("check").arg(&out).arg(&base).arg(&ids).arg("mxfp4"));
    assert!(stdout.contains("ok"), "{stdout}");
    let oracle = out.join("oracle.safetensors");
    peft_and_merged_match_the_oracle(&out, &base, &ids);
    let fp4 = max_diff(&ours(&out.join("mxfp4"), None, &ids, &out.join("f.safetensors")), &logits(&oracle, "fp4"));
    assert!(fp4 < TOLERANCE, "transformers' MXFP4 load differs by {fp4}");
}

#[test]
fn quantize_command_exports_an_existing_checkpoint() {
    let dir = scratch("quantize");
    let base = dir.join("out/merged"); // the oracle compares the FP4 export with merged/: here, the base itself
    run_ok(Command::new("python3").arg(ORACLE).arg("base").arg(&base).arg("mixtral"));
    run_ok(runner().arg("quantize").arg(&base).args(["--format", "nvfp4", "--out"]).arg(dir.join("out/nvfp4")));
    let ids = dir.join("ids.json");
    std::fs::write(&ids, IDS).unwrap();
    let stdout = run_ok(Command::new("python3").arg(ORACLE).arg("check").arg(dir.join("out")).arg(&base).arg(&ids).arg("nvfp4"));
    assert!(stdout.contains("bit-identical to modelopt"), "{stdout}");
    let fp4 = max_diff(&ours(&dir.join("out/nvfp4"), None, &ids, &dir.join("f.safetensors")), &logits(&dir.join("out/oracle.safetensors"), "fp4"));
    assert!(fp4 < TOLERANCE, "NVFP4 differs by {fp4}");
    let failed = runner().arg("quantize").arg(dir.join("missing")).args(["--format", "mxfp4", "--out"]).arg(dir.join("x")).output().unwrap();
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("config.json"), "{}", String::from_utf8_lossy(&failed.stderr));
}


/// A job restarted from a checkpoint continues with exactly the losses of the uninterrupted run,
/// whether it resumes mid-SFT (LoRA with dropout: the random stream is restored too) or after SFT.
#[test]
fn resumed_jobs_continue_with_identical_losses() {
    let dir = scratch("resume");
    let options = r#"{"learning_rate": 3e-3, "max_steps": 8, "lora": {"dropout": 0.1}, "router": {"jitter": 0.01},
                      "qat": {"steps": 4, "learning_rate": 1e-4, "format": "nvfp4", "quantize_activations": true},
                      "checkpoint_every_n_steps": 3, "monitor": {"every_n_steps": 2}}"#;
    let checkpoints = dir.join("checkpoints");
    let full = train_losses(&train(&["--checkpoints", checkpoints.to_str().unwrap()], options, &dir.join("full")));
    assert_eq!(full.len(), 12);
    for name in ["sft-step-000003", "sft-step-000006", "sft-final", "qat-step-000003", "qat-final"] {
        assert!(checkpoints.join(name).join("progress.json").exists(), "{name} missing");
    }
    for (from, first) in [("sft-step-000003", ("sft", 4)), ("sft-final", ("qat", 1)), ("qat-step-000003", ("qat", 4))] {
        let resumed = train_losses(&train(&["--resume", checkpoints.join(from).to_str().unwrap()], options, &dir.join(from)));
        let order = |stage: &str, step: u64| (u8::from(stage == "qat"), step);
        let expected: BTreeMap<_, _> = full.iter().filter(|((stage, step), _)| order(stage, *step) >= order(first.0, first.1)).map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(resumed, expected, "resumed from {from}");
    }
    // The exports of a resumed job equal the uninterrupted job's.
    let a = std::fs::read(dir.join("full/nvfp4/model.safetensors")).unwrap();
    let b = std::fs::read(dir.join("sft-step-000003/nvfp4/model.safetensors")).unwrap();
    assert!(a == b, "NVFP4 export of the resumed job differs");
    let quant: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("full/nvfp4/hf_quant_config.json")).unwrap()).unwrap();
    assert_eq!(quant["quantization"]["quant_algo"], "NVFP4");
    let tensors = SafeTensors::deserialize(&a).unwrap();
    assert!(tensors.names().iter().any(|n| n.ends_with("experts.0.w1.input_scale")));
}

/// The expert-usage monitor: training the router at a high learning rate without the aux loss collapses
/// routing; the monitor halves the learning rate, then stops the job. Under the defaults it stays quiet.
#[test]
fn monitor_drops_the_rate_then_stops_a_collapsing_router_and_stays_quiet_by_default() {
    let dir = scratch("monitor");
    let collapse = r#"{"sft_method": "full", "learning_rate": 3e-2, "max_steps": 40, "router": {"mode": "train", "aux_loss_coef": 0},
                       "qat": {"steps": 5}, "monitor": {"every_n_steps": 4, "cooldown_steps": 8}, "checkpoint_every_n_steps": 0}"#;
    let events = train(&[], collapse, &dir.join("collapse"));
    let checks: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "monitor").collect();
    let first_drop = checks.iter().position(|c| c["action"].as_str().is_some_and(|a| a.starts_with("lr_decayed"))).expect("no LR drop");
    let stop = checks.iter().position(|c| c["action"] == "early_stop").expect("no early stop");
    assert!(first_drop < stop);
    assert!(checks[stop]["mean_top1_share"].as_f64().unwrap() >= 0.70 && checks[stop]["mean_entropy_norm"].as_f64().unwrap() <= 0.40);
    // From the drop on, the rate is at most half the peak (the schedule is otherwise still near it).
    let next_step = checks[first_drop]["step"].as_u64().unwrap() + 1;
    let lr_after = events.iter().find(|e| e["type"] == "metrics" && e["step"].as_u64() == Some(next_step)).unwrap()["learning_rate"].as_f64().unwrap();
    assert!(lr_after <= 3e-2 * 0.5 * 1.0001, "LR not halved: {lr_after}");
    let summary = &events.last().unwrap()["summary"];
    assert_eq!(summary["stop_reason"], "early_stop_router_collapse");
    assert!(summary["sft"]["steps"].as_u64().unwrap() < 40);
    assert_eq!(summary["qat"]["steps"], 0, "QAT must not run after an early stop");

    let quiet = r#"{"learning_rate": 1e-3, "max_steps": 12, "qat": {"steps": 0}, "monitor": {"every_n_steps": 4}, "checkpoint_every_n_steps": 0}"#;
    let events = train(&[], quiet, &dir.join("quiet"));
    let checks: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "monitor").collect();
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|c| c["alert"] == false), "{checks:#?}");
    assert_eq!(events.last().unwrap()["summary"]["stop_reason"], "completed");
}

/// The base / SFT / PTQ / SFT+QAT comparison in miniature (`moetune-runner fidelity`): pre-train on four synthetic domains,
/// fine-tune on a held-out one; SFT+QAT in MXFP4 keeps ≥ 99% of the SFT accuracy and beats PTQ, and the
/// monitor fires on a collapsing router but not under the defaults.
#[test]
fn fidelity_experiment_meets_its_acceptance() {
    let dir = scratch("fidelity");
    let stdout = run_ok(runner().arg("fidelity").arg("--out").arg(&dir));
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("fidelity.json")).unwrap()).unwrap();
    assert_eq!(result["passed"], true, "{stdout}\n{:#}", result["acceptance"]);
    let models: Vec<&str> = result["table"].as_array().unwrap().iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["base", "sft", "ptq", "sft_qat"]);
    // The fine-tuning taught the held-out domain: token accuracy far above the base model's, and whole
    // answers right where the base model gets none. (How many exactly varies with the CPU's float
    // arithmetic: 0.63 on one machine, 0.27 on another.)
    let accuracy = |row: usize, column: &str| result["table"][row][column].as_f64().unwrap();
    assert!(accuracy(1, "token_accuracy") > accuracy(0, "token_accuracy") + 0.3, "{:#}", result["table"]);
    assert!(accuracy(1, "task_accuracy") > accuracy(0, "task_accuracy") + 0.15, "{:#}", result["table"]);
    println!("{stdout}");
}

/// The raw bytes of tensor `name` from whichever `*.safetensors` file of `dir` holds it, with its shape.
fn tensor_bytes(dir: &Path, name: &str) -> (Vec<usize>, Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let bytes = std::fs::read(&path).unwrap();
            let tensors = SafeTensors::deserialize(&bytes).unwrap();
            if let Ok(view) = tensors.tensor(name) {
                return (view.shape().to_vec(), view.data().to_vec());
            }
        }
    }
    panic!("no {name} under {}", dir.display());
}

/// LoRA on chosen experts of one layer, one of them at a rank of its own: PEFT loads the adapter (the
/// layer's expert weights named one by one, the larger rank in `rank_pattern`) and computes what the
/// runner computes; in the merged checkpoint every expert without an adapter is the base's bit for
/// bit, and every expert with one has changed.
#[test]
fn lora_on_chosen_experts_loads_in_peft_and_leaves_the_other_experts_bit_identical() {
    let options = r#"{"learning_rate": 3e-3, "max_steps": 6, "lora": {"r": 4, "target_modules": ["q_proj"], "target_experts": [[1, 3], []],
                      "rank_pattern": {"layers.0.experts.3": 8}}, "qat": {"steps": 3, "learning_rate": 1e-4, "format": "nvfp4"}, "checkpoint_every_n_steps": 0}"#;
    let (out, base, ids) = trained_on("mixtral", options, "nvfp4");
    peft_and_merged_match_the_oracle(&out, &base, &ids);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["target_parameters"], serde_json::json!(["model.layers.0.mlp.experts.down_proj", "model.layers.0.mlp.experts.gate_up_proj"]));
    assert_eq!(
        config["rank_pattern"],
        serde_json::json!({"model\\.layers\\.0\\.mlp\\.experts\\.down_proj": 8, "model\\.layers\\.0\\.mlp\\.experts\\.gate_up_proj": 8})
    );
    // Mixtral checkpoints keep one tensor per expert and projection (w1 gate, w3 up, w2 down).
    for (layer, adapted) in [(0, [false, true, false, true]), (1, [false; 4])] {
        for (e, &changed) in adapted.iter().enumerate() {
            for w in ["w1", "w2", "w3"] {
                let name = format!("model.layers.{layer}.block_sparse_moe.experts.{e}.{w}.weight");
                let (before, after) = (tensor_bytes(&base, &name).1, tensor_bytes(&out.join("merged"), &name).1);
                assert_eq!(before != after, changed, "{name}: changed should be {changed}");
            }
        }
    }
}

/// `routing-profile` counts what transformers' routers choose, token for token; and a job with
/// `target_experts: {"from_profile": …}` adapts exactly the experts of its training data's profile
/// that reach the share, and says so in its result.
#[test]
fn the_routing_profile_counts_what_transformers_routes_and_from_profile_targets_by_it() {
    let dir = scratch("profile");
    let base = dir.join("base");
    run_ok(Command::new("python3").arg(ORACLE).arg("base").arg(&base).arg("mixtral"));
    let ids = dir.join("ids.json");
    std::fs::write(&ids, IDS).unwrap();
    let ours: serde_json::Value = serde_json::from_str(&run_ok(runner().arg("routing-profile").arg(&base).arg("--input").arg(&ids).args(["--device", "cpu"]))).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(&run_ok(Command::new("python3").arg(ORACLE).arg("routing").arg(&base).arg(&ids))).unwrap();
    assert_eq!(ours["tokens"], 32);
    for layer in ours["layers"].as_array().unwrap() {
        let counts = &theirs[layer["layer"].to_string()];
        for (share, count) in [("top1_share", "top1"), ("topk_share", "topk")] {
            let total: f64 = counts[count].as_array().unwrap().iter().map(|c| c.as_f64().unwrap()).sum();
            let expected: Vec<f64> = counts[count].as_array().unwrap().iter().map(|c| c.as_f64().unwrap() / total).collect();
            let got: Vec<f64> = layer[share].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
            assert_eq!(got, expected, "layer {} {share}", layer["layer"]);
        }
    }

    let options = r#"{"learning_rate": 3e-3, "max_steps": 4, "lora": {"target_experts": {"from_profile": {"min_share": 0.26, "max_examples": 32}}},
                      "qat": {"steps": 2, "learning_rate": 1e-4}, "checkpoint_every_n_steps": 0}"#;
    let events = train(&["--model", base.to_str().unwrap()], options, &dir.join("out"));
    let summary = &events.iter().find(|e| e["type"] == "summary").expect("a summary")["summary"];
    let profile = &summary["training_routing_profile"];
    assert_eq!(profile["examples"], 32, "{profile:#}");
    let mut targeted = 0;
    for layer in profile["layers"].as_array().unwrap() {
        let wanted: Vec<u64> = layer["topk_share"].as_array().unwrap().iter().enumerate().filter(|(_, s)| s.as_f64().unwrap() >= 0.26).map(|(e, _)| e as u64).collect();
        let adapters = summary["expert_adapters"].as_array().unwrap().iter().find(|a| a["layer"] == layer["layer"]);
        let got: Vec<u64> = adapters.map(|a| a["experts"].as_array().unwrap().iter().map(|e| e.as_u64().unwrap()).collect()).unwrap_or_default();
        assert_eq!(got, wanted, "layer {}", layer["layer"]);
        targeted += got.len();
    }
    assert!(targeted > 0 && targeted < 8, "the share should split the experts: {summary:#}");
    assert!(events.iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains("LoRA expert adapters (from the routing of"))), "no event names the chosen experts");
}
