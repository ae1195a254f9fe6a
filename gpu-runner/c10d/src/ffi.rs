//! The shim's C interface (shim/c10d_shim.h).
use std::os::raw::{c_char, c_int};
use torch_sys::C_tensor;

#[repr(C)]
pub struct mt_store {
    _private: [u8; 0],
}

#[repr(C)]
pub struct mt_group {
    _private: [u8; 0],
}

extern "C" {
    pub fn mt_free_error(error: *mut c_char);
    pub fn mt_store_new(host: *const c_char, port: u16, is_server: c_int, world_size: c_int, timeout_ms: i64, out: *mut *mut mt_store) -> *mut c_char;
    pub fn mt_store_port(store: *const mt_store) -> u16;
    pub fn mt_store_free(store: *mut mt_store);
    pub fn mt_group_new(store: *mut mt_store, prefix: *const c_char, backend: c_int, rank: c_int, size: c_int, timeout_ms: i64, gloo_host: *const c_char, out: *mut *mut mt_group) -> *mut c_char;
    pub fn mt_group_free(group: *mut mt_group);
    pub fn mt_nccl_available() -> c_int;
    pub fn mt_all_reduce(group: *mut mt_group, tensor: *mut C_tensor, op: c_int) -> *mut c_char;
    pub fn mt_broadcast(group: *mut mt_group, tensor: *mut C_tensor, root: c_int) -> *mut c_char;
    pub fn mt_all_gather(group: *mut mt_group, output: *mut C_tensor, input: *mut C_tensor) -> *mut c_char;
    pub fn mt_reduce_scatter(group: *mut mt_group, output: *mut C_tensor, input: *mut C_tensor, op: c_int) -> *mut c_char;
    pub fn mt_all_to_all(group: *mut mt_group, output: *mut C_tensor, input: *mut C_tensor, output_splits: *const i64, input_splits: *const i64, splits: i64) -> *mut c_char;
    pub fn mt_all_to_all_differentiable(group: *mut mt_group, input: *mut C_tensor, output_splits: *const i64, input_splits: *const i64, splits: i64, out: *mut *mut C_tensor) -> *mut c_char;
    pub fn mt_barrier(group: *mut mt_group) -> *mut c_char;
    pub fn mt_set_data(tensor: *mut C_tensor, data: *mut C_tensor) -> *mut c_char;
    pub fn mt_take_grad(tensor: *mut C_tensor, out: *mut *mut C_tensor) -> *mut c_char;
    pub fn mt_accumulate_grad(tensor: *mut C_tensor, grad: *mut C_tensor) -> *mut c_char;
}
