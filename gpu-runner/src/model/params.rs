//! Creating parameters by their transformers names. The same model-building code either allocates real
//! tensors in a `VarStore` or only records names and shapes (for `inspect`, which must work on models far
//! larger than this machine's memory).

use std::cell::RefCell;

use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

/// What a parameter is for: LoRA targets, QAT, freezing and parameter counts select by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Embedding,
    Attention,
    Norm,
    Router,
    /// Routed experts (fused 3-D tensors, first dimension = expert).
    Expert,
    SharedExpert,
    DenseMlp,
    LmHead,
}

#[derive(Debug, Clone)]
pub struct ParamInfo {
    pub name: String,
    /// The whole parameter's shape, as checkpoints hold it.
    pub shape: Vec<i64>,
    pub role: Role,
    /// Under expert parallelism, the rows of the first dimension (experts) this rank holds: `(first,
    /// count)`. `None`: the whole parameter.
    pub local_rows: Option<(i64, i64)>,
}

impl ParamInfo {
    pub fn numel(&self) -> i64 {
        self.shape.iter().product()
    }
}

enum Target<'a> {
    Vars(nn::Path<'a>),
    Shapes,
}

/// Hands out parameters under a name prefix.
pub struct Params<'a> {
    target: Target<'a>,
    prefix: String,
    recorded: &'a RefCell<Vec<ParamInfo>>,
    /// Every parameter starts at zero, whatever its initialisation (values copied in next).
    zeroed: bool,
}

impl<'a> Params<'a> {
    pub fn vars(root: nn::Path<'a>, recorded: &'a RefCell<Vec<ParamInfo>>) -> Self {
        Self { target: Target::Vars(root), prefix: String::new(), recorded, zeroed: false }
    }

    /// Like [`Params::vars`], every parameter allocated as zeros: for a model whose values are all
    /// copied in at once, where drawing a random initialisation would only cost time.
    pub fn zeroed_vars(root: nn::Path<'a>, recorded: &'a RefCell<Vec<ParamInfo>>) -> Self {
        Self { zeroed: true, ..Self::vars(root, recorded) }
    }

    pub fn shapes_only(recorded: &'a RefCell<Vec<ParamInfo>>) -> Self {
        Self { target: Target::Shapes, prefix: String::new(), recorded, zeroed: false }
    }

    /// A child prefix: `p.sub("model").sub(3)` names `model.3.…`.
    pub fn sub<T: ToString>(&self, name: T) -> Params<'a> {
        let target = match &self.target {
            Target::Vars(path) => Target::Vars(path.sub(name.to_string())),
            Target::Shapes => Target::Shapes,
        };
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{}", self.prefix, name.to_string()) };
        Params { target, prefix, recorded: self.recorded, zeroed: self.zeroed }
    }

    /// The full name a parameter `leaf` created here gets.
    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() { leaf.to_string() } else { format!("{}.{leaf}", self.prefix) }
    }

    /// A parameter initialised like transformers does (`init`); routers are created non-trainable
    /// because SFT keeps them frozen unless a job asks otherwise (docs/design.md).
    pub fn param(&self, name: &str, shape: &[i64], role: Role, init: Init) -> Tensor {
        self.param_rows(name, shape, None, role, init)
    }

    /// A parameter of which this rank holds only `rows` (`(first, count)`) of the first dimension
    /// (expert parallelism); recorded with its whole `shape`.
    pub fn param_rows(&self, name: &str, shape: &[i64], rows: Option<(i64, i64)>, role: Role, init: Init) -> Tensor {
        let full = self.name(name);
        self.recorded.borrow_mut().push(ParamInfo { name: full, shape: shape.to_vec(), role, local_rows: rows });
        let mut held = shape.to_vec();
        if let Some((_, count)) = rows {
            held[0] = count;
        }
        match &self.target {
            Target::Shapes => Tensor::zeros([0], (Kind::Float, Device::Cpu)),
            Target::Vars(path) => {
                let init = if self.zeroed { Init::Const(0.0) } else { init };
                let tensor = nn::f_init(init, &held, path.device(), path.kind()).expect("allocating a parameter");
                path.add(name, tensor, role != Role::Router)
            }
        }
    }

    /// A parameter recorded with its full shape but created empty and frozen: its values arrive later
    /// in another form (experts kept packed in FP4), so its dense size is never allocated.
    pub fn placeholder(&self, name: &str, shape: &[i64], role: Role) -> Tensor {
        let full = self.name(name);
        self.recorded.borrow_mut().push(ParamInfo { name: full, shape: shape.to_vec(), role, local_rows: None });
        match &self.target {
            Target::Shapes => Tensor::zeros([0], (Kind::Float, Device::Cpu)),
            Target::Vars(path) => path.add(name, Tensor::zeros([0], (path.kind(), path.device())), false),
        }
    }

    /// `[out, in]` linear weight, N(0, 0.02) as transformers' `_init_weights`.
    pub fn linear(&self, name: &str, out_features: i64, in_features: i64, role: Role) -> Tensor {
        self.sub(name).param("weight", &[out_features, in_features], role, normal())
    }

    pub fn bias(&self, name: &str, size: i64, role: Role) -> Tensor {
        self.sub(name).param("bias", &[size], role, Init::Const(0.0))
    }

    pub fn norm(&self, name: &str, size: i64) -> Tensor {
        self.sub(name).param("weight", &[size], Role::Norm, Init::Const(1.0))
    }
}

pub fn normal() -> Init {
    Init::Randn { mean: 0.0, stdev: 0.02 }
}
