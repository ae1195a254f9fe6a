//! Grouped expert GEMMs (every expert's tokens in one `_grouped_mm` per projection, offsets on the
//! device) against the per-expert loop they replace: the same logits and the same gradients of every
//! trainable tensor, for every architecture, in full SFT, expert LoRA on the factors, QAT's fused
//! fake quantization and NVFP4 activation fake quantization, with capacity and router jitter.

mod common;

use common::{configs, serial, weighted_forward_backward};
use moetune_runner::model::{new_seeded, Adapters, ExpertInput, ForwardMode, MoeModel, RoutingOptions};
use moetune_runner::train::lora;
use moetune_types::LoraOptions;
use tch::{nn, Device, Kind, Tensor};

fn ids(vocab: i64) -> Tensor {
    let ids: Vec<i64> = (0..2 * 13).map(|i| (i * 7 + 3) % vocab).collect();
    Tensor::from_slice(&ids).view([2, 13])
}

/// LoRA on attention and experts with non-zero B, so the updates matter.
fn adapters(model: &MoeModel) -> Adapters {
    let adapters = lora::create(model, &LoraOptions { target_experts: moetune_types::ExpertTargets::All(true), r: 4, ..LoraOptions::default() }, Device::Cpu);
    tch::no_grad(|| {
        for pair in adapters.linear.values().chain(adapters.experts.values()) {
            let _ = pair.b.shallow_clone().copy_(&(Tensor::randn_like(&pair.b) * 0.05));
        }
    });
    adapters
}

/// Logits and the gradients of `trainables` after a backward of a loss that weighs every logit
/// differently and includes the router's load-balancing loss (so the routing weights get gradients).
fn forward_backward(model: &MoeModel, ids: &Tensor, mode: ForwardMode, trainables: &[(String, Tensor)]) -> (Tensor, Vec<(String, Tensor)>) {
    for (_, t) in trainables {
        let mut g = t.grad();
        if g.defined() {
            let _ = g.detach_().zero_();
        }
    }
    let logits = weighted_forward_backward(model, ids, mode);
    let grads = trainables.iter().map(|(name, t)| (name.clone(), t.grad().detach().copy())).collect();
    (logits, grads)
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    let scale = want.abs().max().double_value(&[]);
    let diff = (got - want).abs().max().double_value(&[]);
    assert!(diff <= 1e-5 * scale.max(1e-6), "{what} differs by {diff} (values up to {scale})");
}

#[test]
fn grouped_expert_gemms_give_the_logits_and_gradients_of_the_per_expert_loop() {
    let _serial = serial();
    let mxfp4 = |w: &Tensor| moetune_runner::quant::mxfp4::fake_quantize_ste(w, Default::default());
    let amax = Tensor::from(4.0f32);
    let nvfp4_inputs = |_: usize, _: ExpertInput, x: &Tensor| moetune_runner::quant::nvfp4::fake_quantize_ste(x, Some(&amax));
    for (arch, config) in configs() {
        for case in ["full", "lora", "qat", "activations"] {
            let vars = nn::VarStore::new(Device::Cpu);
            let model = new_seeded(&vars, config.clone(), 7);
            let lora_adapters = (case == "lora").then(|| adapters(&model));
            let mut trainables: Vec<(String, Tensor)> = match &lora_adapters {
                Some(a) => lora::trainables(a).into_iter().map(|t| (t.name, t.tensor)).collect(),
                None => vars.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect(),
            };
            trainables.sort_by(|a, b| a.0.cmp(&b.0));
            // Capacity drops slots and jitter draws random numbers: both paths must see the same.
            let routing = RoutingOptions { capacity_factor: Some(0.5), jitter: 0.05 };
            let mode = ForwardMode {
                routing: Some(&routing),
                adapters: lora_adapters.as_ref(),
                expert_transform: (case == "qat").then_some(&mxfp4 as &dyn Fn(&Tensor) -> Tensor),
                expert_inputs: (case == "activations").then_some(&nvfp4_inputs as &dyn Fn(usize, ExpertInput, &Tensor) -> Tensor),
                seed: Some(5),
                ..Default::default()
            };
            let looped = ForwardMode { expert_loop: true, ..mode };
            assert!(model.groups_experts(mode, Kind::Float), "{arch} {case}: the grouped path is not taken");
            assert!(!model.groups_experts(looped, Kind::Float));

            let ids = ids(config.vocab_size);
            // Capacity ceil(0.5 · 26 tokens · 2 / 4 experts) = 7 slots of the 13 an expert gets on average:
            // some slots are dropped in every MoE layer.
            let top_k = tch::no_grad(|| model.forward(&ids, mode).router_top_k);
            for (layer, chosen) in &top_k {
                let busiest = chosen.flatten(0, -1).bincount(None::<Tensor>, 4).max().int64_value(&[]);
                assert!(busiest > 7, "{arch} {case}: layer {layer} drops nothing (busiest expert {busiest} slots)");
            }
            let (logits, grads) = forward_backward(&model, &ids, mode, &trainables);
            let (want_logits, want_grads) = forward_backward(&model, &ids, looped, &trainables);
            assert_close(&format!("{arch} {case}: logits"), &logits, &want_logits);
            let mut nonzero = 0;
            for ((name, got), (_, want)) in grads.iter().zip(&want_grads) {
                assert_close(&format!("{arch} {case}: gradient of {name}"), got, want);
                nonzero += usize::from(want.abs().max().double_value(&[]) > 0.0);
            }
            assert!(nonzero * 10 >= grads.len() * 9, "{arch} {case}: most gradients are zero, the comparison proves little");
        }
    }
}

/// LoRA ranks and shapes `_grouped_mm` cannot take (rows not a multiple of 16 bytes) keep the loop.
#[test]
fn shapes_the_grouped_kernel_cannot_take_keep_the_per_expert_loop() {
    let _serial = serial();
    let (_, config) = configs().remove(0);
    let vars = nn::VarStore::new(Device::Cpu);
    let model = new_seeded(&vars, config, 7);
    let odd = lora::create(&model, &LoraOptions { target_experts: moetune_types::ExpertTargets::All(true), r: 3, ..LoraOptions::default() }, Device::Cpu);
    let mode = ForwardMode { adapters: Some(&odd), ..Default::default() };
    assert!(!model.groups_experts(mode, Kind::Float));
    assert!(model.groups_experts(ForwardMode::default(), Kind::Float));
    let logits = tch::no_grad(|| model.forward(&ids(96), mode).logits);
    assert_eq!(logits.size(), [2, 13, 96]);
}
