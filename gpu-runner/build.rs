//! Embeds an rpath to libtorch's lib/ (reported by torch-sys) so the runner starts without the user
//! exporting LD_LIBRARY_PATH. torch's own libraries find their CUDA dependencies through their rpaths.
//!
//! With a CUDA build of libtorch it also links `libtorch_cuda` explicitly: nothing in the binary
//! references its symbols (the CUDA kernels register themselves when it loads), so the default
//! `--as-needed` link drops it and `tch::Cuda::is_available()` is false even on a GPU machine.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
