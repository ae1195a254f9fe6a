//! The SFT → QAT workflow on one device (docs/design.md): SFT (LoRA or full, router frozen or trained
//! under the load-balancing loss) watched by the expert-usage monitor; evaluation of the SFT model and
//! of its post-training quantization (PTQ); LoRA merged; QAT with FP4 fake-quantized experts; evaluation
//! again. Checkpoints along the way make the job resumable with identical subsequent losses.

mod adamw_cpu;
pub mod data;
pub mod eval;
pub mod lora;
pub mod monitor;
pub mod optim;
pub mod parallel;
pub mod expert_parallel;
pub mod profile;
pub mod quantizer;
pub mod resume;
pub mod router;
mod stage;
pub mod step;

use anyhow::{bail, Context};
use moetune_types::results::{BaseExperts, QatResult, SftResult, StageLosses};
use moetune_types::{BaseExpertFormat, EvalReport, EvalRow, Example, JobResult, Mxfp4ScaleRule, Precision, QatFormat, QatTrainable, RouterMode, RoutingAgreement, RunnerEventKind, SftMethod, TrainingSpec};
use tch::nn;
use tch::{Device, Kind, Tensor};

use self::data::Sample;
use self::eval::{Batch, Scores};
use self::quantizer::{Calibrator, Quantizer};
use self::resume::{Progress, ResumePoint, SftEval};
use self::resume::StageKind;
use self::stage::Stage;
use crate::export::fp4::ActivationAmax;
use crate::model::params::Role;
use crate::model::{tiny, Adapters, ExpertInput, ExpertStorage, ForwardMode, MoeModel, PackedFormat};
use crate::text::TextCodec;

/// Where training reports to: events for the job log, and checkpoints to persist.
pub trait Reporter {
    fn event(&mut self, event: RunnerEventKind);
    /// A complete checkpoint directory to store (the runner uploads it to S3).
    fn checkpoint(&mut self, name: &str, stage: &str, step: u32, dir: &std::path::Path) -> anyhow::Result<()>;
    /// Whether the job was cancelled or paused; asked before every optimiser step.
    fn stop_request(&mut self) -> Option<StopRequest> {
        None
    }
}

/// Why training should stop before its next optimiser step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// Stop; nothing more is wanted from this job.
    Cancel,
    /// Store a checkpoint of the current state, then stop; a later attempt continues from it.
    Pause,
    /// The runner is shutting down: checkpoint and hand the job back, so another runner continues it.
    Release,
}

/// Training stopped because the job was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("the job was cancelled")]
pub struct Cancelled;

/// Training stopped for a pause or a release, after storing a checkpoint at `stage` `step`.
#[derive(Debug, thiserror::Error)]
#[error("training stopped ({request:?}) at {stage} step {step} after a checkpoint{}", .reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
pub struct Checkpointed {
    pub request: StopRequest,
    pub stage: &'static str,
    pub step: u32,
    /// Why the runner paused the job itself (the routing-drift guardrail); `None` for a request.
    pub reason: Option<String>,
}

/// Training and validation examples of a job.
pub struct JobData {
    pub train: Vec<Example>,
    /// From the job's `validation_file`; empty = split off `validation_split` of `train`.
    pub validation: Vec<Example>,
}

/// What the workflow produced.
pub struct TrainOutput {
    pub model: MoeModel,
    pub vars: nn::VarStore,
    pub codec: TextCodec,
    /// The SFT adapters (unmerged values) when the SFT method was LoRA.
    pub adapters: Option<Adapters>,
    pub activation_amax: Option<ActivationAmax>,
    /// The format QAT trained for, which the FP4 checkpoint is exported in.
    pub qat_format: QatFormat,
    pub trained_tokens: i64,
    /// Job result: steps, losses, stop reason and the evaluation report.
    pub summary: serde_json::Value,
    pub report: serde_json::Value,
    /// Up to 4 validation sequences on the host: what the serve check runs the exports on.
    pub probe: Batch,
}

/// The dtype weights and activations train in: `auto` is bf16 on CUDA and fp32 on CPU, where bf16
/// matmuls are two orders of magnitude slower.
pub fn training_kind(precision: Precision, device: Device) -> Kind {
    match precision {
        Precision::Auto if device.is_cuda() => Kind::BFloat16,
        Precision::Auto | Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
    }
}

