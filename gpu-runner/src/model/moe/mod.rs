//! The MoE block: router, routed experts stored as fused 3-D tensors (transformers 5 names), and the
//! dispatch. Tokens are sorted by expert once and each expert multiplies only its own tokens, so work is
//! proportional to tokens × k, never tokens × experts.

use std::cell::RefCell;

use tch::{Kind, Tensor};

use super::adapters::{ActivationHook, Adapters, ExpertInput, LoraPair};
use super::config::{ArchConfig, ExpertActivation, MoeSpec, Routing};
use super::layers::{linear, DenseMlp};
use super::params::{normal, Params, Role};
use super::resident::PackedExperts;

mod deferred;
mod expert_parallel;
mod grouped;

pub use deferred::DeferredExperts;
pub use expert_parallel::ExpertParallel;

/// Training-time routing options (ignored at evaluation).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoutingOptions {
    /// Each expert takes at most `ceil(capacity_factor · tokens · k / experts)` tokens per batch; the rest
    /// of its tokens (the latest in the batch) skip that expert, as in Switch Transformer.
    pub capacity_factor: Option<f64>,
    /// Router input multiplied by U(1 − jitter, 1 + jitter) (Switch Transformer's router jitter).
    pub jitter: f64,
}

/// A function applied to expert weights in the forward pass (QAT's fake quantization). It receives
/// weights whose last dimension is the input (reduction) dimension.
pub type WeightTransform<'a> = &'a dyn Fn(&Tensor) -> Tensor;

pub struct MoeOutput {
    pub hidden: Tensor,
    /// `[tokens, experts]`, for the aux loss and the expert-usage monitor.
    pub router_logits: Tensor,
    /// `[tokens, k]` chosen experts.
    pub top_k: Tensor,
}

pub struct MoeBlock {
    router: Tensor,
    router_bias: Option<Tensor>,
    /// The fused expert weights (variables of the model's `VarStore`); empty while `packed` holds them.
    gate_up_proj: Tensor,
    down_proj: Tensor,
    /// Frozen experts kept in FP4 (gate_up, down), dequantised one expert at a time in the forward.
    /// (A cell: the training loop hands them back to dense storage between stages.)
    packed: RefCell<Option<(PackedExperts, PackedExperts)>>,
    gate_up_proj_bias: Option<Tensor>,
    down_proj_bias: Option<Tensor>,
    shared_expert: Option<(DenseMlp, Tensor)>,
    spec: MoeSpec,
    /// Decoder layer index (activation hooks are per layer).
    layer: usize,
    /// The experts are split across the ranks of this group; the fused weights hold this rank's
    /// `local_experts` only.
    expert_parallel: Option<ExpertParallel>,
    /// Experts held here: `num_experts`, or its share under expert parallelism.
    local_experts: i64,
    /// Names of the fused expert weights (what expert LoRA adapters are keyed by).
    gate_up_name: String,
    down_name: String,
}

/// One expert's slices of the fused weights.
struct ExpertWeights<'a> {
    gate_up: &'a Tensor,
    down: &'a Tensor,
    gate_up_bias: Option<&'a Tensor>,
    down_bias: Option<&'a Tensor>,
    gate_up_lora: Option<ExpertLora<'a>>,
    down_lora: Option<ExpertLora<'a>>,
}

/// One expert's LoRA factors: `a` `[r, in]`, `b` `[out, r]`, in the activations' dtype.
#[derive(Clone, Copy)]
struct ExpertLora<'a> {
    a: &'a Tensor,
    b: &'a Tensor,
    scale: f64,
}

/// Every expert's factors of one fused weight, split once per forward pass.
struct FactorSlices {
    /// Every expert's `a` `[E, r, in]` and `b` `[E, out, r]`: views of the pair in the activations' kind.
    all_a: Tensor,
    all_b: Tensor,
    a: Vec<Tensor>,
    b: Vec<Tensor>,
    scale: f64,
}

impl FactorSlices {
    /// From PEFT's expert-major `a` `[E·r, in]` and rank-major `b` `[out, r·E]`.
    fn new(pair: &LoraPair, scale: f64, experts: i64, kind: Kind) -> Self {
        let (rank, in_features) = (pair.a.size()[0] / experts, pair.a.size()[1]);
        let all_a = pair.a.to_kind(kind).view([experts, rank, in_features]);
        let all_b = pair.expert_b(experts, kind);
        Self { a: all_a.unbind(0), b: all_b.unbind(0), all_a, all_b, scale }
    }

