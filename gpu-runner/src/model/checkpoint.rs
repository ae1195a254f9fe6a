//! Reading and writing Hugging Face checkpoints: `model.safetensors` or sharded
//! `model.safetensors.index.json`, memory-mapped (each tensor is copied once, into its parameter),
//! bf16/fp16/fp32 converted to the model's dtype, per-expert tensors stacked into the fused layout and
//! gpt-oss MXFP4 experts decoded (or kept packed: `load_packed`). Every failure names the file and tensor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use memmap2::Mmap;
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};
use tch::{Kind, Tensor};

use super::config::{ArchConfig, ExpertActivation, ExpertCheckpoint};
use super::params::{ParamInfo, Role};
use super::resident::{PackedExperts, PackedFormat};
pub use super::shards::{write_file, Owned};
use super::shards::ShardWriter;
use crate::quant::fp4;

struct File {
    path: PathBuf,
    map: Mmap,
    metadata: Metadata,
    data_start: usize,
}

/// One tensor as stored: dtype, shape and the bytes inside the mapped file.
pub struct Stored<'a> {
    pub name: &'a str,
    pub file: &'a Path,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

impl Stored<'_> {
    pub fn shape_i64(&self) -> Vec<i64> {
        self.shape.iter().map(|&d| d as i64).collect()
    }

    /// A CPU tensor of the stored dtype (one copy out of the mapping).
    pub fn to_tensor(&self) -> anyhow::Result<Tensor> {
        let kind = match self.dtype {
            Dtype::F32 => Kind::Float,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F16 => Kind::Half,
            Dtype::F64 => Kind::Double,
            Dtype::U8 => Kind::Uint8,
            Dtype::I64 => Kind::Int64,
            other => bail!("tensor {} in {}: unsupported dtype {other:?}", self.name, self.file.display()),
        };
        Ok(Tensor::f_from_data_size(self.bytes, &self.shape_i64(), kind)?)
    }
}

/// All tensors of a checkpoint directory.
pub struct Checkpoint {
    files: Vec<File>,
    location: HashMap<String, usize>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let file_names: Vec<String> = if index_path.exists() {
            let index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path)?)
                .with_context(|| format!("{} is not JSON", index_path.display()))?;
            let map = index.get("weight_map").and_then(|m| m.as_object()).with_context(|| format!("{} has no weight_map", index_path.display()))?;
            let mut names: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
            names.sort();
            names.dedup();
            names
        } else if single.exists() {
            vec!["model.safetensors".into()]
        } else {
            bail!("{} has neither model.safetensors nor model.safetensors.index.json", dir.display());
        };
        Self::open_files(&file_names.iter().map(|name| dir.join(name)).collect::<Vec<_>>())
    }

    /// The tensors of these safetensors files, mapped (nothing is read until a tensor is asked for);
    /// a name in several files is taken from the last.
    pub fn open_files(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut location = HashMap::new();
        for path in paths {
            let file = Self::map(path)?;
            for tensor in file.metadata.tensors().keys() {
                location.insert(tensor.clone(), files.len());
            }
            files.push(file);
        }
        Ok(Self { files, location })
    }

    fn map(path: &Path) -> anyhow::Result<File> {
        let handle = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the mapping is read-only and checkpoints are not modified while a job reads them.
        let map = unsafe { Mmap::map(&handle) }.with_context(|| format!("mapping {}", path.display()))?;
        // `deserialize` checks the header and that every tensor lies inside the file (a truncated
        // download fails here, not later with a bus error).
        SafeTensors::deserialize(&map).map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file (truncated?): {e:?}", path.display()))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&map).map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
        Ok(File { path: path.to_path_buf(), map, metadata, data_start: 8 + header_len })
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.location.keys()
    }

    pub fn get(&self, name: &str) -> Option<Stored<'_>> {
        let file = &self.files[*self.location.get(name)?];
        let info = file.metadata.info(name)?;
        let (start, end) = info.data_offsets;
        Some(Stored {
            name: self.location.get_key_value(name).map(|(k, _)| k.as_str()).unwrap_or(""),
            file: &file.path,
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes: &file.map[file.data_start + start..file.data_start + end],
        })
    }

    /// Total bytes of tensor data and the dtypes present (with their byte counts).
    pub fn dtype_bytes(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for name in self.location.keys() {
            if let Some(s) = self.get(name) {
                *out.entry(format!("{:?}", s.dtype).to_lowercase()).or_default() += s.bytes.len() as u64;
            }
        }
        out
    }
}

