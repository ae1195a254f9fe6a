//! Loading and saving checkpoints: every architecture round-trips through `save_pretrained` (single file
//! and sharded), and broken checkpoints fail with an error that says what is wrong, never a panic.

use std::path::{Path, PathBuf};

use moetune_runner::model::checkpoint::{write_safetensors, Owned};
use moetune_runner::model::inspect::inspect;
use moetune_types::placement::TrainingDevice;
use moetune_types::{MoeSftQatOptions, SftMethod, TrainingSpec};
mod common;

use moetune_runner::model::{new_seeded, tiny, ArchConfig, ForwardMode, MoeModel};
use safetensors::SafeTensors;
use serde_json::json;
use tch::{nn, Device, Kind, Tensor};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moetune-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn configs() -> Vec<ArchConfig> {
    common::configs().into_iter().map(|(_, config)| config).collect()
}

fn logits(model: &MoeModel) -> Tensor {
    let ids = Tensor::from_slice(&[3i64, 17, 42, 5, 88, 1, 60, 2]).view([1, 8]);
    tch::no_grad(|| model.forward(&ids, ForwardMode::default()).logits)
}

fn saved(config: ArchConfig, dir: &Path, shard_bytes: u64) -> Tensor {
    let vars = nn::VarStore::new(Device::Cpu);
    let model = new_seeded(&vars, config, 7);
    model.save_pretrained(&vars, dir, Kind::Float, shard_bytes).unwrap();
    logits(&model)
}

