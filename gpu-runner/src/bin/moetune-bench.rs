//! Measurements for `deploy/bench`, one JSON object per line on stdout. Not part of the
//! runner: it drives the runner's own training step and FP4 codecs on synthetic inputs.
//!
//! * `gemm`: the GEMM peak of this device (fp32 on CPU, bf16 on CUDA), the ceiling model FLOP/s are
//!   compared with.
//! * `train`: tokens/s of the job's SFT training step (`step::forward_backward`: chunked loss, and
//!   activation checkpointing on CUDA as a job has it; then clipping and AdamW) for LoRA on
//!   attention (router frozen) or full SFT (everything but the router), on a config from
//!   `tests/bench/tiny_moe.json`.
//! * `memory`: the peak host memory of one SFT step of a job (options as in a job) on a model of a
//!   config's shapes with random weights, against the estimate `inspect` gives for the same job on a CPU
//!   runner. Run it in a process of its own: the peak is the process's (`VmHWM`), with every large
//!   allocation mapped on its own so that freed memory leaves the process.
//! * `fp4`: MXFP4 and NVFP4 encode (quantize + pack) and decode GB/s on a weight of `--bytes` f32,
//!   and a plain memory copy of the same buffer.

use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use moetune_runner::model::{inspect, new_seeded, ArchConfig, ExpertStorage, ForwardMode, MoeModel, PackedFormat, RoutingOptions};
use moetune_runner::train::data::Sample;
use moetune_runner::train::quantizer::Quantizer;
use moetune_runner::train::step::{forward_backward, StepOptions};
use moetune_runner::train::{self, eval, lora, optim::AdamW, sft_trainables};
use moetune_types::placement::TrainingDevice;
use moetune_types::{LoraOptions, MoeSftQatOptions, RouterMode, SftMethod, TrainingSpec};
use serde_json::{json, Value};
use tch::{nn, Device, Kind, Tensor};

#[derive(Parser)]
struct Cli {
    /// `cpu` or `cuda` (CUDA runs in bf16, CPU in fp32, as the runner would).
    #[arg(long, default_value = "cpu", global = true)]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Gemm {
        #[arg(long, default_value_t = 2048)]
        size: i64,
        #[arg(long, default_value_t = 10)]
        reps: usize,
    },
    Train {
        /// The configs file (tests/bench/tiny_moe.json).
        #[arg(long)]
        configs: std::path::PathBuf,
        /// A key of `archs`, or `gpt_oss_20b_layer`.
        #[arg(long)]
        arch: String,
        #[arg(long, value_enum)]
        method: Method,
        #[arg(long, default_value_t = 8)]
        batch: i64,
        #[arg(long, default_value_t = 256)]
        seq: i64,
        #[arg(long, default_value_t = 6)]
        steps: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Run the routed experts one at a time instead of as grouped GEMMs (the earlier path).
        #[arg(long)]
        expert_loop: bool,
    },
    Memory {
        /// A config.json (its shapes; the weights are random, packed experts random codes).
        #[arg(long)]
        config: std::path::PathBuf,
        /// The job's `moe_sft_qat` options as JSON.
        #[arg(long, default_value = "{}")]
        options: String,
        #[arg(long, default_value_t = 1)]
        batch: u32,
        /// `sft`, or `qat`: the step with the experts fake-quantized (LoRA-QAT for LoRA jobs).
        #[arg(long, default_value = "sft")]
        stage: String,
    },
    Fp4 {
        /// Size of the f32 weight in bytes.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: usize,
        /// Columns of the weight (the quantized dimension).
        #[arg(long, default_value_t = 4096)]
        cols: usize,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Method {
    /// LoRA r=8 on q/k/v/o, router frozen (the anchor's configuration).
    Lora,
    /// Every weight but the router trained.
    Full,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Memory { .. } = cli.command {
        // Every allocation above 64 KiB mapped on its own and unmapped when freed, so the process's
        // resident peak is the peak of live tensors, not of a heap that keeps freed pages (what the
        // runner's own malloc settings do, for speed).
        // SAFETY: mallopt only changes allocator parameters, under glibc's arena lock.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
        }
    }
    if matches!(cli.command, Command::Train { .. }) {
        // As the runner does (see the module): part of what a training step costs on the CPU. Not for
        // `fp4`, whose outputs, like the torch reference's, are fresh memory each time.
        moetune_runner::host_memory::keep_freed_memory();
    }
    let device = match cli.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => anyhow::bail!("unknown device {other}: use cpu or cuda"),
    };
    let kind = if device.is_cuda() { Kind::BFloat16 } else { Kind::Float };
    let line = match cli.command {
        Command::Gemm { size, reps } => gemm(size, reps, device, kind),
        Command::Train { configs, arch, method, batch, seq, steps, warmup, expert_loop } => {
            let configs: Value = serde_json::from_slice(&std::fs::read(&configs).with_context(|| format!("reading {}", configs.display()))?)?;
            let shape = Shape { batch, seq, steps, warmup };
            train(&config_for(&configs, &arch)?, &arch, method, shape, expert_loop, device, kind)?
        }
        Command::Fp4 { bytes, cols } => fp4(bytes, cols)?,
        Command::Memory { config, options, batch, stage } => memory(&config, &options, batch, &stage, device, kind)?,
    };
    println!("{line}");
    Ok(())
}

