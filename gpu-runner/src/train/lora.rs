//! LoRA for the SFT stage: adapters on attention projections and (optionally) per-expert adapters
//! on the fused expert weights, saved in PEFT's format so `PeftModel.from_pretrained` loads them
//! unmodified, and merged into the base weights before QAT.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use moetune_types::LoraOptions;
use tch::{nn, Kind, Tensor};

use super::optim::Trainable;
use crate::model::adapters::expert_delta;
use crate::model::params::Role;
use crate::model::{checkpoint, Adapters, LoraPair, MoeModel};

const PEFT_PREFIX: &str = "base_model.model.";

/// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA (PEFT's scaling).
pub fn scale(options: &LoraOptions) -> f64 {
    let r = f64::from(options.r);
    if options.use_rslora { options.alpha / r.sqrt() } else { options.alpha / r }
}

/// Kaiming-uniform `a` (as `nn.Linear`'s default, PEFT's `init_lora_weights=True`) and zero `b`, so
/// training starts from the base model exactly.
fn new_pair(a_shape: [i64; 2], b_shape: [i64; 2], device: tch::Device) -> LoraPair {
    let bound = 1.0 / (a_shape[1] as f64).sqrt();
    let a = Tensor::empty(a_shape, (Kind::Float, device)).uniform_(-bound, bound).set_requires_grad(true);
    let b = Tensor::zeros(b_shape, (Kind::Float, device)).set_requires_grad(true);
    LoraPair { a, b }
}

/// Adapters for every targeted weight of `model`.
pub fn create(model: &MoeModel, options: &LoraOptions, device: tch::Device) -> Adapters {
    let r = i64::from(options.r);
    let mut linear = HashMap::new();
    let mut experts = HashMap::new();
    let transposed = model.experts_transposed();
    let num_experts = model.config.moe.num_experts;
    for info in &model.params {
        let targeted = match info.role {
            Role::Attention => options.target_modules.iter().any(|t| info.name.ends_with(&format!(".{t}.weight"))),
            Role::Expert => options.target_experts && (info.name.ends_with(".gate_up_proj") || info.name.ends_with(".down_proj")),
            _ => false,
        };
        if !targeted {
            continue;
        }
        if info.role == Role::Attention {
            let (out, input) = (info.shape[0], info.shape[1]);
            linear.insert(info.name.clone(), new_pair([r, input], [out, r], device));
        } else {
            let (d1, d2) = (info.shape[1], info.shape[2]);
            let (input, out) = if transposed { (d1, d2) } else { (d2, d1) };
            experts.insert(info.name.clone(), new_pair([num_experts * r, input], [out, r * num_experts], device));
        }
    }
    Adapters { scale: scale(options), dropout: options.dropout, training: std::cell::Cell::new(false), linear, experts }
}

/// A detached copy of `adapters` (the SFT adapters, kept for the LoRA artifact while LoRA-QAT goes on
/// training the live ones).
pub fn snapshot(adapters: &Adapters) -> Adapters {
    let copy = |pairs: &HashMap<String, LoraPair>| {
        pairs.iter().map(|(name, p)| (name.clone(), LoraPair { a: p.a.detach().copy(), b: p.b.detach().copy() })).collect()
    };
    Adapters {
        scale: adapters.scale,
        dropout: adapters.dropout,
        training: std::cell::Cell::new(false),
        linear: copy(&adapters.linear),
        experts: copy(&adapters.experts),
    }
}

/// PEFT's key for the adapter of `weight_name`. With both expert parameters targeted, PEFT nests its
/// `ParamWrapper`s: `gate_up_proj` (wrapped first) sits under `experts.base_layer`, `down_proj` under
/// `experts`.
fn peft_module(weight_name: &str, both_experts: bool) -> String {
    if let Some(module) = weight_name.strip_suffix(".weight") {
        return module.to_string();
    }
    if let Some(experts) = weight_name.strip_suffix(".gate_up_proj") {
        return if both_experts { format!("{experts}.base_layer") } else { experts.to_string() };
    }
    weight_name.strip_suffix(".down_proj").unwrap_or(weight_name).to_string()
}

