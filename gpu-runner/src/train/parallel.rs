//! Data parallelism over a c10d process group (`moetune-c10d`: Gloo on CPU, NCCL on CUDA).
//!
//! The unit of work is the micro-batch. A step's global batch is `gradient_accumulation_steps`
//! micro-batches drawn in the same order on every rank; rank r computes those with index ≡ r (mod
//! world size), with the seeds a single process would give them. The gradients (each already scaled
//! by 1 / accumulation) are then summed across ranks, so every rank holds the single-process
//! gradient and the losses do not depend on the world size — up to the order of floating-point
//! sums. Router losses are per micro-batch, so they need no exchange.
//!
//! The optimiser state is sharded (ZeRO-1): each trainable has one owner rank, chosen to balance
//! element counts; only the owner keeps its moments and fp32 master and updates it, then the owners'
//! new values are broadcast. Each rank checkpoints its own share of the optimiser state, and a
//! checkpoint loads into any world size ([`super::resume::optimizer_file`]).

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use moetune_c10d::{Backend, ProcessGroup, ReduceOp, Rendezvous, Store};
use tch::{Device, Kind, Tensor};

use super::optim::Trainable;

/// A collective (or joining the group) failed: most likely another rank failed or exited. Errors
/// carry it as context, so the runner can tell a lost rank (the gang goes back to the queue) from a
/// failure of this rank's own (`anyhow::Error::downcast_ref::<PeerLost>`).
#[derive(Debug, Clone, Copy)]
pub struct PeerLost;

impl std::fmt::Display for PeerLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another rank failed or exited (see its log)")
    }
}

impl std::error::Error for PeerLost {}

/// Whether `error` is a collective's failure (another rank lost) rather than this rank's own.
pub fn is_peer_lost(error: &anyhow::Error) -> bool {
    error.downcast_ref::<PeerLost>().is_some()
}

/// Collective buffers hold at most this much (gradients or parameters are flattened into buckets
/// of this size, one collective each): big enough to amortise each call, small enough that the
/// extra copy is a bounded slice of memory.
const BUCKET_BYTES: i64 = 32 << 20;

/// One rank's view of a data-parallel job: a process group for the device's tensors (NCCL on CUDA,
/// Gloo on CPU) and a Gloo group for the few host values ranks exchange (which gradients exist, the
/// step's loss, a stop request), so exchanging those never waits for the device.
pub struct DataParallel {
    /// Shared with the model's MoE layers under expert parallelism, whose token exchanges take their
    /// turn in the same order on every rank as the gradient exchanges do.
    group: Arc<Mutex<ProcessGroup>>,
    host: ProcessGroup,
    /// The training device, where the device group's tensors must be (NCCL takes no host tensors).
    device: Device,
}

impl DataParallel {
    /// Joins the job's process groups: rank 0 serves the rendezvous store, the others connect.
    pub fn join(rendezvous: &Rendezvous, device: Device) -> anyhow::Result<Self> {
        let r = rendezvous;
        let store = if r.rank == 0 { Store::serve(&r.host, r.port, r.world_size, r.timeout) } else { Store::connect(&r.host, r.port, r.world_size, r.timeout) };
        let store = store.context(PeerLost).with_context(|| format!("rank {} reaching the rendezvous store at {}:{}", r.rank, r.host, r.port))?;
        Self::join_store(&store, rendezvous, device)
    }

    /// Joins the job's process groups through a store this rank already holds (rank 0 serving it on a
    /// port chosen by the system, which it then tells the others).
    pub fn join_store(store: &Store, rendezvous: &Rendezvous, device: Device) -> anyhow::Result<Self> {
        let r = rendezvous;
        let join = |name: &str, backend: Backend| {
            ProcessGroup::new(store, &format!("{}/{name}", r.prefix), backend, r.rank, r.world_size, r.timeout, r.gloo_host.as_deref())
                .context(PeerLost)
                .with_context(|| format!("rank {} of {} joining the {name} process group ({backend:?})", r.rank, r.world_size))
        };
        Ok(Self { group: Arc::new(Mutex::new(join("device", Backend::for_device(device))?)), host: join("host", Backend::Gloo)?, device })
    }

