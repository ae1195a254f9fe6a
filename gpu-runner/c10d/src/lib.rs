//! torch.distributed's c10d from Rust: the TCPStore rendezvous, a process group (Gloo on CPU, NCCL
//! on CUDA) and the collectives training needs, on tch tensors. A thin layer over the engine
//! libtorch already ships (shim/c10d_shim.cpp): nothing here moves bytes itself.
//!
//! Every rank calls the same collectives in the same order; a collective returns once its result is
//! in place (the shim waits on c10d's `Work` with the group's timeout), so a rank that died shows up
//! as an error on the others instead of a hang.

mod ffi;
pub mod storage;

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::Duration;

use tch::{Device, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// c10d refused or failed (its own message: a timeout, a peer that went away, a bad argument).
    #[error("c10d: {0}")]
    C10d(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Turns the shim's error string (NULL = success) into a `Result`, freeing it.
fn check(error: *mut c_char) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null error is a NUL-terminated string the shim malloc'd for us to free.
    let message = unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned();
    unsafe { ffi::mt_free_error(error) };
    Err(Error::C10d(message))
}

fn c_string(what: &str, value: &str) -> Result<CString> {
    CString::new(value).map_err(|_| Error::Invalid(format!("{what} contains a NUL byte")))
}

fn millis(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)
}

/// The collective engine: Gloo moves CPU tensors over TCP, NCCL moves CUDA tensors over NVLink,
/// InfiniBand or TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    /// The backend for tensors on `device`.
    pub fn for_device(device: Device) -> Self {
        if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }

    /// Whether this build can create the backend (NCCL needs a CUDA libtorch at build time).
    pub fn available(self) -> bool {
        match self {
            Backend::Gloo => true,
            // SAFETY: a constant query.
            Backend::Nccl => (unsafe { ffi::mt_nccl_available() }) != 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

impl ReduceOp {
    fn code(self) -> i32 {
        match self {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        }
    }
}

/// c10d's TCPStore: the key-value store ranks rendezvous through. One rank serves it.
pub struct Store {
    raw: *mut ffi::mt_store,
}

// SAFETY: TCPStore is thread-safe; the handle is only an owning pointer.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl Store {
    /// Serves the store on `host:port` (port 0 = any free port; [`Store::port`] tells which).
    pub fn serve(host: &str, port: u16, world_size: usize, timeout: Duration) -> Result<Self> {
        Self::open(host, port, true, world_size, timeout)
    }

    /// Connects to the store a rank serves at `host:port`, retrying until `timeout`.
    pub fn connect(host: &str, port: u16, world_size: usize, timeout: Duration) -> Result<Self> {
        Self::open(host, port, false, world_size, timeout)
    }

    fn open(host: &str, port: u16, server: bool, world_size: usize, timeout: Duration) -> Result<Self> {
        let host = c_string("host", host)?;
        let world = i32::try_from(world_size).map_err(|_| Error::Invalid("world size too large".into()))?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointer; the shim sets `raw` only on success.
        check(unsafe { ffi::mt_store_new(host.as_ptr(), port, i32::from(server), world, millis(timeout), &mut raw) })?;
        Ok(Store { raw })
    }

    /// The port the store listens on (the server's bound port when it was asked for 0).
    pub fn port(&self) -> u16 {
        // SAFETY: `raw` is a live store.
        unsafe { ffi::mt_store_port(self.raw) }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: owned; process groups made from it hold their own reference to the C++ store.
        unsafe { ffi::mt_store_free(self.raw) }
    }
}

/// Where and how a rank joins its job's process group.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    /// The store's address: rank 0 serves it there, the others connect to it.
    pub host: String,
    pub port: u16,
    pub rank: usize,
    pub world_size: usize,
    /// How long joining, and then each collective, may take before it is an error.
    pub timeout: Duration,
    /// Separates process groups that share a store (e.g. one per attempt of a job).
    pub prefix: String,
    /// The address this rank's Gloo transport binds to (`None` = the address its host name resolves to).
    pub gloo_host: Option<String>,
}