fn expect_shape(stored: &Stored, expected: &[i64]) -> anyhow::Result<()> {
    if stored.shape_i64() != expected {
        bail!("tensor {} in {}: expected shape {expected:?}, found {:?}", stored.name, stored.file.display(), stored.shape);
    }
    Ok(())
}

/// Name of expert `e`'s `which` tensor in the per-expert layout, from the fused parameter's name
/// (`model.layers.0.mlp.experts.gate_up_proj` → `model.layers.0.block_sparse_moe.experts.3.w1.weight`).
fn per_expert_name(layout: ExpertCheckpoint, fused: &str, e: i64, which: &str) -> String {
    let experts = fused.rsplit_once('.').map_or(fused, |(module, _)| module);
    layout.disk_name(&format!("{experts}.{e}.{which}.weight"))
}

/// One parameter as the checkpoint holds it, dense (MXFP4 experts decoded), in the parameter's shape.
pub fn read_param(ckpt: &Checkpoint, param: &ParamInfo, config: &ArchConfig) -> anyhow::Result<Tensor> {
    fetch(ckpt, param, config, &mut HashSet::new())
}

/// Where one parameter comes from.
fn fetch(ckpt: &Checkpoint, param: &ParamInfo, config: &ArchConfig, used: &mut HashSet<String>) -> anyhow::Result<Tensor> {
    let layout = config.moe.checkpoint;
    let candidates = [param.name.clone(), layout.disk_name(&param.name)];
    for name in &candidates {
        if let Some(stored) = ckpt.get(name) {
            expect_shape(&stored, &param.shape)?;
            used.insert(name.clone());
            return stored.to_tensor();
        }
    }
    if param.role == Role::Expert {
        if let Some(t) = fetch_expert(ckpt, param, layout, used)? {
            return Ok(t);
        }
    }
    let packed = if param.role == Role::Expert { " (nor its MXFP4 _blocks/_scales)" } else { "" };
    bail!("checkpoint has no tensor {}{packed} (shape {:?}) for {}", candidates[1], param.shape, config.architecture.class_name())
}

/// Fused expert tensors from MXFP4 blocks/scales (any architecture) or the per-expert layout.
fn fetch_expert(ckpt: &Checkpoint, param: &ParamInfo, layout: ExpertCheckpoint, used: &mut HashSet<String>) -> anyhow::Result<Option<Tensor>> {
    if let Some(t) = fetch_mxfp4(ckpt, param, layout, used)? {
        return Ok(Some(t));
    }
    let (_, field) = param.name.rsplit_once(".experts.").context("expert parameter name")?;
    let experts = param.shape[0];
    let ExpertCheckpoint::PerExpert { gate, up, down, .. } = layout else {
        // gpt-oss in the NVFP4 export: one `[out, in]` Linear per expert, stacked and transposed.
        let module = param.name.rsplit_once('.').map_or(param.name.as_str(), |(m, _)| m);
        let (out, input) = (param.shape[2], param.shape[1]);
        let mut stacked = Vec::with_capacity(experts as usize);
        for e in 0..experts {
            let name = format!("{module}.{e}.{field}.weight");
            if ckpt.get(&name).is_none() {
                return Ok(None);
            }
            stacked.push(read_linear(ckpt, &name, [out, input], used)?);
        }
        return Ok(Some(Tensor::stack(&stacked, 0).transpose(1, 2).contiguous()));
    };
    let mut read = |e: i64, which: &str, shape: [i64; 2]| -> anyhow::Result<Tensor> {
        let name = per_expert_name(layout, &param.name, e, which);
        if ckpt.get(&name).is_none() {
            bail!("checkpoint has no tensor {name} (nor the fused {})", param.name);
        }
        read_linear(ckpt, &name, shape, used)
    };
    let (h, per) = (param.shape[2], param.shape[1]);
    let mut stacked = Vec::with_capacity(experts as usize);
    for e in 0..experts {
        let tensor = match field {
            // [2I, H] = gate rows then up rows, as transformers' MergeModulelist + Concatenate.
            "gate_up_proj" => Tensor::cat(&[read(e, gate, [per / 2, h])?, read(e, up, [per / 2, h])?], 0),
            "down_proj" => read(e, down, [per, h])?,
            _ => return Ok(None),
        };
        stacked.push(tensor);
    }
    Ok(Some(Tensor::stack(&stacked, 0)))
}