/// Per MoE layer, the fraction of validation tokens the base model with packed experts (`packed_top_k`,
/// its routing) routes to the same top-k experts as the dense base it was quantised from: the
/// failure mode of quantising a MoE base, measured. The dense routing comes from the built-in model
/// rebuilt dense, or from the checkpoint read one layer at a time.
fn packed_base_agreement(name: &str, model: &MoeModel, packed_top_k: &[Vec<Tensor>], batches: &[Batch], device: Device, kind: Kind) -> anyhow::Result<Vec<f64>> {
    let dense_top_k = if name == tiny::NAME {
        let mut vars = nn::VarStore::new(device);
        let dense = crate::model::new_seeded(&vars, tiny::config(), tiny::BASE_SEED);
        vars.set_kind(kind);
        eval::score(&dense, ForwardMode::default(), batches).1
    } else {
        eval::dense_base_top_k(model, std::path::Path::new(name), batches)?
    };
    Ok(eval::routing_agreement(&dense_top_k, packed_top_k, batches))
}

/// The base model and its tokenizer in `kind`: the built-in tiny model, or a Hugging Face model directory.
pub fn base_model(name: &str, device: Device, kind: Kind, experts: ExpertStorage) -> anyhow::Result<(nn::VarStore, MoeModel, TextCodec)> {
    base_model_split(name, device, kind, experts, None)
}

/// [`base_model`], holding only this rank's share of the experts when `ep` splits them (dense then).
fn base_model_split(name: &str, device: Device, kind: Kind, experts: ExpertStorage, ep: Option<&crate::model::ExpertParallel>) -> anyhow::Result<(nn::VarStore, MoeModel, TextCodec)> {
    if name == tiny::NAME {
        let (mut vars, model) = match ep {
            Some(ep) => expert_parallel::tiny_share(device, ep)?,
            None => {
                let vars = nn::VarStore::new(device);
                // Drawn in fp32 so every precision starts from the same base weights.
                let model = crate::model::new_seeded(&vars, tiny::config(), tiny::BASE_SEED);
                if let ExpertStorage::Packed(format) = experts {
                    model.pack_experts(format)?;
                }
                (vars, model)
            }
        };
        vars.set_kind(kind);
        return Ok((vars, model, TextCodec::tiny()?));
    }
    let dir = std::path::Path::new(name);
    if dir.join("config.json").exists() {
        let (vars, model) = if let Some(ep) = ep { MoeModel::load_dir_expert_parallel(dir, device, kind, ep)? } else { MoeModel::load_dir_with(dir, device, kind, experts)? };
        return Ok((vars, model, TextCodec::from_dir(dir)?));
    }
    bail!("model '{name}' is not available on this runner (supported: {}, or a local model directory)", tiny::NAME)
}

/// How the job holds its routed experts: packed only while they stay frozen for the whole job.
pub fn expert_storage(options: &moetune_types::MoeSftQatOptions) -> ExpertStorage {
    if !options.experts_frozen() {
        return ExpertStorage::Dense;
    }
    match options.base_expert_format {
        None => ExpertStorage::AsShipped,
        Some(BaseExpertFormat::Bf16) => ExpertStorage::Dense,
        Some(BaseExpertFormat::Mxfp4) => ExpertStorage::Packed(PackedFormat::Mxfp4),
        Some(BaseExpertFormat::Nvfp4) => ExpertStorage::Packed(PackedFormat::Nvfp4),
    }
}

/// The base weights an SFT method trains (set to require gradients, the rest frozen); LoRA's adapters
/// come on top. Shared with the benchmark so it measures the job's own training step.
pub fn sft_trainables(model: &MoeModel, vars: &nn::VarStore, method: SftMethod, router: RouterMode) -> Vec<optim::Trainable> {
    let roles = match (method, router) {
        (SftMethod::Full, mode) => full_roles(mode),
        (SftMethod::Lora, RouterMode::Train) => vec![Role::Router],
        (SftMethod::Lora, RouterMode::Freeze) => vec![],
    };
    set_trainable(model, vars, &roles)
}

