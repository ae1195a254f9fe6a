//! Fully sharded weights (FSDP / ZeRO-3): every rank of a process group holds 1/N of each weight,
//! and a decoder layer's whole weights exist only while that layer runs.
//!
//! Each parameter is flattened, zero-padded to a multiple of N elements and cut into N equal
//! pieces; rank r keeps piece r (its *shard*), which is what the optimiser updates. The model's own
//! parameter tensor stays in place with its autograd state but holds no storage between uses. The
//! model is cut into *units* — the embedding, each decoder layer, the final norm with the LM head —
//! and a unit is *held* around each use: holding all-gathers its shards into whole values the
//! parameters point at; the last release frees them. After a unit's backward, the whole-weight
//! gradients are reduce-scattered (summed over ranks) into the shards' gradients and freed, so a
//! rank holds 1/N of every gradient too.
//!
//! With CPU offload the shards live in host memory in fp32, with their gradients (the optimiser then
//! steps on the CPU): holding a unit copies its shards to the device in the parameters' dtype before
//! the all-gather, and the reduce-scattered gradients are copied back and added in fp32. The device
//! then holds only the units being run.
//!
//! Collectives pair up by order alone: every rank must hold, release and reduce the same units in
//! the same order, as running the same forwards and backwards does. A collective that fails (a lost
//! rank) panics with a message starting [`FAILED`], since forwards cannot return errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use moetune_c10d::{storage, ProcessGroup, ReduceOp};
use tch::{nn, Device, Kind, Tensor};

use super::params::ParamInfo;

/// What a failed collective's panic message starts with.
pub const FAILED: &str = "fully sharded weights:";

/// Which part of the model a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Embedding,
    Layer(usize),
    /// The final norm and the LM head.
    Head,
}

struct ShardedParam {
    name: String,
    /// The model's parameter: no storage while its unit is released, the whole value while held.
    param: Tensor,
    shape: Vec<i64>,
    /// The parameter's dtype: what it is gathered in, and its gradients reduced in.
    kind: Kind,
    /// This rank's piece of the flattened, zero-padded value; what the optimiser updates. On the
    /// device in the parameter's dtype, or in host memory in fp32 with CPU offload.
    shard: Tensor,
    /// What the parameter points at while released (no elements, its dtype and device).
    released: Tensor,
}

impl ShardedParam {
    fn numel(&self) -> i64 {
        self.shape.iter().product()
    }

    fn chunk(&self) -> i64 {
        self.shard.numel() as i64
    }
}

/// The parameters of one unit in one dtype (a unit of mixed dtypes has a bucket per dtype): one
/// collective each.
struct Bucket {
    params: Vec<ShardedParam>,
}

struct UnitState {
    buckets: Vec<Bucket>,
    /// Holders now (a count: a layer's backward holds it around the forward's own hold).
    holds: AtomicUsize,
}

pub struct FullySharded {
    group: Arc<Mutex<ProcessGroup>>,
    rank: usize,
    ranks: usize,
    /// Where units are gathered and run.
    device: Device,
    /// Whether the shards are kept in host memory in fp32.
    offload: bool,
    /// Embedding, layers 0…L−1, head.
    units: Vec<UnitState>,
}

/// A unit held whole; released when the last holder drops.
pub struct Held<'a> {
    owner: &'a FullySharded,
    unit: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.owner.release(self.unit);
    }
}

/// The unit a parameter belongs to, by its transformers name.
fn unit_of(name: &str) -> Unit {
    if let Some(i) = name.strip_prefix("model.layers.").and_then(|rest| rest.split('.').next()?.parse().ok()) {
        return Unit::Layer(i);
    }
    if name.contains("embed_tokens") { Unit::Embedding } else { Unit::Head }
}

