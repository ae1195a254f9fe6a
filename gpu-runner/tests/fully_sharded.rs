//! Fully sharded weights against the whole model: 2 and 3 ranks (threads of this process, each with
//! its own Gloo group over loopback, as separate runner processes would have) each hold 1/N of every
//! weight (3 ranks: most weights are padded to a multiple of 3) and run the job's step on their own
//! batch. Every rank's loss must equal the whole model's on that batch, and each rank's gradient
//! shard the matching piece of the whole model's gradient summed over every rank's batch — for every
//! architecture, with the router trained, under QAT's fake quantization. The whole model gathered
//! back from the shards must equal the one the shards were cut from.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{configs, labelled_batch, on_ranks, serial, trainable_gradients};
use moetune_c10d::ProcessGroup;
use moetune_runner::model::{new_seeded, ArchConfig, ForwardMode, MoeModel, RoutingOptions};
use moetune_runner::train::eval::Batch;
use moetune_runner::train::optim::{AdamW, Trainable};
use moetune_runner::train::sft_trainables;
use moetune_runner::train::step::{forward_backward, StepOptions};
use moetune_types::{RouterMode, SftMethod};
use tch::{nn, Device, Kind, Tensor};

/// Rank `rank`'s batch: distinct per rank.
fn batch(rank: usize, vocab: i64) -> Batch {
    labelled_batch(vocab, 13 * rank as i64)
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Full,
    Qat,
}

/// The job's step (checkpointed, as fully sharded weights always run) on `batch`; returns the loss.
fn step(model: &MoeModel, batch: &Batch, case: Case, lockstep: bool) -> f64 {
    // No jitter: the ranks are threads of one process, sharing its random generator.
    let routing = RoutingOptions { capacity_factor: Some(1.25), jitter: 0.0 };
    let mxfp4 = |w: &Tensor| moetune_runner::quant::mxfp4::fake_quantize_ste(w, Default::default());
    let mode = ForwardMode { routing: Some(&routing), expert_transform: (case == Case::Qat).then_some(&mxfp4 as &dyn Fn(&Tensor) -> Tensor), ..Default::default() };
    let options = StepOptions { checkpointing: true, chunk_tokens: Some(5), aux_loss_coef: 0.01, z_loss_coef: 0.001, grad_scale: 0.5, always_backward: lockstep };
    forward_backward(model, batch, mode, &options).double_value(&[])
}

fn gradients(trainables: &[Trainable]) -> HashMap<String, Tensor> {
    trainable_gradients(trainables).into_iter().collect()
}

/// Rank `rank` of `world`'s piece of `whole` flattened and zero-padded to a multiple of `world`.
fn piece(whole: &Tensor, rank: usize, world: usize) -> Tensor {
    let n = whole.numel() as i64;
    let chunk = (n + world as i64 - 1) / world as i64;
    let padded = Tensor::cat(&[whole.reshape([-1]), whole.new_zeros([chunk * world as i64 - n], (whole.kind(), Device::Cpu))], 0);
    padded.narrow(0, rank as i64 * chunk, chunk)
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.size(), want.size(), "{what}: shape");
    let scale = want.abs().max().double_value(&[]);
    let diff = (got - want).abs().max().double_value(&[]);
    assert!(diff <= 1e-5 * scale.max(1e-6), "{what} differs by {diff} (values up to {scale})");
}

struct RankResult {
    loss: f64,
    grads: HashMap<String, Tensor>,
    whole: Option<HashMap<String, Tensor>>,
    shard_names: usize,
}

/// One rank: the whole model's `values`, sharded, one step on its batch, then the model gathered back.
/// The whole model's `values` in `kind`, sharded across `group` (the shards in host memory in fp32
/// when `offload`).
fn sharded_model(config: ArchConfig, group: ProcessGroup, values: &[(String, Tensor)], kind: Kind, offload: bool) -> (nn::VarStore, MoeModel) {
    let mut vars = nn::VarStore::new(Device::Cpu);
    let mut model = tch::no_grad(|| MoeModel::new(&vars, config));
    let variables = vars.variables();
    tch::no_grad(|| {
        for (name, value) in values {
            variables[name].shallow_clone().copy_(value);
        }
    });
    vars.set_kind(kind);
    model.shard_weights(&mut vars, Arc::new(Mutex::new(group)), Device::Cpu, offload).unwrap();
    (vars, model)
}

fn rank(config: ArchConfig, group: ProcessGroup, values: Vec<(String, Tensor)>, batch: Batch, case: Case) -> RankResult {
    let (vars, model) = sharded_model(config, group, &values, Kind::Float, false);
    let shard_names = model.fully_sharded().unwrap().names().len();
    let trainables = sft_trainables(&model, &vars, SftMethod::Full, RouterMode::Train);
    assert!(trainables.iter().all(|t| t.tensor.dim() == 1), "the optimiser updates flat shards");
    let loss = step(&model, &batch, case, true);
    let grads = gradients(&trainables);
    let whole = model.gather_whole(&vars, None, Kind::Float, 0).unwrap().map(|(v, _)| v.variables().into_iter().collect());
    RankResult { loss, grads, whole, shard_names }
}

