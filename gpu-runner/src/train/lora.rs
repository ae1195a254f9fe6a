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
    scale_at(options, options.r)
}

fn scale_at(options: &LoraOptions, r: u32) -> f64 {
    peft_scale(options.alpha, f64::from(r), options.use_rslora)
}

/// PEFT's scale of a module of rank `r`.
fn peft_scale(alpha: f64, r: f64, rslora: bool) -> f64 {
    if rslora { alpha / r.sqrt() } else { alpha / r }
}

/// Kaiming-uniform `a` (as `nn.Linear`'s default, PEFT's `init_lora_weights=True`) and zero `b`, so
/// training starts from the base model exactly.
fn new_pair(a_shape: [i64; 2], b_shape: [i64; 2], device: tch::Device) -> LoraPair {
    let bound = 1.0 / (a_shape[1] as f64).sqrt();
    let a = Tensor::empty(a_shape, (Kind::Float, device)).uniform_(-bound, bound).set_requires_grad(true);
    let b = Tensor::zeros(b_shape, (Kind::Float, device)).set_requires_grad(true);
    LoraPair { a, b, expert_factor: None }
}

/// The rank of every expert of every decoder layer (0: no adapter), resolved from
/// `lora.target_experts` and `lora.rank_pattern`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertPlan {
    pub ranks: Vec<Vec<u32>>,
}

impl ExpertPlan {
    /// `profile_choice`: per decoder layer, the experts `from_profile` selected (see [`super::profile`]).
    pub fn new(model: &MoeModel, options: &LoraOptions, profile_choice: Option<&[Vec<u32>]>) -> Self {
        let experts = model.config.moe.num_experts as usize;
        let moe_layers = model.moe_layer_indices();
        let ranks = (0..model.config.num_hidden_layers as usize)
            .map(|layer| {
                if !moe_layers.contains(&layer) {
                    return vec![0; experts];
                }
                let choice = profile_choice.map(|c| c.get(layer).map(Vec::as_slice).unwrap_or(&[]));
                options.expert_ranks(layer, experts, choice)
            })
            .collect();
        Self { ranks }
    }

    /// A refusal naming the first dense (expert-less) layer the options list experts for.
    pub fn check_dense_layers(model: &MoeModel, options: &LoraOptions) -> anyhow::Result<()> {
        if let moetune_types::ExpertTargets::Layers(layers) = &options.target_experts {
            let moe_layers = model.moe_layer_indices();
            if let Some(layer) = layers.iter().enumerate().position(|(l, experts)| !experts.is_empty() && !moe_layers.contains(&l)) {
                anyhow::bail!("lora.target_experts lists experts for decoder layer {layer}, which has no routed experts (MoE layers: {moe_layers:?}); give it an empty list");
            }
        }
        Ok(())
    }

    fn layer(&self, layer: Option<usize>) -> &[u32] {
        layer.and_then(|l| self.ranks.get(l)).map_or(&[], Vec::as_slice)
    }

    /// What the job result says of the expert adapters.
    pub fn layer_adapters(&self) -> Vec<moetune_types::results::LayerAdapters> {
        self.targeted()
            .into_iter()
            .map(|(layer, experts)| moetune_types::results::LayerAdapters { layer, experts: experts.iter().map(|e| e.0).collect(), ranks: experts.iter().map(|e| e.1).collect() })
            .collect()
    }

    /// The targeted experts of each decoder layer that has any, with their ranks.
    pub fn targeted(&self) -> Vec<(usize, Vec<(u32, u32)>)> {
        let experts = |ranks: &[u32]| ranks.iter().enumerate().filter(|(_, &r)| r > 0).map(|(e, &r)| (e as u32, r)).collect::<Vec<_>>();
        self.ranks.iter().enumerate().map(|(l, r)| (l, experts(r))).filter(|(_, e)| !e.is_empty()).collect()
    }
}

/// The decoder layer of a parameter named `…layers.{i}.…`.
fn layer_of(name: &str) -> Option<usize> {
    let mut parts = name.split('.');
    parts.by_ref().find(|p| *p == "layers")?;
    parts.next()?.parse().ok()
}

/// One fused expert weight's pair: rank `R` (the largest of its experts') for every expert, with the
/// rows of untargeted experts and of ranks beyond an expert's own left zero. Both factors of such a
/// component are zero, so both gradients are: it stays zero through training and merges as nothing.
fn expert_pair(ranks: &[u32], options: &LoraOptions, input: i64, out: i64, device: tch::Device) -> Option<LoraPair> {
    let rank = i64::from(*ranks.iter().max()?);
    if rank == 0 {
        return None;
    }
    let experts = ranks.len() as i64;
    let mut pair = new_pair([experts * rank, input], [out, rank * experts], device);
    if ranks.iter().all(|&r| i64::from(r) == rank) && rank == i64::from(options.r) {
        return Some(pair);
    }
    // Row e·R + j of `a` is live while j < r_e.
    let live: Vec<f32> = ranks.iter().flat_map(|&r| (0..rank).map(move |j| if j < i64::from(r) { 1.0 } else { 0.0 })).collect();
    tch::no_grad(|| {
        let _ = pair.a.g_mul_(&Tensor::from_slice(&live).to(device).view([experts * rank, 1]));
    });
    if ranks.iter().any(|&r| r > 0 && r != options.r) {
        let factors: Vec<f32> = ranks.iter().map(|&r| if r == 0 { 0.0 } else { (scale_at(options, r) / scale(options)) as f32 }).collect();
        pair.expert_factor = Some(Tensor::from_slice(&factors).to(device));
    }
    Some(pair)
}