/// Sets which base weights get gradients: `roles` trainable, everything else frozen.
fn set_trainable(model: &MoeModel, vars: &nn::VarStore, roles: &[Role]) -> Vec<optim::Trainable> {
    let variables = vars.variables();
    let mut trainables = Vec::new();
    for info in &model.params {
        let Some(tensor) = variables.get(&info.name) else { continue };
        let on = roles.contains(&info.role);
        // Packed experts are frozen by construction; their dense variables are empty (as sharded weights' are).
        let sharded = model.fully_sharded().is_some_and(|s| s.is_sharded(&info.name));
        assert!(!on || tensor.numel() > 0 || info.numel() == 0 || sharded, "{} is packed and cannot be trained", info.name);
        let tensor = model.trained_tensor(&info.name, tensor, on);
        if on {
            let decay = info.shape.len() >= 2; // no weight decay on biases and norms
            trainables.push(optim::Trainable { name: info.name.clone(), tensor, decay });
        }
    }
    trainables
}

/// Roles full fine-tuning and QAT train: every parameter (attention, experts, shared and dense MLPs,
/// norms, embeddings, LM head) except the router, which trains only when the job asks.
fn full_roles(router: RouterMode) -> Vec<Role> {
    let mut roles = vec![Role::Embedding, Role::Attention, Role::Norm, Role::Expert, Role::SharedExpert, Role::DenseMlp, Role::LmHead];
    if router == RouterMode::Train {
        roles.push(Role::Router);
    }
    roles
}

fn batches(samples: &[Sample], batch: usize, pad: i64, device: Device, limit: usize) -> Vec<Batch> {
    samples.chunks(batch).take(limit).map(|chunk| Batch::new(&chunk.iter().collect::<Vec<_>>(), pad, device)).collect()
}

/// Runs the workflow. `resume`: a checkpoint to continue from (a previous attempt's latest).
pub fn run(spec: &TrainingSpec, data: JobData, device: Device, resume: Option<ResumePoint>, reporter: &mut dyn Reporter) -> anyhow::Result<TrainOutput> {
    run_on(spec, data, device, resume, reporter, None)
}

/// Runs the workflow as one rank of a data-parallel job (`parallel`), or alone. Every rank runs the
/// whole workflow on the same data in the same order; the training stages split each step's
/// micro-batches across ranks ([`parallel`]). Evaluations run on every rank on identical weights, so
/// every decision (the monitor's, a stop) is the same everywhere; only rank 0's reporter should
/// publish events and record checkpoints.
pub fn run_on(spec: &TrainingSpec, data: JobData, device: Device, resume: Option<ResumePoint>, reporter: &mut dyn Reporter, parallel: Option<&parallel::DataParallel>) -> anyhow::Result<TrainOutput> {
    let split = spec.moe.expert_parallel || spec.moe.fully_sharded;
    if !split {
        return run_job(spec, data, device, resume, reporter, parallel, None);
    }
    let Some(dp) = parallel.filter(|dp| dp.world_size() > 1) else { bail!("expert_parallel and fully_sharded split the model across ranks: start the job with a world size of 2 or more") };
    let ep = spec.moe.expert_parallel.then(|| dp.expert_parallel());
    expert_parallel::catching_lost_peers(|| run_job(spec, data, device, resume, reporter, parallel, ep.as_ref()))
}

