//! The memory-saving pieces of a training step against the straightforward path they replace: expert
//! LoRA on the factors against the materialised `W + BA`, the chunked cross-entropy and activation
//! checkpointing against `loss.backward()` on the whole forward (frozen packed experts backpropagated
//! one at a time included), and a bf16 step against the fp32 one.

mod common;

use common::{configs, labelled_batch, serial, small, trainable_gradients};
use moetune_runner::model::{new_seeded, Adapters, ForwardMode, MoeModel, PackedFormat, RoutingOptions};
use moetune_runner::train::eval::{self, Batch};
use moetune_runner::train::optim::{AdamW, Trainable};
use moetune_runner::train::step::{forward_backward, StepOptions};
use moetune_runner::train::{lora, router, sft_trainables};
use moetune_types::{LoraOptions, RouterMode, SftMethod};
use serde_json::json;
use tch::{nn, Device, Kind, Tensor};

fn batch(vocab: i64) -> Batch {
    labelled_batch(vocab, 0)
}

/// LoRA on attention and experts, with non-zero B so the updates matter.
fn adapters(model: &MoeModel) -> Adapters {
    let options = LoraOptions { target_experts: moetune_types::ExpertTargets::All(true), r: 4, ..LoraOptions::default() };
    let adapters = lora::create(model, &options, Device::Cpu);
    tch::no_grad(|| {
        for pair in adapters.linear.values().chain(adapters.experts.values()) {
            let _ = pair.b.shallow_clone().copy_(&(Tensor::randn_like(&pair.b) * 0.05));
        }
    });
    adapters
}

fn zero_grads(trainables: &[Trainable]) {
    for t in trainables {
        let mut g = t.tensor.grad();
        if g.defined() {
            let _ = g.detach_().zero_();
        }
    }
}

/// Largest difference relative to the reference's largest magnitude, over every tensor.
fn assert_close(what: &str, got: &[(String, Tensor)], want: &[(String, Tensor)], tolerance: f64) {
    assert_eq!(got.len(), want.len());
    let mut nonzero = 0;
    for ((name, g), (_, w)) in got.iter().zip(want) {
        let scale = w.abs().max().double_value(&[]);
        let diff = (g - w).abs().max().double_value(&[]);
        assert!(diff <= tolerance * scale.max(1e-6), "{what}: {name} differs by {diff} (values up to {scale})");
        nonzero += usize::from(scale > 0.0);
    }
    assert!(nonzero * 2 > want.len(), "{what}: most gradients are zero, the comparison proves little");
}

/// `loss.backward()` on the whole forward: the path the step replaces.
fn reference_backward(model: &MoeModel, batch: &Batch, mode: ForwardMode, options: &StepOptions) -> f64 {
    let out = model.forward(&batch.ids, mode);
    let ce = eval::token_loss(&out.logits, &batch.labels);
    let layers = out.router_logits.len().max(1) as f64;
    let mut total = ce.shallow_clone();
    for ((_, logits), (_, top_k)) in out.router_logits.iter().zip(&out.router_top_k) {
        total = total + router::load_balancing_loss(logits, top_k, &batch.valid) * (options.aux_loss_coef / layers);
        total = total + router::z_loss(logits, &batch.valid) * (options.z_loss_coef / layers);
    }
    (total * options.grad_scale).backward();
    ce.double_value(&[])
}

#[test]
fn chunked_and_checkpointed_steps_give_the_gradients_of_the_plain_backward() {
    let _serial = serial();
    for (arch, config) in configs() {
        for method in [SftMethod::Lora, SftMethod::Full] {
            let vars = nn::VarStore::new(Device::Cpu);
            let model = new_seeded(&vars, config.clone(), 3);
            let lora_adapters = (method == SftMethod::Lora).then(|| adapters(&model));
            let mut trainables = sft_trainables(&model, &vars, method, RouterMode::Train);
            if let Some(a) = &lora_adapters {
                trainables.extend(lora::trainables(a));
            }
            // Jitter draws random numbers in every MoE layer: recomputation must draw the same.
            let routing = RoutingOptions { capacity_factor: Some(1.25), jitter: 0.05 };
            let mode = ForwardMode { routing: Some(&routing), adapters: lora_adapters.as_ref(), seed: Some(11), ..Default::default() };
            let batch = batch(config.vocab_size);
            let options = |checkpointing, chunk_tokens| StepOptions { checkpointing, chunk_tokens, aux_loss_coef: 0.01, z_loss_coef: 0.001, grad_scale: 0.5, always_backward: false };

            let reference_loss = reference_backward(&model, &batch, mode, &options(false, None));
            let reference = trainable_gradients(&trainables);
            for (checkpointing, chunk) in [(false, Some(5)), (true, Some(5)), (true, None)] {
                zero_grads(&trainables);
                let loss = forward_backward(&model, &batch, mode, &options(checkpointing, chunk)).double_value(&[]);
                let what = format!("{arch} {method:?} checkpointing={checkpointing} chunk={chunk:?}");
                assert!((loss - reference_loss).abs() <= 1e-5 * reference_loss.abs(), "{what}: loss {loss} vs {reference_loss}");
                assert_close(&what, &trainable_gradients(&trainables), &reference, 1e-5);
            }
        }
    }
}

