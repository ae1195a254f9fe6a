//! Every collective on Gloo over loopback with 2 and 4 ranks (threads of this process, each with its
//! own process group, as separate runner processes would have), against the result computed locally.

use std::time::{Duration, Instant};

use moetune_c10d::{Backend, ProcessGroup, ReduceOp, Store};
use tch::{Kind, Tensor};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `body(group)` on `world` ranks and returns their results in rank order.
fn on_ranks<T: Send + 'static>(world: usize, prefix: &str, body: impl Fn(ProcessGroup) -> T + Send + Sync + Clone + 'static) -> Vec<T> {
    let server = Store::serve("127.0.0.1", 0, world, TIMEOUT).expect("store");
    let port = server.port();
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let body = body.clone();
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let store = Store::connect("127.0.0.1", port, world, TIMEOUT).expect("connect");
                let group = ProcessGroup::new(&store, &prefix, Backend::Gloo, rank, world, TIMEOUT, Some("127.0.0.1")).expect("join");
                body(group)
            })
        })
        .collect();
    let results = handles.into_iter().map(|h| h.join().expect("rank thread")).collect();
    drop(server);
    results
}

/// Rank r's input: distinct per rank and per element.
fn input(rank: usize, rows: i64) -> Tensor {
    Tensor::arange(rows * 3, (Kind::Float, tch::Device::Cpu)).reshape([rows, 3]) * (rank as f64 + 1.0) + rank as f64 / 10.0
}

#[test]
fn all_reduce_sum_max_and_min_equal_the_local_reduction() {
    for world in [2, 4] {
        let results = on_ranks(world, "reduce", |g| {
            let mut sum = input(g.rank(), 2);
            g.all_reduce(&mut sum, ReduceOp::Sum).unwrap();
            let mut max = input(g.rank(), 2);
            g.all_reduce(&mut max, ReduceOp::Max).unwrap();
            let mut min = input(g.rank(), 2);
            g.all_reduce(&mut min, ReduceOp::Min).unwrap();
            (sum, max, min)
        });
        let all: Vec<Tensor> = (0..world).map(|r| input(r, 2)).collect();
        let stacked = Tensor::stack(&all, 0);
        for (sum, max, min) in &results {
            assert!(sum.allclose(&stacked.sum_dim_intlist(0, false, Kind::Float), 1e-6, 1e-6, false));
            assert!(max.equal(&stacked.amax(0, false)));
            assert!(min.equal(&stacked.amin(0, false)));
        }
    }
}

#[test]
fn broadcast_copies_the_root_to_every_rank() {
    let results = on_ranks(4, "broadcast", |g| {
        let mut t = input(g.rank(), 3);
        g.broadcast(&mut t, 2).unwrap();
        t
    });
    for t in &results {
        assert!(t.equal(&input(2, 3)));
    }
}

#[test]
fn all_gather_and_reduce_scatter_are_rank_ordered() {
    for world in [2, 4] {
        let results = on_ranks(world, "gather", move |g| {
            let mine = input(g.rank(), 2);
            let mut gathered = Tensor::zeros([2 * world as i64, 3], (Kind::Float, tch::Device::Cpu));
            g.all_gather(&mut gathered, &mine).unwrap();
            let whole = input(g.rank(), 2 * world as i64);
            let mut block = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
            g.reduce_scatter(&mut block, &whole, ReduceOp::Sum).unwrap();
            (gathered, block)
        });
        let expected_gather = Tensor::cat(&(0..world).map(|r| input(r, 2)).collect::<Vec<_>>(), 0);
        let summed = (0..world).map(|r| input(r, 2 * world as i64)).fold(Tensor::zeros([2 * world as i64, 3], (Kind::Float, tch::Device::Cpu)), |a, b| a + b);
        for (rank, (gathered, block)) in results.iter().enumerate() {
            assert!(gathered.equal(&expected_gather));
            assert!(block.allclose(&summed.narrow(0, 2 * rank as i64, 2), 1e-6, 1e-6, false));
        }
    }
}

#[test]
fn all_to_all_exchanges_uneven_row_blocks() {
    // Rank r sends (r + d) % 3 rows to rank d: some ranks send nothing to some others.
    let world = 4usize;
    let sends = |from: usize, to: usize| ((from + to) % 3) as i64;
    let results = on_ranks(world, "alltoall", move |g| {
        let r = g.rank();
        let input_splits: Vec<i64> = (0..world).map(|d| sends(r, d)).collect();
        let output_splits: Vec<i64> = (0..world).map(|s| sends(s, r)).collect();
        let rows: i64 = input_splits.iter().sum();
        // Row i of rank r's input carries (r, destination, i) so the receiver can check where it came from.
        let mut data = Vec::new();
        for (d, &n) in input_splits.iter().enumerate() {
            for i in 0..n {
                data.extend([r as f32, d as f32, i as f32]);
            }
        }
        let input = Tensor::from_slice(&data).reshape([rows, 3]);
        let mut output = Tensor::zeros([output_splits.iter().sum::<i64>(), 3], (Kind::Float, tch::Device::Cpu));
        g.all_to_all(&mut output, &input, &output_splits, &input_splits).unwrap();
        output
    });
    for (r, output) in results.iter().enumerate() {
        let mut expected = Vec::new();
        for s in 0..world {
            for i in 0..sends(s, r) {
                expected.extend([s as f32, r as f32, i as f32]);
            }
        }
        let expected = Tensor::from_slice(&expected).reshape([-1, 3]);
        assert!(output.equal(&expected), "rank {r}: {output:?}");
    }
}

