//! A model split across the ranks of a data-parallel job. Under expert parallelism
//! (`expert_parallel`) each rank holds `num_experts / world_size` of every MoE layer's routed experts
//! ([`crate::model::ExpertParallel`]); the tokens of each MoE layer cross ranks by all-to-all to the
//! rank holding their expert and come back. Under fully sharded weights (`fully_sharded`) each rank
//! holds 1/N of every weight ([`crate::model::fully_sharded`]), gathered one layer at a time. Every
//! rank still trains on its own micro-batches. What changes in the job (said of experts; a weight's
//! shard is treated the same way):
//!
//! * a rank's experts are its own trainables: their gradients already sum every rank's tokens, so they
//!   are left out of the gradient sum and the owners' broadcast, and their optimiser state stays on
//!   the rank; the gradient norm for clipping sums every rank's share;
//! * every rank runs each micro-batch's backward through every layer (the backward is an exchange
//!   too), even when the batch has nothing to learn from;
//! * checkpoints hold each rank's experts in a file of its own (values and state), and resume on any
//!   number of ranks;
//! * the outputs are written from the whole model, gathered on rank 0 one tensor at a time.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use tch::{nn, Device};

use super::parallel::PeerLost;
use crate::model::{tiny, ExpertParallel, MoeModel};

/// The built-in tiny model with this rank's share of the experts, drawn whole from its seed and then
/// split (in fp32, like the whole model).
pub fn tiny_share(device: Device, ep: &ExpertParallel) -> anyhow::Result<(nn::VarStore, MoeModel)> {
    let vars = nn::VarStore::new(device);
    // Built before the whole model is drawn from its seed, so the random generator is left where a
    // single process leaves it (the adapters are drawn next).
    let model = tch::no_grad(|| MoeModel::new_expert_parallel(&vars, tiny::config(), ep))?;
    let whole_vars = nn::VarStore::new(device);
    crate::model::new_seeded(&whole_vars, tiny::config(), tiny::BASE_SEED);
    model.copy_share_from(&vars, &whole_vars)?;
    Ok((vars, model))
}

/// The parameters of which this rank holds a share: its experts under expert parallelism, every
/// weight it holds a shard of under fully sharded weights. They are its own to update.
pub fn split_names(model: &MoeModel) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = model.params.iter().filter(|p| p.local_rows.is_some()).map(|p| p.name.clone()).collect();
    names.extend(model.fully_sharded().map(|s| s.names()).unwrap_or_default());
    names
}

/// Runs `f`, turning a failed token exchange into an error that names a lost peer. The exchanges sit
/// inside forward passes and the autograd backward, which cannot return errors: they panic, and the
/// panic is caught here. Running out of memory, or any other panic, is this rank's own error.
pub fn catching_lost_peers<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            // The shim's prefix on a failed exchange (forward or backward), and the forward's own.
            let exchange = ["moetune c10d exchange failed", "expert parallelism: exchanging", crate::model::fully_sharded::FAILED].iter().any(|m| message.contains(m));
            if exchange && !message.contains("out of memory") {
                return Err(anyhow::Error::new(PeerLost).context(format!("a collective between the ranks of a split model failed: {message}")));
            }
            Err(anyhow::anyhow!("training stopped: {message}"))
        }
    }
}

/// What expert parallelism and fully sharded weights do, for the job's log.
pub fn summary(model: &MoeModel, ep: Option<&ExpertParallel>) -> Option<String> {
    if let Some(sharded) = model.fully_sharded() {
        return Some(format!(
            "Fully sharded over {} ranks: each holds 1/{} of every weight, its gradient and optimiser state ({:.1} MiB of weights here{}); a layer's weights are gathered whole only while it runs",
            sharded.ranks(),
            sharded.ranks(),
            sharded.shard_bytes() as f64 / (1 << 20) as f64,
            if sharded.offloaded() { ", in host memory in fp32, stepped on the CPU" } else { "" }
        ));
    }
    let ep = ep?;
    let experts = model.config.moe.num_experts;
    let (first, count) = ep.local_experts(experts);
    Some(format!(
        "Expert parallel over {} ranks: this rank holds experts {first}–{} of every MoE layer's {experts}; tokens reach their experts' ranks by all-to-all",
        ep.ranks(),
        first + count - 1
    ))
}