/// Frozen packed experts in a checkpointed step are backpropagated one expert at a time (each
/// dequantised again and freed): the gradients equal `loss.backward()` over the whole forward, in
/// LoRA SFT and in LoRA-QAT (fake quantization of each expert's `W + BA`), with capacity and jitter.
#[test]
fn frozen_experts_backpropagated_one_at_a_time_give_the_gradients_of_the_plain_backward() {
    let _serial = serial();
    let mxfp4 = |w: &Tensor| moetune_runner::quant::mxfp4::fake_quantize_ste(w, Default::default());
    let nvfp4 = |w: &Tensor| moetune_runner::quant::nvfp4::fake_quantize_ste(w, None);
    type Transform<'a> = Option<&'a dyn Fn(&Tensor) -> Tensor>;
    let cases: [(PackedFormat, Transform); 3] = [(PackedFormat::Mxfp4, None), (PackedFormat::Mxfp4, Some(&mxfp4)), (PackedFormat::Nvfp4, Some(&nvfp4))];
    for (arch, config) in configs() {
        for (format, transform) in cases {
            let vars = nn::VarStore::new(Device::Cpu);
            let model = new_seeded(&vars, config.clone(), 3);
            model.pack_experts(format).unwrap();
            let lora_adapters = adapters(&model);
            let mut trainables = sft_trainables(&model, &vars, SftMethod::Lora, RouterMode::Train);
            trainables.extend(lora::trainables(&lora_adapters));
            let routing = RoutingOptions { capacity_factor: Some(1.25), jitter: 0.05 };
            let mode = ForwardMode { routing: Some(&routing), adapters: Some(&lora_adapters), expert_transform: transform, seed: Some(11), ..Default::default() };
            let batch = batch(config.vocab_size);
            let options = |checkpointing| StepOptions { checkpointing, chunk_tokens: Some(5), aux_loss_coef: 0.01, z_loss_coef: 0.001, grad_scale: 0.5, always_backward: false };

            let reference_loss = reference_backward(&model, &batch, mode, &options(false));
            let reference = trainable_gradients(&trainables);
            zero_grads(&trainables);
            let loss = forward_backward(&model, &batch, mode, &options(true)).double_value(&[]);
            let what = format!("{arch} {format:?} transform={}", transform.is_some());
            assert!((loss - reference_loss).abs() <= 1e-5 * reference_loss.abs(), "{what}: loss {loss} vs {reference_loss}");
            assert_close(&what, &trainable_gradients(&trainables), &reference, 1e-5);
            // The deferred path is the one taken: every MoE layer of the packed model defers its experts.
            let rope = model.rope(batch.ids.size()[1], Device::Cpu, Kind::Float);
            let h = tch::no_grad(|| model.embed(&batch.ids));
            for i in model.moe_layer_indices() {
                assert!(model.layer_forward_deferring_experts(i, &h, &rope, mode).1.is_some(), "{what}: layer {i} does not defer its experts");
            }
        }
    }
}

