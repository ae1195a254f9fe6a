//! Writing a checkpoint as it is produced: tensors go into the current shard, which is written to disk
//! once the next tensor would take it over the size limit, so at most one shard's bytes are in memory
//! (never the whole model). `finish` names the shards as transformers does (`model.safetensors`, or
//! `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use tch::{Kind, Tensor};

pub struct ShardWriter {
    dir: PathBuf,
    max_shard_bytes: u64,
    pending: Vec<Owned>,
    pending_bytes: u64,
    /// Shards written so far under temporary names, with the tensors each holds.
    written: Vec<(PathBuf, Vec<String>)>,
    total_bytes: u64,
}

impl ShardWriter {
    pub fn new(dir: &Path, max_shard_bytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_path_buf(), max_shard_bytes, pending: Vec::new(), pending_bytes: 0, written: Vec::new(), total_bytes: 0 })
    }

    pub fn push(&mut self, tensor: Owned) -> anyhow::Result<()> {
        let len = tensor.bytes.len() as u64;
        if self.pending_bytes + len > self.max_shard_bytes && !self.pending.is_empty() {
            self.flush()?;
        }
        self.pending_bytes += len;
        self.total_bytes += len;
        self.pending.push(tensor);
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let path = self.dir.join(format!("shard-{}.partial", self.written.len()));
        self.pending.sort_by(|a, b| a.name.cmp(&b.name));
        write_file(&path, &self.pending)?;
        self.written.push((path, self.pending.drain(..).map(|t| t.name).collect()));
        self.pending_bytes = 0;
        Ok(())
    }

    /// Writes the last shard, gives every shard its final name and writes the index when there are
    /// several. Returns the files.
    pub fn finish(mut self) -> anyhow::Result<Vec<PathBuf>> {
        if !self.pending.is_empty() || self.written.is_empty() {
            self.flush()?;
        }
        let count = self.written.len();
        let mut files = Vec::new();
        let mut weight_map = BTreeMap::new();
        for (i, (partial, names)) in self.written.iter().enumerate() {
            let file_name = if count == 1 { "model.safetensors".to_string() } else { format!("model-{:05}-of-{count:05}.safetensors", i + 1) };
            let path = self.dir.join(&file_name);
            std::fs::rename(partial, &path)?;
            weight_map.extend(names.iter().map(|n| (n.clone(), file_name.clone())));
            files.push(path);
        }
        if count > 1 {
            let index = serde_json::json!({ "metadata": { "total_size": self.total_bytes }, "weight_map": weight_map });
            let path = self.dir.join("model.safetensors.index.json");
            std::fs::write(&path, serde_json::to_vec_pretty(&index)?)?;
            files.push(path);
        }
        Ok(files)
    }
}

/// A tensor's bytes on the host, ready to be written to a safetensors file.
pub struct Owned {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Owned {
    pub fn from_tensor(name: String, tensor: &Tensor, kind: Kind) -> anyhow::Result<Self> {
        let t = tensor.detach().to_device(tch::Device::Cpu).to_kind(kind).contiguous();
        let dtype = match kind {
            Kind::Float => Dtype::F32,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Half => Dtype::F16,
            Kind::Uint8 => Dtype::U8,
            Kind::Int64 => Dtype::I64,
            other => bail!("cannot write {other:?} tensors"),
        };
        let mut bytes = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, t.numel())?;
        Ok(Self { name, dtype, shape: t.size().iter().map(|&d| d as usize).collect(), bytes })
    }
}

/// Writes tensors to the file `path`, with `{"format": "pt"}` metadata as transformers writes it.
pub fn write_file(path: &Path, tensors: &[Owned]) -> anyhow::Result<()> {
    let views = tensors
        .iter()
        .map(|t| Ok((t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.bytes)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path).with_context(|| format!("writing {}", path.display()))
}
