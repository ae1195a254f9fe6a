//! LoRA options (PEFT's names and meanings), with the MoE-specific part PEFT lacks: which experts of
//! which layer get an adapter, and at what rank.

use std::collections::BTreeMap;

use serde::{de, Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::invalid::{check, InvalidOption};

const ATTENTION_TARGETS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];
const MAX_RANK: u32 = 1024;

/// LoRA settings (PEFT's names and meanings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LoraOptions {
    /// Rank. Default 8.
    pub r: u32,
    /// Scaling numerator: updates are scaled by `alpha / r` (or `alpha / sqrt(r)` with rsLoRA). Default 16.
    pub alpha: f64,
    /// Dropout on the adapter's input, in [0, 1). Default 0.
    pub dropout: f64,
    /// Rank-stabilised scaling `alpha / sqrt(r)`. Default false.
    pub use_rslora: bool,
    /// Attention projections to adapt, any of `q_proj`, `k_proj`, `v_proj`, `o_proj`. Default all four.
    pub target_modules: Vec<String>,
    /// Which routed experts get an adapter on their fused weights (`gate_up_proj`, `down_proj`; PEFT
    /// `target_parameters`): `true` (every expert of every MoE layer), `false` (none, the default), a
    /// list of expert indices per decoder layer (`[[0, 5], []]`: experts 0 and 5 of layer 0, none of
    /// layer 1), or `{"from_profile": {"min_share": 0.02}}` (in every layer, the experts that receive
    /// at least that share of the training tokens' routing under the base model). The router is never
    /// a LoRA target.
    pub target_experts: ExpertTargets,
    /// Per-expert ranks overriding `r`: `{"experts.3": 16}` (expert 3 of every layer) or
    /// `{"layers.1.experts.3": 16}` (one layer; wins over the former). Applies to targeted experts.
    // Left out when empty, so runners that predate it still read every job that does not use it.
    #[schema(value_type = BTreeMap<String, u32>)]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rank_pattern: BTreeMap<String, u32>,
}

impl Default for LoraOptions {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            use_rslora: false,
            target_modules: ATTENTION_TARGETS.map(String::from).to_vec(),
            target_experts: ExpertTargets::All(false),
            rank_pattern: BTreeMap::new(),
        }
    }
}

/// The experts that get adapters: `true`, `false`, one list of expert indices per decoder layer, or
/// `{"from_profile": {"min_share": x}}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ExpertTargets {
    /// Every expert of every MoE layer, or none.
    All(bool),
    /// Expert indices, one list per decoder layer (an empty list for a layer left alone).
    Layers(Vec<Vec<u32>>),
    /// The experts the training data uses, measured on the base model before training.
    FromProfile { from_profile: ProfileTargets },
}

impl Default for ExpertTargets {
    fn default() -> Self {
        Self::All(false)
    }
}

/// `target_experts: {"from_profile": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileTargets {
    /// An expert is targeted where it receives at least this share of a layer's top-k routing
    /// assignments over the sampled training tokens, in (0, 1). Uniform routing gives `1 / experts`.
    pub min_share: f64,
    /// How many training examples (the first ones) the base model routes to measure it. Default 256.
    #[serde(default = "default_profile_examples")]
    pub max_examples: u32,
}

fn default_profile_examples() -> u32 {
    256
}

impl<'de> Deserialize<'de> for ExpertTargets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde_json::Value;
        // Dispatched on the JSON type: an untagged enum would also read `[[-1]]` as a struct written
        // as a sequence, and its own error ("did not match any variant") says nothing about what to send.
        let value = Value::deserialize(deserializer)?;
        let parsed = match value {
            Value::Bool(all) => Some(Self::All(all)),
            Value::Array(_) => serde_json::from_value::<Vec<Vec<u32>>>(value).ok().map(Self::Layers),
            Value::Object(mut map) if map.len() == 1 && map.get("from_profile").is_some_and(Value::is_object) => {
                let from_profile = map.remove("from_profile").expect("checked above");
                serde_json::from_value::<ProfileTargets>(from_profile).ok().map(|from_profile| Self::FromProfile { from_profile })
            }
            _ => None,
        };
        parsed.ok_or_else(|| {
            de::Error::custom(
                "`lora.target_experts` takes true, false, a list of expert indices per decoder layer such as [[0, 5], []], \
                 or {\"from_profile\": {\"min_share\": 0.02}} (optionally with \"max_examples\")",
            )
        })
    }
}