    fn get(&self, expert: usize) -> ExpertLora<'_> {
        ExpertLora { a: &self.a[expert], b: &self.b[expert], scale: self.scale }
    }
}

/// The experts of one forward pass: the dense weights split per expert, fused (for the grouped
/// GEMMs), or the packed ones.
enum StoredExperts<'a> {
    Dense(Vec<Tensor>, Vec<Tensor>),
    Fused(Tensor, Tensor),
    Packed(&'a (PackedExperts, PackedExperts)),
}

/// What the experts of one forward pass see besides their weights.
#[derive(Default, Clone, Copy)]
pub struct ExpertHooks<'a> {
    pub transform: Option<WeightTransform<'a>>,
    pub adapters: Option<&'a Adapters>,
    pub inputs: Option<ActivationHook<'a>>,
    /// One expert at a time even where grouped GEMMs apply (the reference the grouped path is tested
    /// against).
    pub expert_loop: bool,
}

impl MoeBlock {
    /// `packed`: the fused expert weights are created empty, to be filled packed (`set_packed`).
    /// `expert_parallel`: this rank holds its share of the experts only (dense; never with `packed`).
    pub fn new(p: &Params, c: &ArchConfig, layer: usize, packed: bool, expert_parallel: Option<&ExpertParallel>) -> Self {
        let (h, m) = (c.hidden_size, &c.moe);
        let (e, i) = (m.num_experts, m.intermediate_size);
        let router_path = p.sub(m.router_name);
        let router = router_path.param("weight", &[e, h], Role::Router, normal());
        let router_bias = m.router_bias.then(|| router_path.param("bias", &[e], Role::Router, normal()));
        let experts = p.sub("experts");
        let gpt_oss = matches!(m.activation, ExpertActivation::GptOssClamped { .. });
        // gpt-oss keeps its experts in `x @ W` orientation; the others in `linear` (`[out, in]`) orientation.
        let (gate_up_shape, down_shape) = if gpt_oss { ([e, h, 2 * i], [e, i, h]) } else { ([e, 2 * i, h], [e, h, i]) };
        let zeros = tch::nn::Init::Const(0.0);
        assert!(!(packed && expert_parallel.is_some()), "packed experts are not split across ranks");
        let rows = expert_parallel.map(|ep| ep.local_experts(e));
        let weight = |name: &str, shape: &[i64]| {
            if packed {
                experts.placeholder(name, shape, Role::Expert)
            } else {
                experts.param_rows(name, shape, rows, Role::Expert, normal())
            }
        };
        Self {
            router,
            router_bias,
            gate_up_proj: weight("gate_up_proj", &gate_up_shape),
            gate_up_proj_bias: gpt_oss.then(|| experts.param_rows("gate_up_proj_bias", &[e, 2 * i], rows, Role::Expert, zeros)),
            down_proj: weight("down_proj", &down_shape),
            packed: RefCell::new(None),
            down_proj_bias: gpt_oss.then(|| experts.param_rows("down_proj_bias", &[e, h], rows, Role::Expert, zeros)),
            shared_expert: m.shared_expert_intermediate_size.map(|size| {
                (DenseMlp::new(&p.sub("shared_expert"), h, size, Role::SharedExpert), p.linear("shared_expert_gate", 1, h, Role::SharedExpert))
            }),
            spec: m.clone(),
            layer,
            expert_parallel: expert_parallel.cloned(),
            local_experts: rows.map_or(e, |(_, count)| count),
            gate_up_name: experts.name("gate_up_proj"),
            down_name: experts.name("down_proj"),
        }
    }

    fn is_transposed(&self) -> bool {
        matches!(self.spec.activation, ExpertActivation::GptOssClamped { .. })
    }

    /// Names of the fused expert weights (gate_up, down).
    pub fn expert_names(&self) -> (&str, &str) {
        (&self.gate_up_name, &self.down_name)
    }

