//! Grouped expert GEMMs: the tokens of every expert multiplied in one `_grouped_mm` per projection,
//! with the group offsets computed on the device. The per-expert loop needs the expert counts on the
//! host (a device sync in every MoE layer) and launches about ten small kernels per expert each way;
//! this path launches a fixed handful per layer and never reads a tensor back.

use tch::{Device, Kind, Tensor};

use super::{Dispatch, ExpertRun, FactorSlices, MoeBlock};

/// Bytes `_grouped_mm` wants its operands' row strides (and the output's) aligned to.
const ALIGNMENT_BYTES: i64 = 16;

/// Whether `_grouped_mm` takes operands of `kind` on `device` with these inner dimensions (hidden
/// size, expert intermediate size, LoRA ranks): CPU in any float kind, CUDA in bf16 (its kernel's only
/// kind); each dimension must give rows a multiple of 16 bytes.
fn supported(kind: Kind, device: Device, dims: &[i64]) -> bool {
    let kind_ok = match device {
        Device::Cpu => matches!(kind, Kind::Float | Kind::BFloat16 | Kind::Half),
        _ => kind == Kind::BFloat16,
    };
    let elements = ALIGNMENT_BYTES / kind.elt_size_in_bytes() as i64;
    kind_ok && dims.iter().all(|d| d % elements == 0)
}

/// Device-side group boundaries from the slots per expert `counts` `[E]`: `_grouped_mm`'s int32 end
/// offsets, and each group's first slot (int64, for indexing).
fn offsets(counts: &Tensor) -> (Tensor, Tensor) {
    let ends = counts.cumsum(0, Kind::Int64);
    let starts = &ends - counts;
    (ends.to_kind(Kind::Int), starts)
}

/// `x` `[slots, in]` (rows sorted by group) times each group's `w` `[E, in, out]`: rows
/// `ends[g-1]..ends[g]` are multiplied by `w[g]`. `w` may be a transposed view; an operand whose strides
/// the kernel cannot take is made contiguous first.
fn grouped_mm(x: &Tensor, w: &Tensor, ends: &Tensor) -> Tensor {
    let x = aligned(x);
    let w = aligned(w);
    x.internal_grouped_mm(&w, Some(ends), None::<&Tensor>, None)
}

/// `t` itself when its last two dimensions are row- or column-major with 16-byte aligned leading
/// strides, else a contiguous copy.
fn aligned(t: &Tensor) -> Tensor {
    let (stride, dims) = (t.stride(), t.dim());
    let elements = ALIGNMENT_BYTES / t.kind().elt_size_in_bytes() as i64;
    let (inner, outer) = (stride[dims - 1], stride[dims - 2]);
    let major = (inner == 1 && outer % elements == 0) || (outer == 1 && inner % elements == 0);
    if major && t.data_ptr() as usize % ALIGNMENT_BYTES as usize == 0 {
        t.shallow_clone()
    } else {
        t.contiguous()
    }
}

impl MoeBlock {
    /// Whether `_grouped_mm` takes this block's expert shapes (and LoRA `ranks`) in `kind`.
    pub(super) fn groupable(&self, kind: Kind, ranks: &[i64]) -> bool {
        let (gate_up, down) = (self.gate_up_proj.size(), self.down_proj.size());
        let dims: Vec<i64> = [gate_up[1], gate_up[2], down[1], down[2]].into_iter().chain(ranks.iter().copied()).collect();
        supported(kind, self.gate_up_proj.device(), &dims)
    }

