//! Embeds an rpath to libtorch's lib/ (reported by torch-sys) so the runner starts without the user
//! exporting LD_LIBRARY_PATH. torch's own libraries find their CUDA dependencies through their rpaths.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