    /// The dense fused weights in `[experts, out, in]` orientation (to pack them).
    pub fn dense_experts(&self) -> (Tensor, Tensor) {
        let orient = |w: &Tensor| if self.is_transposed() { w.transpose(1, 2) } else { w.shallow_clone() };
        (orient(&self.gate_up_proj), orient(&self.down_proj))
    }

    pub fn is_packed(&self) -> bool {
        self.packed.borrow().is_some()
    }

    /// Keeps the experts packed from now on; the dense variables are emptied (their memory freed).
    pub fn set_packed(&self, gate_up: PackedExperts, down: PackedExperts) {
        let empty = |w: &Tensor| w.new_empty([0], (w.kind(), w.device()));
        let (mut gate_up_var, mut down_var) = (self.gate_up_proj.shallow_clone(), self.down_proj.shallow_clone());
        tch::no_grad(|| {
            gate_up_var.set_data(&empty(&gate_up_var));
            down_var.set_data(&empty(&down_var));
        });
        *self.packed.borrow_mut() = Some((gate_up, down));
    }

    /// Runs `f` with the dense `gate_up` and `down` (the parameters' orientation) in place of the packed
    /// experts, which are back when it returns.
    pub fn with_dense_experts<R>(&self, gate_up: &Tensor, down: &Tensor, f: impl FnOnce() -> R) -> R {
        let packed = self.packed.borrow_mut().take();
        let (mut gate_up_var, mut down_var) = (self.gate_up_proj.shallow_clone(), self.down_proj.shallow_clone());
        let (gate_up_empty, down_empty) = (gate_up_var.detach(), down_var.detach());
        tch::no_grad(|| {
            gate_up_var.set_data(gate_up);
            down_var.set_data(down);
        });
        let out = f();
        tch::no_grad(|| {
            gate_up_var.set_data(&gate_up_empty);
            down_var.set_data(&down_empty);
        });
        *self.packed.borrow_mut() = packed;
        out
    }

    /// Moves the packed experts to `device` (the dense variables move with their `VarStore`).
    pub fn move_packed(&self, device: tch::Device) {
        if let Some((gate_up, down)) = self.packed.borrow_mut().as_mut() {
            gate_up.to_device(device);
            down.to_device(device);
        }
    }

    /// Dequantises packed experts back into the dense variables (before a merge or an export).
    pub fn unpack(&self, kind: Kind) {
        let Some((gate_up, down)) = self.packed.borrow_mut().take() else { return };
        let orient = |w: Tensor| if self.is_transposed() { w.transpose(1, 2).contiguous() } else { w };
        let (mut gate_up_var, mut down_var) = (self.gate_up_proj.shallow_clone(), self.down_proj.shallow_clone());
        tch::no_grad(|| {
            gate_up_var.set_data(&orient(gate_up.dequantize_all(kind)));
            down_var.set_data(&orient(down.dequantize_all(kind)));
        });
    }

    pub fn packed_format(&self) -> Option<super::resident::PackedFormat> {
        self.packed.borrow().as_ref().map(|(g, _)| g.format)
    }

    /// Bytes the packed experts hold on the device (0 when dense).
    pub fn packed_bytes(&self) -> i64 {
        self.packed.borrow().as_ref().map_or(0, |(g, d)| g.bytes() + d.bytes())
    }

    /// Top-k experts and their weights from router logits, as the architecture's router computes them.
    fn route(&self, logits: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let k = self.spec.top_k;
        match self.spec.routing {
            Routing::SoftmaxTopK { renormalize } => {
                let (weights, experts) = logits.softmax(-1, Kind::Float).topk(k, -1, true, true);
                let weights = if renormalize { &weights / weights.sum_dim_intlist(-1, true, Kind::Float) } else { weights };
                (weights.to_kind(kind), experts)
            }
            Routing::TopKSoftmax => {
                let (values, experts) = logits.topk(k, -1, true, true);
                (values.softmax(-1, Kind::Float).to_kind(kind), experts)
            }
        }
    }

    /// The fused expert weights with `transform` applied along the input dimension (QAT without
    /// adapters: one call for all experts).
    fn transformed_weights(&self, f: WeightTransform) -> (Tensor, Tensor) {
        if self.is_transposed() {
            let along_input = |w: &Tensor| f(&w.transpose(1, 2)).transpose(1, 2);
            (along_input(&self.gate_up_proj), along_input(&self.down_proj))
        } else {
            (f(&self.gate_up_proj), f(&self.down_proj))
        }
    }

