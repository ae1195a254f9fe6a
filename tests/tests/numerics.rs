//! The runner computes what transformers computes. `tests/python/moe_reference.py` builds tiny random
//! Mixtral, Qwen2-MoE, Qwen3-MoE and gpt-oss checkpoints (some sharded, one with MXFP4 experts) and
//! records transformers' logits, router top-k and greedy continuations; `moetune-runner logits` and
//! `generate` must reproduce them on CPU in fp32.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use moetune_e2e::{run_ok, workspace_binary};
use safetensors::SafeTensors;

const LOGITS_TOLERANCE: f32 = 1e-4;

/// The reference checkpoints, made once per test binary.
fn references() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("moetune-reference-{}", std::process::id()));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/moe_reference.py");
        run_ok(Command::new("python3").arg(script).arg(&dir));
        dir
    })
}

struct Tensors(Vec<u8>);

impl Tensors {
    fn read(path: &Path) -> Self {
        Self(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.0).expect("valid safetensors")
    }

    fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let view = self.view();
        let t = view.tensor(name).unwrap_or_else(|_| panic!("no tensor {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        (t.shape().to_vec(), t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
    }

    fn top_k_sets(&self, name: &str) -> Vec<BTreeSet<i64>> {
        let view = self.view();
        let t = view.tensor(name).unwrap_or_else(|_| panic!("no tensor {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
        let k = t.shape()[1];
        let values: Vec<i64> = t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
        values.chunks(k).map(|row| row.iter().copied().collect()).collect()
    }

    fn names(&self) -> BTreeSet<String> {
        self.view().names().into_iter().map(str::to_string).collect()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Runs `moetune-runner logits` on the reference ids and compares logits and router top-k sets.
fn assert_parity(name: &str) {
    let dir = references().join(name);
    let ours_path = dir.join("ours.safetensors");
    run_ok(Command::new(workspace_binary("moetune-runner")).arg("logits").arg(&dir).arg("--input").arg(dir.join("ids.json")).arg("--out").arg(&ours_path).args(["--device", "cpu", "--dtype", "float32"]));
    let (ours, reference) = (Tensors::read(&ours_path), Tensors::read(&dir.join("reference.safetensors")));
    assert_eq!(ours.names(), reference.names(), "{name}: same outputs (logits and one router_topk per MoE layer)");
    let ((our_shape, our_logits), (ref_shape, ref_logits)) = (ours.f32("logits"), reference.f32("logits"));
    assert_eq!(our_shape, ref_shape);
    let scale = ref_logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.5, "{name}: degenerate reference logits (max |logit| {scale})");
    let diff = max_abs_diff(&our_logits, &ref_logits);
    assert!(diff <= LOGITS_TOLERANCE, "{name}: max |ours − transformers| = {diff:e} (logit scale {scale})");
    for layer in reference.names().into_iter().filter(|n| n.starts_with("router_topk.")) {
        let (ours, theirs) = (ours.top_k_sets(&layer), reference.top_k_sets(&layer));
        assert_eq!(ours.len(), theirs.len());
        let differing = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{name} {layer}: {differing} tokens routed to different experts");
    }
    println!("{name}: max |Δlogits| = {diff:e} at logit scale {scale}");
}

#[test]
fn mixtral_sharded_sliding_window_matches_transformers() {
    assert_parity("mixtral");
}

#[test]
fn qwen2_moe_shared_expert_and_dense_layer_match_transformers() {
    assert_parity("qwen2_moe");
}

#[test]
fn qwen3_moe_qk_norm_tied_embeddings_match_transformers() {
    assert_parity("qwen3_moe");
}

#[test]
fn gpt_oss_sinks_yarn_alternating_windows_match_transformers() {
    assert_parity("gpt_oss");
}

#[test]
fn gpt_oss_mxfp4_experts_match_transformers() {
    assert_parity("gpt_oss_mxfp4");
    // The decoded experts are bit-identical to transformers' convert_moe_packed_tensors.
    let dir = references().join("gpt_oss_mxfp4");
    let dump = dir.join("dumped");
    run_ok(Command::new(workspace_binary("moetune-runner")).arg("dump-weights").arg(&dir).arg("--out").arg(&dump));
    let (ours, theirs) = (Tensors::read(&dump.join("model.safetensors")), Tensors::read(&dir.join("dequantized.safetensors")));
    let names = theirs.names();
    assert_eq!(names.len(), 4, "two expert tensors per layer");
    for name in names {
        let ((our_shape, our_values), (their_shape, their_values)) = (ours.f32(&name), theirs.f32(&name));
        assert_eq!(our_shape, their_shape, "{name}");
        let differing = our_values.iter().zip(&their_values).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differing, 0, "{name}: {differing} values differ bitwise");
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in ["mixtral", "qwen2_moe", "qwen3_moe", "gpt_oss"] {
        let dir = references().join(name);
        let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("generate.json")).unwrap()).unwrap();
        let prompt: Vec<String> = expected["prompt"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
        let out = run_ok(Command::new(workspace_binary("moetune-runner")).arg("generate").arg(&dir).args(["--ids", &prompt.join(","), "--max-new-tokens", "6", "--device", "cpu", "--dtype", "float32"]));
        let ours: serde_json::Value = serde_json::from_str(&out).expect("generate prints JSON");
        assert_eq!(ours["new_ids"], expected["new_ids"], "{name}");
    }
}

/// End to end on the built-in model: train with the runner, export, and transformers loads the export
/// and computes the same logits.
#[test]
fn trained_tiny_mixtral_export_matches_transformers() {
    let dir = std::env::temp_dir().join(format!("moetune-numerics-{}", std::process::id()));
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo/finance-alpaca-mini.jsonl");
    let runner = workspace_binary("moetune-runner");
    // A few real SFT steps so experts are not at their initial values.
    let options = r#"{"sft_method": "full", "learning_rate": 1e-3, "max_steps": 8, "qat": {"steps": 0}}"#;
    run_ok(Command::new(&runner).args(["train", "--data", data, "--options", options, "--out"]).arg(&dir));
    let dir = dir.join("merged");
    let ids = dir.join("ids.json");
    std::fs::write(&ids, "[[1,40,311,7,620,93,250,5,18,777,64,2,300,301,302,9]]").unwrap();
    run_ok(Command::new(&runner).arg("logits").arg(&dir).arg("--input").arg(&ids).arg("--out").arg(dir.join("ours.safetensors")).args(["--device", "cpu"]));
    let script = r#"
import json, sys, torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
ids = torch.tensor(json.load(open(sys.argv[1] + "/ids.json")))
with torch.no_grad():
    save_file({"logits": model(ids).logits.contiguous()}, sys.argv[1] + "/reference.safetensors")
"#;
    run_ok(Command::new("python3").args(["-c", script]).arg(&dir));
    let (ours, theirs) = (Tensors::read(&dir.join("ours.safetensors")).f32("logits"), Tensors::read(&dir.join("reference.safetensors")).f32("logits"));
    assert_eq!(ours.0, vec![1, 16, 1024]);
    let diff = max_abs_diff(&ours.1, &theirs.1);
    assert!(diff < LOGITS_TOLERANCE, "max |ours − transformers| = {diff}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Chat datasets are rendered with the model's chat template exactly as transformers'
/// `apply_chat_template` renders them; the loss covers the reply only.
#[test]
fn chat_template_renders_like_transformers() {
    let dir = std::env::temp_dir().join(format!("moetune-chat-{}", std::process::id()));
    let tokenizer = concat!(env!("CARGO_MANIFEST_DIR"), "/../gpu-runner/assets/tiny-mixtral/tokenizer.json");
    run_ok(Command::new("python3").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/chat_reference.py")).arg(tokenizer).arg(&dir));
    let expected: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let out = run_ok(Command::new(workspace_binary("moetune-runner")).arg("tokenize").arg(&dir).arg("--data").arg(dir.join("chat.jsonl")));
    let rendered: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rendered.len(), expected.len());
    for (ours, theirs) in rendered.iter().zip(&expected) {
        let prompt = ours["prompt"].as_str().unwrap();
        assert_eq!(prompt, theirs["prompt"].as_str().unwrap());
        assert_eq!(format!("{prompt}{}", ours["response"].as_str().unwrap()), theirs["full"].as_str().unwrap());
        let prompt_ids: Vec<i64> = serde_json::from_value(theirs["prompt_ids"].clone()).unwrap();
        let (ids, labels): (Vec<i64>, Vec<i64>) = (serde_json::from_value(ours["ids"].clone()).unwrap(), serde_json::from_value(ours["labels"].clone()).unwrap());
        assert_eq!(&ids[..prompt_ids.len()], prompt_ids.as_slice(), "the template's BOS is not doubled");
        assert!(labels[..prompt_ids.len()].iter().all(|&l| l == -100), "no loss on the prompt");
        assert!(labels[prompt_ids.len()..].iter().all(|&l| l != -100) && labels.len() > prompt_ids.len(), "loss on the whole reply");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
