//! Small models of every architecture, shared by the runner's integration tests.

#![allow(dead_code)] // each test file uses its own part

use std::sync::Arc;
use std::time::Duration;

use moetune_c10d::{Backend, ProcessGroup, Store};
use moetune_runner::model::{ArchConfig, ForwardMode, MoeModel};
use moetune_runner::train::data::{Sample, IGNORE};
use moetune_runner::train::eval::Batch;
use moetune_runner::train::optim::Trainable;
use serde_json::json;
use tch::{Device, Kind, Tensor};

/// Two sequences of different lengths (padding), labels only on a response part (the rest IGNORE);
/// `shift` moves every token id (distinct batches for distinct ranks).
pub fn labelled_batch(vocab: i64, shift: i64) -> Batch {
    let sample = |len: usize, prompt: usize, offset: i64| {
        let ids: Vec<i64> = (0..len as i64).map(|i| (i * 7 + offset + shift) % vocab).collect();
        let labels = ids.iter().enumerate().map(|(i, &t)| if i < prompt { IGNORE } else { t }).collect();
        Sample { ids, labels, example_count: 1 }
    };
    let (a, b) = (sample(12, 4, 3), sample(9, 2, 11));
    Batch::new(&[&a, &b], 0, Device::Cpu)
}

/// Every trainable's accumulated gradient (zeros where it has none), by name.
pub fn trainable_gradients(trainables: &[Trainable]) -> Vec<(String, Tensor)> {
    trainables
        .iter()
        .map(|t| {
            let g = t.tensor.grad();
            (t.name.clone(), if g.defined() { g.detach().copy() } else { t.tensor.zeros_like() })
        })
        .collect()
}

/// How long a rank of [`on_ranks`] waits for the others.
pub const RANK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `rank` on one thread of this process per input (rank r gets `inputs[r]`), each with its own
/// Gloo group over loopback (as separate runner processes would have), the groups named `prefix`;
/// their results in rank order.
pub fn on_ranks<I: Send + 'static, T: Send + 'static>(prefix: &str, inputs: Vec<I>, rank: impl Fn(usize, ProcessGroup, I) -> T + Send + Sync + 'static) -> Vec<T> {
    let world = inputs.len();
    let server = Store::serve("127.0.0.1", 0, world, RANK_TIMEOUT).unwrap();
    let port = server.port();
    let rank = Arc::new(rank);
    let handles: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(r, input)| {
            let (rank, prefix) = (rank.clone(), prefix.to_string());
            std::thread::spawn(move || {
                let store = Store::connect("127.0.0.1", port, world, RANK_TIMEOUT).unwrap();
                let group = ProcessGroup::new(&store, &prefix, Backend::Gloo, r, world, RANK_TIMEOUT, Some("127.0.0.1")).unwrap();
                rank(r, group, input)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("rank thread")).collect()
}

/// The tests seed libtorch's one global generator (model init, router jitter, adapters): a test
/// that draws from it holds this while it does.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A two-layer model of 64 hidden units, vocabulary 96, 2 of 4 experts per token, with `extra`.
pub fn small(extra: serde_json::Value) -> ArchConfig {
    let mut config = json!({
        "vocab_size": 96, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_experts_per_tok": 2, "rms_norm_eps": 1e-6, "intermediate_size": 64,
    });
    config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    ArchConfig::from_json(config).unwrap()
}

/// One small model per architecture: Mixtral, Qwen2-MoE (shared expert, a dense layer), Qwen3-MoE
/// (tied embeddings) and gpt-oss (sinks, sliding window, expert biases, `[E, in, out]` experts).
pub fn configs() -> Vec<(&'static str, ArchConfig)> {
    vec![
        ("mixtral", small(json!({"architectures": ["MixtralForCausalLM"], "num_local_experts": 4}))),
        (
            "qwen2_moe",
            small(json!({"architectures": ["Qwen2MoeForCausalLM"], "num_experts": 4, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48, "mlp_only_layers": [1]})),
        ),
        ("qwen3_moe", small(json!({"architectures": ["Qwen3MoeForCausalLM"], "num_experts": 4, "moe_intermediate_size": 32, "head_dim": 32, "tie_word_embeddings": true}))),
        ("gpt_oss", small(json!({"architectures": ["GptOssForCausalLM"], "num_local_experts": 4, "head_dim": 16, "sliding_window": 3}))),
    ]
}

/// A forward of `ids` under `mode` and the backward of a loss that weighs every logit differently and
/// adds the router's load-balancing loss (so the routing weights get gradients too). Returns the logits.
pub fn weighted_forward_backward(model: &MoeModel, ids: &Tensor, mode: ForwardMode) -> Tensor {
    let out = model.forward(ids, mode);
    let vocab = out.logits.size()[2];
    let mut loss = (&out.logits * Tensor::linspace(-1.0, 1.0, vocab, (Kind::Float, Device::Cpu))).sum(Kind::Float);
    let valid = ids.ones_like().to_kind(Kind::Bool).flatten(0, -1);
    for ((_, logits), (_, top_k)) in out.router_logits.iter().zip(&out.router_top_k) {
        loss = loss + moetune_runner::train::router::load_balancing_loss(logits, top_k, &valid);
    }
    loss.backward();
    out.logits.detach()
}
