//! One micro-batch's forward and backward, in the memory-saving form the job runs:
//!
//! * **Chunked cross-entropy.** The loss is taken a slice of labelled positions at a time (final norm,
//!   LM head, fp32 cross-entropy, backward), so `[tokens, vocab]` logits never exist at once — for
//!   gpt-oss's 201,088-token vocabulary they would be 3.3 GB in fp32 per 4,096 tokens. Unlabelled
//!   positions (prompts under `response_only_loss`, padding) are skipped before the head.
//! * **Activation checkpointing** per decoder layer (optional). The forward runs without autograd
//!   and keeps only each layer's input; the backward recomputes one layer at a time and
//!   back-propagates the gradient of its output, so at most one layer's activations are alive. The
//!   router losses are per layer, so each is added where its layer is recomputed. Within a layer,
//!   packed (FP4-resident) or LoRA-QAT experts with nothing to train but LoRA factors are
//!   backpropagated one at a time ([`crate::model::DeferredExperts`]), so one expert's dequantised (or
//!   fake-quantised) weights exist at a time rather than the layer's.
//!
//! Both are exact rewrites of `loss.backward()` on the plain forward (tested against it): the same
//! gradients up to floating-point summation order.

use tch::{Kind, Tensor};

use super::data::IGNORE;
use super::eval::Batch;
use super::router;
use crate::model::fully_sharded::Unit;
use crate::model::{ForwardMode, MoeModel};

/// Logit elements one cross-entropy chunk may hold (2²⁷: 512 MiB in fp32). Small vocabularies get
/// one chunk, so the tiny models run exactly as before.
const CHUNK_LOGIT_ELEMENTS: i64 = 1 << 27;

/// How a micro-batch's loss is formed and differentiated.
#[derive(Debug, Clone, Copy)]
pub struct StepOptions {
    /// Recompute each decoder layer in the backward instead of keeping its activations.
    pub checkpointing: bool,
    /// Labelled positions per cross-entropy chunk; `None` = from `CHUNK_LOGIT_ELEMENTS`.
    pub chunk_tokens: Option<i64>,
    /// Load-balancing loss coefficient (0 = off; only when the router trains).
    pub aux_loss_coef: f64,
    /// Router z-loss coefficient (0 = off).
    pub z_loss_coef: f64,
    /// Multiplies every gradient (1 / gradient accumulation steps).
    pub grad_scale: f64,
    /// Run the backward through every layer even when the loss has nothing to backpropagate (no
    /// labelled position): under expert parallelism each layer's backward is an exchange the other
    /// ranks wait for.
    pub always_backward: bool,
}

impl StepOptions {
    fn chunk(&self, vocab: i64) -> i64 {
        self.chunk_tokens.unwrap_or(CHUNK_LOGIT_ELEMENTS / vocab.max(1)).max(1)
    }
}

/// Runs forward and backward on `batch`, accumulating gradients into every tensor that requires
/// them; returns the mean cross-entropy over labelled positions (NaN when there are none) as a scalar
/// tensor on the device. Nothing in the step reads a tensor back to the host (which on a GPU would wait
/// for every queued kernel mid-step): the caller reads the loss once the whole step is queued.
pub fn forward_backward(model: &MoeModel, batch: &Batch, mode: ForwardMode, options: &StepOptions) -> Tensor {
    // Fully sharded weights exist whole one layer at a time: the backward must go layer by layer.
    if options.checkpointing || model.fully_sharded().is_some() {
        checkpointed(model, batch, mode, options)
    } else {
        plain(model, batch, mode, options)
    }
}

/// Router losses of one MoE layer, weighted by their coefficients over the number of MoE layers.
fn router_losses(logits: &Tensor, top_k: &Tensor, valid: &Tensor, moe_layers: f64, options: &StepOptions) -> Option<Tensor> {
    let mut total: Option<Tensor> = None;
    if options.aux_loss_coef > 0.0 {
        total = Some(router::load_balancing_loss(logits, top_k, valid) * (options.aux_loss_coef / moe_layers));
    }
    if options.z_loss_coef > 0.0 {
        let z = router::z_loss(logits, valid) * (options.z_loss_coef / moe_layers);
        total = Some(match total {
            Some(t) => t + z,
            None => z,
        });
    }
    total.map(|t| t * options.grad_scale)
}

fn moe_layers(model: &MoeModel) -> f64 {
    model.moe_layer_indices().len().max(1) as f64
}

/// The whole forward with autograd, then the chunked head.
fn plain(model: &MoeModel, batch: &Batch, mode: ForwardMode, options: &StepOptions) -> Tensor {
    let mut h = model.embed(&batch.ids);
    let rope = model.rope(batch.ids.size()[1], batch.ids.device(), h.kind());
    let layers = moe_layers(model);
    let mut extra: Option<Tensor> = None;
    for i in 0..model.num_layers() {
        let out = model.layer_forward(i, &h, &rope, mode);
        if let Some((logits, top_k)) = &out.router {
            if let Some(loss) = router_losses(logits, top_k, &batch.valid, layers, options) {
                extra = Some(match extra {
                    Some(e) => e + loss,
                    None => loss,
                });
            }
        }
        h = out.hidden;
    }
    let (ce, grad_h) = head_backward(model, &h, batch, h.requires_grad(), options);
    let grad_h = grad_h.or_else(|| (options.always_backward && h.requires_grad()).then(|| h.zeros_like()));
    let mut surrogate = extra;
    if let Some(grad) = grad_h {
        let through_hidden = (&h * grad).sum(Kind::Float);
        surrogate = Some(match surrogate {
            Some(s) => s + through_hidden,
            None => through_hidden,
        });
    }
    if let Some(s) = surrogate.filter(Tensor::requires_grad) {
        s.backward();
    }
    ce
}

