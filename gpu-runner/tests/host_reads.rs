//! No host syncs inside a training step, checked without a GPU: the code a step runs through must not
//! read a tensor back (`double_value`, `int64_value`, `Vec::try_from`), call an operation whose CUDA
//! kernel sizes its output from the data (`nonzero`, `bincount`, `unique`, `one_hot`'s range check) or
//! copy a host tensor to the device (`Tensor::from(…).to_device(…)`): on a GPU each of those waits for
//! every kernel queued so far, in the middle of the step. The step's loss is read by the training loop once the
//! whole step (optimiser included) is queued; the batch's labelled positions are computed on the host
//! when the batch is made.
//!
//! A proxy (a source scan, not a measurement): each file of the step's path may hold exactly the
//! reads listed for it, each for a stated reason outside the dense training step.

use std::path::Path;

/// Calls that read a tensor back to the host, sync on CUDA to size their output, or copy a host tensor
/// to the device.
const HOST_TRANSFERS: &[&str] =
    &["double_value(", "int64_value(", "f64_value(", "Vec::<", "::try_from(", ".equal(", "nonzero(", "bincount(", "unique", "one_hot(", "masked_select(", "Tensor::from(", "from_slice(", "to_device("];

/// Files a training step runs through, and the transfers each may hold (pattern, count, why).
const STEP_PATH: &[(&str, &[(&str, usize, &str)])] = &[
    ("src/train/step.rs", &[]),
    ("src/train/router.rs", &[]),
    ("src/model/layers.rs", &[]),
    ("src/model/adapters.rs", &[]),
    ("src/model/moe/grouped.rs", &[]),
    ("src/model/moe/deferred.rs", &[]),
    ("src/quant/mxfp4.rs", &[]),
    ("src/quant/nvfp4.rs", &[]),
    (
        "src/model/moe/mod.rs",
        &[
            ("Vec::<", 1, "the per-expert loop and its one-expert-at-a-time backward (packed experts, LoRA-QAT, shapes or kinds the grouped kernel cannot take) read the expert counts"),
            ("::try_from(", 1, "the same read"),
            ("to_device(", 2, "moving packed experts between devices, outside any step"),
        ],
    ),
    (
        // Expert parallelism only: c10d's all-to-all takes its split sizes on the host, as
        // torch.distributed's `all_to_all_single` does. One read per MoE layer's forward.
        "src/model/moe/expert_parallel.rs",
        &[
            ("Vec::<", 2, "the slot counts per expert, read to size the token exchange, and the counts the other ranks send"),
            ("::try_from(", 2, "the same reads"),
            ("from_slice(", 4, "the host-built slot list, row order and rows per expert (from the counts read above), and the counts sent"),
            ("to_device(", 6, "moving those to the device, and the counts to the host"),
        ],
    ),
    (
        "src/train/parallel.rs",
        &[
            ("from_slice(", 7, "host values (which gradients exist, the step's summed loss, a stop request, rank 0's monitor verdict, the job fingerprint) exchanged over the CPU-only Gloo group, and serde_json::from_slice decoding the verdict's bytes"),
            ("Vec::<", 4, "reading those CPU tensors back: no device tensor is read"),
            ("::try_from(", 4, "the same reads"),
            ("int64_value(", 2, "the agreed stop request and the length of rank 0's verdict, CPU tensors"),
            ("to_device(", 2, "the gradient norm's share of CPU-offloaded shards, a host scalar, goes through the device for the sum across ranks (NCCL takes device tensors) and back: with cpu_offload only"),
        ],
    ),
    (
        // Fully sharded weights. Without CPU offload the shards are on the device in the parameters'
        // dtype and these moves are no-ops.
        "src/model/fully_sharded.rs",
        &[(
            "to_device(",
            4,
            "with cpu_offload: each unit's fp32 host shards copied to the device before its all-gather, and its reduced gradient pieces copied back to the host (that copy waits for the reduction: offload trades this for device memory); and placing the shards once, when the model is sharded",
        )],
    ),
    ("src/train/quantizer.rs", &[("double_value(", 1, "the calibration pass records each expert input's amax on the host, before QAT")]),
    (
        "src/train/optim.rs",
        &[
            ("int64_value(", 1, "restoring the step count from a checkpoint"),
            ("from_slice(", 1, "saving the step count in a checkpoint (a host tensor, written from the host)"),
            ("::try_from(", 1, "the CPU update's thread count (an integer conversion, no tensor)"),
        ],
    ),
    (
        "src/model/mod.rs",
        &[
            ("to_device(", 4, "moving the model and loading checkpoint tensors, a generation prompt, and gathering an expert-parallel model's experts for the export, outside any step"),
            ("from_slice(", 1, "the prompt of greedy generation (evaluation prompts), outside any step"),
            ("int64_value(", 1, "greedy generation reads each next token"),
        ],
    ),
];

/// The file's code before its unit tests.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match text.find("#[cfg(test)]") {
        Some(tests) => text[..tests].to_string(),
        None => text,
    }
}

#[test]
fn a_training_step_reads_nothing_back_from_the_device() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for (file, allowed) in STEP_PATH {
        let code = code(&root.join(file));
        for pattern in HOST_TRANSFERS {
            let count = code.matches(pattern).count();
            let allowed_count = allowed.iter().find(|(p, ..)| p == pattern).map_or(0, |(_, n, _)| *n);
            if count != allowed_count {
                found.push(format!("{file}: {count} × `{pattern}` (allowed {allowed_count})"));
            }
        }
    }
    assert!(found.is_empty(), "host transfers in the training step's path:\n{}", found.join("\n"));
}

/// The scan sees what it looks for: the same patterns in code known to read back are counted.
#[test]
fn the_scan_finds_reads_where_they_are() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let monitor = code(&root.join("src/train/monitor.rs"));
    assert!(HOST_TRANSFERS.iter().map(|p| monitor.matches(p).count()).sum::<usize>() >= 2, "the expert-usage monitor reads its counts back");
}
