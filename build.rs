//! Embeds libtorch's folder (found by the worker crate's build script) as an rpath in the
//! `promptgrid` binary and its tests, so that it starts without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_PROMPTGRID_TORCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_PROMPTGRID_TORCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
