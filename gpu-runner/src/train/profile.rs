//! The routing profile of a dataset: a model routes its tokens (padding excluded) and every MoE
//! layer counts how often each expert was a token's first choice and among its top-k. It is what
//! `lora.target_experts: {"from_profile": …}` selects experts by.

use moetune_types::lora::experts_with_share;
use moetune_types::routing::{ProfileJob, ProfileResult};
use moetune_types::{Example, ExpertTargets, LayerProfile, MoeSftQatOptions, RoutingProfile, TrainingSpec};
use tch::{Device, Kind, Tensor};

use super::data::Sample;
use super::eval::Batch;
use super::lora::ExpertPlan;
use super::resume::Progress;
use super::{data, Reporter};
use crate::model::{ForwardMode, MoeModel};
use crate::text::TextCodec;

/// An expert below this share of a layer's top-k assignments is reported dead.
pub const DEAD_SHARE: f64 = 0.001;

/// The profile of `samples` (from `examples` examples) routed by `model` as it stands, `batch`
/// sequences at a time (each batch reaches the device only while it is routed).
pub fn measure(model: &MoeModel, samples: &[Sample], batch: usize, pad: i64, device: Device, examples: u64, dead_share: f64) -> RoutingProfile {
    let experts = model.config.moe.num_experts;
    let layers = model.moe_layer_indices();
    let zeros = || Tensor::zeros([experts], (Kind::Int64, device));
    let mut counts: Vec<(Tensor, Tensor)> = layers.iter().map(|_| (zeros(), zeros())).collect();
    let mut tokens = 0i64;
    tch::no_grad(|| {
        for chunk in samples.chunks(batch.max(1)) {
            let batch = Batch::new(&chunk.iter().collect::<Vec<_>>(), pad, device);
            let out = model.forward(&batch.ids, ForwardMode::default());
            let rows = batch.valid.nonzero().squeeze_dim(1);
            tokens += rows.size()[0];
            for ((_, top_k), (top1, topk)) in out.router_top_k.iter().zip(&mut counts) {
                // Column 0 is each token's first choice: top-k comes sorted by routing weight.
                let chosen = top_k.index_select(0, &rows);
                let first = chosen.select(1, 0);
                let _ = top1.index_add_(0, &first, &first.ones_like());
                let all = chosen.flatten(0, -1);
                let _ = topk.index_add_(0, &all, &all.ones_like());
            }
        }
    });
    let read = |t: &Tensor| Vec::<i64>::try_from(t.to_device(tch::Device::Cpu)).expect("counts").into_iter().map(|c| c as u64).collect::<Vec<u64>>();
    let layers = layers.iter().zip(&counts).map(|(&layer, (top1, topk))| LayerProfile::from_counts(layer, &read(top1), &read(topk), dead_share)).collect();
    RoutingProfile { examples, tokens: tokens as u64, top_k: model.config.moe.top_k as u32, dead_share, layers }
}

/// The profile of the first `max_examples` of `examples`, tokenised with labels everywhere and cut at
/// `seq_len`, routed `batch` sequences at a time.
pub fn profile_examples(model: &MoeModel, codec: &TextCodec, examples: &[Example], max_examples: usize, seq_len: usize, batch: usize, device: Device) -> anyhow::Result<RoutingProfile> {
    let examples = &examples[..examples.len().min(max_examples)];
    let samples = data::tokenize(codec, examples, seq_len, false)?;
    Ok(measure(model, &samples, batch, codec.pad_id(), device, examples.len() as u64, DEAD_SHARE))
}

/// Per decoder layer (`num_layers` of them), the experts with at least `min_share` of the layer's
/// top-k assignments in `profile` (none for a dense layer).
pub fn experts_used(profile: &RoutingProfile, num_layers: usize, min_share: f64) -> Vec<Vec<u32>> {
    let mut chosen = vec![Vec::new(); num_layers];
    for layer in &profile.layers {
        if let Some(slot) = chosen.get_mut(layer.layer) {
            *slot = experts_with_share(&layer.topk_share, min_share);
        }
    }
    chosen
}

