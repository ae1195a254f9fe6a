//! The memory model measured: one training step on a decoder layer with a published model's real
//! shapes (random weights), run by `moetune-bench memory` in a process of its own, peaks within 15% of
//! the estimate `inspect` gives for the same job. Each slice takes 5–10 GiB of host memory.

use std::process::Command;

fn measure(config: &str, options: &str) -> serde_json::Value {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/bench/memory/").to_string() + config;
    let output = Command::new(env!("CARGO_BIN_EXE_moetune-bench")).args(["memory", "--config", &config, "--options", options]).output().expect("moetune-bench runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let line = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn real_shape_slices_peak_within_15_percent_of_the_estimate() {
    // Qwen3-30B-A3B's layer, experts packed NVFP4, activation checkpointing (as on a GPU);
    // gpt-oss-20b's layer with its experts MXFP4 as shipped, no checkpointing (the CPU default).
    let slices = [
        ("qwen3-30b-a3b-layer.json", r#"{"seq_len": 512, "gradient_checkpointing": true, "lora": {"target_experts": true}, "base_expert_format": "nvfp4", "qat": {"format": "nvfp4"}}"#, "nvfp4"),
        ("gpt-oss-20b-layer.json", r#"{"seq_len": 512, "lora": {"target_experts": true}}"#, "mxfp4"),
    ];
    for (config, options, experts) in slices {
        let m = measure(config, options);
        assert_eq!(m["base_experts"], experts, "{m}");
        let ratio = m["measured_over_estimate"].as_f64().unwrap();
        assert!((0.85..=1.15).contains(&ratio), "{config}: measured {} GiB against an estimate of {} GiB", m["measured_peak_gib"], m["estimated_peak_gib"]);
        let weights = m["measured_weights_gib"].as_f64().unwrap() / m["estimated_weights_gib"].as_f64().unwrap();
        assert!((0.97..=1.03).contains(&weights), "{config}: weights {m}");
    }
}