impl FullySharded {
    /// Shards every parameter of `params` held whole in `vars` (not a share of the experts, not a
    /// placeholder for packed experts) across `group`'s ranks, the shards on `device` (in host memory
    /// in fp32 when `offload`), and frees the whole values. Every rank must start from the same values.
    pub fn new(group: Arc<Mutex<ProcessGroup>>, params: &[ParamInfo], vars: &nn::VarStore, layers: usize, device: Device, offload: bool) -> anyhow::Result<Self> {
        let (rank, ranks) = {
            let g = group.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (g.rank(), g.size())
        };
        let variables = vars.variables();
        let mut per_unit: Vec<Vec<ShardedParam>> = (0..layers + 2).map(|_| Vec::new()).collect();
        tch::no_grad(|| -> anyhow::Result<()> {
            for info in params.iter().filter(|p| p.local_rows.is_none()) {
                let Some(param) = variables.get(&info.name) else { continue };
                if param.numel() as i64 != info.numel() {
                    continue; // packed experts: their dense variable is an empty placeholder
                }
                let (numel, kind) = (info.numel(), param.kind());
                let chunk = (numel + ranks as i64 - 1) / ranks as i64;
                let padded = Tensor::cat(&[param.detach().reshape([-1]), param.new_zeros([chunk * ranks as i64 - numel], (kind, param.device()))], 0);
                // A copy of its own (not a view keeping the whole value alive).
                let piece = padded.narrow(0, rank as i64 * chunk, chunk);
                let piece = if offload { piece.to_device(Device::Cpu).to_kind(Kind::Float) } else { piece.to_device(device) };
                let shard = piece.copy().set_requires_grad(param.requires_grad());
                let released = Tensor::zeros([0], (kind, device));
                storage::set_data(param, &released)?;
                let index = match unit_of(&info.name) {
                    Unit::Embedding => 0,
                    Unit::Layer(i) if i < layers => i + 1,
                    Unit::Layer(i) => anyhow::bail!("{} names layer {i} of a model of {layers}", info.name),
                    Unit::Head => layers + 1,
                };
                per_unit[index].push(ShardedParam { name: info.name.clone(), param: param.shallow_clone(), shape: info.shape.clone(), kind, shard, released });
            }
            Ok(())
        })?;
        let units = per_unit.into_iter().map(|params| UnitState { buckets: by_kind(params), holds: AtomicUsize::new(0) }).collect();
        Ok(Self { group, rank, ranks, device, offload, units })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn ranks(&self) -> usize {
        self.ranks
    }

    fn index(&self, unit: Unit) -> usize {
        match unit {
            Unit::Embedding => 0,
            Unit::Layer(i) => i + 1,
            Unit::Head => self.units.len() - 1,
        }
    }

    fn group(&self) -> MutexGuard<'_, ProcessGroup> {
        self.group.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn params(&self) -> impl Iterator<Item = &ShardedParam> {
        self.units.iter().flat_map(|u| u.buckets.iter().flat_map(|b| b.params.iter()))
    }

    /// The names of the sharded parameters.
    pub fn names(&self) -> Vec<String> {
        self.params().map(|p| p.name.clone()).collect()
    }

    pub fn is_sharded(&self, name: &str) -> bool {
        self.params().any(|p| p.name == name)
    }

    /// This rank's shard of parameter `name` (flat), when it is sharded, set to require a gradient
    /// when `trains` (the caller sets the whole parameter alike, so the backward gives it one to reduce).
    pub fn shard(&self, name: &str, trains: bool) -> Option<Tensor> {
        self.params().find(|p| p.name == name).map(|p| p.shard.shallow_clone().set_requires_grad(trains))
    }

    /// Makes `unit`'s parameters whole until the returned guard (and any other holder) drops.
    pub fn hold(&self, unit: Unit) -> Held<'_> {
        let index = self.index(unit);
        let state = &self.units[index];
        if state.holds.load(Ordering::Relaxed) == 0 {
            tch::no_grad(|| {
                for bucket in &state.buckets {
                    self.gather_bucket(bucket).unwrap_or_else(|e| panic!("{FAILED} gathering the weights of {unit:?}: {e}"));
                }
            });
        }
        state.holds.fetch_add(1, Ordering::Relaxed);
        Held { owner: self, unit: index }
    }

    /// All-gathers a bucket's shards (one collective) and points each parameter at its whole value.
    fn gather_bucket(&self, bucket: &Bucket) -> anyhow::Result<()> {
        let mine = Tensor::cat(&bucket.params.iter().map(|p| self.on_device(p)).collect::<Vec<_>>(), 0);
        let mut all = mine.new_empty([mine.numel() as i64 * self.ranks as i64], (mine.kind(), mine.device()));
        self.group().all_gather(&mut all, &mine)?;
        // Rank-major: [rank][param chunks]; each parameter's pieces are one column block.
        let all = all.view([self.ranks as i64, -1]);
        let mut offset = 0;
        for p in &bucket.params {
            let whole = all.narrow(1, offset, p.chunk()).reshape([-1]).narrow(0, 0, p.numel()).view(p.shape.as_slice());
            storage::set_data(&p.param, &whole)?;
            offset += p.chunk();
        }
        Ok(())
    }