/// [`run_on`], with the experts split across `ep`'s ranks when given.
fn run_job(spec: &TrainingSpec, data: JobData, device: Device, mut resume: Option<ResumePoint>, reporter: &mut dyn Reporter, parallel: Option<&parallel::DataParallel>, ep: Option<&crate::model::ExpertParallel>) -> anyhow::Result<TrainOutput> {
    let options = &spec.moe;
    let kind = training_kind(options.precision, device);
    // Fully sharded weights run layer by layer: recomputed in the backward.
    let checkpointing = options.gradient_checkpointing.unwrap_or(device.is_cuda()) || options.fully_sharded;
    let mut lora_qat = options.sft_method == SftMethod::Lora && options.qat_trainable() == QatTrainable::Lora;
    // A LoRA job without `qat.trainable` checkpointed past SFT by a runner that defaulted to full QAT
    // (merged weights in its checkpoints) goes on as it started.
    if let Some(point) = resume.as_ref().filter(|p| lora_qat && options.qat.trainable.is_none() && p.progress.stage != StageKind::Sft) {
        lora_qat = !point.holds_full_weights()?;
    }
    let storage = if lora_qat && ep.is_none() { expert_storage(options) } else { ExpertStorage::Dense };
    // Weights to be sharded are read on the host: the device only ever holds this rank's shards.
    let load_on = if options.fully_sharded { Device::Cpu } else { device };
    let (mut vars, mut model, codec) = base_model_split(&spec.model, load_on, kind, storage, ep)?;
    if let (true, Some(dp)) = (options.fully_sharded, parallel) {
        model.shard_weights(&mut vars, dp.device_group_shared(), device, options.cpu_offload)?;
    }
    let expert_shards = expert_parallel::split_names(&model);
    if let (Some(point), Some(dp), false) = (resume.as_mut(), parallel, expert_shards.is_empty()) {
        point.expert_shard = Some((dp.rank(), dp.world_size()));
        point.split_kind = resume::SplitKind::of(options);
    }
    // A spec from the API names its QAT format; one given to the runner's CLI may leave it to the model.
    let mut resolved = spec.clone();
    resolved.moe.resolve_qat_format(model.config.architecture.class_name());
    let (spec, options) = (&resolved, &resolved.moe);
    let qat_format = options.qat_format();
    let packed_experts = model.has_packed_experts().then(|| (model.packed_expert_format(), model.packed_expert_bytes()));
    // Before any training: a format the experts cannot be packed in would only fail at QAT.
    let (hidden, expert_intermediate) = (model.config.hidden_size, model.config.moe.intermediate_size);
    qat_format.check_expert_dims(&spec.model, hidden, expert_intermediate).map_err(anyhow::Error::msg)?;
    let (train_examples, validation_examples) = if data.validation.is_empty() {
        data::split_validation(data.train, options.validation_split)
    } else {
        (data.train, data.validation)
    };
    let seq_len = options.seq_len as usize;
    let mut samples = data::tokenize(&codec, &train_examples, seq_len, options.response_only_loss)?;
    if options.packing {
        samples = data::pack(samples, seq_len);
    }
    let validation = if validation_examples.is_empty() {
        reporter.event(info("No validation data (set validation_file or validation_split): evaluating on the first training batches"));
        samples.clone()
    } else {
        data::tokenize(&codec, &validation_examples, seq_len, options.response_only_loss)?
    };
    let (pad, batch) = (codec.pad_id(), spec.batch_size as usize);
    let eval_batches = batches(&validation, batch, pad, device, 8);
    let diagnostic = diagnostic_batches(&codec, options, &validation_examples.iter().chain(&train_examples).cloned().collect::<Vec<_>>(), pad, device)?;
    let eval_prompts = eval::encode_eval_prompts(&codec, &options.eval_prompts)?;

    let steps_per_epoch = samples.len().div_ceil(batch * options.gradient_accumulation_steps as usize).max(1) as u32;
    let sft_steps = options.max_steps.unwrap_or(spec.n_epochs * steps_per_epoch).max(1);
    let mut progress = resume.as_ref().map(|r| r.progress.clone()).unwrap_or_else(|| Progress::new(samples.len(), batch, spec.seed));
    let expert_plan = match options.sft_method {
        SftMethod::Lora => Some(profile::lora_plan(&model, options, &train_examples, &codec, batch, device, &mut progress, reporter, parallel)?),
        SftMethod::Full => None,
    };
    let adapters = expert_plan.as_ref().map(|plan| lora::create_planned(&model, &options.lora, plan, device));
    // The base model's routing of the validation tokens, what the monitor measures routing drift
    // against. The model is still the base here: checkpointed values are restored only further on.
    let mut base_top_k = None;
    if progress.base.is_none() {
        let (scores, top_k) = eval::score(&model, ForwardMode::default(), &eval_batches);
        // Quantised on load (not as shipped, which is the checkpoint itself): measure what it cost the routing.
        if let (Some((format, _)), ExpertStorage::Packed(_)) = (packed_experts, storage) {
            let agreement = packed_base_agreement(&spec.model, &model, &top_k, &eval_batches, device, kind)?;
            let mean = agreement.iter().sum::<f64>() / agreement.len().max(1) as f64;
            let min = agreement.iter().copied().fold(1.0, f64::min);
            reporter.event(info(&format!(
                "Base experts held packed ({}): the routing of the dense base is kept for {:.1}% of tokens (mean over {} MoE layers; lowest layer {:.1}%)",
                format.map_or("fp4", |f| f.as_str()),
                100.0 * mean,
                agreement.len(),
                100.0 * min
            )));
            progress.packed_base_agreement = Some(agreement);
        }
        progress.base = Some(scores);
        base_top_k = Some(top_k);
    }
    let base_routing = options.monitor.enabled.then(|| base_top_k.unwrap_or_else(|| eval::score(&model, ForwardMode::default(), &eval_batches).1));
    let base_scores = progress.base.expect("base scores were just computed");
    let task = |mode: ForwardMode| (!eval_prompts.is_empty()).then(|| eval::task_accuracy(&model, mode, &codec, &eval_prompts, device));
    let base_task = task(ForwardMode::default());

    let sft_mode = ForwardMode { adapters: adapters.as_ref(), ..Default::default() };
    let resumed_past_sft = progress.stage != StageKind::Sft;
    if !resumed_past_sft {
        let mut trainables = sft_trainables(&model, &vars, options.sft_method, options.router.mode);
        if let Some(a) = &adapters {
            trainables.extend(lora::trainables(a));
        }
        let router = if options.router.mode == RouterMode::Train { "trained under the load-balancing loss" } else { "frozen" };
        reporter.event(info(&format!(
            "SFT ({}, {}{}): {sft_steps} steps, batch {batch}×{} accumulation, {} sequences, router {router}; base validation loss {:.4}",
            serde_json::to_value(options.sft_method)?.as_str().unwrap_or("lora"),
            crate::model::kind_name(kind),
            if checkpointing { ", activation checkpointing" } else { "" },
            options.gradient_accumulation_steps,
            samples.len(),
            base_scores.loss
        )));
        if let Some(dp) = parallel {
            reporter.event(info(&parallel::summary(dp.world_size(), options.gradient_accumulation_steps)));
        }
        if let Some(summary) = expert_parallel::summary(&model, ep) {
            reporter.event(info(&summary));
        }
        let warmup = (f64::from(sft_steps) * options.warmup_ratio) as u32;
        let stage = Stage { kind: StageKind::Sft, steps: sft_steps, peak_lr: options.learning_rate, warmup, spec, pad, device, checkpointing, extra: vec![], parallel, expert_shards: &expert_shards, base_routing: base_routing.as_deref() };
        stage.train(&model, sft_mode, trainables, &samples, &eval_batches, &diagnostic, &mut progress, resume.as_ref(), adapters.as_ref(), reporter)?;
    }

    // Activation scales: calibrated on the SFT model once, then carried by every later checkpoint.
    let activations = match &progress.activation_amax {
        Some(saved) => Some(resume::amax_from_json(saved)?),
        None if options.qat.quantize_activations => Some(calibrate(&model, sft_mode, &samples, options.qat.calibration_batches as usize, batch, pad, device)),
        None => None,
    };
    progress.activation_amax = activations.as_ref().map(resume::amax_to_json);
    let quantizer = Quantizer::for_job(options, activations);
    let weight_hook = |w: &Tensor| quantizer.weights(w);
    let act_hook = |layer: usize, which: ExpertInput, x: &Tensor| quantizer.activation(layer, which, x);
    let fp4 = |adapters| fp4_mode(&weight_hook, options.qat.quantize_activations.then_some(&act_hook as ActHook), adapters);

    let mut sft_adapters: Option<Adapters> = None;
    let sft_top_k = if !resumed_past_sft {
        // ---- SFT and PTQ evaluation ----
        let (sft, sft_top_k) = eval::score(&model, sft_mode, &eval_batches);
        let ptq_mode = fp4(adapters.as_ref());
        let (ptq, ptq_top_k) = eval::score(&model, ptq_mode, &eval_batches);
        progress.sft_eval = Some(SftEval {
            sft,
            sft_task: task(sft_mode),
            ptq,
            ptq_task: task(ptq_mode),
            ptq_agreement: eval::routing_agreement(&sft_top_k, &ptq_top_k, &eval_batches),
        });

        // ---- the stage-end checkpoint is where QAT starts ----
        // LoRA-QAT keeps the adapters apart (they go on training); full QAT trains the merged weights.
        if let (Some(a), false) = (&adapters, lora_qat) {
            model.unpack_experts(kind);
            lora::merge_into(a, &model, &vars)?;
        }
        sft_adapters = adapters.as_ref().map(lora::snapshot);
        progress.enter_qat(samples.len(), batch, spec.seed);
        let trainables = qat_trainables(&model, &vars, options, adapters.as_ref(), lora_qat);
        let extra = qat_extra(&sft_top_k, sft_adapters.as_ref());
        let qat_stage = Stage { kind: StageKind::Qat, steps: options.qat.steps, peak_lr: options.qat.learning_rate, warmup: 0, spec, pad, device, checkpointing, extra, parallel, expert_shards: &expert_shards, base_routing: base_routing.as_deref() };
        qat_stage.checkpoint_with("sft-final", &progress, &trainables, None, reporter)?;
        sft_top_k
    } else {
        // Resumed after SFT: the SFT adapters (for the export) and the SFT routing come from the checkpoint.
        let point = resume.as_ref().expect("a job past SFT was resumed");
        if let Some(a) = &adapters {
            let saved = lora::snapshot(a);
            lora::load_values(&saved, &point.dir.join(resume::ADAPTERS))?;
            sft_adapters = Some(saved);
        }
        // What QAT trains, as the checkpoint has it: the merged weights, or the adapters of LoRA-QAT.
        point.restore_values(&qat_trainables(&model, &vars, options, adapters.as_ref(), lora_qat))?;
        top_k_from_tensors(&resume::read(&point.dir.join(resume::SFT_TOP_K))?)
    };
    let sft_eval = progress.sft_eval.clone().context("SFT evaluation missing from the checkpoint")?;

    // ---- QAT ----
    // LoRA-QAT: the quantizer sees each expert's `W + BA` while the adapters train.
    let qat_mode = fp4(if lora_qat { adapters.as_ref() } else { None });
    let qat_steps = if progress.stopped_early() { 0 } else { options.qat.steps };
    if progress.stage == StageKind::Qat && qat_steps > 0 {
        let trainables = qat_trainables(&model, &vars, options, adapters.as_ref(), lora_qat);
        reporter.event(info(&format!(
            "QAT ({}{} {}, training {}): {qat_steps} steps at lr {:e}; validation loss after SFT {:.4}, after PTQ {:.4}",
            qat_format.as_str(),
            if options.qat.mxfp4_scale_rule == Mxfp4ScaleRule::Ceil && qat_format == QatFormat::Mxfp4 { ", ceil scales" } else { "" },
            if options.qat.quantize_activations { "weights+activations" } else { "weight-only" },
            if lora_qat { "the adapters on the quantized weights" } else { "every weight" },
            options.qat.learning_rate,
            sft_eval.sft.loss,
            sft_eval.ptq.loss
        )));
        let extra = qat_extra(&sft_top_k, sft_adapters.as_ref());
        let stage = Stage { kind: StageKind::Qat, steps: qat_steps, peak_lr: options.qat.learning_rate, warmup: 0, spec, pad, device, checkpointing, extra, parallel, expert_shards: &expert_shards, base_routing: base_routing.as_deref() };
        let qat_adapters = if lora_qat { adapters.as_ref() } else { None };
        let optimizer = stage.train(&model, qat_mode, trainables, &samples, &eval_batches, &diagnostic, &mut progress, resume.as_ref(), qat_adapters, reporter)?;
        progress.stage = StageKind::Done;
        stage.checkpoint("qat-final", &progress, &optimizer, reporter)?;
    }
    // The QAT model evaluated on the training device: with LoRA-QAT, the adapters on each expert's
    // quantized `W + BA` (what merging, then quantizing, gives) without forming the merged model.
    let qat_mode = fp4(if lora_qat { adapters.as_ref() } else { None });
    set_trainable(&model, &vars, &[]);
    let (qat, qat_top_k) = eval::score(&model, qat_mode, &eval_batches);
    let qat_task = task(qat_mode);
    // The outputs are written from the whole model: rank 0 gathers every rank's share.
    let gathered = model.runs_in_lockstep().then(|| model.gather_whole(&vars, ep, kind, 0).context(parallel::PeerLost)).transpose()?;
    let (mut vars, model) = match gathered.flatten() {
        Some(whole) => whole,
        None => (vars, model),
    };
    // Merging and exporting need the dense model: on the host, so the training device never holds it
    // (with packed experts it would be the job's peak). The QAT-trained adapters become part of the
    // weights the FP4 model is exported from.
    model.to_device(&mut vars, Device::Cpu);
    model.unpack_experts(kind);
    if let (Some(a), true) = (&adapters, lora_qat) {
        lora::merge_into(a, &model, &vars)?;
    }

    let report = report(
        qat_format,
        [("base", base_scores, base_task), ("sft", sft_eval.sft, sft_eval.sft_task), ("ptq", sft_eval.ptq, sft_eval.ptq_task), ("sft_qat", qat, qat_task)],
        sft_eval.ptq_agreement.clone(),
        eval::routing_agreement(&sft_top_k, &qat_top_k, &eval_batches),
        model.moe_layer_indices(),
    );
    reporter.event(RunnerEventKind::Evaluation { report: serde_json::to_value(&report)? });
    let stage = |losses: &[f64]| StageLosses { steps: losses.len(), first_loss: losses.first().copied(), last_loss: losses.last().copied() };
    let summary = JobResult {
        device: format!("{device:?}").to_lowercase(),
        dtype: crate::model::kind_name(kind).into(),
        activation_checkpointing: checkpointing,
        qat_trainable: Some(if lora_qat { "lora" } else { "full" }.into()),
        base_experts: match packed_experts {
            Some((format, bytes)) => BaseExperts {
                format: format.map(|f| f.as_str().to_string()),
                bytes_on_device: Some(bytes),
                routing_agreement_with_dense: Some(progress.packed_base_agreement.clone()),
            },
            None => BaseExperts { format: Some(crate::model::kind_name(kind).into()), ..Default::default() },
        },
        sft: SftResult { method: options.sft_method, losses: stage(&progress.sft_losses) },
        qat: QatResult { format: qat_format, mxfp4_scale_rule: options.qat.mxfp4_scale_rule, losses: stage(&progress.qat_losses) },
        stop_reason: progress.stop_reason.clone().unwrap_or_else(|| "completed".into()),
        training_seconds: Some(progress.training_seconds),
        eval: report.table.clone(),
        routing_agreement: report.routing_agreement.clone(),
        runner_class: None,
        serve_check: None,
        expert_adapters: expert_plan.as_ref().map(|p| p.layer_adapters()).filter(|l| !l.is_empty()),
        training_routing_profile: progress.training_profile.clone(),
    };
    let (summary, report) = (serde_json::to_value(summary)?, serde_json::to_value(report)?);
    let activation_amax = quantizer.activations;
    let probe = Batch::new(&validation.iter().take(4).collect::<Vec<_>>(), pad, Device::Cpu);
    Ok(TrainOutput { model, vars, codec, adapters: sft_adapters, activation_amax, qat_format, trained_tokens: progress.tokens, summary, report, probe })
}