#[test]
fn expert_lora_on_the_factors_equals_the_materialised_update() {
    let _serial = serial();
    for (arch, config) in configs() {
        let vars = nn::VarStore::new(Device::Cpu);
        let model = new_seeded(&vars, config.clone(), 5);
        let adapters = adapters(&model);
        let trainables = lora::trainables(&adapters);
        let ids = batch(config.vocab_size).ids;
        let run = |mode: ForwardMode| {
            zero_grads(&trainables);
            let logits = model.forward(&ids, mode).logits;
            (logits * Tensor::linspace(-1.0, 1.0, config.vocab_size, (Kind::Float, Device::Cpu))).sum(Kind::Float).backward();
            trainable_gradients(&trainables)
        };
        let factors = ForwardMode { adapters: Some(&adapters), ..Default::default() };
        // An identity transform takes the path that merges `W + BA` per expert (LoRA-QAT's).
        let identity = |w: &Tensor| w.shallow_clone();
        let materialised = ForwardMode { adapters: Some(&adapters), expert_transform: Some(&identity), ..Default::default() };
        let logits = |mode| tch::no_grad(|| model.forward(&ids, mode).logits);
        let (a, b) = (logits(factors), logits(materialised));
        let diff = (&a - &b).abs().max().double_value(&[]);
        assert!(diff <= 1e-5 * a.abs().max().double_value(&[]), "{arch}: logits differ by {diff}");
        assert_close(&format!("{arch} adapter gradients"), &run(factors), &run(materialised), 1e-5);
        // And both equal the base with the update merged into its weights (PEFT's merge_and_unload).
        lora::merge_into(&adapters, &model, &vars).unwrap();
        let merged = logits(ForwardMode::default());
        let diff = (&a - &merged).abs().max().double_value(&[]);
        assert!(diff <= 1e-5 * a.abs().max().double_value(&[]), "{arch}: merged logits differ by {diff}");
    }
}

