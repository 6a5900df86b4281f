//! Build script of every crate whose binaries link libtorch (the CLI, `ml`, `worker`): embeds
//! libtorch's folder, which torch-sys found, as an rpath in the crate's binaries and test
//! binaries, so that nothing needs LD_LIBRARY_PATH at run time. torch-sys publishes the folder
//! (`links = "tch"`) only to crates that depend on it directly, hence the direct dependency.
pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