/// Forward without autograd keeping layer inputs; backward one recomputed layer at a time (and within a
/// layer, frozen routed experts one at a time).
fn checkpointed(model: &MoeModel, batch: &Batch, mode: ForwardMode, options: &StepOptions) -> Tensor {
    let embedded = tch::no_grad(|| model.embed(&batch.ids));
    let rope = model.rope(batch.ids.size()[1], batch.ids.device(), embedded.kind());
    let (inputs, last) = tch::no_grad(|| {
        let mut h = embedded;
        let mut inputs = Vec::with_capacity(model.num_layers());
        for i in 0..model.num_layers() {
            let out = model.layer_forward(i, &h, &rope, mode);
            inputs.push(std::mem::replace(&mut h, out.hidden));
        }
        (inputs, h)
    });
    let (ce, mut grad) = through_unit(model, Unit::Head, || head_backward(model, &last, batch, true, options));
    if options.always_backward && grad.is_none() {
        grad = Some(last.zeros_like());
    }
    drop(last);
    let layers = moe_layers(model);
    for (i, input) in inputs.into_iter().enumerate().rev() {
        let needs_input_grad = i > 0 || model.embedding_trainable();
        let x = input.set_requires_grad(needs_input_grad);
        let backpropagated = through_unit(model, Unit::Layer(i), || {
            let (out, deferred) = model.layer_forward_deferring_experts(i, &x, &rope, mode);
            let mut surrogate = grad.as_ref().map(|g| (&out.hidden * g).sum(Kind::Float));
            // Frozen routed experts are backpropagated one at a time, each recomputed and freed.
            if let (Some(experts), Some(g)) = (deferred, grad.as_ref()) {
                let through_experts = experts.backward(g);
                surrogate = Some(match surrogate {
                    Some(s) => s + through_experts,
                    None => through_experts,
                });
            }
            if let Some((logits, top_k)) = &out.router {
                if let Some(loss) = router_losses(logits, top_k, &batch.valid, layers, options) {
                    surrogate = Some(match surrogate {
                        Some(s) => s + loss,
                        None => loss,
                    });
                }
            }
            surrogate.filter(Tensor::requires_grad).map(|s| s.backward()).is_some()
        });
        let input_grad = x.grad();
        grad = (backpropagated && needs_input_grad && input_grad.defined()).then_some(input_grad);
    }
    // Whether the embedding trains is the same on every rank: a frozen one is neither gathered nor reduced.
    if model.embedding_trainable() {
        through_unit(model, Unit::Embedding, || {
            if let Some(g) = grad {
                (model.embed(&batch.ids) * g).sum(Kind::Float).backward();
            }
        });
    }
    ce
}

/// Runs `backward` (a unit's part of the backward) with the unit's weights held whole when they are
/// fully sharded, then sums their gradients over ranks into this rank's shards. Every rank calls it
/// for the same units, whether or not its own backward reaches them.
fn through_unit<R>(model: &MoeModel, unit: Unit, backward: impl FnOnce() -> R) -> R {
    let _held = model.hold(unit);
    let out = backward();
    if let Some(sharded) = model.fully_sharded() {
        sharded.reduce_grads(unit);
    }
    out
}

/// The loss head on final hidden states `h` `[batch, seq, hidden]` (no autograd history needed):
/// backpropagates `grad_scale ·` mean cross-entropy into the head's trainable weights and returns
/// the loss (a device scalar) and, when `wants_grad`, its gradient with respect to `h`.
fn head_backward(model: &MoeModel, h: &Tensor, batch: &Batch, wants_grad: bool, options: &StepOptions) -> (Tensor, Option<Tensor>) {
    let (b, t, hidden) = h.size3().expect("[batch, seq, hidden]");
    // Position p predicts label p + 1; the labelled positions are known from the batch, so finding
    // them does not wait for the forward.
    let rows = &batch.labelled_rows;
    let labelled = rows.size()[0];
    if labelled == 0 {
        return (Tensor::full([], f64::NAN, (Kind::Float, h.device())), None);
    }
    let targets = batch.labels.narrow(1, 1, t - 1).reshape([-1]);
    let selected = h.detach().narrow(1, 0, t - 1).reshape([-1, hidden]).index_select(0, rows);
    let targets = targets.index_select(0, rows);
    let chunk = options.chunk(model.config.vocab_size);
    let mut loss_sum = Tensor::zeros([], (Kind::Float, h.device()));
    let mut grads = Vec::new();
    let mut start = 0;
    while start < labelled {
        let len = chunk.min(labelled - start);
        let x = selected.narrow(0, start, len).set_requires_grad(wants_grad);
        let logits = model.head(&x).to_kind(Kind::Float);
        let loss = logits.cross_entropy_loss::<Tensor>(&targets.narrow(0, start, len), None, tch::Reduction::Sum, IGNORE, 0.0) / labelled as f64;
        loss_sum += loss.detach();
        if loss.requires_grad() {
            (loss * options.grad_scale).backward();
        }
        if wants_grad {
            grads.push(x.grad());
        }
        start += len;
    }
    if !wants_grad {
        return (loss_sum, None);
    }
    let grad_rows = Tensor::cat(&grads, 0);
    let grad = grad_rows.new_zeros([b * (t - 1), hidden], (grad_rows.kind(), grad_rows.device())).index_copy(0, rows, &grad_rows);
    // The last position predicts nothing: its gradient is zero.
    let grad = Tensor::cat(&[grad.view([b, t - 1, hidden]), grad.new_zeros([b, 1, hidden], (grad.kind(), grad.device()))], 1);
    (loss_sum, Some(grad))
}