fn config_for(configs: &Value, arch: &str) -> anyhow::Result<Value> {
    if let Some(whole) = configs.get(arch) {
        return Ok(whole.clone());
    }
    let mut merged = configs["common"].clone();
    let extra = configs["archs"].get(arch).with_context(|| format!("no config named {arch}"))?;
    merged.as_object_mut().context("common")?.extend(extra.as_object().context("arch")?.clone());
    Ok(merged)
}

fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Square GEMM throughput, median of `reps` after one warm-up.
fn gemm(n: i64, reps: usize, device: Device, kind: Kind) -> Value {
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let _ = a.matmul(&b);
    synchronize(device);
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let started = Instant::now();
            let _ = a.matmul(&b);
            synchronize(device);
            started.elapsed().as_secs_f64()
        })
        .collect();
    let flops = 2.0 * (n as f64).powi(3);
    json!({"bench": "gemm", "device": device_name(device), "dtype": format!("{kind:?}"), "size": n,
           "threads": tch::get_num_threads(), "gflops": flops / median(times) / 1e9})
}

fn device_name(device: Device) -> &'static str {
    if device.is_cuda() { "cuda" } else { "cpu" }
}

/// Forward FLOPs per token of the matmuls the model runs (embedding lookups excluded): projections,
/// attention scores and values over the positions a causal (or sliding-window) token attends to, the
/// router, the `top_k` experts it picks, and the LM head.
fn forward_flops_per_token(c: &ArchConfig, seq: i64) -> f64 {
    let (d, q, kv) = (c.hidden_size as f64, (c.num_attention_heads * c.head_dim) as f64, (c.num_key_value_heads * c.head_dim) as f64);
    let mut total = 2.0 * d * c.vocab_size as f64;
    for layer in 0..c.num_hidden_layers as usize {
        let window = c.sliding_windows.get(layer).copied().flatten().unwrap_or(seq);
        let attended: f64 = (0..seq).map(|p| (p + 1).min(window) as f64).sum::<f64>() / seq as f64;
        total += 2.0 * d * (q + 2.0 * kv) + 2.0 * q * d + 4.0 * q * attended;
        let moe = &c.moe;
        if c.sparse_layers.get(layer).copied().unwrap_or(true) {
            total += 2.0 * d * moe.num_experts as f64 + moe.top_k as f64 * 6.0 * d * moe.intermediate_size as f64;
            if let Some(shared) = moe.shared_expert_intermediate_size {
                total += 6.0 * d * shared as f64 + 2.0 * d;
            }
        } else {
            total += 6.0 * d * c.dense_intermediate_size as f64;
        }
    }
    total
}

/// A training bench's batch shape and step counts.
struct Shape {
    batch: i64,
    seq: i64,
    steps: usize,
    warmup: usize,
}

