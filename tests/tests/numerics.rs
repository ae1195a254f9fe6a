//! The runner's model code computes what the reference implementation computes: logits of a trained
//! checkpoint from `moetune-runner logits` equal transformers' `MixtralForCausalLM` on the same weights.

use std::process::Command;

use moetune_e2e::{run_ok, workspace_binary};

const TRANSFORMERS_LOGITS: &str = r#"
import json, sys, torch
from transformers import MixtralForCausalLM
model = MixtralForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32).eval()
ids = torch.tensor([[int(i) for i in sys.argv[2].split(",")]])
with torch.no_grad():
    print(json.dumps(model(ids).logits[0].tolist()))
"#;

#[test]
fn mixtral_logits_match_transformers() {
    let dir = std::env::temp_dir().join(format!("moetune-numerics-{}", std::process::id()));
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo/finance-alpaca-mini.jsonl");
    let runner = workspace_binary("moetune-runner");
    // A few real SFT steps so the router and experts are not at their initial values.
    run_ok(Command::new(&runner).args(["train", "--data", data, "--sft-steps", "8", "--qat-steps", "0", "--out"]).arg(&dir));
    let ids = "1,40,311,7,620,93,250,5,18,777,64,2,300,301,302,9";
    let ours: Vec<Vec<f32>> = serde_json::from_str(&run_ok(Command::new(&runner).args(["logits", "--ids", ids, "--model-dir"]).arg(&dir))).unwrap();
    let reference: Vec<Vec<f32>> =
        serde_json::from_str(&run_ok(Command::new("python3").args(["-c", TRANSFORMERS_LOGITS]).arg(&dir).arg(ids))).unwrap();
    assert_eq!((ours.len(), ours[0].len()), (16, 1024));
    assert_eq!((reference.len(), reference[0].len()), (16, 1024));
    let max_diff = ours.iter().flatten().zip(reference.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let spread = reference.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    assert!(spread > 0.1, "degenerate logits");
    assert!(max_diff < 1e-4, "max |ours - transformers| = {max_diff} (logit scale {spread})");
    std::fs::remove_dir_all(&dir).unwrap();
}
