//! Writes the trained model in the Hugging Face layout: model.safetensors (transformers' names,
//! `{"format": "pt"}` metadata), config.json and tokenizer.json.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use tch::Kind;

use crate::train::TrainOutput;

/// Writes the files into `dir` and returns their paths.
pub fn write_hf_checkpoint(output: &TrainOutput, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, tensor) in output.vars.variables() {
        let tensor = tensor.to_kind(Kind::Float).to_device(tch::Device::Cpu).contiguous();
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        let values = Vec::<f32>::try_from(tensor.flatten(0, -1)).with_context(|| format!("reading {name}"))?;
        named.push((name, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let views = named
        .iter()
        .map(|(name, shape, bytes)| Ok((name.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let model_path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, Some(metadata), &model_path)?;

    let config_path = dir.join("config.json");
    let config = output.model.config.to_hf_json("float32");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
    let tokenizer_path = dir.join("tokenizer.json");
    std::fs::write(&tokenizer_path, output.tokenizer_json)?;
    Ok(vec![model_path, config_path, tokenizer_path])
}