#[test]
fn bad_arguments_are_refused_before_reaching_c10d() {
    let results = on_ranks(2, "refuse", |g| {
        let t = Tensor::zeros([4, 3], (Kind::Float, tch::Device::Cpu));
        let mut wrong = Tensor::zeros([5, 3], (Kind::Float, tch::Device::Cpu));
        let gather = g.all_gather(&mut wrong, &t).unwrap_err().to_string();
        let mut strided = Tensor::zeros([3, 4], (Kind::Float, tch::Device::Cpu)).transpose(0, 1);
        let reduce = g.all_reduce(&mut strided, ReduceOp::Sum).unwrap_err().to_string();
        let mut out = Tensor::zeros([4, 3], (Kind::Float, tch::Device::Cpu));
        let splits = g.all_to_all(&mut out, &t, &[1, 1], &[2, 2]).unwrap_err().to_string();
        let root = g.broadcast(&mut out, 5).unwrap_err().to_string();
        g.barrier().unwrap(); // still usable: nothing half-issued
        (gather, reduce, splits, root)
    });
    let (gather, reduce, splits, root) = &results[0];
    assert!(gather.contains("do not match a world of 2"), "{gather}");
    assert!(reduce.contains("contiguous"), "{reduce}");
    assert!(splits.contains("do not add up"), "{splits}");
    assert!(root.contains("outside a world of 2"), "{root}");
}

#[test]
fn a_missing_rank_is_a_timeout_error_not_a_hang() {
    let server = Store::serve("127.0.0.1", 0, 2, Duration::from_secs(2)).unwrap();
    let started = Instant::now();
    let error = ProcessGroup::new(&server, "alone", Backend::Gloo, 0, 2, Duration::from_secs(2), Some("127.0.0.1")).err().expect("rank 1 never joins");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(error.to_string().starts_with("c10d:"), "{error}");
}

#[test]
fn a_rank_that_goes_away_fails_the_others_collective() {
    let results = on_ranks(2, "dies", |g| {
        g.barrier().unwrap();
        if g.rank() == 1 {
            drop(g);
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut t = input(0, 1);
        Some(g.all_reduce(&mut t, ReduceOp::Sum).map_err(|e| e.to_string()))
    });
    let outcome = results[0].clone().expect("rank 0 ran the collective");
    assert!(outcome.is_err(), "an all-reduce with a departed peer succeeded");
}

#[test]
fn nccl_is_refused_clearly_where_it_cannot_run() {
    if Backend::Nccl.available() && tch::Cuda::is_available() {
        return; // exercised by the GPU checks
    }
    let server = Store::serve("127.0.0.1", 0, 1, TIMEOUT).unwrap();
    let error = ProcessGroup::new(&server, "nccl", Backend::Nccl, 0, 1, Duration::from_secs(5), None).err().expect("NCCL refused").to_string();
    // Without a GPU it is refused before c10d is asked, whether or not this build has NCCL.
    let expected = if tch::Cuda::is_available() { "without NCCL" } else { "needs a CUDA device" };
    assert!(error.contains(expected), "{error}");
}

#[test]
fn differentiable_all_to_all_sends_each_gradient_back_where_its_row_came_from() {
    // Rank r sends r + d rows to rank d (rank 0 sends nothing to itself); the receiver scales what it
    // got by its rank + 1, so each input row's gradient tells which rank it reached.
    let world = 3usize;
    let results = on_ranks(world, "alltoall-grad", move |g| {
        let r = g.rank();
        let input_splits: Vec<i64> = (0..world).map(|d| (r + d) as i64).collect();
        let output_splits: Vec<i64> = (0..world).map(|s| (s + r) as i64).collect();
        let rows: i64 = input_splits.iter().sum();
        let input = Tensor::randn([rows, 4], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let output = g.all_to_all_differentiable(&input, &output_splits, &input_splits).unwrap();
        let mut expected = Tensor::zeros([output_splits.iter().sum::<i64>(), 4], (Kind::Float, tch::Device::Cpu));
        g.all_to_all(&mut expected, &input.detach(), &output_splits, &input_splits).unwrap();
        let same = output.detach().equal(&expected);
        (output * (r as f64 + 1.0)).sum(Kind::Float).backward();
        let grad = input.grad();
        let mut want = Vec::new();
        for (d, &n) in input_splits.iter().enumerate() {
            want.extend(std::iter::repeat_n(d as f32 + 1.0, n as usize * 4));
        }
        (same, grad, Tensor::from_slice(&want).reshape([rows, 4]))
    });
    for (r, (same, grad, want)) in results.iter().enumerate() {
        assert!(same, "rank {r}: the exchange differs from the plain all_to_all");
        assert!(grad.equal(want), "rank {r}: gradient {grad:?}, expected {want:?}");
    }
}

#[test]
fn differentiable_all_to_all_forward_equals_the_plain_exchange() {
    let world = 2usize;
    let results = on_ranks(world, "alltoall-fwd", move |g| {
        let r = g.rank() as i64;
        let input = Tensor::arange(6 * 2, (Kind::Float, tch::Device::Cpu)).reshape([6, 2]) + 100.0 * r as f64;
        let (input_splits, output_splits) = if r == 0 { ([2, 4], [2, 1]) } else { ([1, 5], [4, 5]) };
        let differentiable = g.all_to_all_differentiable(&input, &output_splits, &input_splits).unwrap();
        let mut plain = Tensor::zeros([output_splits.iter().sum::<i64>(), 2], (Kind::Float, tch::Device::Cpu));
        g.all_to_all(&mut plain, &input, &output_splits, &input_splits).unwrap();
        let refused = g.all_to_all_differentiable(&input, &output_splits, &[1, 1]).is_err();
        (differentiable.equal(&plain), refused)
    });
    assert!(results.iter().all(|&(equal, refused)| equal && refused));
}
