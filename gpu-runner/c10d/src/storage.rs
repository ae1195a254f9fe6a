//! Parameter storage that comes and goes, for fully sharded weights: tch can neither take nor set a
//! parameter's gradient, and the shim (built against the same torch headers) can.

use tch::Tensor;

use super::{check, ffi, Error, Result};

/// Points `param` at `data`'s storage, shape, strides and device, keeping its autograd state (whether
/// it requires a gradient, the gradient it holds). `data` must be of the same dtype.
pub fn set_data(param: &Tensor, data: &Tensor) -> Result<()> {
    if param.kind() != data.kind() {
        return Err(Error::Invalid(format!("set_data: a {:?} parameter cannot hold {:?} values", param.kind(), data.kind())));
    }
    // SAFETY: live tensors; the shim only swaps `param`'s storage for a reference to `data`'s.
    check(unsafe { ffi::mt_set_data(param.as_ptr() as *mut _, data.as_ptr() as *mut _) })
}

/// `param`'s accumulated gradient, moved out: afterwards it has none, so the next backward starts a
/// new one (and the memory goes with the returned tensor).
pub fn take_grad(param: &Tensor) -> Result<Option<Tensor>> {
    let mut out = std::ptr::null_mut();
    // SAFETY: live tensor; `out` is set on success to a new at::Tensor tch then owns.
    check(unsafe { ffi::mt_take_grad(param.as_ptr() as *mut _, &mut out) })?;
    // SAFETY: a fresh at::Tensor allocated by the shim for the caller (possibly undefined).
    let grad = unsafe { Tensor::from_ptr(out) };
    Ok(grad.defined().then_some(grad))
}

/// Adds `grad` to `param`'s gradient (a copy of it becomes the gradient when there is none).
pub fn accumulate_grad(param: &Tensor, grad: &Tensor) -> Result<()> {
    if param.size() != grad.size() || param.kind() != grad.kind() || param.device() != grad.device() {
        return Err(Error::Invalid(format!("accumulate_grad: a {:?} {:?} gradient for a {:?} {:?} parameter", grad.size(), grad.kind(), param.size(), param.kind())));
    }
    // SAFETY: live tensors of matching shape, dtype and device.
    check(unsafe { ffi::mt_accumulate_grad(param.as_ptr() as *mut _, grad.as_ptr() as *mut _) })
}