#[test]
fn every_architecture_round_trips_single_file_and_sharded() {
    for (i, config) in configs().into_iter().enumerate() {
        for shard_bytes in [u64::MAX, 40_000] {
            let dir = scratch(&format!("roundtrip-{i}-{shard_bytes}"));
            let before = saved(config.clone(), &dir, shard_bytes);
            assert_eq!(dir.join("model.safetensors.index.json").exists(), shard_bytes != u64::MAX);
            let (_vars, loaded) = MoeModel::load_dir(&dir, Device::Cpu, Kind::Float).unwrap();
            let after = logits(&loaded);
            assert_eq!(f64::try_from((&before - &after).abs().max()).unwrap(), 0.0, "{:?}", config.architecture);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn per_expert_checkpoints_use_transformers_names() {
    let dir = scratch("names");
    let _ = saved(configs().remove(0), &dir, u64::MAX);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let names: Vec<String> = SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(str::to_string).collect();
    for expected in ["model.layers.1.block_sparse_moe.experts.3.w1.weight", "model.layers.0.block_sparse_moe.gate.weight", "lm_head.weight"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rewrites `model.safetensors` in `dir` through `edit` (name → replacement or removal).
fn rewrite(dir: &Path, edit: impl Fn(&str, &[usize]) -> Option<Option<Vec<usize>>>) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let shape = match edit(&name, view.shape()) {
            None => view.shape().to_vec(),
            Some(None) => continue,
            Some(Some(shape)) => shape,
        };
        let numel: usize = shape.iter().product();
        out.push(Owned { name, dtype: view.dtype(), shape, bytes: vec![0u8; numel * 4] });
    }
    write_safetensors(dir, out, u64::MAX).unwrap();
}

fn load_error(dir: &Path) -> String {
    match MoeModel::load_dir(dir, Device::Cpu, Kind::Float) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = scratch("missing");
    let _ = saved(tiny::config(), &dir, u64::MAX);
    rewrite(&dir, |name, _| (name == "model.layers.1.self_attn.k_proj.weight").then_some(None));
    let error = load_error(&dir);
    assert!(error.contains("no tensor model.layers.1.self_attn.k_proj.weight"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_expert_is_named() {
    let dir = scratch("missing-expert");
    let _ = saved(tiny::config(), &dir, u64::MAX);
    rewrite(&dir, |name, _| (name == "model.layers.0.block_sparse_moe.experts.2.w3.weight").then_some(None));
    let error = load_error(&dir);
    assert!(error.contains("model.layers.0.mlp.experts.gate_up_proj") || error.contains("experts.2.w3"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_wrong_shape_names_the_tensor_and_both_shapes() {
    let dir = scratch("shape");
    let _ = saved(tiny::config(), &dir, u64::MAX);
    rewrite(&dir, |name, _| (name == "model.layers.0.block_sparse_moe.experts.1.w2.weight").then_some(Some(vec![128, 128])));
    let error = load_error(&dir);
    assert!(error.contains("model.layers.0.block_sparse_moe.experts.1.w2.weight"), "{error}");
    assert!(error.contains("expected shape [128, 256], found [128, 128]"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unsupported_architecture_lists_the_supported_ones() {
    let dir = scratch("arch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}"#).unwrap();
    let error = load_error(&dir);
    assert!(error.contains("unsupported architecture LlamaForCausalLM"), "{error}");
    assert!(error.contains("MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, GptOssForCausalLM"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_file_is_reported_not_a_crash() {
    let dir = scratch("truncated");
    let _ = saved(tiny::config(), &dir, u64::MAX);
    let path = dir.join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    let error = load_error(&dir);
    assert!(error.contains("model.safetensors is not a valid safetensors file (truncated?)"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_config_missing_a_field_says_which() {
    let mut raw = tiny::config_json();
    raw.as_object_mut().unwrap().remove("num_local_experts");
    let error = format!("{:#}", ArchConfig::from_json(raw).unwrap_err());
    assert!(error.contains("MixtralForCausalLM") && error.contains("num_local_experts"), "{error}");
}

#[test]
fn inspect_counts_total_and_active_parameters() {
    let dir = scratch("inspect");
    let _ = saved(tiny::config(), &dir, u64::MAX);
    let spec = |sft_method| TrainingSpec { model: "tiny".into(), n_epochs: 1, batch_size: 8, seed: 0, moe: MoeSftQatOptions { sft_method, seq_len: 256, ..Default::default() }, routing_profile: None };
    let report = inspect(&dir, &spec(SftMethod::Lora)).unwrap();
    // tiny-mixtral: embeddings + lm_head 2·1024·128; per layer attention 128·(128+64+64) + 128·128,
    // norms 2·128, router 4·128, experts 4·3·128·256; final norm 128.
    let per_layer_experts = 4 * 3 * 128 * 256;
    let per_layer_other = 128 * 256 + 128 * 128 + 2 * 128 + 4 * 128;
    let total = 2 * 1024 * 128 + 2 * (per_layer_other + per_layer_experts) + 128;
    assert_eq!(report.parameters.total, total);
    assert_eq!(report.parameters.active_per_token, total - 2 * per_layer_experts / 2);
    assert_eq!(report.dtype_on_disk.as_deref(), Some("f32"));
    let (cuda, cpu) = (&report.memory["cuda"], &report.memory["cpu"]);
    assert_eq!((cuda.dtype, cpu.dtype), ("bf16", "fp32"));
    assert_eq!(cuda.stages["sft"].weights_bytes, total * 2);
    let full = report.memory_model.job_memory(&spec(SftMethod::Full), TrainingDevice::Cuda);
    assert_eq!(full.stages["sft"].trainable_params, total - 2 * 4 * 128, "the router is frozen");
    assert!(cuda.peak_bytes < full.peak_bytes);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The estimate for the models users train, from their config.json alone (the shapes as published):
/// a LoRA job at batch 1 × 4096 tokens, LoRA-QAT after it. Printed for docs/benchmarks.md; the bounds
/// only pin what packing and checkpointing must give.
#[test]
fn estimates_for_the_published_models() {
    let gpt_oss = |layers: i64, experts: i64| {
        json!({"architectures": ["GptOssForCausalLM"], "vocab_size": 201088, "hidden_size": 2880, "num_hidden_layers": layers,
               "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": experts,
               "num_experts_per_tok": 4, "intermediate_size": 2880, "sliding_window": 128, "rms_norm_eps": 1e-5,
               "quantization_config": {"quant_method": "mxfp4"}})
    };
    let models = [
        ("gpt-oss-20b", gpt_oss(24, 32), json!({})),
        ("gpt-oss-120b", gpt_oss(36, 128), json!({})),
        (
            "Qwen3-30B-A3B",
            json!({"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 48,
                   "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
                   "moe_intermediate_size": 768, "intermediate_size": 6144, "rms_norm_eps": 1e-6}),
            json!({"base_expert_format": "nvfp4", "qat": {"format": "nvfp4"}}),
        ),
        (
            "Mixtral-8x7B",
            json!({"architectures": ["MixtralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
                   "intermediate_size": 14336, "rms_norm_eps": 1e-5}),
            json!({"base_expert_format": "nvfp4", "qat": {"format": "nvfp4"}}),
        ),
    ];
    let gib = |b: i64| b as f64 / f64::from(1 << 30);
    for (name, config, extra) in models {
        let dir = scratch(&format!("published-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        // LoRA on q/k/v/o and every expert, then on q/k/v/o only (the experts frozen and packed either way).
        for target_experts in [true, false] {
            let mut options = json!({"seq_len": 4096, "lora": {"target_experts": target_experts}});
            options.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            let moe: MoeSftQatOptions = serde_json::from_value(options).unwrap();
            let spec = TrainingSpec { model: name.into(), n_epochs: 1, batch_size: 1, seed: 0, moe, routing_profile: None };
            let report = inspect(&dir, &spec).unwrap();
            let cuda = &report.memory["cuda"];
            let stage = |s: &str| cuda.stages.get(s).map_or(0.0, |m| gib(m.total_bytes));
            println!(
                "{name}, LoRA on {}: {} params, experts {}: SFT {:.1} GiB (weights {:.1}), LoRA-QAT {:.1} GiB; GPU peak {:.1} GiB; merge on the host {:.1} GiB",
                if target_experts { "attention and experts" } else { "attention" },
                report.parameters.total,
                cuda.base_experts,
                stage("sft"),
                gib(cuda.stages["sft"].weights_bytes),
                stage("qat"),
                gib(cuda.peak_bytes),
                gib(cuda.host_bytes)
            );
            assert_ne!(cuda.base_experts, "bf16", "{name}: frozen experts are packed");
            assert!(cuda.activation_checkpointing);
            // Packed experts at ~4.3 bits: the SFT weights are well under half the dense model's.
            assert!(cuda.stages["sft"].weights_bytes * 3 < cuda.host_bytes, "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// One rank's estimate for full SFT → full QAT of gpt-oss-120b, bf16 with activation checkpointing,
/// batch 1 × 4,096 tokens: AdamW's 16 bytes per parameter (1.87 TB) exceed 8 × 80 GB however they are
/// split across GPUs; with the experts split across 32 ranks (and the optimiser state of the rest
/// across them too) one rank fits an 80 GB GPU, and so does one of 8 fully sharded ranks whose shards
/// and optimiser state are offloaded to host memory.
#[test]
fn full_training_of_gpt_oss_120b_per_rank() {
    let dir = scratch("published-gpt-oss-120b-full");
    std::fs::create_dir_all(&dir).unwrap();
    let config = json!({"architectures": ["GptOssForCausalLM"], "vocab_size": 201088, "hidden_size": 2880, "num_hidden_layers": 36,
                        "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 128,
                        "num_experts_per_tok": 4, "intermediate_size": 2880, "sliding_window": 128, "rms_norm_eps": 1e-5,
                        "quantization_config": {"quant_method": "mxfp4"}});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let gib = |b: i64| b as f64 / f64::from(1 << 30);
    let per_rank = |ranks: u32, split: &[&str]| {
        let mut options = json!({"sft_method": "full", "seq_len": 4096, "world_size": ranks, "gradient_accumulation_steps": ranks});
        for how in split {
            options[how] = true.into();
        }
        let moe: MoeSftQatOptions = serde_json::from_value(options).unwrap();
        let spec = TrainingSpec { model: "gpt-oss-120b".into(), n_epochs: 1, batch_size: 1, seed: 0, moe, routing_profile: None };
        let cuda = inspect(&dir, &spec).unwrap().memory["cuda"].clone();
        let sft = &cuda.stages["sft"];
        let how = match split {
            ["expert_parallel"] => ", experts split",
            [_] => ", fully sharded",
            [_, _] => ", fully sharded, offloaded",
            _ => "",
        };
        println!(
            "gpt-oss-120b full SFT → QAT, {ranks} ranks{how}: weights {:.1} GiB, gradients and optimiser state {:.1} GiB, activations {:.1} GiB; peak {:.1} GiB per rank, {:.1} GiB of host memory offloaded",
            gib(sft.weights_bytes),
            gib(sft.trainable_bytes),
            gib(sft.activations_bytes + sft.transient_bytes),
            gib(cuda.peak_bytes),
            gib(cuda.offloaded_bytes)
        );
        (cuda.peak_bytes, cuda.offloaded_bytes)
    };
    let experts: &[&str] = &["expert_parallel"];
    let peaks: Vec<i64> = [(1, &[][..]), (8, &[]), (8, experts), (32, experts), (64, experts)].into_iter().map(|(r, s)| per_rank(r, s).0).collect();
    let gpu = 80_000_000_000;
    assert!(peaks[0] > 1_800_000_000_000, "one rank holds the whole 16 bytes per parameter");
    assert!(peaks.windows(2).all(|w| w[1] < w[0]), "{peaks:?}: more ranks, less each");
    assert!(peaks[2] > gpu, "8 expert-parallel ranks still hold about 180 GB of optimiser state each");
    assert!(peaks[3] <= gpu, "32 expert-parallel ranks fit an 80 GB GPU each");
    let sharded: Vec<i64> = [8, 32, 64].into_iter().map(|r| per_rank(r, &["fully_sharded"]).0).collect();
    assert!(sharded.windows(2).all(|w| w[1] < w[0]), "{sharded:?}: more ranks, less each");
    assert!(sharded[0] > gpu && sharded[0] < peaks[1], "8 fully sharded ranks hold 1/8 of everything, still more than 80 GB");
    assert!(sharded[2] <= gpu, "64 fully sharded ranks fit an 80 GB GPU each");
    let (offloaded, host) = per_rank(8, &["fully_sharded", "cpu_offload"]);
    assert!(offloaded <= gpu, "8 fully sharded ranks with their shards in host memory fit an 80 GB GPU each: {:.1} GiB", gib(offloaded));
    // fp32 shards (4 bytes per parameter), their gradients and moments (12), an eighth each.
    assert!(host > 1_800_000_000_000 / 8 && host < 2_000_000_000_000 / 8, "{:.1} GiB of host memory per rank", gib(host));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `fnmatch` as modelopt applies `exclude_modules`: `*` matches any run of characters, dots included.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => name.starts_with(head) && (0..=name.len() - head.len()).any(|skip| glob(rest, &name[head.len() + skip..])),
    }
}

#[test]
fn nvfp4_exports_list_every_linear_they_leave_unquantized() {
    for (arch, config) in common::configs() {
        let dir = scratch(&format!("exclude-{arch}"));
        let vars = nn::VarStore::new(Device::Cpu);
        let model = new_seeded(&vars, config, 7);
        moetune_runner::export::fp4::write(&model, &vars, moetune_types::QatFormat::Nvfp4, Default::default(), None, &dir).unwrap();
        let quant: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("hf_quant_config.json")).unwrap()).unwrap();
        let exclude: Vec<&str> = quant["quantization"]["exclude_modules"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        for name in &names {
            let Some(module) = name.strip_suffix(".weight") else { continue };
            let linear = st.tensor(name).unwrap().shape().len() == 2 && module != "model.embed_tokens";
            let quantized = names.contains(&format!("{module}.weight_scale"));
            if linear && !quantized {
                assert!(exclude.iter().any(|p| glob(p, module)), "{arch}: {module} is not quantized and not excluded: {exclude:?}");
            }
            if quantized {
                assert!(!exclude.iter().any(|p| glob(p, module)), "{arch}: {module} is quantized but excluded");
            }
        }
        if arch == "qwen2_moe" {
            for module in ["model.layers.0.mlp.shared_expert.down_proj", "model.layers.0.mlp.shared_expert_gate", "model.layers.1.mlp.gate_proj"] {
                assert!(exclude.contains(&module), "{module} missing from {exclude:?}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
