//! What a job produces, written in the layouts the standard tools load: the merged checkpoint (HF
//! layout), the LoRA adapter (PEFT), and the FP4 checkpoint (gpt-oss MXFP4 or modelopt NVFP4).

pub mod fp4;
pub mod serve_check;

use std::path::{Path, PathBuf};

use tch::{nn, Kind};

use crate::model::MoeModel;
use crate::text::TextCodec;

/// Shard size of exported checkpoints (transformers' default, 5 GB). Shards are written as they fill,
/// so the host holds at most one beside the model.
pub const MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// The dtype the model's weights are held in (bf16 on GPU, fp32 on CPU): exports keep it.
pub fn weight_kind(vars: &nn::VarStore) -> Kind {
    vars.variables().get("model.embed_tokens.weight").map_or(Kind::Float, |t| t.kind())
}

/// Writes config.json, the weights (HF names, in the training dtype, sharded above 5 GB) and
/// tokenizer.json into `dir`.
pub fn write_hf_checkpoint(model: &MoeModel, vars: &nn::VarStore, codec: &TextCodec, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = model.save_pretrained(vars, dir, weight_kind(vars), MAX_SHARD_BYTES)?;
    written.push(write_tokenizer(codec, dir)?);
    Ok(written)
}

pub fn write_tokenizer(codec: &TextCodec, dir: &Path) -> anyhow::Result<PathBuf> {
    let tokenizer_path = dir.join("tokenizer.json");
    std::fs::write(&tokenizer_path, &codec.tokenizer_json)?;
    Ok(tokenizer_path)
}

/// Writes every output of a finished job under `dir` and returns `(artifact name, path)` pairs:
/// `merged/…` (HF checkpoint), `adapter/…` (PEFT, LoRA jobs), `{mxfp4|nvfp4}/…` (FP4 checkpoint)
/// and `eval_report.json`. Then loads each back for the serve check ([`serve_check`]): an export that
/// does not reproduce the trained model is an error, and its check is added to `summary`.
/// `base_model` is where the base model is (the spec's name may be a registry name).
pub fn write_checked_outputs(output: &crate::train::TrainOutput, spec: &moetune_types::TrainingSpec, base_model: &str, dir: &Path, summary: &mut serde_json::Value) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let artifacts = write_job_outputs(output, spec, dir)?;
    let located = moetune_types::TrainingSpec { model: base_model.to_string(), ..spec.clone() };
    let check = serve_check::run(output, &located, dir, &output.probe)?;
    summary["serve_check"] = serde_json::to_value(&check)?;
    anyhow::ensure!(check.passed, serve_check::failure(&check));
    Ok(artifacts)
}

/// Writes every output of a finished job under `dir` (see [`write_checked_outputs`]).
pub fn write_job_outputs(output: &crate::train::TrainOutput, spec: &moetune_types::TrainingSpec, dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut artifacts = Vec::new();
    let mut add = |prefix: &str, files: Vec<PathBuf>| {
        for path in files {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            artifacts.push((format!("{prefix}{name}"), path));
        }
    };
    add("merged/", write_hf_checkpoint(&output.model, &output.vars, &output.codec, &dir.join("merged"))?);
    if let Some(adapters) = &output.adapters {
        let adapter_dir = dir.join("adapter");
        add("adapter/", crate::train::lora::save_peft(adapters, &spec.moe.lora, &output.model, &spec.model, &adapter_dir)?);
    }
    let format = output.qat_format;
    let fp4_dir = dir.join(format.as_str());
    let rule = crate::quant::mxfp4_scale_rule(spec.moe.qat.mxfp4_scale_rule);
    let mut fp4_files = fp4::write(&output.model, &output.vars, format, rule, output.activation_amax.as_ref(), &fp4_dir)?;
    fp4_files.push(write_tokenizer(&output.codec, &fp4_dir)?);
    add(&format!("{}/", format.as_str()), fp4_files);
    let report = dir.join("eval_report.json");
    std::fs::write(&report, serde_json::to_vec_pretty(&output.report)?)?;
    add("", vec![report]);
    Ok(artifacts)
}