    /// The device group (the lock is only ever held for one collective).
    fn device_group(&self) -> MutexGuard<'_, ProcessGroup> {
        self.group.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn rank(&self) -> usize {
        self.host.rank()
    }

    pub fn world_size(&self) -> usize {
        self.host.size()
    }

    /// The job's ranks as an expert-parallel group: each holds its share of every MoE layer's experts,
    /// exchanging tokens over the device group.
    pub fn expert_parallel(&self) -> crate::model::ExpertParallel {
        crate::model::ExpertParallel::shared(self.group.clone())
    }

    /// The device group, for the model's own collectives (gathering fully sharded weights), which take
    /// their turn in the same order on every rank as the gradient exchanges do.
    pub fn device_group_shared(&self) -> Arc<Mutex<ProcessGroup>> {
        self.group.clone()
    }

    /// Whether this rank computes micro-batch `index` (0-based within the step).
    pub fn owns_micro_batch(&self, index: usize) -> bool {
        index % self.world_size() == self.rank()
    }

    /// The owner rank of each trainable: largest first, each to the rank holding the fewest elements
    /// so far (ties to the lower rank). Deterministic, so every rank computes the same table.
    pub fn owners(&self, params: &[Trainable]) -> Vec<usize> {
        self.owners_except(params, &vec![false; params.len()])
    }