    /// One expert's `[out, in]`-or-transposed weight `w` with its LoRA update merged and `transform`
    /// applied (LoRA-QAT and PTQ of an adapted model: the quantizer must see `W + BA`). Only this
    /// expert's merged copy exists at a time.
    fn merged_expert_weight(&self, w: &Tensor, lora: Option<ExpertLora>, f: WeightTransform) -> Tensor {
        let merged = match lora {
            Some(l) => {
                let delta = l.b.matmul(l.a) * l.scale; // [out, in]
                w + if self.is_transposed() { delta.transpose(0, 1) } else { delta }.to_kind(w.kind())
            }
            None => w.shallow_clone(),
        };
        if self.is_transposed() {
            f(&merged.transpose(0, 1).unsqueeze(0)).squeeze_dim(0).transpose(0, 1)
        } else {
            f(&merged.unsqueeze(0)).squeeze_dim(0)
        }
    }

    /// Expert `e`'s (gate_up, down) weights in the stored orientation: a slice of the dense weights, or
    /// dequantised from the packed ones in the activations' `kind`.
    fn expert_weights(&self, e: usize, experts: &StoredExperts, kind: Kind) -> (Tensor, Tensor) {
        match experts {
            StoredExperts::Dense(gate_ups, downs) => (gate_ups[e].shallow_clone(), downs[e].shallow_clone()),
            StoredExperts::Fused(..) => unreachable!("fused experts run as grouped GEMMs, never one at a time"),
            StoredExperts::Packed((gate_up, down)) => {
                // Packed experts are `[out, in]`; gpt-oss multiplies `x @ W` with `W` `[in, out]`.
                let orient = |w: Tensor| if self.is_transposed() { w.transpose(0, 1) } else { w };
                (orient(gate_up.expert(e as i64, kind)), orient(down.expert(e as i64, kind)))
            }
        }
    }

    /// `weights`: this expert's slices (gate_up, down, and gpt-oss's two biases) and LoRA factors.
    fn expert_forward(&self, x: &Tensor, weights: &ExpertWeights, inputs: Option<ActivationHook>) -> Tensor {
        // `x·Wᵀ` (or `x·W` for gpt-oss's orientation) plus `s·(x·Aᵀ)·Bᵀ`: the update is applied to the
        // activations through the rank-r factors, never materialised as a weight.
        let project = |x: &Tensor, w: &Tensor, lora: Option<ExpertLora>| {
            let base = if self.is_transposed() { x.matmul(w) } else { linear(x, w, None) };
            match lora {
                Some(l) => base + x.linear(l.a, None::<Tensor>).linear(l.b, None::<Tensor>) * l.scale,
                None => base,
            }
        };
        let biases = weights.gate_up_bias.zip(weights.down_bias).map(|(g, d)| (g.shallow_clone(), d.shallow_clone()));
        self.expert_mlp(
            x,
            |x| project(x, weights.gate_up, weights.gate_up_lora),
            |x| project(x, weights.down, weights.down_lora),
            biases,
            inputs,
        )
    }

    /// The expert MLP on the rows of `x`, given its two projections (each with its LoRA update) and,
    /// for gpt-oss, the biases (gate_up, down) of each row's expert. Written once for the per-expert loop
    /// and the grouped dispatch: every operation here treats rows independently.
    fn expert_mlp(
        &self,
        x: &Tensor,
        gate_up: impl Fn(&Tensor) -> Tensor,
        down: impl Fn(&Tensor) -> Tensor,
        biases: Option<(Tensor, Tensor)>,
        inputs: Option<ActivationHook>,
    ) -> Tensor {
        let hook = |which: ExpertInput, x: Tensor| match inputs {
            Some(f) => f(self.layer, which, &x),
            None => x,
        };
        let x = hook(ExpertInput::GateUp, x.shallow_clone());
        match self.spec.activation {
            ExpertActivation::SwiGlu => {
                let projected = gate_up(&x);
                let parts = projected.chunk(2, -1);
                down(&hook(ExpertInput::Down, parts[0].silu() * &parts[1]))
            }
            ExpertActivation::GptOssClamped { alpha, limit } => {
                let (gate_up_bias, down_bias) = biases.expect("gpt-oss expert biases");
                let projected = gate_up(&x) + gate_up_bias;
                let gate = projected.slice(-1, 0, None, 2).clamp_max(limit);
                let up = projected.slice(-1, 1, None, 2).clamp(-limit, limit);
                let glu = &gate * (&gate * alpha).sigmoid();
                down(&hook(ExpertInput::Down, (up + 1.0) * glu)) + down_bias
            }
        }
    }

