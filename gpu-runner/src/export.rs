//! Writes the trained model in the Hugging Face layout: safetensors under transformers' names (sharded
//! above 2 GiB, as `save_pretrained` does by default in spirit), config.json and the tokenizer.

use std::path::{Path, PathBuf};

use tch::Kind;

use crate::train::TrainOutput;

/// Shard size of exported checkpoints.
pub const MAX_SHARD_BYTES: u64 = 2 << 30;

/// Writes the files into `dir` and returns their paths.
pub fn write_hf_checkpoint(output: &TrainOutput, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = output.model.save_pretrained(&output.vars, dir, Kind::Float, MAX_SHARD_BYTES)?;
    let tokenizer_path = dir.join("tokenizer.json");
    std::fs::write(&tokenizer_path, &output.codec.tokenizer_json)?;
    written.push(tokenizer_path);
    Ok(written)
}
