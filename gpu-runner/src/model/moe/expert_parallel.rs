//! Expert parallelism: the routed experts of every MoE layer are split across the ranks of a process
//! group, rank r holding experts `[r·E/N, (r+1)·E/N)`, and each layer exchanges tokens with
//! all-to-all. Every rank routes its own tokens (the router is replicated), sends each kept slot's
//! token to the rank holding its expert, runs its own experts on what it received from every rank,
//! and sends the outputs back, where they are weighted and summed into their tokens as without
//! expert parallelism. Both exchanges are in the autograd graph: the backward sends the gradients
//! back along the same routes, so an expert's weight gradient sums over every rank's tokens and
//! needs no further reduction.
//!
//! Every rank must run each MoE layer's forward (and then its backward) the same number of times and
//! in the same order: an exchange pairs up by order alone. A rank with no tokens for some expert, or
//! none at all, still takes part.

use std::sync::{Arc, Mutex};

use moetune_c10d::ProcessGroup;
use tch::{Kind, Tensor};

use super::{Dispatch, ExpertHooks, MoeBlock, MoeOutput, RoutingOptions, StoredExperts};

/// This rank's place in an expert-parallel group. Cloned into every MoE layer, which share the group.
#[derive(Clone)]
pub struct ExpertParallel {
    /// Locked per exchange: a process group issues collectives in one order from one thread.
    group: Arc<Mutex<ProcessGroup>>,
    rank: usize,
    ranks: usize,
}

impl ExpertParallel {
    pub fn new(group: ProcessGroup) -> Self {
        Self::shared(Arc::new(Mutex::new(group)))
    }