    /// Whether a forward pass with `hooks` on activations of `kind` runs the experts as grouped GEMMs:
    /// dense experts (packed ones are dequantised one at a time), no per-expert `W + BA` to
    /// fake-quantise (LoRA-QAT), and shapes and a kind `_grouped_mm` takes.
    pub fn groups_experts(&self, hooks: ExpertHooks, kind: Kind) -> bool {
        if hooks.expert_loop || self.is_packed() {
            return false;
        }
        let rank = |name: &str| hooks.adapters.and_then(|a| a.experts.get(name)).map(|pair| pair.a.size()[0] / self.local_experts);
        let ranks: Vec<i64> = [rank(&self.gate_up_name), rank(&self.down_name)].into_iter().flatten().collect();
        let per_expert_transform = hooks.transform.is_some() && !ranks.is_empty();
        !per_expert_transform && self.groupable(kind, &ranks)
    }

    /// Routes the tokens of `x` (`[batch, seq, hidden]`) and sorts them by expert. `training`: routing
    /// options to apply (None at evaluation).
    fn dispatch(&self, x: &Tensor, training: Option<&RoutingOptions>) -> Dispatch {
        let hidden = *x.size().last().expect("hidden dim");
        let tokens = x.reshape([-1, hidden]);
        let router_input = match training {
            Some(o) if o.jitter > 0.0 => &tokens * tokens.empty_like().uniform_(1.0 - o.jitter, 1.0 + o.jitter),
            _ => tokens.shallow_clone(),
        };
        // Router logits, softmax and top-k in fp32 whatever the weights' dtype: routing decisions are
        // where MoE models are fragile to precision.
        let float = |t: &Tensor| t.to_kind(Kind::Float);
        let router_logits = linear(&float(&router_input), &float(&self.router), self.router_bias.as_ref().map(float).as_ref());
        let (top_weights, top_k) = self.route(&router_logits, x.kind());

        let k = self.spec.top_k;
        let num_experts = self.spec.num_experts;
        let flat_experts = top_k.flatten(0, -1);
        // Stable, so tokens keep batch order within an expert (capacity drops the latest ones).
        let order = flat_experts.argsort_stable(true, 0, false);
        let token_of_slot = order.floor_divide_scalar(k);
        let weight_of_slot = top_weights.flatten(0, -1).index_select(0, &order);
        let expert_of_slot = flat_experts.index_select(0, &order);
        // Counted by a scatter rather than `bincount`, whose CUDA kernel reads the input's maximum back
        // to size its output.
        let counts = Tensor::zeros([num_experts], (Kind::Int64, flat_experts.device())).index_add(0, &flat_experts, &flat_experts.ones_like());
        let capacity = training
            .and_then(|o| o.capacity_factor)
            .map(|f| (f * (tokens.size()[0] * k) as f64 / num_experts as f64).ceil() as i64);
        Dispatch { tokens, router_logits, top_k, token_of_slot, order, expert_of_slot, weight_of_slot, counts, capacity, choices: k }
    }