/// One `rank_pattern` key: an expert of one layer, or of every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExpertKey {
    layer: Option<usize>,
    expert: usize,
}

fn parse_key(key: &str) -> Option<ExpertKey> {
    let number = |s: &str| (!s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten();
    if let Some(expert) = key.strip_prefix("experts.") {
        return Some(ExpertKey { layer: None, expert: number(expert)? });
    }
    let (layer, expert) = key.strip_prefix("layers.")?.split_once(".experts.")?;
    Some(ExpertKey { layer: Some(number(layer)?), expert: number(expert)? })
}

impl LoraOptions {
    /// Whether any expert can get an adapter.
    pub fn targets_experts(&self) -> bool {
        match &self.target_experts {
            ExpertTargets::All(all) => *all,
            ExpertTargets::Layers(layers) => layers.iter().any(|l| !l.is_empty()),
            ExpertTargets::FromProfile { .. } => true,
        }
    }

    /// The largest rank an expert adapter may have (what its memory is allocated for).
    pub fn max_expert_rank(&self) -> u32 {
        self.rank_pattern.values().copied().fold(self.r, u32::max)
    }

    /// The rank of every expert of decoder layer `layer` (0: no adapter). `profile_choice` is what
    /// `from_profile` selected for that layer (the runner measures it; unused for other targets).
    pub fn expert_ranks(&self, layer: usize, num_experts: usize, profile_choice: Option<&[u32]>) -> Vec<u32> {
        let targeted: Vec<bool> = match &self.target_experts {
            ExpertTargets::All(all) => vec![*all; num_experts],
            ExpertTargets::Layers(layers) => {
                let chosen = layers.get(layer).map(Vec::as_slice).unwrap_or(&[]);
                (0..num_experts).map(|e| chosen.contains(&(e as u32))).collect()
            }
            ExpertTargets::FromProfile { .. } => {
                let chosen = profile_choice.unwrap_or(&[]);
                (0..num_experts).map(|e| chosen.contains(&(e as u32))).collect()
            }
        };
        let mut ranks: Vec<u32> = targeted.iter().map(|&t| if t { self.r } else { 0 }).collect();
        // Keys for every layer first, so a layer's own key wins.
        let keys: Vec<(ExpertKey, u32)> = self.rank_pattern.iter().filter_map(|(k, &r)| parse_key(k).map(|key| (key, r))).collect();
        for pass_layer_specific in [false, true] {
            for (key, rank) in &keys {
                if key.layer.is_some() != pass_layer_specific || key.layer.is_some_and(|l| l != layer) {
                    continue;
                }
                if let Some(slot) = ranks.get_mut(key.expert).filter(|r| **r > 0) {
                    *slot = *rank;
                }
            }
        }
        ranks
    }

    /// Checks the options on their own (the API refuses a job with the first problem found).
    pub fn validate(&self, lora_method: bool) -> Result<(), InvalidOption> {
        check((1..=MAX_RANK).contains(&self.r), "lora.r", "`lora.r` must be from 1 to 1024.")?;
        check(self.alpha > 0.0, "lora.alpha", "`lora.alpha` must be positive.")?;
        check((0.0..1.0).contains(&self.dropout), "lora.dropout", "`lora.dropout` must be in [0, 1).")?;
        for target in &self.target_modules {
            check(
                ATTENTION_TARGETS.contains(&target.as_str()),
                "lora.target_modules",
                &format!("unknown LoRA target `{target}`: use q_proj, k_proj, v_proj, o_proj (the router is never a LoRA target; set `lora.target_experts` for experts)."),
            )?;
        }
        match &self.target_experts {
            ExpertTargets::All(_) => {}
            ExpertTargets::Layers(layers) => {
                check(layers.len() <= 1024, "lora.target_experts", "`lora.target_experts` lists at most 1024 layers.")?;
                for (layer, experts) in layers.iter().enumerate() {
                    let mut seen = experts.clone();
                    seen.sort_unstable();
                    seen.dedup();
                    check(seen.len() == experts.len(), "lora.target_experts", &format!("`lora.target_experts` names an expert twice in layer {layer}."))?;
                }
            }
            ExpertTargets::FromProfile { from_profile } => {
                let share = from_profile.min_share;
                check(share > 0.0 && share < 1.0, "lora.target_experts.from_profile.min_share", "`min_share` must be in (0, 1): the share of a layer's routing an expert needs to be targeted.")?;
                check(
                    (1..=100_000).contains(&from_profile.max_examples),
                    "lora.target_experts.from_profile.max_examples",
                    "`max_examples` must be from 1 to 100000.",
                )?;
            }
        }
        for (key, &rank) in &self.rank_pattern {
            check(
                parse_key(key).is_some(),
                "lora.rank_pattern",
                "`lora.rank_pattern` keys are `experts.E` (expert E of every layer) or `layers.L.experts.E` (one layer), with decimal indices.",
            )?;
            check((1..=MAX_RANK).contains(&rank), "lora.rank_pattern", "`lora.rank_pattern` ranks must be from 1 to 1024.")?;
        }
        check(self.rank_pattern.is_empty() || self.targets_experts(), "lora.rank_pattern", "`lora.rank_pattern` sets ranks of expert adapters: target experts with `lora.target_experts`.")?;
        if lora_method {
            check(!self.target_modules.is_empty() || self.targets_experts(), "lora.target_modules", "LoRA needs at least one target module or targeted experts (`lora.target_experts`).")?;
            check(self.dropout == 0.0 || !self.targets_experts(), "lora.dropout", "`lora.dropout` is not supported with `target_experts` (PEFT applies expert adapters to weights, not inputs).")?;
        }
        Ok(())
    }

    /// Checks the expert indices against the base model: `num_layers` decoder layers of `num_experts`
    /// routed experts each.
    pub fn validate_for_model(&self, num_layers: usize, num_experts: usize) -> Result<(), InvalidOption> {
        let out_of_range = |what: &str, e: usize| format!("{what} names expert {e}, but the model has {num_experts} experts per layer (indices 0 to {}).", num_experts.saturating_sub(1));
        if let ExpertTargets::Layers(layers) = &self.target_experts {
            check(
                layers.len() == num_layers,
                "lora.target_experts",
                &format!("`lora.target_experts` has {} lists but the model has {num_layers} decoder layers: give one list per layer (empty for a layer to leave alone).", layers.len()),
            )?;
            if let Some(&e) = layers.iter().flatten().find(|&&e| e as usize >= num_experts) {
                check(false, "lora.target_experts", &out_of_range("`lora.target_experts`", e as usize))?;
            }
        }
        for key in self.rank_pattern.keys().filter_map(|k| parse_key(k)) {
            check(key.expert < num_experts, "lora.rank_pattern", &out_of_range("`lora.rank_pattern`", key.expert))?;
            if let Some(layer) = key.layer {
                check(layer < num_layers, "lora.rank_pattern", &format!("`lora.rank_pattern` names layer {layer}, but the model has {num_layers} decoder layers."))?;
            }
        }
        Ok(())
    }
}

/// The experts of one layer that `from_profile` targets: those with at least `min_share` of the
/// layer's top-k assignments.
pub fn experts_with_share(topk_share: &[f64], min_share: f64) -> Vec<u32> {
    topk_share.iter().enumerate().filter(|(_, &s)| s >= min_share).map(|(e, _)| e as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: serde_json::Value) -> Result<LoraOptions, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn every_form_of_target_experts_parses_and_round_trips() {
        for value in [serde_json::json!(true), serde_json::json!([[0, 3], []]), serde_json::json!({"from_profile": {"min_share": 0.05, "max_examples": 64}})] {
            let parsed = options(serde_json::json!({ "target_experts": value })).unwrap();
            assert_eq!(serde_json::to_value(&parsed).unwrap()["target_experts"], value);
        }
        assert!(serde_json::to_value(LoraOptions::default()).unwrap().get("rank_pattern").is_none(), "runners that predate it read the default");
        let defaulted = options(serde_json::json!({"target_experts": {"from_profile": {"min_share": 0.05}}})).unwrap();
        assert!(matches!(defaulted.target_experts, ExpertTargets::FromProfile { from_profile: ProfileTargets { max_examples: 256, .. } }));
        let unknown = serde_json::json!({"from_profile": {"min_share": 0.1}, "experts": 3});
        let as_sequence = serde_json::json!({"from_profile": [0.1]});
        for bad in [serde_json::json!("all"), serde_json::json!([0, 3]), serde_json::json!({"from_profile": {"share": 0.1}}), serde_json::json!([[-1]]), unknown, as_sequence] {
            let error = options(serde_json::json!({ "target_experts": bad })).unwrap_err();
            assert!(error.contains("from_profile") && error.contains("[[0, 5], []]"), "{error}");
        }
    }

    #[test]
    fn ranks_follow_targets_then_every_layer_keys_then_layer_keys() {
        let o = options(serde_json::json!({"r": 4, "target_experts": [[0, 1, 2], [3]], "rank_pattern": {"experts.1": 8, "layers.0.experts.1": 2, "experts.3": 16, "experts.0": 0}}));
        assert!(o.is_err() || o.unwrap().validate(true).is_err(), "a rank of 0 is refused");
        let o = options(serde_json::json!({"r": 4, "target_experts": [[0, 1, 2], [1, 3]], "rank_pattern": {"experts.1": 8, "layers.0.experts.1": 2, "experts.2": 16}})).unwrap();
        o.validate(true).unwrap();
        assert_eq!(o.expert_ranks(0, 4, None), [4, 2, 16, 0]);
        assert_eq!(o.expert_ranks(1, 4, None), [0, 8, 0, 4], "a pattern never targets an expert");
        assert_eq!(o.max_expert_rank(), 16);
        let all = options(serde_json::json!({"target_experts": true})).unwrap();
        assert_eq!(all.expert_ranks(5, 3, None), [8, 8, 8]);
        let profile = options(serde_json::json!({"target_experts": {"from_profile": {"min_share": 0.2}}})).unwrap();
        assert_eq!(profile.expert_ranks(0, 4, Some(&[1, 3])), [0, 8, 0, 8]);
        assert_eq!(experts_with_share(&[0.5, 0.19, 0.2, 0.11], 0.2), [0, 2]);
    }

    #[test]
    fn refusals_name_the_parameter_and_the_fix() {
        let refusal = |json: serde_json::Value, layers: usize| {
            let o = options(json).unwrap();
            o.validate(true).and_then(|_| o.validate_for_model(layers, 4)).unwrap_err()
        };
        let e = refusal(serde_json::json!({"target_experts": [[0], [1], []]}), 2);
        assert_eq!(e.param, "method.moe_sft_qat.lora.target_experts");
        assert!(e.message.contains("3 lists") && e.message.contains("2 decoder layers"), "{}", e.message);
        let e = refusal(serde_json::json!({"target_experts": [[0], [4]]}), 2);
        assert!(e.message.contains("expert 4") && e.message.contains("0 to 3"), "{}", e.message);
        let e = refusal(serde_json::json!({"target_experts": [[1, 1], []]}), 2);
        assert!(e.message.contains("twice in layer 0"), "{}", e.message);
        let e = refusal(serde_json::json!({"target_experts": true, "rank_pattern": {"expert.1": 4}}), 2);
        assert_eq!(e.param, "method.moe_sft_qat.lora.rank_pattern");
        let e = refusal(serde_json::json!({"target_experts": true, "rank_pattern": {"layers.2.experts.1": 4}}), 2);
        assert!(e.message.contains("layer 2"), "{}", e.message);
        let e = refusal(serde_json::json!({"rank_pattern": {"experts.1": 4}}), 2);
        assert!(e.message.contains("target experts"), "{}", e.message);
        let e = refusal(serde_json::json!({"target_experts": {"from_profile": {"min_share": 1.0}}}), 2);
        assert_eq!(e.param, "method.moe_sft_qat.lora.target_experts.from_profile.min_share");
        let e = refusal(serde_json::json!({"target_modules": [], "target_experts": [[], []]}), 2);
        assert_eq!(e.param, "method.moe_sft_qat.lora.target_modules");
    }
}
