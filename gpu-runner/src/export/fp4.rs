//! FP4 checkpoints. Expert weights are encoded by the pure-Rust codecs (`quant::fp4`), which produce
//! exactly the values QAT's fake quantization trained against; everything else keeps the training
//! dtype (bf16 on GPU, fp32 on CPU), so the exported model computes what the job evaluated. Tensors
//! go to disk shard by shard as they are encoded.
//!
//! * MXFP4, gpt-oss layout: `mlp.experts.{gate_up,down}_proj_{blocks,scales}` (`[E, out, in/32, 16]`
//!   and `[E, out, in/32]`) and `quantization_config {quant_method: mxfp4, modules_to_not_convert}`.
//!   transformers loads it for gpt-oss; for the other architectures the same tensors sit under their
//!   fused names, which moetune-runner loads (transformers has MXFP4 kernels for gpt-oss only).
//! * NVFP4, modelopt layout: per expert Linear `weight` (u8 `[out, in/2]`), `weight_scale`
//!   (F8_E4M3 `[out, in/16]`), `weight_scale_2` (F32 scalar), `input_scale` (F32 scalar, when the
//!   activations were quantized); `hf_quant_config.json` with routers, attention, lm_head and the
//!   unquantized MLPs (shared experts, dense layers) excluded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use moetune_types::QatFormat;
use safetensors::Dtype;
use tch::{nn, Kind, Tensor};

use crate::model::checkpoint::{self, Owned};
use crate::model::shards::ShardWriter;
use crate::model::config::ExpertCheckpoint;
use crate::model::params::Role;
use crate::model::{ExpertInput, MoeModel};
use crate::quant::fp4;

/// Calibrated amax of the experts' input activations, per (decoder layer, projection).
pub type ActivationAmax = HashMap<(usize, ExpertInput), f32>;

fn f32_values(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous().flatten(0, -1))?)
}

fn raw(name: String, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) -> Owned {
    Owned { name, dtype, shape, bytes }
}

/// `[E, out, in]` expert weights, whatever orientation the architecture stores.
fn out_in(model: &MoeModel, w: &Tensor) -> Tensor {
    if model.experts_transposed() { w.transpose(1, 2).contiguous() } else { w.shallow_clone() }
}

fn layer_of(name: &str) -> anyhow::Result<usize> {
    name.split('.').nth(2).and_then(|s| s.parse().ok()).with_context(|| format!("no layer index in {name}"))
}

/// Writes the FP4 checkpoint of `model` (weights in `vars`) into `dir`; returns the files.
pub fn write(model: &MoeModel, vars: &nn::VarStore, format: QatFormat, rule: fp4::Mxfp4ScaleRule, activations: Option<&ActivationAmax>, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(!model.has_packed_experts(), "experts are packed: unpack them before the export");
    std::fs::create_dir_all(dir)?;
    let variables = vars.variables();
    // Expert weight matrices are encoded; everything else (gpt-oss expert biases included) stays fp32.
    let (experts, others): (Vec<_>, Vec<_>) = model.params.iter().cloned().partition(|p| p.role == Role::Expert && !p.name.ends_with("_bias"));
    let kind = super::weight_kind(vars);
    let mut shards = ShardWriter::new(dir, super::MAX_SHARD_BYTES)?;
    checkpoint::for_each_on_disk(&others, &variables, &model.config, kind, |t| shards.push(t))?;
    for param in &experts {
        let w = out_in(model, variables.get(&param.name).with_context(|| format!("no variable {}", param.name))?);
        let encoded = match format {
            QatFormat::Mxfp4 => mxfp4_tensors(&param.name, &w, rule)?,
            QatFormat::Nvfp4 => {
                let which = if param.name.ends_with("gate_up_proj") { ExpertInput::GateUp } else { ExpertInput::Down };
                let layer = layer_of(&param.name)?;
                let amax = activations.and_then(|a| a.get(&(layer, which)).copied());
                nvfp4_tensors(model, &param.name, &w, amax)?
            }
        };
        for tensor in encoded {
            shards.push(tensor)?;
        }
    }
    let mut written = shards.finish()?;
    let mut config = model.config.raw.clone();
    let map = config.as_object_mut().context("config.json is an object")?;
    map.insert("dtype".into(), crate::model::kind_name(kind).into());
    map.remove("torch_dtype");
    let module = match model.config.moe.checkpoint {
        ExpertCheckpoint::PerExpert { module, .. } => module,
        ExpertCheckpoint::Fused => "mlp",
    };
    let router = format!("model.layers.*.{module}.{}", model.config.moe.router_name);
    let dense_mlps = unquantized_mlps(model);
    match format {
        QatFormat::Mxfp4 => {
            let mut not_converted = vec!["model.layers.*.self_attn".to_string(), router, "model.embed_tokens".into(), "lm_head".into()];
            not_converted.extend(dense_mlps);
            map.insert("quantization_config".into(), serde_json::json!({ "quant_method": "mxfp4", "modules_to_not_convert": not_converted }));
        }
        QatFormat::Nvfp4 => {
            let algo = if activations.is_some() { "NVFP4" } else { "W4A16_NVFP4" };
            let mut exclude = vec!["lm_head".to_string(), router, "model.layers.*.self_attn*".into()];
            exclude.extend(dense_mlps);
            let quant = serde_json::json!({ "quant_algo": algo, "kv_cache_quant_algo": null, "group_size": 16, "exclude_modules": exclude });
            let hf_quant = serde_json::json!({ "producer": { "name": "moetune", "version": env!("CARGO_PKG_VERSION") }, "quantization": quant });
            let path = dir.join("hf_quant_config.json");
            std::fs::write(&path, serde_json::to_vec_pretty(&hf_quant)?)?;
            written.push(path);
            let mut in_config = quant.clone();
            in_config["quant_method"] = "modelopt".into();
            map.insert("quantization_config".into(), in_config);
        }
    }
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    written.push(path);
    Ok(written)
}