    /// What every expert of one forward pass shares. `may_group`: the caller can run the experts as
    /// grouped GEMMs ([`StoredExperts::Fused`]) when nothing else rules them out.
    fn expert_run<'s>(&'s self, packed: Option<&'s (PackedExperts, PackedExperts)>, kind: Kind, hooks: ExpertHooks<'s>, may_group: bool) -> ExpertRun<'s> {
        let factors = |name: &str| {
            let adapters = hooks.adapters?;
            adapters.experts.get(name).map(|pair| FactorSlices::new(pair, adapters.scale, self.local_experts, kind))
        };
        let (gate_up_factors, down_factors) = (factors(&self.gate_up_name), factors(&self.down_name));
        // A transform (QAT's fake quantization) goes on the fused weights at once when it can; with
        // adapters it must see each expert's `W + BA`, and packed experts exist one at a time.
        let per_expert_transform = hooks.transform.is_some() && (gate_up_factors.is_some() || down_factors.is_some() || packed.is_some());
        let (gate_up, down) = match hooks.transform {
            Some(f) if !per_expert_transform => self.transformed_weights(f),
            _ => (self.gate_up_proj.shallow_clone(), self.down_proj.shallow_clone()),
        };
        // Packed experts are dequantised one at a time, and a per-expert `W + BA` is fake-quantised
        // one expert at a time: both keep the loop. For the loop, split once: indexing the fused
        // [E, …] weight per expert would make each expert's backward allocate and fill a gradient the
        // size of the whole weight (E times per step); unbind's backward stacks the slices once.
        let experts = match packed {
            Some(packed) => StoredExperts::Packed(packed),
            None if may_group && self.groups_experts(hooks, kind) => StoredExperts::Fused(gate_up, down),
            None => StoredExperts::Dense(gate_up.unbind(0), down.unbind(0)),
        };
        ExpertRun {
            block: self,
            experts,
            gate_up_factors,
            down_factors,
            gate_up_biases: self.gate_up_proj_bias.as_ref().map(|b| b.unbind(0)),
            down_biases: self.down_proj_bias.as_ref().map(|b| b.unbind(0)),
            per_expert_transform,
            hooks,
            kind,
        }
    }

    /// The MoE output from the routed experts' sum `routed` `[tokens, hidden]`: the shared expert added.
    fn finish(&self, routed: Tensor, dispatch: &Dispatch, shape: &[i64]) -> MoeOutput {
        let mut out = routed;
        if let Some((mlp, gate)) = &self.shared_expert {
            out = out + linear(&dispatch.tokens, gate, None).sigmoid() * mlp.forward(&dispatch.tokens);
        }
        MoeOutput { hidden: out.reshape(shape), router_logits: dispatch.router_logits.shallow_clone(), top_k: dispatch.top_k.shallow_clone() }
    }

    /// `x`: `[batch, seq, hidden]`. `training`: routing options to apply (None at evaluation).
    pub fn forward(&self, x: &Tensor, training: Option<&RoutingOptions>, hooks: ExpertHooks) -> MoeOutput {
        if let Some(ep) = &self.expert_parallel {
            return self.forward_expert_parallel(x, training, hooks, ep);
        }
        let dispatch = self.dispatch(x, training);
        let packed = self.packed.borrow();
        let run = self.expert_run(packed.as_ref(), x.kind(), hooks, !hooks.expert_loop);
        if let StoredExperts::Fused(gate_up, down) = &run.experts {
            return self.finish(self.grouped_forward(&dispatch, &run, gate_up, down), &dispatch, &x.size());
        }
        let mut out = dispatch.tokens.zeros_like();
        for (expert, start, kept) in dispatch.runs() {
            let idx = dispatch.token_of_slot.narrow(0, start, kept);
            let gate_w = dispatch.weight_of_slot.narrow(0, start, kept).unsqueeze(1);
            let y = run.output(expert, &dispatch.tokens.index_select(0, &idx), run.factors(expert));
            out = out.index_add(0, &idx, &(y * gate_w).to_kind(out.kind()));
        }
        self.finish(out, &dispatch, &x.size())
    }

    /// Whether the routed experts can be left out of a recomputed forward and backpropagated one at a
    /// time ([`Self::forward_deferring_experts`]): only when nothing in them trains but LoRA factors.
    pub fn can_defer_experts(&self) -> bool {
        // Under expert parallelism the experts' tokens come from every rank, through exchanges the
        // autograd graph carries.
        if self.expert_parallel.is_some() {
            return false;
        }
        let frozen = |t: &Tensor| !t.requires_grad();
        frozen(&self.gate_up_proj) && frozen(&self.down_proj) && self.gate_up_proj_bias.iter().chain(&self.down_proj_bias).all(frozen)
    }

    /// [`Self::forward`] without the routed experts' contribution to `hidden` (router logits, top-k
    /// and the shared expert as usual). The returned [`DeferredExperts`] backpropagates that
    /// contribution expert by expert, so one expert's dequantised (or fake-quantised) weights exist at
    /// a time where autograd over the whole forward would keep every expert's for the backward.
    pub fn forward_deferring_experts<'s>(&'s self, x: &Tensor, training: Option<&RoutingOptions>, hooks: ExpertHooks<'s>) -> (MoeOutput, DeferredExperts<'s>) {
        debug_assert!(self.can_defer_experts());
        let dispatch = self.dispatch(x, training);
        let output = self.finish(dispatch.tokens.zeros_like(), &dispatch, &x.size());
        (output, DeferredExperts { block: self, dispatch, hooks })
    }
}

