//! Expert parallelism against the whole model: 2 and 4 ranks (threads of this process, each with its
//! own Gloo group over loopback, as separate runner processes would have) each hold their share of
//! the routed experts and run their own batch; the tokens cross ranks by all-to-all. Every rank's
//! logits must equal the whole model's on that batch, each rank's expert gradients the whole model's
//! (summed over every rank's batch) for its experts, and the other gradients summed across ranks the
//! whole model's — for every architecture, with capacity dropping slots, through the grouped GEMMs
//! and the per-expert loop, under QAT's fake quantization and NVFP4 activation quantization.

mod common;

use std::collections::HashMap;

use common::{configs, on_ranks, serial, weighted_forward_backward};
use moetune_c10d::ProcessGroup;
use moetune_runner::model::{new_seeded, ArchConfig, ExpertInput, ExpertParallel, ForwardMode, MoeModel, RoutingOptions};
use tch::{nn, Device, Tensor};

/// Rank `rank`'s batch: distinct per rank.
fn ids(rank: usize, vocab: i64) -> Tensor {
    let ids: Vec<i64> = (0..2 * 13).map(|i| (i * 7 + 3 + 11 * rank as i64) % vocab).collect();
    Tensor::from_slice(&ids).view([2, 13])
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Full,
    Loop,
    Qat,
    Activations,
}

/// Logits, after the backward of `weighted_forward_backward`'s loss, under `case`.
fn forward_backward(model: &MoeModel, ids: &Tensor, case: Case) -> Tensor {
    let routing = RoutingOptions { capacity_factor: Some(0.5), jitter: 0.0 };
    let mxfp4 = |w: &Tensor| moetune_runner::quant::mxfp4::fake_quantize_ste(w, Default::default());
    let amax = Tensor::from(4.0f32);
    let nvfp4_inputs = |_: usize, _: ExpertInput, x: &Tensor| moetune_runner::quant::nvfp4::fake_quantize_ste(x, Some(&amax));
    let mode = ForwardMode {
        routing: Some(&routing),
        expert_transform: (case == Case::Qat).then_some(&mxfp4 as &dyn Fn(&Tensor) -> Tensor),
        expert_inputs: (case == Case::Activations).then_some(&nvfp4_inputs as &dyn Fn(usize, ExpertInput, &Tensor) -> Tensor),
        expert_loop: case == Case::Loop,
        ..Default::default()
    };
    weighted_forward_backward(model, ids, mode)
}

fn gradients(vars: &nn::VarStore) -> HashMap<String, Tensor> {
    vars.variables().into_iter().filter(|(_, t)| t.requires_grad()).map(|(name, t)| (name, t.grad().detach().copy())).collect()
}

/// One rank: the model with its share of the experts (copied from the whole model's `values`), run
/// on its batch. Returns its logits, its gradients and which rows of each expert tensor it holds.
fn rank(config: ArchConfig, group: ProcessGroup, values: Vec<(String, Tensor)>, ids: Tensor, case: Case) -> (Tensor, HashMap<String, Tensor>, HashMap<String, (i64, i64)>) {
    let ep = ExpertParallel::new(group);
    let vars = nn::VarStore::new(Device::Cpu);
    let model = tch::no_grad(|| MoeModel::new_expert_parallel(&vars, config, &ep)).unwrap();
    let rows: HashMap<String, (i64, i64)> = model.params.iter().filter_map(|p| p.local_rows.map(|r| (p.name.clone(), r))).collect();
    let variables = vars.variables();
    tch::no_grad(|| {
        for (name, value) in &values {
            let value = match rows.get(name) {
                Some(&(first, count)) => value.narrow(0, first, count),
                None => value.shallow_clone(),
            };
            variables[name].shallow_clone().copy_(&value);
        }
    });
    let logits = forward_backward(&model, &ids, case);
    (logits, gradients(&vars), rows)
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    let scale = want.abs().max().double_value(&[]);
    let diff = (got - want).abs().max().double_value(&[]);
    assert!(diff <= 1e-5 * scale.max(1e-6), "{what} differs by {diff} (values up to {scale})");
}

fn compare(arch: &str, config: ArchConfig, world: usize, case: Case) {
    let label = format!("{arch}, {world} ranks, {}", ["full", "loop", "qat", "activations"][case as usize]);
    let vars = nn::VarStore::new(Device::Cpu);
    let whole = new_seeded(&vars, config.clone(), 7);
    let want_logits: Vec<Tensor> = (0..world).map(|r| forward_backward(&whole, &ids(r, config.vocab_size), case)).collect();
    let want_grads = gradients(&vars);
    let values: Vec<(String, Tensor)> = vars.variables().into_iter().collect();

    let prefix = label.replace([' ', ','], "-");
    let inputs: Vec<_> = (0..world).map(|r| (values.iter().map(|(n, t)| (n.clone(), t.detach().copy())).collect::<Vec<_>>(), ids(r, config.vocab_size))).collect();
    let results = on_ranks(&prefix, inputs, move |_, group, (values, ids)| rank(config.clone(), group, values, ids, case));

    let mut checked_experts = 0;
    for (name, want) in &want_grads {
        match results[0].2.get(name) {
            Some(_) => {
                for (r, (_, grads, rows)) in results.iter().enumerate() {
                    let (first, count) = rows[name];
                    assert_eq!((first, count), (r as i64 * count, want.size()[0] / world as i64), "{label}: rows of {name} on rank {r}");
                    assert_close(&format!("{label}: rank {r}'s gradient of {name}"), &grads[name], &want.narrow(0, first, count));
                }
                checked_experts += 1;
            }
            None => {
                let sum = results.iter().map(|(_, grads, _)| grads[name].shallow_clone()).reduce(|a, b| a + b).unwrap();
                assert_close(&format!("{label}: gradient of {name} summed over ranks"), &sum, want);
            }
        }
    }
    assert!(checked_experts >= 2, "{label}: no expert tensor was split");
    for (r, (logits, _, _)) in results.iter().enumerate() {
        assert_close(&format!("{label}: rank {r}'s logits"), logits, &want_logits[r]);
    }
}

#[test]
fn expert_parallel_ranks_give_the_logits_and_gradients_of_the_whole_model() {
    let _serial = serial();
    for (arch, config) in configs() {
        for case in [Case::Full, Case::Loop, Case::Qat, Case::Activations] {
            compare(arch, config.clone(), 2, case);
        }
        compare(arch, config.clone(), 4, Case::Full);
    }
}

#[test]
fn experts_that_do_not_split_evenly_are_refused() {
    let (_, config) = configs().remove(0);
    let results = on_ranks("uneven", vec![(); 3], move |_, group, ()| {
        // Every rank has joined before any leaves (a rank refused at once would otherwise close its
        // connections while another is still making them).
        group.barrier().unwrap();
        let vars = nn::VarStore::new(Device::Cpu);
        MoeModel::new_expert_parallel(&vars, config.clone(), &ExpertParallel::new(group)).err().map(|e| e.to_string())
    });
    for error in results {
        let error = error.expect("4 experts over 3 ranks is refused");
        assert!(error.contains("divisible by 3") && error.contains("has 4"), "{error}");
    }
}
