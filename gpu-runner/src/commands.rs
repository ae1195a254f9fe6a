//! The runner's tool commands (`logits`, `generate`, `tokenize`, `routing-profile`, `dump-weights`): thin wrappers over the
//! model code, for users debugging a checkpoint and for the numerics tests.

use std::path::Path;

use anyhow::{bail, Context};
use moetune_types::dataset::parse_line;
use tch::{Device, Kind, Tensor};

use crate::model::checkpoint::{write_file, write_safetensors, Owned};
use crate::model::{ForwardMode, MoeModel};
use crate::text::TextCodec;
use crate::train::data::Sample;

/// Reads `[[id, …], …]` (equal lengths) into a `[batch, seq]` tensor.
fn read_ids(path: &Path) -> anyhow::Result<Tensor> {
    let rows: Vec<Vec<i64>> = serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        .with_context(|| format!("{} must be a JSON list of lists of token ids", path.display()))?;
    let width = rows.first().map(Vec::len).unwrap_or(0);
    if width == 0 || rows.iter().any(|r| r.len() != width) {
        bail!("{}: every row must be non-empty and of equal length", path.display());
    }
    Ok(Tensor::from_slice(&rows.concat()).view([rows.len() as i64, width as i64]))
}

pub fn logits(model_dir: &Path, adapter: Option<&Path>, input: &Path, out: &Path, (device, kind): (Device, Kind)) -> anyhow::Result<()> {
    let ids = read_ids(input)?;
    let (_vars, model) = MoeModel::load_dir(model_dir, device, kind)?;
    let adapters = adapter.map(|dir| crate::train::lora::load_peft(dir, device)).transpose()?;
    let vocab = model.config.vocab_size;
    if let Some(bad) = Vec::<i64>::try_from(ids.flatten(0, -1))?.into_iter().find(|&i| i < 0 || i >= vocab) {
        bail!("token id {bad} is outside the vocabulary (0..{vocab})");
    }
    let mode = ForwardMode { adapters: adapters.as_ref(), ..Default::default() };
    let output = tch::no_grad(|| model.forward(&ids.to_device(device), mode));
    let mut tensors = vec![Owned::from_tensor("logits".into(), &output.logits, Kind::Float)?];
    for (layer, top_k) in &output.router_top_k {
        tensors.push(Owned::from_tensor(format!("router_topk.{layer}"), top_k, Kind::Int64)?);
    }
    write_file(out, &tensors)
}

pub fn generate(model_dir: &Path, prompt: Option<&str>, ids: Option<Vec<i64>>, max_new_tokens: usize, (device, kind): (Device, Kind)) -> anyhow::Result<()> {
    // The tokenizer is optional with --ids (then no text is printed).
    let codec = match (prompt, &ids) {
        (Some(_), _) => Some(TextCodec::from_dir(model_dir)?),
        _ => TextCodec::from_dir(model_dir).ok(),
    };
    let prompt_ids = match (prompt, ids, &codec) {
        (_, Some(ids), _) => ids,
        (Some(text), None, Some(codec)) => codec.bos_id().into_iter().chain(codec.encode(text)?).collect(),
        _ => bail!("give --prompt TEXT or --ids 1,2,3"),
    };
    let (_vars, model) = MoeModel::load_dir(model_dir, device, kind)?;
    let new_ids = model.generate_greedy(&prompt_ids, max_new_tokens, device);
    let text = codec.map(|c| c.decode(&new_ids)).transpose()?;
    println!("{}", serde_json::json!({ "prompt_ids": prompt_ids, "new_ids": new_ids, "text": text }));
    Ok(())
}

pub fn tokenize(model_dir: &Path, data: &Path) -> anyhow::Result<()> {
    let codec = TextCodec::from_dir(model_dir)?;
    let text = std::fs::read_to_string(data).with_context(|| format!("reading {}", data.display()))?;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (_, example) = parse_line(line).map_err(|m| anyhow::anyhow!("line {}: {m}", i + 1))?;
        let rendered = codec.render(&example).with_context(|| format!("line {}", i + 1))?;
        let (ids, labels) = codec.encode_example(&example, -100)?;
        println!("{}", serde_json::json!({ "line": i + 1, "prompt": rendered.prompt, "response": rendered.response, "ids": ids, "labels": labels }));
    }
    Ok(())
}