fn train(raw: &Value, arch: &str, method: Method, shape: Shape, expert_loop: bool, device: Device, kind: Kind) -> anyhow::Result<Value> {
    let Shape { batch, seq, steps, warmup } = shape;
    let config = ArchConfig::from_json(raw.clone())?;
    let mut vars = nn::VarStore::new(device);
    let model = new_seeded(&vars, config.clone(), 1);
    vars.set_kind(kind);
    let sft_method = if method == Method::Full { SftMethod::Full } else { SftMethod::Lora };
    let adapters = (sft_method == SftMethod::Lora).then(|| {
        let mut adapters = lora::create(&model, &LoraOptions::default(), device);
        for pair in adapters.linear.values_mut() {
            pair.a = pair.a.detach().to_kind(kind).set_requires_grad(true);
            pair.b = pair.b.detach().to_kind(kind).set_requires_grad(true);
        }
        adapters
    });
    let mut trainables = sft_trainables(&model, &vars, sft_method, RouterMode::Freeze);
    if let Some(a) = &adapters {
        trainables.extend(lora::trainables(a));
    }
    let trained_params: i64 = trainables.iter().map(|t| t.tensor.numel() as i64).sum();
    let mut optimizer = AdamW::new(trainables, 0.0);
    let routing = RoutingOptions { capacity_factor: None, jitter: 0.0 };
    let mode = ForwardMode { routing: Some(&routing), adapters: adapters.as_ref(), expert_loop, ..Default::default() };
    let experts = if model.groups_experts(mode, kind) { "grouped" } else { "loop" };
    tch::manual_seed(7);
    let ids = Tensor::randint(config.vocab_size, [batch, seq], (Kind::Int64, device));
    // Every position labelled (the anchor takes the loss on all of them too).
    let samples: Vec<Sample> = (0..batch)
        .map(|b| {
            let row = Vec::<i64>::try_from(ids.get(b).to_device(Device::Cpu)).expect("ids");
            Sample { labels: row.clone(), ids: row, example_count: 1 }
        })
        .collect();
    let inputs = eval::Batch::new(&samples.iter().collect::<Vec<_>>(), 0, device);
    // The job's own step: chunked loss, and activation checkpointing where a job would have it (CUDA).
    let step_options = StepOptions { checkpointing: device.is_cuda(), chunk_tokens: None, aux_loss_coef: 0.0, z_loss_coef: 0.0, grad_scale: 1.0, always_backward: false };
    // Per step: total, forward + backward (one call: the chunked loss and checkpointing interleave
    // them), and the optimiser.
    let mut phases: [Vec<f64>; 3] = Default::default();
    for step in 0..warmup + steps {
        synchronize(device);
        let started = Instant::now();
        optimizer.zero_grad();
        let _loss = forward_backward(&model, &inputs, mode, &step_options);
        synchronize(device);
        let backward_done = Instant::now();
        optimizer.clip_grad_norm(1.0);
        optimizer.step(1e-4);
        synchronize(device);
        if step >= warmup {
            let done = Instant::now();
            phases[0].push((done - started).as_secs_f64());
            phases[1].push((backward_done - started).as_secs_f64());
            phases[2].push((done - backward_done).as_secs_f64());
        }
    }
    let [total, forward_backward_s, optimizer_s] = phases.map(median);
    let step_s = total;
    let tokens = (batch * seq) as f64;
    let forward = forward_flops_per_token(&config, seq);
    // LoRA: the forward plus the backward's input gradients (frozen weights get none); full SFT adds
    // the weight gradients. Adapter FLOPs (r=8) are left out.
    let train_flops = forward * if method == Method::Full { 3.0 } else { 2.0 } * tokens;
    Ok(json!({
        "bench": "train", "impl": "moetune", "arch": arch, "method": if method == Method::Full { "full" } else { "lora" },
        "device": device_name(device), "dtype": format!("{kind:?}"), "threads": tch::get_num_threads(),
        "batch": batch, "seq": seq, "steps": steps, "trained_params": trained_params, "experts": experts,
        "step_s": step_s, "forward_backward_s": forward_backward_s, "optimizer_s": optimizer_s, "tokens_per_s": tokens / step_s, "model_flops_per_token": train_flops / tokens,
        "model_gflops": train_flops / step_s / 1e9,
    }))
}

