//! The routed experts of a recomputed MoE forward backpropagated one expert at a time, so one
//! expert's dequantised (or fake-quantised) weights exist at a time.

use tch::{Kind, Tensor};

use super::{Dispatch, ExpertHooks, ExpertLora, FactorSlices, MoeBlock};

/// LoRA factors held as leaves `(a, b, scale)`, as an [`ExpertLora`].
fn as_lora(leaves: &Option<(Tensor, Tensor, f64)>) -> Option<ExpertLora<'_>> {
    leaves.as_ref().map(|(a, b, scale)| ExpertLora { a, b, scale: *scale })
}

/// The routed experts of a recomputed MoE forward, left out of its output
/// ([`MoeBlock::forward_deferring_experts`]).
pub struct DeferredExperts<'s> {
    pub(super) block: &'s MoeBlock,
    pub(super) dispatch: Dispatch,
    pub(super) hooks: ExpertHooks<'s>,
}

impl DeferredExperts<'_> {
    /// Backpropagates `grad` (`[batch, seq, hidden]`, the gradient of the MoE output) through the routed
    /// experts one at a time: each expert is recomputed from detached inputs and factors (leaves of
    /// their own), backpropagated
    /// and freed, its LoRA gradients summed into per-pair buffers. Returns the scalar whose backward
    /// carries the rest: the gradients of the MoE input, of the routing weights and of the LoRA
    /// factors, as `Σ tensor · gradient` over tensors that still have their autograd history.
    pub fn backward(self, grad: &Tensor) -> Tensor {
        let Self { block, dispatch, hooks } = self;
        let hidden = dispatch.tokens.size()[1];
        let grad = grad.reshape([-1, hidden]);
        let inputs = dispatch.tokens.detach();
        let kind = inputs.kind();
        let packed = block.packed.borrow();
        let run = block.expert_run(packed.as_ref(), kind, hooks, false);
        let mut input_grad = inputs.zeros_like();
        let slot_weights = dispatch.weight_of_slot.detach();
        let weight_grad = slot_weights.zeros_like();
        let factor_grads = |f: &Option<FactorSlices>| f.as_ref().map(|f| (f.all_a.zeros_like(), f.all_b.zeros_like()));
        let (gate_up_grads, down_grads) = (factor_grads(&run.gate_up_factors), factor_grads(&run.down_factors));
        for (expert, start, kept) in dispatch.runs() {
            let idx = dispatch.token_of_slot.narrow(0, start, kept);
            let x = inputs.index_select(0, &idx).set_requires_grad(true);
            let leaf = |l: Option<ExpertLora>| l.map(|l| (l.a.detach().set_requires_grad(true), l.b.detach().set_requires_grad(true), l.scale));
            let (gate_up_leaf, down_leaf) = {
                let (g, d) = run.factors(expert);
                (leaf(g), leaf(d))
            };
            let y = run.output(expert, &x, (as_lora(&gate_up_leaf), as_lora(&down_leaf)));
            let slot_grad = grad.index_select(0, &idx);
            let gate_w = slot_weights.narrow(0, start, kept).unsqueeze(1);
            // The forward adds `y · w` to the output: `y`'s gradient is `grad · w`, `w`'s is `Σ y · grad`.
            weight_grad.narrow(0, start, kept).copy_(&(y.detach() * &slot_grad).sum_dim_intlist(-1, false, weight_grad.kind()));
            (&y * (&slot_grad * &gate_w).to_kind(y.kind())).sum(Kind::Float).backward();
            let _ = input_grad.index_add_(0, &idx, &x.grad().to_kind(kind));
            for (leaf, grads) in [(&gate_up_leaf, &gate_up_grads), (&down_leaf, &down_grads)] {
                if let (Some((a, b, _)), Some((grad_a, grad_b))) = (leaf, grads) {
                    let _ = grad_a.get(expert as i64).g_add_(&a.grad());
                    let _ = grad_b.get(expert as i64).g_add_(&b.grad());
                }
            }
        }
        let mut surrogate = (&dispatch.tokens * &input_grad).sum(Kind::Float) + (&dispatch.weight_of_slot * &weight_grad).sum(Kind::Float);
        for (factors, grads) in [(&run.gate_up_factors, &gate_up_grads), (&run.down_factors, &down_grads)] {
            if let (Some(f), Some((grad_a, grad_b))) = (factors, grads) {
                surrogate = surrogate + (&f.all_a * grad_a).sum(Kind::Float) + (&f.all_b * grad_b).sum(Kind::Float);
            }
        }
        surrogate
    }
}