type WeightHook<'a> = &'a dyn Fn(&Tensor) -> Tensor;
type ActHook<'a> = &'a dyn Fn(usize, ExpertInput, &Tensor) -> Tensor;

/// The FP4 forward: fake-quantized expert weights (and activations), optionally with adapters.
fn fp4_mode<'a>(weights: WeightHook<'a>, activations: Option<ActHook<'a>>, adapters: Option<&'a Adapters>) -> ForwardMode<'a> {
    ForwardMode { expert_transform: Some(weights), expert_inputs: activations, adapters, ..Default::default() }
}

/// What QAT trains: the adapters (and a trained router) in LoRA-QAT, else every weight full SFT trains.
fn qat_trainables(model: &MoeModel, vars: &nn::VarStore, options: &moetune_types::MoeSftQatOptions, adapters: Option<&Adapters>, lora_qat: bool) -> Vec<optim::Trainable> {
    match adapters {
        Some(a) if lora_qat => {
            let mut trainables = sft_trainables(model, vars, SftMethod::Lora, options.router.mode);
            trainables.extend(lora::trainables(a));
            trainables
        }
        _ => set_trainable(model, vars, &full_roles(options.router.mode)),
    }
}

fn qat_extra(sft_top_k: &[Vec<Tensor>], adapters: Option<&Adapters>) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
    let mut extra = vec![(resume::SFT_TOP_K, top_k_tensors(sft_top_k))];
    if let Some(a) = adapters {
        extra.push((resume::ADAPTERS, lora::named_tensors(a)));
    }
    extra
}

