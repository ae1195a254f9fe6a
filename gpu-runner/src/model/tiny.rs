//! `moetune/tiny-mixtral`: the small Mixtral-shaped model the runner builds itself (fixed seed, so
//! every runner builds the same base weights) with the tokenizer shipped in `assets/`.

use super::mixtral::MixtralConfig;

pub const NAME: &str = "moetune/tiny-mixtral";
pub const TOKENIZER_JSON: &str = include_str!("../../assets/tiny-mixtral/tokenizer.json");
/// Seed of the base weights; independent of the job's training seed.
pub const BASE_SEED: i64 = 20_261_123;

pub fn config() -> MixtralConfig {
    MixtralConfig {
        vocab_size: 1024,
        hidden_size: 128,
        intermediate_size: 256,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        num_local_experts: 4,
        num_experts_per_tok: 2,
        rms_norm_eps: 1e-5,
        rope_theta: 1e6,
        max_position_embeddings: 4096,
        tie_word_embeddings: false,
    }
}