/// One rank's membership of a process group.
pub struct ProcessGroup {
    raw: *mut ffi::mt_group,
    rank: usize,
    size: usize,
    backend: Backend,
}

// SAFETY: a process group may move to another thread; it is not `Sync` (collectives are issued in
// one order from one thread).
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group through `store`: returns once all `size` ranks have joined.
    pub fn new(store: &Store, prefix: &str, backend: Backend, rank: usize, size: usize, timeout: Duration, gloo_host: Option<&str>) -> Result<Self> {
        if size == 0 || rank >= size {
            return Err(Error::Invalid(format!("rank {rank} is outside a world of {size}")));
        }
        if backend == Backend::Nccl && !tch::Cuda::is_available() {
            // Refused here rather than by NCCL: a process group made without a GPU starts watchdog
            // threads that have nothing to watch and only fail later, off the caller's thread.
            return Err(Error::Invalid("NCCL needs a CUDA device and none is visible to this process".into()));
        }
        let prefix = c_string("prefix", prefix)?;
        let host = gloo_host.map(|h| c_string("gloo host", h)).transpose()?;
        let code = match backend {
            Backend::Gloo => 0,
            Backend::Nccl => 1,
        };
        let mut raw = std::ptr::null_mut();
        // SAFETY: live store, valid C strings (or NULL for the host), out-pointer set only on success.
        check(unsafe { ffi::mt_group_new(store.raw, prefix.as_ptr(), code, rank as i32, size as i32, millis(timeout), host.as_ref().map_or(std::ptr::null(), |h| h.as_ptr()), &mut raw) })?;
        Ok(ProcessGroup { raw, rank, size, backend })
    }

    /// Rank 0 serves the store at the rendezvous address, the others connect; then all join.
    pub fn join(rendezvous: &Rendezvous, backend: Backend) -> Result<Self> {
        let r = rendezvous;
        let store = if r.rank == 0 {
            Store::serve(&r.host, r.port, r.world_size, r.timeout)?
        } else {
            Store::connect(&r.host, r.port, r.world_size, r.timeout)?
        };
        Self::new(&store, &r.prefix, backend, r.rank, r.world_size, r.timeout, r.gloo_host.as_deref())
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Reduces `tensor` across ranks in place; every rank ends with the result.
    pub fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()> {
        dense("all_reduce", tensor)?;
        // SAFETY: live group and tensor.
        check(unsafe { ffi::mt_all_reduce(self.raw, tensor.as_mut_ptr(), op.code()) })
    }

    /// Copies `root`'s `tensor` into every rank's `tensor`.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        dense("broadcast", tensor)?;
        self.check_rank(root)?;
        // SAFETY: live group and tensor.
        check(unsafe { ffi::mt_broadcast(self.raw, tensor.as_mut_ptr(), root as i32) })
    }

    /// Concatenates every rank's `input` along dim 0 into `output` (`size` × `input` rows), rank order.
    pub fn all_gather(&self, output: &mut Tensor, input: &Tensor) -> Result<()> {
        dense("all_gather input", input)?;
        dense("all_gather output", output)?;
        self.expect_rows("all_gather", output, input, self.size as i64)?;
        // SAFETY: live group and tensors; c10d only reads `input`.
        check(unsafe { ffi::mt_all_gather(self.raw, output.as_mut_ptr(), input.as_ptr() as *mut _) })
    }

    /// Reduces `input` (`size` equal row blocks) across ranks; rank r receives block r in `output`.
    pub fn reduce_scatter(&self, output: &mut Tensor, input: &Tensor, op: ReduceOp) -> Result<()> {
        dense("reduce_scatter input", input)?;
        dense("reduce_scatter output", output)?;
        self.expect_rows("reduce_scatter", input, output, self.size as i64)?;
        // SAFETY: live group and tensors; c10d only reads `input`.
        check(unsafe { ffi::mt_reduce_scatter(self.raw, output.as_mut_ptr(), input.as_ptr() as *mut _, op.code()) })
    }

    /// Sends `input_splits[r]` rows of `input` (in order) to rank r and receives `output_splits[r]`
    /// rows from rank r into `output`: the token exchange of expert parallelism.
    pub fn all_to_all(&self, output: &mut Tensor, input: &Tensor, output_splits: &[i64], input_splits: &[i64]) -> Result<()> {
        dense("all_to_all input", input)?;
        dense("all_to_all output", output)?;
        self.check_splits("output", output_splits, output)?;
        self.check_splits("input", input_splits, input)?;
        // SAFETY: live group and tensors; the split arrays hold `size` entries each.
        check(unsafe { ffi::mt_all_to_all(self.raw, output.as_mut_ptr(), input.as_ptr() as *mut _, output_splits.as_ptr(), input_splits.as_ptr(), self.size as i64) })
    }

    /// [`Self::all_to_all`] into a new tensor, recorded in the autograd graph when `input` requires a
    /// gradient: the backward sends each row's gradient back to the rank the row came from. Every rank
    /// must then run its backward, since the backward is an exchange too. (A failed exchange in the
    /// backward surfaces as the backward's error.)
    pub fn all_to_all_differentiable(&self, input: &Tensor, output_splits: &[i64], input_splits: &[i64]) -> Result<Tensor> {
        self.check_splits("input", input_splits, input)?;
        if output_splits.len() != self.size || output_splits.iter().any(|&s| s < 0) {
            return Err(Error::Invalid(format!("all_to_all: output splits {output_splits:?} for a world of {}", self.size)));
        }
        let mut out = std::ptr::null_mut();
        // SAFETY: live group and tensor (the shim makes a contiguous copy when it is not); the split
        // arrays hold `size` entries each; `out` is set only on success, to a tensor tch then owns.
        check(unsafe { ffi::mt_all_to_all_differentiable(self.raw, input.as_ptr() as *mut _, output_splits.as_ptr(), input_splits.as_ptr(), self.size as i64, &mut out) })?;
        // SAFETY: a fresh at::Tensor allocated by the shim for the caller.
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// `splits` must give every rank a non-negative row count adding up to `tensor`'s rows.
    fn check_splits(&self, name: &str, splits: &[i64], tensor: &Tensor) -> Result<()> {
        if splits.len() != self.size {
            return Err(Error::Invalid(format!("all_to_all: {} {name} splits for a world of {}", splits.len(), self.size)));
        }
        let rows = tensor.size().first().copied().unwrap_or(1);
        if splits.iter().any(|&s| s < 0) || splits.iter().sum::<i64>() != rows {
            return Err(Error::Invalid(format!("all_to_all: {name} splits {splits:?} do not add up to its {rows} rows")));
        }
        Ok(())
    }

    /// Returns once every rank has reached it.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: live group.
        check(unsafe { ffi::mt_barrier(self.raw) })
    }

    fn check_rank(&self, rank: usize) -> Result<()> {
        if rank >= self.size {
            return Err(Error::Invalid(format!("rank {rank} is outside a world of {}", self.size)));
        }
        Ok(())
    }

    /// `big` must hold `factor` times the rows of `small`, with the same trailing shape and dtype.
    fn expect_rows(&self, what: &str, big: &Tensor, small: &Tensor, factor: i64) -> Result<()> {
        let (b, s) = (big.size(), small.size());
        let ok = !b.is_empty() && b.len() == s.len() && b[0] == s[0] * factor && b[1..] == s[1..] && big.kind() == small.kind();
        if !ok {
            return Err(Error::Invalid(format!("{what}: shapes {b:?} and {s:?} ({:?}, {:?}) do not match a world of {factor}", big.kind(), small.kind())));
        }
        Ok(())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: owned.
        unsafe { ffi::mt_group_free(self.raw) }
    }
}

/// c10d works on whole, contiguous buffers; a view with strides would be silently wrong or refused.
fn dense(what: &str, tensor: &Tensor) -> Result<()> {
    if !tensor.is_contiguous() {
        return Err(Error::Invalid(format!("{what}: the tensor must be contiguous")));
    }
    Ok(())
}