    fn release(&self, index: usize) {
        let state = &self.units[index];
        if state.holds.fetch_sub(1, Ordering::Relaxed) == 1 {
            for p in state.buckets.iter().flat_map(|b| &b.params) {
                // Never panics in a drop (it may run while unwinding): the placeholder is of the
                // parameter's own dtype and device, which set_data accepts.
                if let Err(e) = storage::set_data(&p.param, &p.released) {
                    tracing::error!(param = %p.name, error = %e, "releasing a sharded weight");
                }
            }
        }
    }

    /// Sums `unit`'s whole-weight gradients over ranks into the shards' gradients (one
    /// reduce-scatter per bucket) and frees them. Every trainable parameter takes part, with a zero
    /// gradient where this rank's backward gave it none, so every rank's collective has one layout.
    /// Call while the unit is held, once its backward is done.
    pub fn reduce_grads(&self, unit: Unit) {
        let state = &self.units[self.index(unit)];
        tch::no_grad(|| {
            for bucket in &state.buckets {
                self.reduce_bucket(bucket).unwrap_or_else(|e| panic!("{FAILED} summing the gradients of {unit:?}: {e}"));
            }
        });
    }

    fn reduce_bucket(&self, bucket: &Bucket) -> anyhow::Result<()> {
        let trained: Vec<&ShardedParam> = bucket.params.iter().filter(|p| p.shard.requires_grad()).collect();
        if trained.is_empty() {
            return Ok(());
        }
        let ranks = self.ranks as i64;
        let mut columns = Vec::with_capacity(trained.len());
        for p in &trained {
            let options = (p.kind, self.device);
            let grad = storage::take_grad(&p.param)?.map(|g| g.reshape([-1])).unwrap_or_else(|| Tensor::zeros([p.numel()], options));
            let padded = Tensor::cat(&[grad, Tensor::zeros([p.chunk() * ranks - p.numel()], options)], 0);
            columns.push(padded.view([ranks, p.chunk()]));
        }
        let input = Tensor::cat(&columns, 1).reshape([-1]);
        drop(columns);
        let mut mine = input.new_empty([input.numel() as i64 / ranks], (input.kind(), input.device()));
        self.group().reduce_scatter(&mut mine, &input, ReduceOp::Sum)?;
        let mut offset = 0;
        for p in trained {
            // To host memory, in fp32, with CPU offload; otherwise as it is.
            let piece = mine.narrow(0, offset, p.chunk()).to_device(p.shard.device()).to_kind(p.shard.kind());
            storage::accumulate_grad(&p.shard, &piece)?;
            offset += p.chunk();
        }
        Ok(())
    }

    /// Parameter `name`'s whole value (every rank must ask, in the same order): for writing the model out.
    pub fn whole(&self, name: &str) -> anyhow::Result<Tensor> {
        let p = self.params().find(|p| p.name == name).ok_or_else(|| anyhow::anyhow!("{name} is not sharded"))?;
        tch::no_grad(|| {
            let mut all = Tensor::empty([p.chunk() * self.ranks as i64], (p.kind, self.device));
            self.group().all_gather(&mut all, &self.on_device(p))?;
            Ok(all.narrow(0, 0, p.numel()).view(p.shape.as_slice()))
        })
    }

    /// A parameter's shard as the collectives take it: on the device, in the parameter's dtype.
    fn on_device(&self, p: &ShardedParam) -> Tensor {
        p.shard.detach().to_device(self.device).to_kind(p.kind)
    }

    /// Whether the shards are in host memory (CPU offload) while the units run elsewhere.
    pub fn offloaded(&self) -> bool {
        self.offload
    }

    /// Bytes this rank holds of the sharded weights (its shards).
    pub fn shard_bytes(&self) -> i64 {
        self.params().map(|p| p.chunk() * p.shard.kind().elt_size_in_bytes() as i64).sum()
    }
}

/// Splits a unit's parameters into one bucket per dtype (first-seen order).
fn by_kind(params: Vec<ShardedParam>) -> Vec<Bucket> {
    let mut buckets: Vec<(Kind, Vec<ShardedParam>)> = Vec::new();
    for p in params {
        let kind = p.kind;
        match buckets.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, list)) => list.push(p),
            None => buckets.push((kind, vec![p])),
        }
    }
    buckets.into_iter().map(|(_, params)| Bucket { params }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_fall_into_their_units() {
        assert_eq!(unit_of("model.embed_tokens.weight"), Unit::Embedding);
        assert_eq!(unit_of("model.layers.12.self_attn.q_proj.weight"), Unit::Layer(12));
        assert_eq!(unit_of("model.norm.weight"), Unit::Head);
        assert_eq!(unit_of("lm_head.weight"), Unit::Head);
    }
}