/// Reads a JSONL dataset through the API's own reader (the same validation as an upload).
pub fn read_examples(path: &Path) -> anyhow::Result<Vec<moetune_types::Example>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    moetune_types::dataset::parse_jsonl(&text).map_err(|e| anyhow::anyhow!("{} line {}: {}", path.display(), e.line, e.message))
}

/// Prints the routing profile (JSON) of the first `max_examples` examples of the JSONL file `data`,
/// or of the token ids in `input`, under the model in `model_dir`.
pub fn routing_profile(model_dir: &Path, data: Option<&Path>, input: Option<&Path>, max_examples: usize, seq_len: usize, (device, kind): (Device, Kind)) -> anyhow::Result<()> {
    let (_vars, model) = MoeModel::load_dir(model_dir, device, kind)?;
    let profile = match (data, input) {
        (Some(data), None) => {
            let codec = TextCodec::from_dir(model_dir)?;
            crate::train::profile::profile_examples(&model, &codec, &read_examples(data)?, max_examples, seq_len, 8, device)?
        }
        (None, Some(input)) => {
            let rows: Vec<Vec<i64>> = Vec::try_from(read_ids(input)?)?;
            let samples: Vec<Sample> = rows.into_iter().map(|ids| Sample { labels: ids.clone(), ids, example_count: 1 }).collect();
            // Equal-length rows: no padding, so the pad id is never read.
            crate::train::profile::measure(&model, &samples, 8, 0, device, samples.len() as u64, crate::train::profile::DEAD_SHARE)
        }
        _ => bail!("give --data FILE.jsonl or --input IDS.json"),
    };
    println!("{}", serde_json::to_string(&profile)?);
    Ok(())
}

pub fn dump_weights(model_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let (vars, model) = MoeModel::load_dir(model_dir, Device::Cpu, Kind::Float)?;
    let variables = vars.variables();
    let tensors = model.params.iter().map(|p| Owned::from_tensor(p.name.clone(), &variables[&p.name], Kind::Float)).collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(out)?;
    write_safetensors(out, tensors, u64::MAX).map(|_| ())
}

/// Post-training quantization of a checkpoint the user already has: loads MODEL_DIR (any supported
/// architecture, plain or MXFP4/NVFP4) and writes its FP4 checkpoint with the exporter jobs use;
/// `rule` picks MXFP4's block scales.
pub fn quantize(model_dir: &Path, format: moetune_types::QatFormat, rule: moetune_types::Mxfp4ScaleRule, out: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let (vars, model) = MoeModel::load_dir(model_dir, Device::Cpu, Kind::Float)?;
    let mut written = crate::export::fp4::write(&model, &vars, format, crate::quant::mxfp4_scale_rule(rule), None, out)?;
    for file in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "chat_template.jinja"] {
        let source = model_dir.join(file);
        if source.exists() {
            std::fs::copy(&source, out.join(file))?;
            written.push(out.join(file));
        }
    }
    Ok(written)
}

/// Prints training events as JSON lines and keeps checkpoints in a local directory (the `train`
/// command; the service's reporter stores them in S3 instead). Ranks other than 0 of a data-parallel
/// job print nothing and add their share of each checkpoint without marking it `latest`.
pub struct LocalReporter {
    pub checkpoints: Option<std::path::PathBuf>,
    pub rank: usize,
}

impl crate::train::Reporter for LocalReporter {
    fn event(&mut self, event: moetune_types::RunnerEventKind) {
        if self.rank == 0 {
            println!("{}", serde_json::to_string(&event).unwrap_or_default());
        }
    }

    fn checkpoint(&mut self, name: &str, _stage: &str, _step: u32, dir: &Path) -> anyhow::Result<()> {
        let Some(root) = &self.checkpoints else { return Ok(()) };
        let target = root.join(name);
        std::fs::create_dir_all(&target)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            std::fs::copy(entry.path(), target.join(entry.file_name()))?;
        }
        if self.rank == 0 {
            std::fs::write(root.join("latest"), name)?;
        }
        Ok(())
    }
}