/// `VmRSS` or `VmHWM` of this process, in bytes.
fn proc_status(field: &str) -> anyhow::Result<i64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} in /proc/self/status"))?;
    let kib: i64 = line.split_whitespace().nth(1).context("value")?.parse()?;
    Ok(kib << 10)
}

fn memory(config_path: &std::path::Path, options: &str, batch: u32, stage: &str, device: Device, kind: Kind) -> anyhow::Result<Value> {
    anyhow::ensure!(!device.is_cuda(), "the memory bench measures host memory: run it with --device cpu");
    anyhow::ensure!(stage == "sft" || stage == "qat", "--stage is sft or qat");
    let raw: Value = serde_json::from_slice(&std::fs::read(config_path).with_context(|| format!("reading {}", config_path.display()))?)?;
    let config = ArchConfig::from_json(raw)?;
    let moe: MoeSftQatOptions = serde_json::from_str(options).context("--options: the job's moe_sft_qat options")?;
    moe.validate().map_err(|e| anyhow::anyhow!("{}: {}", e.param, e.message))?;
    let spec = TrainingSpec { model: config_path.display().to_string(), n_epochs: 1, batch_size: batch, seed: 0, moe, routing_profile: None };
    let o = &spec.moe;
    // The estimate `inspect` gives for this job on a CPU runner.
    let mut by_role = std::collections::BTreeMap::new();
    for p in MoeModel::param_infos(&config) {
        *by_role.entry(p.role).or_insert(0i64) += p.numel();
    }
    let estimate = inspect::memory_model(&config, &by_role).job_memory(&spec, TrainingDevice::Cpu);
    let sft = estimate.stages.get(stage).context("the job has no such stage (qat.steps 0?)")?;

    let _ = Tensor::zeros([1], (Kind::Float, device)) + 1; // libtorch's own start-up, not the job's
    let before = proc_status("VmRSS:")?;
    tch::manual_seed(1);
    let mut vars = nn::VarStore::new(device);
    let model = match (train::expert_storage(o), estimate.base_experts.as_str()) {
        (ExpertStorage::Dense, _) | (ExpertStorage::AsShipped, "fp32" | "bf16") => new_seeded(&vars, config.clone(), 1),
        (_, "nvfp4") => MoeModel::new_with_random_packed_experts(&vars, config.clone(), PackedFormat::Nvfp4),
        _ => MoeModel::new_with_random_packed_experts(&vars, config.clone(), PackedFormat::Mxfp4),
    };
    vars.set_kind(kind);
    let weights = proc_status("VmRSS:")? - before;
    let adapters = (o.sft_method == SftMethod::Lora).then(|| lora::create(&model, &o.lora, device));
    anyhow::ensure!(stage == "sft" || o.experts_frozen(), "--stage qat measures LoRA-QAT: a LoRA job with qat.trainable lora");
    let mut trainables = sft_trainables(&model, &vars, o.sft_method, o.router.mode);
    if let Some(a) = &adapters {
        trainables.extend(lora::trainables(a));
    }
    let mut optimizer = AdamW::new(trainables, o.weight_decay);
    let routing = RoutingOptions { capacity_factor: o.router.capacity_factor, jitter: o.router.jitter };
    let quantizer = Quantizer::for_job(o, None);
    let fake_quantize = |w: &Tensor| quantizer.weights(w);
    let transform = (stage == "qat").then_some(&fake_quantize as &dyn Fn(&Tensor) -> Tensor);
    let mode = ForwardMode { routing: Some(&routing), adapters: adapters.as_ref(), seed: Some(1), expert_transform: transform, ..Default::default() };
    let seq = i64::from(o.seq_len);
    let samples: Vec<Sample> = (0..i64::from(batch))
        .map(|b| {
            let ids: Vec<i64> = (0..seq).map(|i| (i * 7919 + b * 104_729) % config.vocab_size).collect();
            Sample { labels: ids.clone(), ids, example_count: 1 }
        })
        .collect();
    let batch_tensors = eval::Batch::new(&samples.iter().collect::<Vec<_>>(), 0, device);
    let step_options = StepOptions {
        checkpointing: estimate.activation_checkpointing,
        chunk_tokens: None,
        aux_loss_coef: if o.router.mode == RouterMode::Train { o.router.aux_loss_coef } else { 0.0 },
        z_loss_coef: o.router.z_loss_coef,
        grad_scale: 1.0,
        always_backward: false,
    };
    let before_step = proc_status("VmRSS:")? - before;
    // Two steps: the optimiser's moments (and fp32 masters) appear in the first.
    let mut seconds = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        optimizer.zero_grad();
        let _loss = forward_backward(&model, &batch_tensors, mode, &step_options);
        optimizer.clip_grad_norm(o.max_grad_norm);
        optimizer.step(o.learning_rate);
        seconds.push(started.elapsed().as_secs_f64());
    }
    let peak = proc_status("VmHWM:")? - before;
    let gib = |b: i64| b as f64 / f64::from(1 << 30);
    Ok(json!({
        "bench": "memory", "stage": stage, "config": config_path.display().to_string(), "architecture": config.architecture.class_name(),
        "device": device_name(device), "dtype": estimate.dtype, "base_experts": estimate.base_experts,
        "activation_checkpointing": estimate.activation_checkpointing, "batch": batch, "seq_len": seq,
        "estimated_weights_gib": gib(sft.weights_bytes), "measured_weights_gib": gib(weights), "measured_before_step_gib": gib(before_step),
        "estimated_peak_gib": gib(sft.total_bytes), "measured_peak_gib": gib(peak),
        "measured_over_estimate": peak as f64 / sft.total_bytes as f64,
        "step_s": seconds,
    }))
}