    /// The routed experts' weighted sum `[tokens, hidden]` through grouped GEMMs: the slots (sorted by
    /// expert) are gathered once, each projection is one `_grouped_mm` (two more for a LoRA update on
    /// the factors), and the outputs go back through the sort's permutation (`index_copy`) and a sum
    /// over each token's k slots. Slots over the capacity run with weight zero, so nothing waits for
    /// the expert counts on the host.
    pub(super) fn grouped_forward(&self, dispatch: &Dispatch, run: &ExpertRun, gate_up: &Tensor, down: &Tensor) -> Tensor {
        let (ends, starts) = offsets(&dispatch.counts);
        let (tokens, hidden) = (dispatch.tokens.size()[0], dispatch.tokens.size()[1]);
        let k = dispatch.choices;
        // Each token repeated k times in the router's (token, choice) order, then permuted into expert
        // order: the backward adds through a permutation (no index twice, so no racing atomic adds on a
        // GPU) and a sum over the k copies.
        let x = dispatch.tokens.unsqueeze(1).expand([tokens, k, hidden], false).reshape([tokens * k, hidden]).index_select(0, &dispatch.order);
        // Weights as `[E, in, out]` views: gpt-oss stores them so, the others as `[E, out, in]`.
        let in_out = |w: &Tensor| if self.is_transposed() { w.shallow_clone() } else { w.transpose(1, 2) };
        let (gate_up_w, down_w) = (in_out(gate_up), in_out(down));
        let project = |x: &Tensor, w: &Tensor, lora: Option<&FactorSlices>| {
            let base = grouped_mm(x, w, &ends);
            match lora {
                Some(f) => {
                    let xa = grouped_mm(x, &f.all_a.transpose(1, 2), &ends);
                    base + grouped_mm(&xa, &f.all_b.transpose(1, 2), &ends) * f.scale
                }
                None => base,
            }
        };
        // Trained biases are gathered in fp32, so that the backward sums each expert's many slot
        // gradients in fp32; frozen ones (LoRA) need no fp32 copy of `[slots, out]`.
        let of_slot = |b: &Tensor| match b.requires_grad() {
            true => b.to_kind(Kind::Float).index_select(0, &dispatch.expert_of_slot).to_kind(b.kind()),
            false => b.index_select(0, &dispatch.expert_of_slot),
        };
        let biases = self.gate_up_proj_bias.as_ref().zip(self.down_proj_bias.as_ref()).map(|(g, d)| (of_slot(g), of_slot(d)));
        let y = self.expert_mlp(
            &x,
            |x| project(x, &gate_up_w, run.gate_up_factors.as_ref()),
            |x| project(x, &down_w, run.down_factors.as_ref()),
            biases,
            run.hooks.inputs,
        );
        let weights = dispatch.kept_weights(&starts).unsqueeze(1);
        let kind = dispatch.tokens.kind();
        let weighted = (y * weights).to_kind(kind);
        // Back to (token, choice) order by the same permutation, then each token's k outputs summed in a
        // fixed order: deterministic, where adding the slots into their tokens would race on a GPU.
        weighted.zeros_like().index_copy(0, &dispatch.order, &weighted).view([tokens, k, hidden]).sum_dim_intlist(1, false, kind)
    }
}

impl Dispatch {
    /// The slots' routing weights with those over their expert's capacity zeroed (`starts`: each
    /// expert's first slot), computed on the device.
    fn kept_weights(&self, starts: &Tensor) -> Tensor {
        let Some(capacity) = self.capacity else { return self.weight_of_slot.shallow_clone() };
        let slots = self.expert_of_slot.size()[0];
        let rank_in_expert = Tensor::arange(slots, (Kind::Int64, self.expert_of_slot.device())) - starts.index_select(0, &self.expert_of_slot);
        &self.weight_of_slot * rank_in_expert.lt(capacity).to_kind(self.weight_of_slot.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group with no rows (an expert no token chose) gets no output rows and a zero weight
    /// gradient; the others equal one matmul per group, forward and backward, with a transposed
    /// (column-major) weight as the non-gpt-oss experts give it.
    #[test]
    fn groups_equal_one_matmul_each_including_an_empty_one() {
        tch::manual_seed(2);
        let x = Tensor::randn([10, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let w = Tensor::randn([4, 8, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let (ends, _) = offsets(&Tensor::from_slice(&[3i64, 0, 4, 3]));
        let upstream = Tensor::randn([10, 8], (Kind::Float, Device::Cpu));
        let grouped = grouped_mm(&x, &w.transpose(1, 2), &ends);
        (&grouped * &upstream).sum(Kind::Float).backward();
        let (grouped_x, grouped_w) = (x.grad().copy(), w.grad().copy());
        let _ = (x.grad().zero_(), w.grad().zero_());
        let bounds = [(0, 0, 3), (2, 3, 4), (3, 7, 3)];
        let looped = Tensor::cat(&bounds.map(|(g, start, len)| x.narrow(0, start, len).matmul(&w.get(g).transpose(0, 1))), 0);
        (&looped * &upstream).sum(Kind::Float).backward();
        let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        assert!(diff(&grouped, &looped) < 1e-5);
        assert!(diff(&grouped_x, &x.grad()) < 1e-5);
        assert!(diff(&grouped_w, &w.grad()) < 1e-5);
        assert_eq!(grouped_w.get(1).abs().max().double_value(&[]), 0.0);
    }
}
