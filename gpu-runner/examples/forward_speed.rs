//! Forward tokens/s on the tiny benchmark MoE (d=512, 4 layers, 8 experts top-2, batch 8 × seq 256,
//! fp32 on CPU) for each architecture, random weights. A quick measurement, not the benchmark suite:
//! `cargo run --release -p moetune-runner --example forward_speed`.

use std::time::Instant;

use moetune_runner::model::{new_seeded, ArchConfig, ForwardMode};
use serde_json::json;
use tch::{nn, Device, Tensor};

fn main() {
    let common = json!({"vocab_size": 32000, "hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 4, "num_experts_per_tok": 2, "rms_norm_eps": 1e-6, "intermediate_size": 1024, "head_dim": 64});
    let archs = [
        ("mixtral", json!({"architectures": ["MixtralForCausalLM"], "num_local_experts": 8})),
        ("qwen3_moe", json!({"architectures": ["Qwen3MoeForCausalLM"], "num_experts": 8, "moe_intermediate_size": 1024})),
        ("gpt_oss", json!({"architectures": ["GptOssForCausalLM"], "num_local_experts": 8, "sliding_window": 128})),
    ];
    let (batch, seq) = (8i64, 256i64);
    for (name, extra) in archs {
        let mut raw = common.clone();
        raw.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let vars = nn::VarStore::new(Device::Cpu);
        let model = new_seeded(&vars, ArchConfig::from_json(raw).unwrap(), 1);
        let ids = Tensor::randint(32000, [batch, seq], (tch::Kind::Int64, Device::Cpu));
        tch::no_grad(|| model.forward(&ids, ForwardMode::default())); // warm-up
        let runs = 3;
        let started = Instant::now();
        for _ in 0..runs {
            tch::no_grad(|| model.forward(&ids, ForwardMode::default()));
        }
        let per_run = started.elapsed().as_secs_f64() / runs as f64;
        println!("{name}: {:.0} tokens/s forward ({:.3} s per batch of {batch}×{seq}, {} threads)", (batch * seq) as f64 / per_run, per_run, tch::get_num_threads());
    }
}