fn top_k_tensors(top_k: &[Vec<Tensor>]) -> Vec<(String, Tensor)> {
    top_k.iter().enumerate().flat_map(|(b, layers)| layers.iter().enumerate().map(move |(l, t)| (format!("{b}.{l}"), t.shallow_clone()))).collect()
}

fn top_k_from_tensors(saved: &std::collections::HashMap<String, Tensor>) -> Vec<Vec<Tensor>> {
    let mut out: Vec<Vec<Tensor>> = Vec::new();
    for b in 0.. {
        let mut layers = Vec::new();
        while let Some(t) = saved.get(&format!("{b}.{}", layers.len())) {
            layers.push(t.shallow_clone());
        }
        if layers.is_empty() {
            break;
        }
        out.push(layers);
    }
    out
}

fn info(message: &str) -> RunnerEventKind {
    RunnerEventKind::Message { level: "info".into(), message: message.to_string() }
}

/// Diagnostic prompts for the monitor: the job's, else up to 16 prompts of the data (validation first).
fn diagnostic_batches(codec: &TextCodec, options: &moetune_types::MoeSftQatOptions, examples: &[Example], pad: i64, device: Device) -> anyhow::Result<Vec<Batch>> {
    let prompts: Vec<Vec<i64>> = if options.monitor.diagnostic_prompts.is_empty() {
        examples.iter().take(16).map(|e| codec.encode_prompt(e)).collect::<anyhow::Result<_>>()?
    } else {
        options
            .monitor
            .diagnostic_prompts
            .iter()
            .map(|p| codec.encode_prompt(&Example { system: None, instruction: p.clone(), input: String::new(), response: String::new(), messages: vec![] }))
            .collect::<anyhow::Result<_>>()?
    };
    let samples: Vec<Sample> = prompts
        .into_iter()
        .map(|mut ids| {
            ids.truncate(options.seq_len as usize);
            Sample { labels: vec![data::IGNORE; ids.len()], ids, example_count: 1 }
        })
        .collect();
    Ok(batches(&samples, 8, pad, device, usize::MAX))
}

