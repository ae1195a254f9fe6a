//! The pieces of data parallelism against the single-process path, on Gloo over loopback with ranks
//! as threads: gradient summing (including a gradient only some ranks produced), the sharded
//! optimiser step with the owners' broadcast, and the ownership table.

use std::time::Duration;

use moetune_c10d::{Rendezvous, Store};
use moetune_runner::train::optim::{AdamW, Trainable};
use moetune_runner::train::parallel::DataParallel;
use tch::{Device, Kind, Tensor};

/// Runs `body(rank's DataParallel)` on `world` threads and returns their results in rank order.
fn on_ranks<T: Send + 'static>(world: usize, body: impl Fn(DataParallel) -> T + Send + Sync + Clone + 'static) -> Vec<T> {
    let port = {
        // A free port for rank 0's store.
        let probe = Store::serve("127.0.0.1", 0, 1, Duration::from_secs(5)).unwrap();
        probe.port()
    };
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let body = body.clone();
            std::thread::spawn(move || {
                let rendezvous = Rendezvous {
                    host: "127.0.0.1".into(),
                    port,
                    rank,
                    world_size: world,
                    timeout: Duration::from_secs(30),
                    prefix: "test".into(),
                    gloo_host: Some("127.0.0.1".into()),
                };
                body(DataParallel::join(&rendezvous, Device::Cpu).expect("join"))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("rank")).collect()
}

/// Three trainables of different sizes, values fixed by `seed` (no random generator: the ranks are
/// threads sharing libtorch's one generator).
fn params(seed: i64) -> Vec<Trainable> {
    [("a", vec![8, 4], true), ("b", vec![16], false), ("c", vec![4, 4, 2], true)]
        .into_iter()
        .map(|(name, shape, decay)| {
            let n: i64 = shape.iter().product();
            let values = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.7 + seed as f64).sin().reshape(shape.as_slice());
            Trainable { name: name.into(), tensor: values.set_requires_grad(true), decay }
        })
        .collect()
}

/// Accumulates the gradient of `Σ w · p²` into every trainable in `which`.
fn backward(params: &[Trainable], which: &[usize], w: f64) {
    let loss = which.iter().map(|&i| (&params[i].tensor * &params[i].tensor).sum(Kind::Float) * w).reduce(|a, b| a + b).unwrap();
    loss.backward();
}

#[test]
fn summed_gradients_equal_one_process_and_a_gradient_only_one_rank_made_reaches_all() {
    // Rank r's micro-batch touches a and b (weight r + 1); only rank 1 touches c.
    let results = on_ranks(2, |dp| {
        let p = params(7);
        let touched: Vec<usize> = if dp.rank() == 1 { vec![0, 1, 2] } else { vec![0, 1] };
        backward(&p, &touched, dp.rank() as f64 + 1.0);
        dp.sync_grads(&p).unwrap();
        p.iter().map(|t| t.tensor.grad()).collect::<Vec<_>>()
    });
    let single = params(7);
    backward(&single, &[0, 1], 1.0);
    backward(&single, &[0, 1, 2], 2.0);
    for grads in &results {
        for (g, p) in grads.iter().zip(&single) {
            assert!(g.defined(), "{}: no gradient after the exchange", p.name);
            assert!(g.allclose(&p.tensor.grad(), 1e-6, 1e-6, false), "{}", p.name);
        }
    }
}

#[test]
fn the_sharded_optimiser_step_equals_the_whole_one() {
    for world in [2, 3] {
        let results = on_ranks(world, |dp| {
            let p = params(11);
            backward(&p, &[0, 1, 2], 1.0);
            let owners = dp.owners(&p);
            let owned = owners.iter().map(|&o| o == dp.rank()).collect();
            let mut optimizer = AdamW::sharded(p, 0.1, owned);
            for _ in 0..3 {
                optimizer.step(1e-2);
                dp.broadcast_params(optimizer.params(), &owners).unwrap();
            }
            optimizer.params().iter().map(|t| t.tensor.detach().copy()).collect::<Vec<_>>()
        });
        let p = params(11);
        backward(&p, &[0, 1, 2], 1.0);
        let mut whole = AdamW::new(p, 0.1);
        for _ in 0..3 {
            whole.step(1e-2);
        }
        for values in &results {
            for (v, t) in values.iter().zip(whole.params()) {
                assert!(v.equal(&t.tensor.detach()), "{} on {world} ranks differs from the single optimiser", t.name);
            }
        }
    }
}

#[test]
fn ownership_balances_elements_and_is_the_same_on_every_rank() {
    let tables = on_ranks(2, |dp| dp.owners(&params(1)));
    assert_eq!(tables[0], tables[1]);
    // a (32 elements) and c (32) go to different ranks, b (16) to rank 0 (the lower of two equal loads).
    assert_eq!(tables[0], vec![0, 0, 1]);
}
