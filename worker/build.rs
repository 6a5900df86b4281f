//! Embeds libtorch's folder as an rpath in this crate's test binaries, and hands it on to the
//! binary crate, so that nothing needs LD_LIBRARY_PATH at run time.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:libtorch_lib={lib}");
    }
}