/// Adapters for every weight `options` target in `model` (with `from_profile`, none on experts: the
/// profile is measured by [`super::profile::lora_plan`], which gives [`create_planned`] its plan).
pub fn create(model: &MoeModel, options: &LoraOptions, device: tch::Device) -> Adapters {
    create_planned(model, options, &ExpertPlan::new(model, options, None), device)
}

/// Adapters for every targeted weight of `model`: the attention projections in `target_modules`,
/// and the fused expert weights of the layers where `plan` targets experts.
pub fn create_planned(model: &MoeModel, options: &LoraOptions, plan: &ExpertPlan, device: tch::Device) -> Adapters {
    let r = i64::from(options.r);
    let mut linear = HashMap::new();
    let mut experts = HashMap::new();
    let transposed = model.experts_transposed();
    for info in &model.params {
        match info.role {
            Role::Attention if options.target_modules.iter().any(|t| info.name.ends_with(&format!(".{t}.weight"))) => {
                let (out, input) = (info.shape[0], info.shape[1]);
                linear.insert(info.name.clone(), new_pair([r, input], [out, r], device));
            }
            Role::Expert if info.name.ends_with(".gate_up_proj") || info.name.ends_with(".down_proj") => {
                let (d1, d2) = (info.shape[1], info.shape[2]);
                let (input, out) = if transposed { (d1, d2) } else { (d2, d1) };
                if let Some(pair) = expert_pair(plan.layer(layer_of(&info.name)), options, input, out, device) {
                    experts.insert(info.name.clone(), pair);
                }
            }
            _ => {}
        }
    }
    Adapters { scale: scale(options), dropout: options.dropout, training: std::cell::Cell::new(false), linear, experts }
}