/// GB/s of `bytes` input processed in `seconds`.
fn rate(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e9
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed().as_secs_f64())
}

fn fp4(bytes: usize, cols: usize) -> anyhow::Result<Value> {
    use moetune_fp4 as fp4;
    let n = bytes / 4 / cols * cols;
    // A weight-like spread (normal, std 0.02) with some outliers; seeded.
    let values: Vec<f32> = {
        tch::manual_seed(3);
        let t = Tensor::randn([n as i64], (Kind::Float, Device::Cpu)) * 0.02;
        let mut v = vec![0f32; n];
        t.copy_data(&mut v, n);
        v
    };
    let input_bytes = n * 4;
    let mut copy = vec![0f32; n];
    let ((), copy_s) = timed(|| copy.copy_from_slice(&values));
    drop(copy);
    let (blocks_scales, mx_encode_s) = timed(|| fp4::mxfp4_encode(&values, cols));
    let blocks_scales = blocks_scales.map_err(anyhow::Error::msg)?;
    let (decoded, mx_decode_s) = timed(|| fp4::mxfp4_decode(&blocks_scales.0, &blocks_scales.1));
    anyhow::ensure!(decoded.map_err(anyhow::Error::msg)?.len() == n, "MXFP4 round trip lost values");
    drop(blocks_scales);
    let (global, global_s) = timed(|| fp4::nvfp4_global_scale(&values));
    let (encoded, nv_encode_s) = timed(|| fp4::nvfp4_encode(&values, cols, global));
    let encoded = encoded.map_err(anyhow::Error::msg)?;
    let (decoded, nv_decode_s) = timed(|| fp4::nvfp4_decode(&encoded));
    anyhow::ensure!(decoded.map_err(anyhow::Error::msg)?.len() == n, "NVFP4 round trip lost values");
    Ok(json!({
        "bench": "fp4", "impl": "moetune", "bytes": input_bytes, "cols": cols,
        "memcpy_gbps": rate(input_bytes, copy_s),
        "mxfp4_encode_gbps": rate(input_bytes, mx_encode_s), "mxfp4_decode_gbps": rate(input_bytes, mx_decode_s),
        "nvfp4_encode_gbps": rate(input_bytes, nv_encode_s + global_s), "nvfp4_decode_gbps": rate(input_bytes, nv_decode_s),
    }))
}
