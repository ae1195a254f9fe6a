//! Compiles the C++ shim against the headers of the libtorch torch-sys links (reported by torch-sys
//! as `DEP_TCH_LIBTORCH_LIB`; the headers sit beside it in `../include`, in a libtorch archive and in
//! a PyTorch wheel alike). c10d itself (TCPStore, ProcessGroupGloo, ProcessGroupNCCL) is part of
//! libtorch_cpu / libtorch_cuda: nothing new is linked.
//!
//! ProcessGroupGloo.hpp includes gloo's headers, which libtorch links but neither a PyTorch wheel nor
//! a libtorch archive ships: they come from the system (Debian's `libgloo-dev`, installed by the
//! deploy scripts), whose gloo is older than the one inside libtorch. The shim uses them for
//! declarations only: every gloo object ProcessGroupGloo holds is behind a pointer, the shim calls
//! no gloo code (the group is built by libtorch's own constructor and every collective goes through
//! c10d's `Backend` interface), and the one gloo-typed thing it handles is the `shared_ptr` to the
//! transport device libtorch creates. The collective tests check the result.
//!
//! The NCCL process group is compiled only when libtorch is a CUDA build and a CUDA toolkit's headers
//! and `nccl.h` are found (`CUDA_HOME`, /usr/local/cuda, the `nvidia-*` wheels beside torch); without
//! it, asking for NCCL is an error at run time.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=shim/c10d_shim.cpp");
    println!("cargo:rerun-if-changed=shim/c10d_shim.h");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys reports the libtorch lib directory"));
    let include = lib.parent().expect("libtorch lib directory has a parent").join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    let gloo = std::env::var("GLOO_INCLUDE").map(PathBuf::from).ok();
    let gloo_found = gloo.iter().chain([&PathBuf::from("/usr/include"), &PathBuf::from("/usr/local/include")]).any(|dir| dir.join("gloo/algorithm.h").exists());
    if !gloo_found {
        panic!("gloo's headers are missing (gloo/algorithm.h): install Debian's libgloo-dev (deploy/lib.sh does), or set GLOO_INCLUDE to a directory holding gloo/");
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .includes(gloo)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_C10D_GLOO", None)
        .file("shim/c10d_shim.cpp");
    if lib.join("libtorch_cuda.so").exists() {
        if let Some(cuda) = cuda_includes(&lib) {
            build.define("USE_C10D_NCCL", None).define("MOETUNE_NCCL", None).includes(cuda);
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        } else {
            println!("cargo:warning=CUDA libtorch without a CUDA toolkit's headers (set CUDA_HOME): NCCL left out, Gloo only");
        }
    }
    build.compile("moetune_c10d_shim");
    // This crate's own tests find libtorch without LD_LIBRARY_PATH (the runner's build script does the
    // same for the runner's binaries).
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}

/// Include directories holding a CUDA toolkit's runtime headers and `nccl.h` (the `nvidia-*` wheels
/// alone lack `crt/`, which the CUDA runtime headers include).
fn cuda_includes(lib: &Path) -> Option<Vec<PathBuf>> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(home) = std::env::var("CUDA_HOME") {
        candidates.push(PathBuf::from(home).join("include"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    // A PyTorch wheel: site-packages/torch/lib → site-packages/nvidia/*/include.
    if let Some(site) = lib.parent().and_then(Path::parent) {
        if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
            candidates.extend(entries.flatten().map(|e| e.path().join("include")));
        }
    }
    candidates.push(PathBuf::from("/usr/include"));
    let has = |file: &str| candidates.iter().any(|dir| dir.join(file).exists());
    (has("cuda_runtime_api.h") && has("crt/host_config.h") && has("nccl.h")).then(|| candidates.into_iter().filter(|d| d.exists()).collect())
}
