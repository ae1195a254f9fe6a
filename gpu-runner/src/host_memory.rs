//! How the runner's process keeps host memory it frees (glibc malloc settings).
//!
//! A training step on the CPU allocates and frees the same large tensors every step (activations,
//! logits, gradients: tens to hundreds of MB each). glibc serves any allocation above 32 MB — the
//! largest mmap threshold it accepts — with a fresh `mmap` and unmaps it on free, so every step paid
//! to fault in and zero those pages again: 15 % of a LoRA step of the benchmark's tiny MoE was the
//! kernel's page-fault path (`clear_page_erms`), measured with `perf record -e cpu-clock`. Serving
//! every size from the heap and never trimming it lets each step reuse the previous step's pages.
//! The cost: the process keeps its high-water mark of host memory until it exits, which is what a
//! runner that trains one job after another wants anyway (the next job reuses it).

/// Applies the settings; call first thing in `main`, before large allocations. Settings given in the
/// environment (`MALLOC_MMAP_MAX_`, `MALLOC_TRIM_THRESHOLD_`) are left alone.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters, under glibc's arena lock.
        unsafe {
            if std::env::var_os("MALLOC_MMAP_MAX_").is_none() {
                libc::mallopt(libc::M_MMAP_MAX, 0);
            }
            if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        }
    }
}