/// The Linear modules of MLPs that stay unquantized, as loaders name them: Qwen2-MoE's shared expert
/// and its gate, and the dense MLP of layers without routed experts. Loaders that quantize every Linear
/// not excluded would otherwise look for FP4 tensors these modules do not have.
fn unquantized_mlps(model: &MoeModel) -> Vec<String> {
    let layout = model.config.moe.checkpoint;
    model
        .params
        .iter()
        .filter(|p| matches!(p.role, Role::SharedExpert | Role::DenseMlp) && p.shape.len() == 2)
        .filter_map(|p| p.name.strip_suffix(".weight").map(|module| layout.disk_name(module)))
        .collect()
}

/// `{name}_blocks` `[E, out, in/32, 16]` and `{name}_scales` `[E, out, in/32]`.
fn mxfp4_tensors(name: &str, w: &Tensor, rule: fp4::Mxfp4ScaleRule) -> anyhow::Result<Vec<Owned>> {
    let (e, out, input) = w.size3()?;
    let (blocks, scales) = fp4::mxfp4_encode_with(&f32_values(w)?, input as usize, rule).map_err(anyhow::Error::msg)?;
    let (e, out, groups) = (e as usize, out as usize, input as usize / fp4::MXFP4_BLOCK);
    Ok(vec![
        raw(format!("{name}_blocks"), Dtype::U8, vec![e, out, groups, fp4::MXFP4_BLOCK_BYTES], blocks),
        raw(format!("{name}_scales"), Dtype::U8, vec![e, out, groups], scales),
    ])
}

/// One modelopt-quantized Linear: `weight`, `weight_scale`, `weight_scale_2` and `input_scale`.
fn nvfp4_linear(prefix: &str, w: &Tensor, global_scale: f32, input_amax: Option<f32>) -> anyhow::Result<Vec<Owned>> {
    let (out, input) = w.size2()?;
    let encoded = fp4::nvfp4_encode(&f32_values(w)?, input as usize, global_scale).map_err(anyhow::Error::msg)?;
    let (out, input) = (out as usize, input as usize);
    let mut tensors = vec![
        raw(format!("{prefix}.weight"), Dtype::U8, vec![out, input / 2], encoded.packed),
        raw(format!("{prefix}.weight_scale"), Dtype::F8_E4M3, vec![out, input / fp4::NVFP4_BLOCK], encoded.block_scales),
        raw(format!("{prefix}.weight_scale_2"), Dtype::F32, vec![], encoded.global_scale.to_le_bytes().to_vec()),
    ];
    if let Some(amax) = input_amax {
        tensors.push(raw(format!("{prefix}.input_scale"), Dtype::F32, vec![], (amax / (6.0 * 448.0)).to_le_bytes().to_vec()));
    }
    Ok(tensors)
}

/// Per-expert Linears under the names transformers saves (`experts.{e}.w1`, `experts.{e}.gate_proj`, …);
/// gpt-oss, which has no per-expert modules, gets `experts.{e}.gate_up_proj` / `down_proj`. Gate and
/// up share one per-tensor scale (the amax of both), as modelopt exports fused-input projections; QAT
/// fake-quantizes the fused `[2I, H]` expert weight with that same scale.
fn nvfp4_tensors(model: &MoeModel, name: &str, w: &Tensor, input_amax: Option<f32>) -> anyhow::Result<Vec<Owned>> {
    let layout = model.config.moe.checkpoint;
    let field = name.rsplit_once('.').map_or(name, |(_, f)| f);
    let module = name.rsplit_once('.').map_or(name, |(m, _)| m);
    let mut out = Vec::new();
    for e in 0..w.size()[0] {
        let expert = w.get(e);
        let global_scale = fp4::nvfp4_global_scale(&f32_values(&expert)?);
        match layout {
            ExpertCheckpoint::PerExpert { gate, up, down, .. } => {
                let linear = |which: &str| layout.disk_name(&format!("{module}.{e}.{which}"));
                if field == "gate_up_proj" {
                    let parts = expert.chunk(2, 0);
                    out.extend(nvfp4_linear(&linear(gate), &parts[0], global_scale, input_amax)?);
                    out.extend(nvfp4_linear(&linear(up), &parts[1], global_scale, input_amax)?);
                } else {
                    out.extend(nvfp4_linear(&linear(down), &expert, global_scale, input_amax)?);
                }
            }
            ExpertCheckpoint::Fused => out.extend(nvfp4_linear(&format!("{module}.{e}.{field}"), &expert, global_scale, input_amax)?),
        }
    }
    Ok(out)
}