/// The experts LoRA adapts: from the options, and for `from_profile` from the routing profile of the
/// first training examples under the base model (measured once and kept in `progress`, so a resumed
/// job adapts the same experts).
#[allow(clippy::too_many_arguments)]
pub fn lora_plan(
    model: &MoeModel,
    options: &MoeSftQatOptions,
    train: &[Example],
    codec: &TextCodec,
    batch: usize,
    device: Device,
    progress: &mut Progress,
    reporter: &mut dyn Reporter,
    parallel: Option<&super::parallel::DataParallel>,
) -> anyhow::Result<ExpertPlan> {
    ExpertPlan::check_dense_layers(model, &options.lora)?;
    let layers = model.config.num_hidden_layers as usize;
    let choice = match &options.lora.target_experts {
        ExpertTargets::FromProfile { from_profile } => {
            if progress.training_profile.is_none() {
                let profile = profile_examples(model, codec, train, from_profile.max_examples as usize, options.seq_len as usize, batch, device)?;
                // Every rank adapts the experts rank 0 measured: devices need not route ties alike.
                progress.training_profile = Some(match parallel {
                    Some(dp) => dp.from_rank_zero(&profile)?,
                    None => profile,
                });
            }
            let profile = progress.training_profile.as_ref().expect("measured above");
            let choice = experts_used(profile, layers, from_profile.min_share);
            let largest = profile.layers.iter().flat_map(|l| l.topk_share.iter().copied()).fold(0.0, f64::max);
            anyhow::ensure!(
                choice.iter().any(|c| !c.is_empty()),
                "lora.target_experts.from_profile: no expert receives a share of {} of any layer's routing (the largest is {largest:.4}); lower min_share",
                from_profile.min_share
            );
            Some(choice)
        }
        _ => None,
    };
    let plan = ExpertPlan::new(model, &options.lora, choice.as_deref());
    if !matches!(options.lora.target_experts, ExpertTargets::All(_)) || !options.lora.rank_pattern.is_empty() {
        let per_layer: Vec<String> = plan
            .targeted()
            .iter()
            .map(|(layer, experts)| format!("layer {layer}: {} ({} of {})", experts.iter().map(|(e, r)| format!("{e}@r{r}")).collect::<Vec<_>>().join(", "), experts.len(), model.config.moe.num_experts))
            .collect();
        let source = match &progress.training_profile {
            Some(p) => format!(" (from the routing of {} tokens of {} training examples)", p.tokens, p.examples),
            None => String::new(),
        };
        reporter.event(super::info(&format!("LoRA expert adapters{source}: {}", if per_layer.is_empty() { "none".into() } else { per_layer.join("; ") })));
    }
    Ok(plan)
}

/// A routing-profile job: the base model, loaded as a LoRA job of it loads it (the job's precision;
/// experts held packed where the model ships them packed, which is what placement sized the job
/// for), routes the first `job.max_examples` examples of the training data and of the validation
/// data, if any. Returns the tokens routed and the result.
pub fn run_job(spec: &TrainingSpec, job: &ProfileJob, data: &super::JobData, device: Device) -> anyhow::Result<(i64, ProfileResult)> {
    let kind = super::training_kind(spec.moe.precision, device);
    let (_vars, model, codec) = super::base_model(&spec.model, device, kind, super::expert_storage(&spec.moe))?;
    let profile = |examples: &[Example]| profile_examples(&model, &codec, examples, job.max_examples as usize, spec.moe.seq_len as usize, spec.batch_size.max(1) as usize, device);
    let training = profile(&data.train)?;
    let validation = (!data.validation.is_empty()).then(|| profile(&data.validation)).transpose()?;
    let tokens = training.tokens + validation.as_ref().map_or(0, |v| v.tokens);
    Ok((tokens as i64, ProfileResult { training, validation }))
}