/// A detached copy of `adapters` (the SFT adapters, kept for the LoRA artifact while LoRA-QAT goes on
/// training the live ones).
pub fn snapshot(adapters: &Adapters) -> Adapters {
    let copy = |pairs: &HashMap<String, LoraPair>| {
        pairs
            .iter()
            .map(|(name, p)| (name.clone(), LoraPair { a: p.a.detach().copy(), b: p.b.detach().copy(), expert_factor: p.expert_factor.as_ref().map(Tensor::copy) }))
            .collect()
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

/// Restores adapter values a checkpoint saved from [`named_tensors`] (resume): the values as trained,
/// not the PEFT export's, whose expert `B`s carry the per-expert scales.
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

/// The adapter tensors as PEFT reads them: expert `b`s carry each expert's factor, scaled to the
/// rank PEFT gives their module (`rank_pattern`), so PEFT's one scale per module gives every expert
/// its own.
fn peft_tensors(adapters: &Adapters, options: &LoraOptions, experts: i64) -> Vec<(String, Tensor)> {
    let mut out = named_tensors(adapters);
    for (name, pair) in &adapters.experts {
        let rank = pair.a.size()[0] / experts;
        if pair.expert_factor.is_none() && rank == i64::from(options.r) {
            continue;
        }
        let module_scale = scale_at(options, rank as u32);
        let folded = pair.expert_b(experts, Kind::Float) * (adapters.scale / module_scale);
        // Back to PEFT's rank-major `[out, r·E]`.
        let b = folded.permute([1, 2, 0]).reshape([pair.b.size()[0], rank * experts]);
        let key = format!("{PEFT_PREFIX}{}.lora_B.weight", peft_module(name, adapters.experts.len() >= 2));
        if let Some(slot) = out.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = b;
        }
    }
    out
}

/// `name` as a PEFT pattern matching only itself (PEFT reads `rank_pattern` keys as regexes).
fn exact_pattern(name: &str) -> String {
    name.replace('.', "\\.")
}

/// The rank `rank_pattern` gives the parameter or module `key` (PEFT: the pattern matches the key or
/// a suffix after a dot). Only literal patterns are read; a regex this reader cannot apply is refused.
fn pattern_rank(patterns: &serde_json::Map<String, serde_json::Value>, key: &str) -> anyhow::Result<Option<f64>> {
    for (pattern, rank) in patterns {
        let literal = pattern.replace("\\.", ".");
        anyhow::ensure!(!literal.contains(['*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '^', '$', '\\']), "adapter_config.json: rank_pattern key `{pattern}` is a regex; only literal module names are supported");
        if key == literal || key.ends_with(&format!(".{literal}")) {
            return Ok(Some(rank.as_f64().with_context(|| format!("adapter_config.json: rank_pattern `{pattern}` is not a number"))?));
        }
    }
    Ok(None)
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` (fp32) into `dir`. Expert adapters
/// of only some layers are named one by one in `target_parameters`; experts with ranks of their own
/// sit in a module of their largest rank (`rank_pattern`), zero beyond each expert's.
pub fn save_peft(adapters: &Adapters, options: &LoraOptions, model: &MoeModel, base_model: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let experts = model.config.moe.num_experts;
    let tensors = peft_tensors(adapters, options, experts)
        .into_iter()
        .map(|(name, t)| checkpoint::Owned::from_tensor(name, &t.detach(), Kind::Float))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let weights = dir.join("adapter_model.safetensors");
    checkpoint::write_file(&weights, &tensors)?;
    let mut target_modules = options.target_modules.clone();
    target_modules.sort();
    let every_layer = model.moe_layer_indices().iter().all(|l| {
        ["gate_up_proj", "down_proj"].iter().all(|p| adapters.experts.keys().any(|n| layer_of(n) == Some(*l) && n.ends_with(p)))
    });
    let target_parameters: Vec<String> = if adapters.experts.is_empty() {
        vec![]
    } else if every_layer {
        vec!["mlp.experts.gate_up_proj".into(), "mlp.experts.down_proj".into()]
    } else {
        let mut names: Vec<String> = adapters.experts.keys().cloned().collect();
        names.sort();
        names
    };
    let rank_pattern: serde_json::Map<String, serde_json::Value> = adapters
        .experts
        .iter()
        .map(|(name, pair)| (name, pair.a.size()[0] / experts))
        .filter(|(_, rank)| *rank != i64::from(options.r))
        .map(|(name, rank)| (exact_pattern(name), rank.into()))
        .collect();
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
        "rank_pattern": rank_pattern,
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
    let rslora = config["use_rslora"].as_bool().unwrap_or(false);
    let scale_of = |r: f64| peft_scale(alpha, r, rslora);
    anyhow::ensure!(config["alpha_pattern"].as_object().is_none_or(|p| p.is_empty()), "adapter_config.json: alpha_pattern is not supported");
    let no_patterns = serde_json::Map::new();
    let rank_pattern = config["rank_pattern"].as_object().unwrap_or(&no_patterns);
    let targets: Vec<String> = config["target_parameters"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default();
    let both = targets.iter().any(|t| t.ends_with("gate_up_proj")) && targets.iter().any(|t| t.ends_with("down_proj"));
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("adapter_model.safetensors"))?.into_iter().collect();
    let (mut linear, mut experts) = (HashMap::new(), HashMap::new());
    for (key, a) in &tensors {
        let Some(module) = key.strip_prefix(PEFT_PREFIX).and_then(|k| k.strip_suffix(".lora_A.weight")) else { continue };
        let b = tensors.get(&format!("{PEFT_PREFIX}{module}.lora_B.weight")).with_context(|| format!("{module} has lora_A but no lora_B"))?;
        let pair = LoraPair { a: a.to_device(device).to_kind(Kind::Float), b: b.to_device(device).to_kind(Kind::Float), expert_factor: None };
        let expert_param = if let Some(experts_module) = module.strip_suffix(".base_layer") {
            Some(format!("{experts_module}.gate_up_proj"))
        } else if module.ends_with(".experts") {
            let field = if both || targets.iter().any(|t| t.ends_with("down_proj")) { "down_proj" } else { "gate_up_proj" };
            Some(format!("{module}.{field}"))
        } else {
            None
        };
        match expert_param {
            Some(name) => {
                let mut pair = pair;
                if let Some(rank) = pattern_rank(rank_pattern, &name)? {
                    let num_experts = pair.a.size()[0] / rank as i64;
                    pair.expert_factor = Some(Tensor::full([num_experts], scale_of(rank) / scale_of(r), (Kind::Float, device)));
                }
                experts.insert(name, pair);
            }
            None => {
                anyhow::ensure!(pattern_rank(rank_pattern, module)?.is_none(), "adapter_config.json: rank_pattern on `{module}` is not supported (only on expert parameters)");
                linear.insert(format!("{module}.weight"), pair);
            }
        }
    }
    Ok(Adapters { scale: scale_of(r), dropout: 0.0, training: std::cell::Cell::new(false), linear, experts })
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
            let delta = expert_delta(pair, adapters.scale, model.config.moe.num_experts, transposed).to_kind(weight.kind()).to_device(weight.device());
            // Only the experts with an update are written: an untargeted expert keeps its base weights
            // bit for bit (adding a zero would still turn a -0.0 into +0.0).
            let updated = delta.ne(0.0).flatten(1, -1).any_dim(1, false).nonzero().squeeze_dim(1);
            let _ = weight.index_add_(0, &updated, &delta.index_select(0, &updated));
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