    /// Over a group other collectives use too (data parallelism's device group): every rank issues
    /// them all in one order.
    pub fn shared(group: Arc<Mutex<ProcessGroup>>) -> Self {
        let (rank, ranks) = {
            let g = group.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (g.rank(), g.size())
        };
        Self { group, rank, ranks }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// The experts of `experts` this rank holds: `(first, count)`. `experts` must be a multiple of
    /// the ranks ([`Self::check`]).
    pub fn local_experts(&self, experts: i64) -> (i64, i64) {
        let count = experts / self.ranks as i64;
        (self.rank as i64 * count, count)
    }

    /// Refuses a model whose experts do not split evenly across the ranks.
    pub fn check(&self, experts: i64) -> anyhow::Result<()> {
        anyhow::ensure!(
            experts % self.ranks as i64 == 0,
            "expert parallelism over {} ranks needs a number of experts divisible by {}; this model has {experts}",
            self.ranks,
            self.ranks
        );
        Ok(())
    }

    fn group(&self) -> std::sync::MutexGuard<'_, ProcessGroup> {
        self.group.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `kept[e]` (this rank's slots for expert e) to the rank holding e; returns what every rank
    /// sends this one, `[source rank][local expert]` flattened.
    fn exchange_counts(&self, kept: &[i64], local: usize, device: tch::Device) -> Vec<i64> {
        let input = Tensor::from_slice(kept).to_device(device);
        let mut output = input.zeros_like();
        let splits = vec![local as i64; self.ranks];
        self.group().all_to_all(&mut output, &input, &splits, &splits).unwrap_or_else(|e| panic!("expert parallelism: exchanging slot counts (another rank failed or exited?): {e}"));
        Vec::<i64>::try_from(&output.to_device(tch::Device::Cpu)).expect("slot counts")
    }

    /// Every rank's `share` (equal row counts) concatenated in rank order: the whole tensor.
    pub fn gather(&self, share: &Tensor) -> anyhow::Result<Tensor> {
        let share = share.contiguous();
        let mut size = share.size();
        size[0] *= self.ranks as i64;
        let mut whole = share.new_empty(size.as_slice(), (share.kind(), share.device()));
        self.group().all_gather(&mut whole, &share)?;
        Ok(whole)
    }

    /// Rows of `input` sent to the ranks (`send[r]` to rank r), rows received from them (`receive[r]`
    /// from rank r), in the autograd graph.
    fn exchange(&self, input: &Tensor, receive: &[i64], send: &[i64]) -> Tensor {
        self.group().all_to_all_differentiable(input, receive, send).unwrap_or_else(|e| panic!("expert parallelism: exchanging tokens (another rank failed or exited?): {e}"))
    }
}

/// Sums consecutive runs of `chunk` values (per-expert counts to per-rank counts).
fn per_rank(values: &[i64], chunk: usize) -> Vec<i64> {
    values.chunks(chunk).map(|c| c.iter().sum()).collect()
}

/// The rows received from every rank (`counts[source][local expert]`, source-major as they arrive)
/// put in expert-major order: the permutation and the rows per local expert.
fn expert_major(counts: &[i64], ranks: usize, local: usize) -> (Vec<i64>, Vec<i64>) {
    let mut start = vec![0i64; counts.len()];
    let mut offset = 0;
    for (i, &c) in counts.iter().enumerate() {
        start[i] = offset;
        offset += c;
    }
    let mut order = Vec::with_capacity(offset as usize);
    let mut per_expert = vec![0i64; local];
    for (expert, rows) in per_expert.iter_mut().enumerate() {
        for source in 0..ranks {
            let block = source * local + expert;
            order.extend(start[block]..start[block] + counts[block]);
            *rows += counts[block];
        }
    }
    (order, per_expert)
}

impl MoeBlock {
    /// [`MoeBlock::forward`] with the experts split across the ranks of `ep`.
    pub(super) fn forward_expert_parallel(&self, x: &Tensor, training: Option<&RoutingOptions>, hooks: ExpertHooks, ep: &ExpertParallel) -> MoeOutput {
        let dispatch = self.dispatch(x, training);
        let device = x.device();
        let local = self.local_experts as usize;
        // The kept slots in expert order (each expert's first `capacity` slots), hence grouped by the
        // rank that holds their expert.
        let counts = Vec::<i64>::try_from(&dispatch.counts.to_device(tch::Device::Cpu)).expect("expert counts");
        let kept: Vec<i64> = counts.iter().map(|&c| dispatch.capacity.map_or(c, |cap| c.min(cap))).collect();
        let mut slots = Vec::with_capacity(kept.iter().sum::<i64>() as usize);
        let mut first = 0;
        for (&count, &k) in counts.iter().zip(&kept) {
            slots.extend(first..first + k);
            first += count;
        }
        let slots = Tensor::from_slice(&slots).to_device(device);
        let token_of_kept = dispatch.token_of_slot.index_select(0, &slots);
        let send_splits = per_rank(&kept, local);
        let received_counts = ep.exchange_counts(&kept, local, device);
        let receive_splits = per_rank(&received_counts, local);

        let received = ep.exchange(&dispatch.tokens.index_select(0, &token_of_kept), &receive_splits, &send_splits);
        let (order, rows_per_expert) = expert_major(&received_counts, ep.ranks(), local);
        let order = Tensor::from_slice(&order).to_device(device);
        let outputs = self.local_experts_forward(&received.index_select(0, &order), &rows_per_expert, hooks);
        let outputs = outputs.zeros_like().index_copy(0, &order, &outputs);
        let returned = ep.exchange(&outputs, &send_splits, &receive_splits);

        let weights = dispatch.weight_of_slot.index_select(0, &slots).unsqueeze(1);
        let routed = dispatch.tokens.zeros_like().index_add(0, &token_of_kept, &(returned * weights).to_kind(dispatch.tokens.kind()));
        self.finish(routed, &dispatch, &x.size())
    }

    /// This rank's experts on `rows` (sorted by local expert, `rows_per_expert` each): their outputs in
    /// the same order, through the grouped GEMMs or the per-expert loop as without expert parallelism.
    fn local_experts_forward(&self, rows: &Tensor, rows_per_expert: &[i64], hooks: ExpertHooks) -> Tensor {
        let kind = rows.kind();
        let run = self.expert_run(None, kind, hooks, !hooks.expert_loop);
        let device = rows.device();
        if let StoredExperts::Fused(gate_up, down) = &run.experts {
            let count = rows.size()[0];
            let counts = Tensor::from_slice(rows_per_expert).to_device(device);
            let arange = Tensor::arange(count, (Kind::Int64, device));
            let received = Dispatch {
                tokens: rows.shallow_clone(),
                router_logits: Tensor::new(),
                top_k: Tensor::new(),
                token_of_slot: arange.shallow_clone(),
                order: arange,
                expert_of_slot: Tensor::arange(self.local_experts, (Kind::Int64, device)).repeat_interleave_self_tensor(&counts, 0, Some(count)),
                weight_of_slot: Tensor::ones([count], (kind, device)),
                counts,
                capacity: None,
                choices: 1,
            };
            return self.grouped_forward(&received, &run, gate_up, down);
        }
        let mut outputs = Vec::new();
        let mut start = 0;
        for (expert, &n) in rows_per_expert.iter().enumerate() {
            if n > 0 {
                outputs.push(run.output(expert, &rows.narrow(0, start, n), run.factors(expert)));
            }
            start += n;
        }
        match outputs.is_empty() {
            // Nothing arrived: an output that still depends on `rows` and the expert weights, so that it
            // needs a gradient exactly when it would with rows, and the backward's exchange runs here too.
            true => rows * 0.0 + (self.gate_up_proj.sum(Kind::Float) * 0.0).to_kind(kind),
            false => Tensor::cat(&outputs, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_rows_are_put_in_expert_order() {
        // Two ranks, two local experts: source 0 sent [2, 1], source 1 sent [0, 3].
        let (order, per_expert) = expert_major(&[2, 1, 0, 3], 2, 2);
        assert_eq!(per_expert, vec![2, 4]);
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
        let (order, per_expert) = expert_major(&[1, 2, 3, 0], 2, 2);
        assert_eq!(per_expert, vec![4, 2]);
        assert_eq!(order, vec![0, 3, 4, 5, 1, 2]);
        assert_eq!(per_rank(&[1, 2, 3, 0], 2), vec![3, 3]);
    }
}