/// bf16 weights with fp32 masters against fp32 on the same weights: the loss agrees within 1e-2
/// relative and nearly every token goes to the same experts; an optimiser step keeps an fp32 master
/// of which the bf16 weight is the rounding.
#[test]
fn a_bf16_step_tracks_the_fp32_step() {
    let _serial = serial();
    let config = small(json!({"architectures": ["MixtralForCausalLM"], "num_local_experts": 4}));
    let batch = batch(config.vocab_size);
    let step = |kind: Kind| {
        let mut vars = nn::VarStore::new(Device::Cpu);
        let model = new_seeded(&vars, config.clone(), 9);
        vars.set_kind(kind);
        let trainables = sft_trainables(&model, &vars, SftMethod::Full, RouterMode::Freeze);
        let before = vars.variables()["model.layers.0.self_attn.q_proj.weight"].detach().copy();
        let options = StepOptions { checkpointing: true, chunk_tokens: None, aux_loss_coef: 0.0, z_loss_coef: 0.001, grad_scale: 1.0, always_backward: false };
        let top_k = tch::no_grad(|| model.forward(&batch.ids, ForwardMode::default()).router_top_k);
        let loss = forward_backward(&model, &batch, ForwardMode::default(), &options).double_value(&[]);
        let mut optimizer = AdamW::new(trainables, 0.0);
        optimizer.step(1e-5);
        let weight = vars.variables()["model.layers.0.self_attn.q_proj.weight"].detach().copy();
        (loss, top_k, weight, optimizer, before)
    };
    let (loss32, top32, weight32, _, _) = step(Kind::Float);
    let (loss16, top16, weight16, optimizer16, before16) = step(Kind::BFloat16);
    assert!((loss16 - loss32).abs() <= 1e-2 * loss32, "bf16 loss {loss16} vs fp32 {loss32}");
    let agreement: Vec<f64> = top32
        .iter()
        .zip(&top16)
        .map(|((_, a), (_, b))| {
            let (a, b) = (a.sort(-1, false).0, b.sort(-1, false).0);
            a.eq_tensor(&b).all_dim(-1, false).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
        })
        .collect();
    eprintln!("bf16 vs fp32: loss {loss16:.5} vs {loss32:.5}; top-k agreement per MoE layer {agreement:?}");
    assert!(agreement.iter().all(|&a| a >= 0.8), "routing agreement {agreement:?}");
    assert_eq!(weight16.kind(), Kind::BFloat16);
    let diff = (weight16.to_kind(Kind::Float) - &weight32).abs().max().double_value(&[]);
    assert!(diff < 1e-2, "bf16 weight after the step differs from fp32 by {diff}");
    // The master holds what bf16 cannot: 1e-5 updates on weights of ~0.02 are below bf16's resolution.
    let dir = std::env::temp_dir().join(format!("moetune-bf16-master-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    optimizer16.save(&dir.join("optimizer.safetensors")).unwrap();
    let saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("optimizer.safetensors")).unwrap().into_iter().collect();
    let master = &saved["model.layers.0.self_attn.q_proj.weight.master"];
    assert_eq!(master.kind(), Kind::Float);
    assert!(master.to_kind(Kind::BFloat16).equal(&weight16), "the bf16 weight is not the rounding of its master");
    // AdamW's first step moves every weight by about the learning rate: the master moved, while most
    // bf16 weights could not.
    let moved = (master - before16.to_kind(Kind::Float)).abs();
    let (least, most) = (moved.min().double_value(&[]), moved.max().double_value(&[]));
    assert!(least > 0.5e-5 && most < 1.5e-5, "master moved by {least}..{most}, not by the learning rate");
    let unchanged = weight16.eq_tensor(&before16).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    assert!(unchanged > 0.5, "only {unchanged} of the bf16 weights kept their value: the test would not show the master's use");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Experts chosen per layer with ranks of their own, on every architecture (gpt-oss's `[E, in, out]`
/// experts and Qwen2-MoE's dense layer included), through steps of AdamW with weight decay: the
/// untargeted experts' factors and the rows beyond each expert's rank stay exactly zero, the targeted
/// ones train, and the PEFT export read back gives every expert the same update (rsLoRA scaling).
#[test]
fn chosen_experts_alone_train_and_their_export_reads_back_with_the_same_updates() {
    let _serial = serial();
    let batch = batch(96);
    for (name, config) in configs() {
        let vars = nn::VarStore::new(Device::Cpu);
        let model = new_seeded(&vars, config, 5);
        let options: LoraOptions = serde_json::from_value(json!({"r": 2, "use_rslora": true, "target_modules": ["q_proj"],
            "target_experts": [[1, 3], []], "rank_pattern": {"layers.0.experts.3": 4}}))
        .unwrap();
        let plan = lora::ExpertPlan::new(&model, &options, None);
        assert_eq!(plan.ranks[0], [0, 2, 0, 4], "{name}");
        let adapters = lora::create_planned(&model, &options, &plan, Device::Cpu);
        assert_eq!(adapters.experts.len(), 2, "{name}: layer 0's two fused weights only");
        let mut optimizer = AdamW::new(lora::trainables(&adapters), 0.1);
        let mode = ForwardMode { adapters: Some(&adapters), ..Default::default() };
        let options_step = StepOptions { checkpointing: false, chunk_tokens: None, aux_loss_coef: 0.0, z_loss_coef: 0.0, grad_scale: 1.0, always_backward: false };
        for _ in 0..3 {
            let _ = forward_backward(&model, &batch, mode, &options_step);
            optimizer.step(1e-2);
            zero_grads(&lora::trainables(&adapters));
        }
        let experts = 4;
        for (param, pair) in &adapters.experts {
            let rank = pair.a.size()[0] / experts;
            assert_eq!(rank, 4, "{name} {param}: sized for the largest rank");
            let a = pair.a.view([experts, rank, -1]);
            let b = pair.b.view([-1, rank, experts]);
            for (e, r) in [(0, 0), (1, 2), (2, 0), (3, 4)] {
                let dead_a = a.get(e).narrow(0, r, rank - r);
                let dead_b = b.select(2, e).narrow(1, r, rank - r);
                let all_zero = |t: &Tensor| t.numel() == 0 || t.abs().max().double_value(&[]) == 0.0;
                assert!(all_zero(&dead_a) && all_zero(&dead_b), "{name} {param} expert {e}: rows beyond rank {r} moved");
                if r > 0 {
                    assert!(b.select(2, e).abs().max().double_value(&[]) > 0.0, "{name} {param} expert {e} trained");
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("moetune-chosen-experts-{name}-{}", std::process::id()));
        lora::save_peft(&adapters, &options, &model, "base", &dir).unwrap();
        let loaded = lora::load_peft(&dir, Device::Cpu).unwrap();
        let transposed = model.experts_transposed();
        for param in adapters.experts.keys() {
            let trained = adapters.expert_delta(param, experts, transposed).unwrap();
            let read = loaded.expert_delta(param, experts, transposed).unwrap();
            let diff = (&trained - &read).abs().max().double_value(&[]);
            assert!(diff <= 1e-6 * trained.abs().max().double_value(&[]).max(1e-12), "{name} {param}: the export reads back {diff} off");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