/// The adapter tensors under PEFT's names (`…lora_A.weight`, `…lora_B.weight`), sorted.
pub fn named_tensors(adapters: &Adapters) -> Vec<(String, Tensor)> {
    let both = adapters.experts.len() >= 2;
    let mut out = Vec::new();
    for (name, pair) in adapters.linear.iter().chain(adapters.experts.iter()) {
        let module = peft_module(name, both);
        out.push((format!("{PEFT_PREFIX}{module}.lora_A.weight"), pair.a.shallow_clone()));
        out.push((format!("{PEFT_PREFIX}{module}.lora_B.weight"), pair.b.shallow_clone()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Optimiser entries for the adapters; weight decay applies to A and B alike, as with PEFT under HF's Trainer.
pub fn trainables(adapters: &Adapters) -> Vec<Trainable> {
    named_tensors(adapters).into_iter().map(|(name, tensor)| Trainable { name, tensor, decay: true }).collect()
}

/// Restores adapter values saved by [`save_peft`] (resume).
pub fn load_values(adapters: &Adapters, path: &Path) -> anyhow::Result<()> {
    let saved: HashMap<String, Tensor> = Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display()))?.into_iter().collect();
    tch::no_grad(|| {
        for (name, mut tensor) in named_tensors(adapters) {
            let value = saved.get(&name).with_context(|| format!("{} lacks {name}", path.display()))?;
            tensor.copy_(value);
        }
        Ok(())
    })
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` (fp32) into `dir`.
pub fn save_peft(adapters: &Adapters, options: &LoraOptions, model: &MoeModel, base_model: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let tensors = named_tensors(adapters)
        .into_iter()
        .map(|(name, t)| checkpoint::Owned::from_tensor(name, &t.detach(), Kind::Float))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let weights = dir.join("adapter_model.safetensors");
    checkpoint::write_file(&weights, &tensors)?;
    let mut target_modules = options.target_modules.clone();
    target_modules.sort();
    let target_parameters: Vec<&str> =
        if adapters.experts.is_empty() { vec![] } else { vec!["mlp.experts.gate_up_proj", "mlp.experts.down_proj"] };
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": options.r,
        "lora_alpha": options.alpha,
        "lora_dropout": options.dropout,
        "use_rslora": options.use_rslora,
        "target_modules": target_modules,
        "target_parameters": if target_parameters.is_empty() { serde_json::Value::Null } else { target_parameters.into() },
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "auto_mapping": { "base_model_class": model.config.architecture.class_name() },
    });
    let config_path = dir.join("adapter_config.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
    Ok(vec![config_path, weights])
}

/// Reads a PEFT LoRA adapter directory (as written by [`save_peft`] or by PEFT itself for the same
/// targets) into adapters for `model`.
pub fn load_peft(dir: &Path, device: tch::Device) -> anyhow::Result<Adapters> {
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).with_context(|| format!("reading {}/adapter_config.json", dir.display()))?)?;
    let r = config["r"].as_f64().context("adapter_config.json has no r")?;
    let alpha = config["lora_alpha"].as_f64().context("adapter_config.json has no lora_alpha")?;
    let scale = if config["use_rslora"].as_bool().unwrap_or(false) { alpha / r.sqrt() } else { alpha / r };
    let targets: Vec<String> = config["target_parameters"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default();
    let both = targets.len() >= 2;
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("adapter_model.safetensors"))?.into_iter().collect();
    let (mut linear, mut experts) = (HashMap::new(), HashMap::new());
    for (key, a) in &tensors {
        let Some(module) = key.strip_prefix(PEFT_PREFIX).and_then(|k| k.strip_suffix(".lora_A.weight")) else { continue };
        let b = tensors.get(&format!("{PEFT_PREFIX}{module}.lora_B.weight")).with_context(|| format!("{module} has lora_A but no lora_B"))?;
        let pair = LoraPair { a: a.to_device(device).to_kind(Kind::Float), b: b.to_device(device).to_kind(Kind::Float) };
        if let Some(experts_module) = module.strip_suffix(".base_layer") {
            experts.insert(format!("{experts_module}.gate_up_proj"), pair);
        } else if module.ends_with(".experts") {
            let field = if both || targets.iter().any(|t| t.ends_with("down_proj")) { "down_proj" } else { "gate_up_proj" };
            experts.insert(format!("{module}.{field}"), pair);
        } else {
            linear.insert(format!("{module}.weight"), pair);
        }
    }
    Ok(Adapters { scale, dropout: 0.0, training: std::cell::Cell::new(false), linear, experts })
}

/// Adds every adapter's update into the base weights in `vars` (PEFT's `merge_and_unload`).
pub fn merge_into(adapters: &Adapters, model: &MoeModel, vars: &nn::VarStore) -> anyhow::Result<()> {
    anyhow::ensure!(adapters.experts.is_empty() || !model.has_packed_experts(), "experts are packed: unpack them before merging adapters");
    let variables = vars.variables();
    let transposed = model.experts_transposed();
    tch::no_grad(|| {
        for (name, pair) in &adapters.linear {
            let mut weight = variables.get(name).with_context(|| format!("no base weight {name}"))?.shallow_clone();
            let delta = pair.b.matmul(&pair.a) * adapters.scale;
            let _ = weight.g_add_(&delta.to_kind(weight.kind()).to_device(weight.device()));
        }
        for (name, pair) in &adapters.experts {
            let mut weight = variables.get(name).with_context(|| format!("no base weight {name}"))?.shallow_clone();
            let delta = expert_delta(pair, adapters.scale, model.config.moe.num_experts, transposed);
            let _ = weight.g_add_(&delta.to_kind(weight.kind()).to_device(weight.device()));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_names_follow_the_nesting_of_param_wrappers() {
        assert_eq!(peft_module("model.layers.0.self_attn.q_proj.weight", true), "model.layers.0.self_attn.q_proj");
        assert_eq!(peft_module("model.layers.0.mlp.experts.gate_up_proj", true), "model.layers.0.mlp.experts.base_layer");
        assert_eq!(peft_module("model.layers.0.mlp.experts.down_proj", true), "model.layers.0.mlp.experts");
        assert_eq!(peft_module("model.layers.0.mlp.experts.gate_up_proj", false), "model.layers.0.mlp.experts");
    }
}
