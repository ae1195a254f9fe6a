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
use moetune_runner::train::optim::Trainable;
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
fn rank(config: ArchConfig, group: ProcessGroup, values: Vec<(String, Tensor)>, batch: Batch, case: Case) -> RankResult {
    let mut vars = nn::VarStore::new(Device::Cpu);
    let mut model = tch::no_grad(|| MoeModel::new(&vars, config));
    let variables = vars.variables();
    tch::no_grad(|| {
        for (name, value) in &values {
            variables[name].shallow_clone().copy_(value);
        }
    });
    model.shard_weights(&mut vars, Arc::new(Mutex::new(group)), Device::Cpu).unwrap();
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