/// Calibration pass for activation scales: the amax each expert input reaches on training batches.
fn calibrate(model: &MoeModel, mode: ForwardMode, samples: &[Sample], count: usize, batch: usize, pad: i64, device: Device) -> ActivationAmax {
    let calibrator = Calibrator::default();
    let hook = |layer: usize, which: ExpertInput, x: &tch::Tensor| calibrator.observe(layer, which, x);
    let mode = ForwardMode { expert_inputs: Some(&hook), ..mode };
    tch::no_grad(|| {
        for b in batches(samples, batch, pad, device, count) {
            model.forward(&b.ids, mode);
        }
    });
    calibrator.finish()
}

type Row = (&'static str, Scores, Option<f64>);

/// The base / SFT / PTQ / SFT+QAT table for this job, plus routing agreement of the FP4 models with the SFT model.
fn report(format: QatFormat, rows: [Row; 4], ptq_agreement: Vec<f64>, qat_agreement: Vec<f64>, layers: Vec<usize>) -> EvalReport {
    let table = rows
        .iter()
        .map(|(name, s, task)| EvalRow { model: name.to_string(), validation_loss: Some(s.loss), token_accuracy: Some(s.token_accuracy), task_accuracy: *task })
        .collect();
    let mean = |v: &[f64]| if v.is_empty() { 1.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    let [_, (_, sft, _), (_, ptq, _), (_, qat, _)] = rows;
    let summary = format!(
        "token accuracy SFT {:.3}, PTQ {:.3}, SFT+QAT {:.3} ({}); routing agreement PTQ {:.3}, QAT {:.3}",
        sft.token_accuracy,
        ptq.token_accuracy,
        qat.token_accuracy,
        format.as_str(),
        mean(&ptq_agreement),
        mean(&qat_agreement)
    );
    let routing_agreement = RoutingAgreement { ptq_mean: mean(&ptq_agreement), sft_qat_mean: mean(&qat_agreement), layers, ptq: ptq_agreement, sft_qat: qat_agreement };
    EvalReport { format, table, routing_agreement, summary }
}