fn compare(arch: &str, config: ArchConfig, world: usize, case: Case) {
    let label = format!("{arch}, {world} ranks, {}", ["full", "qat"][case as usize]);
    let vars = nn::VarStore::new(Device::Cpu);
    let whole = new_seeded(&vars, config.clone(), 7);
    let trainables = sft_trainables(&whole, &vars, SftMethod::Full, RouterMode::Train);
    let want_losses: Vec<f64> = (0..world).map(|r| step(&whole, &batch(r, config.vocab_size), case, false)).collect();
    let want_grads = gradients(&trainables);
    let values: Vec<(String, Tensor)> = vars.variables().into_iter().collect();

    let prefix = label.replace([' ', ','], "-");
    let inputs: Vec<_> = (0..world).map(|r| (values.iter().map(|(n, t)| (n.clone(), t.detach().copy())).collect::<Vec<_>>(), batch(r, config.vocab_size))).collect();
    let results: Vec<RankResult> = on_ranks(&prefix, inputs, move |_, group, (values, batch)| rank(config.clone(), group, values, batch, case));

    assert_eq!(results[0].shard_names, values.len(), "{label}: every weight is sharded");
    assert_eq!(want_grads.len(), results[0].grads.len(), "{label}: the same trainables");
    for (r, result) in results.iter().enumerate() {
        let (got, want) = (result.loss, want_losses[r]);
        assert!((got - want).abs() <= 1e-5 * want.abs(), "{label}: rank {r}'s loss {got} against {want}");
        for (name, want) in &want_grads {
            assert_close(&format!("{label}: rank {r}'s gradient shard of {name}"), &result.grads[name], &piece(want, r, world));
        }
        assert_eq!(result.whole.is_some(), r == 0, "{label}: only rank 0 keeps the gathered model");
    }
    let gathered = results[0].whole.as_ref().unwrap();
    for (name, value) in &values {
        assert!(gathered[name].equal(value), "{label}: {name} gathered back from the shards");
    }
}

#[test]
fn fully_sharded_ranks_give_the_losses_and_gradients_of_the_whole_model() {
    let _serial = serial();
    for (arch, config) in configs() {
        compare(arch, config.clone(), 2, Case::Full);
        compare(arch, config, 3, Case::Qat);
    }
}

/// One rank of a bf16 model, its shards on the device or offloaded: the kind of its shards, its loss,
/// its gradient shards (as fp32) and, after one AdamW step, the fp32 values it updated (the
/// offloaded shards themselves, or the device shards' fp32 masters).
fn bf16_rank(config: ArchConfig, group: ProcessGroup, values: Vec<(String, Tensor)>, batch: Batch, offload: bool) -> (Kind, f64, HashMap<String, Tensor>, HashMap<String, Tensor>) {
    let (vars, model) = sharded_model(config, group, &values, Kind::BFloat16, offload);
    assert_eq!(model.fully_sharded().unwrap().offloaded(), offload);
    let trainables = sft_trainables(&model, &vars, SftMethod::Full, RouterMode::Train);
    let kind = trainables[0].tensor.kind();
    assert!(trainables.iter().all(|t| t.tensor.kind() == kind && t.tensor.device() == Device::Cpu));
    let loss = step(&model, &batch, Case::Full, true);
    let grads = gradients(&trainables).into_iter().map(|(name, g)| (name, g.to_kind(Kind::Float))).collect();
    let mut optimizer = AdamW::new(trainables, 0.1);
    optimizer.step(1e-2);
    let updated = if offload {
        optimizer.params().iter().map(|t| (t.name.clone(), t.tensor.detach().copy())).collect()
    } else {
        optimizer.state(|_| true).into_iter().filter_map(|(name, t)| Some((name.strip_suffix(".master")?.to_string(), t))).collect()
    };
    (kind, loss, grads, updated)
}

/// CPU offload keeps the shards in fp32 in host memory and gathers them in the parameters' dtype; in
/// bf16, the precision it is for, it must train exactly as bf16 shards with fp32 masters do: the same
/// losses, the same gradients (reduced in bf16, then widened), and after an AdamW step fp32 shards
/// equal to the masters (within the fused CPU update's rounding of its square root).
#[test]
fn cpu_offloaded_shards_train_as_shards_on_the_device_do() {
    let _serial = serial();
    let (arch, config) = configs().swap_remove(0);
    let vars = nn::VarStore::new(Device::Cpu);
    let _ = new_seeded(&vars, config.clone(), 7);
    let values: Vec<(String, Tensor)> = vars.variables().into_iter().collect();
    let run = |offload: bool| {
        let inputs: Vec<_> = (0..2).map(|r| (values.iter().map(|(n, t)| (n.clone(), t.detach().copy())).collect::<Vec<_>>(), batch(r, config.vocab_size))).collect();
        let config = config.clone();
        on_ranks(&format!("offload-{arch}-{offload}"), inputs, move |_, group, (values, batch)| bf16_rank(config.clone(), group, values, batch, offload))
    };
    let (on_device, offloaded) = (run(false), run(true));
    for (r, (device, host)) in on_device.iter().zip(&offloaded).enumerate() {
        assert_eq!((device.0, host.0), (Kind::BFloat16, Kind::Float), "rank {r}: the shards' dtype");
        assert_eq!(device.1, host.1, "rank {r}: the loss");
        assert_eq!(device.2.len(), host.2.len());
        for (name, grad) in &device.2 {
            assert!(host.2[name].equal(grad), "rank {r}: the gradient shard of {name}");
        }
        assert_eq!(device.3.len(), host.3.len(), "rank {r}: every trainable has a master");
        for (name, master) in &device.3 {
            assert_close(&format!("rank {r}: {name} after a step"), &host.3[name], master);
        }
    }
}