/// A Linear weight `[out, in]`, stored plainly or NVFP4-packed as modelopt exports it (`weight` u8
/// `[out, in/2]` with `weight_scale` F8_E4M3 `[out, in/16]` and `weight_scale_2` F32).
fn read_linear(ckpt: &Checkpoint, name: &str, shape: [i64; 2], used: &mut HashSet<String>) -> anyhow::Result<Tensor> {
    let stored = ckpt.get(name).with_context(|| format!("checkpoint has no tensor {name}"))?;
    used.insert(name.to_string());
    if stored.dtype != Dtype::U8 {
        expect_shape(&stored, &shape)?;
        return stored.to_tensor();
    }
    let prefix = name.strip_suffix(".weight").unwrap_or(name);
    let (scale_name, global_name) = (format!("{prefix}.weight_scale"), format!("{prefix}.weight_scale_2"));
    let (Some(scales), Some(global)) = (ckpt.get(&scale_name), ckpt.get(&global_name)) else {
        bail!("{name} is packed (U8) but {scale_name} / {global_name} are missing");
    };
    expect_shape(&stored, &[shape[0], shape[1] / 2])?;
    expect_shape(&scales, &[shape[0], shape[1] / 16])?;
    if scales.dtype != Dtype::F8_E4M3 || global.dtype != Dtype::F32 || global.bytes.len() != 4 {
        bail!("{scale_name} must be F8_E4M3 and {global_name} a F32 scalar");
    }
    let encoded = fp4::Nvfp4 {
        packed: stored.bytes.to_vec(),
        block_scales: scales.bytes.to_vec(),
        global_scale: f32::from_le_bytes(global.bytes.try_into().expect("4 bytes")),
    };
    let values = fp4::nvfp4_decode(&encoded).map_err(|m| anyhow::anyhow!("{name}: {m}"))?;
    used.insert(scale_name);
    used.insert(global_name);
    used.insert(format!("{prefix}.input_scale"));
    Ok(Tensor::from_slice(&values).view(shape))
}

/// `{name}_blocks` `[E, out, in/32, 16]` + `{name}_scales` `[E, out, in/32]`, decoded to `[E, out, in]`
/// and, for gpt-oss (whose parameters are `[E, in, out]`), transposed as `convert_moe_packed_tensors`.
fn fetch_mxfp4(ckpt: &Checkpoint, param: &ParamInfo, layout: ExpertCheckpoint, used: &mut HashSet<String>) -> anyhow::Result<Option<Tensor>> {
    let (blocks_name, scales_name) = (format!("{}_blocks", param.name), format!("{}_scales", param.name));
    let (Some(blocks), Some(scales)) = (ckpt.get(&blocks_name), ckpt.get(&scales_name)) else { return Ok(None) };
    if blocks.dtype != Dtype::U8 || scales.dtype != Dtype::U8 {
        bail!("{blocks_name} and {scales_name} must be U8, found {:?} and {:?}", blocks.dtype, scales.dtype);
    }
    let transposed = layout == ExpertCheckpoint::Fused;
    let e = param.shape[0];
    let (rows, cols) = if transposed { (param.shape[2], param.shape[1]) } else { (param.shape[1], param.shape[2]) };
    expect_shape(&blocks, &[e, rows, cols / 32, 16])?;
    expect_shape(&scales, &[e, rows, cols / 32])?;
    let values = fp4::mxfp4_decode(blocks.bytes, scales.bytes).map_err(|m| anyhow::anyhow!("{blocks_name}: {m}"))?;
    used.insert(blocks_name);
    used.insert(scales_name);
    let decoded = Tensor::from_slice(&values).view([e, rows, cols]);
    Ok(Some(if transposed { decoded.transpose(1, 2).contiguous() } else { decoded }))
}

/// Copies every parameter from the checkpoint, except those in `packed` (experts kept in FP4), which
/// `load_packed` reads. Returns the checkpoint tensors nothing used.
pub fn load_into(vars: &tch::nn::VarStore, params: &[ParamInfo], config: &ArchConfig, ckpt: &Checkpoint, packed: &mut dyn FnMut(&ParamInfo, &mut HashSet<String>) -> anyhow::Result<bool>) -> anyhow::Result<Vec<String>> {
    let variables = vars.variables();
    let mut used = HashSet::new();
    for param in params {
        if packed(param, &mut used)? {
            continue;
        }
        let source = fetch(ckpt, param, config, &mut used)?;
        // Expert parallelism: this rank's experts only.
        let source = match param.local_rows {
            Some((first, count)) => source.narrow(0, first, count),
            None => source,
        };
        let mut var = variables.get(&param.name).with_context(|| format!("model has no variable {}", param.name))?.shallow_clone();
        tch::no_grad(|| var.f_copy_(&source)).with_context(|| format!("copying {}", param.name))?;
    }
    let mut unused: Vec<String> = ckpt.names().filter(|n| !used.contains(*n)).cloned().collect();
    unused.sort();
    Ok(unused)
}