/// One forward pass's routing: slot `s` (slots sorted by expert, stably) sends token `token_of_slot[s]`
/// to expert `expert_of_slot[s]` with weight `weight_of_slot[s]`; expert `e` has `counts[e]` slots, of
/// which the first `capacity` (when set) run. All on the device.
struct Dispatch {
    /// `[tokens, hidden]`, the MoE input.
    tokens: Tensor,
    router_logits: Tensor,
    top_k: Tensor,
    token_of_slot: Tensor,
    /// `order[s]`: slot `s`'s position `token · k + choice` in the router's `[tokens, k]` output (a
    /// permutation).
    order: Tensor,
    expert_of_slot: Tensor,
    weight_of_slot: Tensor,
    /// `[experts]` int64.
    counts: Tensor,
    capacity: Option<i64>,
    /// Slots per token: the router's k, or 1 for the rows an expert-parallel rank received.
    choices: i64,
}

impl Dispatch {
    /// `(expert, first slot, slots run)` of each expert that runs any, for the per-expert loop (which
    /// reads the counts back to the host).
    fn runs(&self) -> impl Iterator<Item = (usize, i64, i64)> + '_ {
        let counts = Vec::<i64>::try_from(&self.counts).expect("expert counts");
        let mut offset = 0;
        counts.into_iter().enumerate().filter_map(move |(expert, count)| {
            let start = offset;
            offset += count;
            let kept = self.capacity.map_or(count, |c| count.min(c));
            (kept > 0).then_some((expert, start, kept))
        })
    }

}

/// The experts of one forward pass: their weights, LoRA factors, biases and hooks.
struct ExpertRun<'s> {
    block: &'s MoeBlock,
    experts: StoredExperts<'s>,
    gate_up_factors: Option<FactorSlices>,
    down_factors: Option<FactorSlices>,
    gate_up_biases: Option<Vec<Tensor>>,
    down_biases: Option<Vec<Tensor>>,
    per_expert_transform: bool,
    hooks: ExpertHooks<'s>,
    kind: Kind,
}

impl ExpertRun<'_> {
    /// Expert `expert`'s LoRA factors (gate_up, down).
    fn factors(&self, expert: usize) -> (Option<ExpertLora<'_>>, Option<ExpertLora<'_>>) {
        (self.gate_up_factors.as_ref().map(|f| f.get(expert)), self.down_factors.as_ref().map(|f| f.get(expert)))
    }

    /// Expert `expert` on its tokens `x`, with LoRA factors `lora` (gate_up, down).
    fn output(&self, expert: usize, x: &Tensor, lora: (Option<ExpertLora>, Option<ExpertLora>)) -> Tensor {
        let block = self.block;
        let (gate_up_w, down_w) = block.expert_weights(expert, &self.experts, self.kind);
        let (gate_up_w, down_w, gate_up_lora, down_lora) = match self.hooks.transform {
            Some(f) if self.per_expert_transform => {
                (block.merged_expert_weight(&gate_up_w, lora.0, f), block.merged_expert_weight(&down_w, lora.1, f), None, None)
            }
            _ => (gate_up_w, down_w, lora.0, lora.1),
        };
        let weights = ExpertWeights {
            gate_up: &gate_up_w,
            down: &down_w,
            gate_up_bias: self.gate_up_biases.as_ref().map(|b| &b[expert]),
            down_bias: self.down_biases.as_ref().map(|b| &b[expert]),
            gate_up_lora,
            down_lora,
        };
        block.expert_forward(x, &weights, self.hooks.inputs)
    }
}