    /// [`Self::owners`] where the trainables marked `own` are this rank's alone (its share of the
    /// experts under expert parallelism): it owns them, and they count for no rank's balance.
    pub fn owners_except(&self, params: &[Trainable], own: &[bool]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..params.len()).filter(|&i| !own[i]).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(params[i].tensor.numel()), i));
        let mut load = vec![0usize; self.world_size()];
        let mut owners = vec![self.rank(); params.len()];
        for i in order {
            let rank = (0..load.len()).min_by_key(|&r| (load[r], r)).expect("a world has a rank");
            owners[i] = rank;
            load[rank] += params[i].tensor.numel();
        }
        owners
    }

    /// Makes every rank hold the sum of all ranks' gradients. A trainable that received no gradient
    /// on this rank but did on another gets a zero one first, so the optimiser (which skips tensors
    /// with no gradient at all) treats it as a single process would.
    pub fn sync_grads(&self, params: &[Trainable]) -> anyhow::Result<()> {
        self.sync_grads_except(params, &vec![false; params.len()])
    }

    /// [`Self::sync_grads`] leaving the trainables marked `own` (this rank's experts, whose gradients
    /// already sum every rank's tokens) out of the sum. They still get a zero gradient where another
    /// rank's share of the same tensor has one.
    pub fn sync_grads_except(&self, params: &[Trainable], own: &[bool]) -> anyhow::Result<()> {
        let defined: Vec<f32> = params.iter().map(|p| f32::from(u8::from(p.tensor.grad().defined()))).collect();
        let mut anywhere = Tensor::from_slice(&defined);
        self.host.all_reduce(&mut anywhere, ReduceOp::Max).context(PeerLost).context("exchanging which gradients exist")?;
        let anywhere = Vec::<f32>::try_from(&anywhere).context("reading gradient flags")?;
        let missing: Vec<&Trainable> = params.iter().zip(anywhere.iter().zip(&defined)).filter(|(_, (&any, &here))| any > 0.0 && here == 0.0).map(|(p, _)| p).collect();
        if !missing.is_empty() {
            // Backward of an expression that is zero in every parameter: allocates their gradients as zeros.
            let zero = missing.iter().map(|p| p.tensor.sum(Kind::Float) * 0.0).reduce(|a, b| a + b).expect("non-empty");
            zero.backward();
        }
        let grads: Vec<Tensor> = params.iter().zip(own).filter(|(_, &own)| !own).map(|(p, _)| p.tensor.grad()).filter(Tensor::defined).collect();
        tch::no_grad(|| self.reduce_in_buckets(&grads))
    }

    /// Sums `tensors` across ranks in place, flattened into buckets of one dtype (a tensor that fills a
    /// bucket alone is reduced where it is, without a copy).
    fn reduce_in_buckets(&self, tensors: &[Tensor]) -> anyhow::Result<()> {
        for bucket in buckets(tensors) {
            let context = "summing gradients across ranks";
            match bucket.as_slice() {
                [alone] if alone.is_contiguous() => self.device_group().all_reduce(&mut alone.shallow_clone(), ReduceOp::Sum).context(PeerLost).context(context)?,
                _ => {
                    let mut flat = Tensor::cat(&bucket.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
                    self.device_group().all_reduce(&mut flat, ReduceOp::Sum).context(PeerLost).context(context)?;
                    unflatten(&flat, &bucket);
                }
            }
        }
        Ok(())
    }

    /// Copies each trainable's value from its owner (after the owners' optimiser step).
    pub fn broadcast_params(&self, params: &[Trainable], owners: &[usize]) -> anyhow::Result<()> {
        self.broadcast_params_except(params, owners, &vec![false; params.len()])
    }

    /// [`Self::broadcast_params`] leaving this rank's own trainables (`own`) where they are.
    pub fn broadcast_params_except(&self, params: &[Trainable], owners: &[usize], own: &[bool]) -> anyhow::Result<()> {
        tch::no_grad(|| {
            for owner in 0..self.world_size() {
                let owned: Vec<Tensor> = params.iter().zip(owners).zip(own).filter(|((_, &o), &own)| o == owner && !own).map(|((p, _), _)| p.tensor.shallow_clone()).collect();
                for bucket in buckets(&owned) {
                    let context = || format!("broadcasting updated weights from rank {owner}");
                    match bucket.as_slice() {
                        [alone] if alone.is_contiguous() => self.device_group().broadcast(&mut alone.detach(), owner).context(PeerLost).with_context(context)?,
                        _ => {
                            let mut flat = Tensor::cat(&bucket.iter().map(|t| t.detach().reshape([-1])).collect::<Vec<_>>(), 0);
                            self.device_group().broadcast(&mut flat, owner).context(PeerLost).with_context(context)?;
                            unflatten(&flat, &bucket);
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Sums a tensor across ranks over the device group (a copy; the sum of every rank's share of a
    /// norm), returned where it was: a host tensor (CPU-offloaded shards' norm) goes through the device.
    pub fn sum_on_device(&self, tensor: Tensor) -> anyhow::Result<Tensor> {
        let from = tensor.device();
        let mut sum = tensor.to_device(self.device).contiguous().copy();
        self.device_group().all_reduce(&mut sum, ReduceOp::Sum).context(PeerLost).context("summing across ranks")?;
        Ok(sum.to_device(from))
    }

    /// Sums host values across ranks (in f64: token counts stay exact).
    pub fn sum(&self, values: &[f64]) -> anyhow::Result<Vec<f64>> {
        let mut t = Tensor::from_slice(values);
        self.host.all_reduce(&mut t, ReduceOp::Sum).context(PeerLost).context("summing across ranks")?;
        Vec::<f64>::try_from(&t).context("reading a sum across ranks")
    }

    /// The largest of `value` across ranks: how ranks agree on a decision one of them made.
    pub fn max(&self, value: i64) -> anyhow::Result<i64> {
        let mut t = Tensor::from_slice(&[value]);
        self.host.all_reduce(&mut t, ReduceOp::Max).context(PeerLost).context("agreeing across ranks")?;
        Ok(t.int64_value(&[0]))
    }

    /// Rank 0's `value` on every rank: how ranks take one decision (the monitor's) rather than trust
    /// that each computed the same.
    pub fn from_rank_zero<T: serde::Serialize + serde::de::DeserializeOwned>(&self, value: &T) -> anyhow::Result<T> {
        let bytes = if self.rank() == 0 { serde_json::to_vec(value)? } else { Vec::new() };
        let mut len = Tensor::from_slice(&[bytes.len() as i64]);
        self.host.broadcast(&mut len, 0).context(PeerLost).context("receiving rank 0's decision")?;
        let mut buffer = if self.rank() == 0 { Tensor::from_slice(&bytes) } else { Tensor::zeros([len.int64_value(&[0])], (Kind::Uint8, Device::Cpu)) };
        self.host.broadcast(&mut buffer, 0).context(PeerLost).context("receiving rank 0's decision")?;
        Ok(serde_json::from_slice(&Vec::<u8>::try_from(&buffer)?)?)
    }

    /// Refuses to train unless every rank was started for the same job: `fingerprint` hashes what
    /// must agree (spec, data, resume point, device type, where checkpoints go). Collectives pair up
    /// by order alone, so ranks with different jobs would otherwise train on silently.
    pub fn check_same_job(&self, fingerprint: i64) -> anyhow::Result<()> {
        let mut t = Tensor::from_slice(&[fingerprint, -fingerprint]);
        self.host.all_reduce(&mut t, ReduceOp::Max).context(PeerLost).context("comparing the ranks' jobs")?;
        let extremes = Vec::<i64>::try_from(&t)?;
        anyhow::ensure!(
            extremes[0] == fingerprint && -extremes[1] == fingerprint,
            "the ranks were not started for the same job: start every rank with the same data, model, options, seed, batch size, --resume, --checkpoints and device"
        );
        Ok(())
    }

    /// Whether every rank succeeded at something each did on its own (storing its share of a
    /// checkpoint): false on all ranks if any failed.
    pub fn all_succeeded(&self, ok: bool) -> anyhow::Result<bool> {
        Ok(self.max(i64::from(!ok))? == 0)
    }
}

/// What data parallelism does with a step's micro-batches, for the job's log.
pub fn summary(world: usize, accumulation: u32) -> String {
    let accumulation = accumulation as usize;
    let (most, fewest) = (accumulation.div_ceil(world), accumulation / world);
    let share = if most == fewest { format!("each computes {most}") } else { format!("each computes {fewest} or {most}") };
    let mut text = format!("Data parallel over {world} ranks: {share} of the step's {accumulation} micro-batches, gradients are summed across ranks, optimiser state is sharded (ZeRO-1)");
    if most != fewest {
        text.push_str(&format!("; ranks with fewer wait each step (set gradient_accumulation_steps to a multiple of {world})"));
    }
    text
}

/// Consecutive runs of same-dtype tensors, each at most `BUCKET_BYTES` (a larger tensor alone).
fn buckets(tensors: &[Tensor]) -> Vec<Vec<Tensor>> {
    let mut out: Vec<Vec<Tensor>> = Vec::new();
    let mut bytes = 0i64;
    for t in tensors {
        let size = t.numel() as i64 * t.kind().elt_size_in_bytes() as i64;
        let fits = out.last().is_some_and(|b| b[0].kind() == t.kind() && b[0].device() == t.device() && bytes + size <= BUCKET_BYTES);
        if fits {
            out.last_mut().expect("checked").push(t.shallow_clone());
            bytes += size;
        } else {
            out.push(vec![t.shallow_clone()]);
            bytes = size;
        }
    }
    out
}

/// Copies consecutive slices of `flat` back into `targets`.
fn unflatten(flat: &Tensor, targets: &[Tensor]) {
    let mut offset = 0;
    for t in targets {
        let n = t.numel() as i64;
        t.shallow_clone().copy_(&flat.narrow(0, offset, n).view_as(t));
        offset += n;
    }
}
