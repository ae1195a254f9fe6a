//! `moetune/tiny-mixtral`: a small Mixtral the runner builds itself (fixed seed, so every runner
//! builds the same base weights), with the tokenizer shipped in `assets/`. It is an ordinary
//! `MixtralForCausalLM`: its config.json goes through the same parser as any checkpoint's.

use super::config::ArchConfig;

pub const NAME: &str = "moetune/tiny-mixtral";
pub const TOKENIZER_JSON: &str = include_str!("../../assets/tiny-mixtral/tokenizer.json");
/// Seed of the base weights; independent of the job's training seed.
pub const BASE_SEED: i64 = 20_261_123;

/// config.json of the tiny model, as transformers writes it for Mixtral.
pub fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "vocab_size": 1024,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "rms_norm_eps": 1e-5,
        "rope_parameters": { "rope_theta": 1e6, "rope_type": "default" },
        "max_position_embeddings": 4096,
        "sliding_window": null,
        "tie_word_embeddings": false,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "router_aux_loss_coef": 0.001,
        "router_jitter_noise": 0.0,
        "output_router_logits": false,
        "initializer_range": 0.02,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "use_cache": true,
    })
}

pub fn config() -> ArchConfig {
    ArchConfig::from_json(config_json()).expect("the built-in tiny config parses")
}