/// The packed format the checkpoint ships its routed experts in (gpt-oss: MXFP4 `_blocks`/`_scales`).
pub fn shipped_expert_format(ckpt: &Checkpoint, params: &[ParamInfo]) -> Option<PackedFormat> {
    let expert = params.iter().find(|p| p.role == Role::Expert && p.shape.len() == 3)?;
    ckpt.get(&format!("{}_blocks", expert.name)).map(|_| PackedFormat::Mxfp4)
}

/// A fused expert weight kept packed in `format` on `device`: MXFP4 blocks as shipped when the
/// checkpoint has them and MXFP4 is asked for; otherwise the dense weights, quantised expert by expert.
pub fn load_packed(ckpt: &Checkpoint, param: &ParamInfo, config: &ArchConfig, format: PackedFormat, device: tch::Device, used: &mut HashSet<String>) -> anyhow::Result<PackedExperts> {
    let transposed = matches!(config.moe.activation, ExpertActivation::GptOssClamped { .. });
    let e = param.shape[0];
    // `[experts, out, in]`: gpt-oss's parameters are `[experts, in, out]`.
    let shape = if transposed { [e, param.shape[2], param.shape[1]] } else { [e, param.shape[1], param.shape[2]] };
    let (blocks_name, scales_name) = (format!("{}_blocks", param.name), format!("{}_scales", param.name));
    if let (PackedFormat::Mxfp4, Some(blocks), Some(scales)) = (format, ckpt.get(&blocks_name), ckpt.get(&scales_name)) {
        if blocks.dtype != Dtype::U8 || scales.dtype != Dtype::U8 {
            bail!("{blocks_name} and {scales_name} must be U8, found {:?} and {:?}", blocks.dtype, scales.dtype);
        }
        let [_, out, input] = shape;
        expect_shape(&blocks, &[e, out, input / 32, 16])?;
        expect_shape(&scales, &[e, out, input / 32])?;
        let packed = PackedExperts::from_mxfp4(blocks.bytes, scales.bytes, shape, device).with_context(|| blocks_name.clone())?;
        used.insert(blocks_name);
        used.insert(scales_name);
        return Ok(packed);
    }
    let dense = fetch(ckpt, param, config, used)?;
    let dense = if transposed { dense.transpose(1, 2) } else { dense };
    PackedExperts::quantize(&dense, format, device).with_context(|| format!("quantizing {} to {}", param.name, format.as_str()))
}

/// Writes tensors as `model.safetensors`, or as `model-0000i-of-0000n.safetensors` shards plus
/// `model.safetensors.index.json` when they exceed `max_shard_bytes`. Returns the files written.
pub fn write_safetensors(dir: &Path, tensors: Vec<Owned>, max_shard_bytes: u64) -> anyhow::Result<Vec<PathBuf>> {
    let mut writer = ShardWriter::new(dir, max_shard_bytes)?;
    for tensor in tensors {
        writer.push(tensor)?;
    }
    writer.finish()
}

/// The model's parameters under the names transformers saves (per-expert tensors for Mixtral and Qwen),
/// each converted to `kind` on the host and handed to `out` in turn (one parameter in host memory).
pub fn for_each_on_disk(params: &[ParamInfo], variables: &HashMap<String, Tensor>, config: &ArchConfig, kind: Kind, mut out: impl FnMut(Owned) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let layout = config.moe.checkpoint;
    for param in params {
        let tensor = variables.get(&param.name).with_context(|| format!("model has no variable {}", param.name))?;
        match (param.role, layout) {
            (Role::Expert, ExpertCheckpoint::PerExpert { gate, up, down, .. }) => {
                let (_, field) = param.name.rsplit_once(".experts.").context("expert parameter name")?;
                for e in 0..param.shape[0] {
                    let w = tensor.get(e);
                    let name = |which: &str| per_expert_name(layout, &param.name, e, which);
                    if field == "gate_up_proj" {
                        let parts = w.chunk(2, 0);
                        out(Owned::from_tensor(name(gate), &parts[0], kind)?)?;
                        out(Owned::from_tensor(name(up), &parts[1], kind)?)?;
                    } else {
                        out(Owned::from_tensor(name(down), &w, kind)?)?;
                    }
                }
            }
            _ => out(Owned::from_tensor(layout.disk_name(&param.name), tensor, kind)?)?,
        }
    }
    Ok(())
}
