//! Loading libtorch's CUDA kernels.
//!
//! They live in `libtorch_cuda.so`, which registers them with the dispatcher as it loads. No
//! code of tch calls into that library, so the linker's `--as-needed` drops it from every binary
//! (torch-sys's build.rs says as much), and without it `Device::Cuda` fails with "Could not run
//! ... with arguments from the 'CUDA' backend" on a machine that has a GPU. It is loaded here,
//! once, when a CUDA device is asked for: loading it costs 0.2 s and the CUDA runtime's
//! libraries, which a CPU run has no use for.

use std::sync::OnceLock;

const LIBRARY: &str = "libtorch_cuda.so";

/// Loads libtorch's CUDA library (found through the binary's rpath, as libtorch is, or
/// `LD_LIBRARY_PATH`); the error says why it could not be, e.g. a CPU-only build of torch.
pub(crate) fn load() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED.get_or_init(open).clone()
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn open() -> Result<(), String> {
    use std::ffi::{CStr, CString};
    let name = CString::new(LIBRARY).expect("no NUL in the name");
    // SAFETY: dlopen takes a NUL-terminated name; the handle is kept open for the process's
    // life on purpose (the kernels it registers must stay). dlerror's string is read at once,
    // before another dl call on this thread could replace it.
    unsafe {
        if !libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL).is_null() {
            return Ok(());
        }
        let err = libc::dlerror();
        Err(if err.is_null() {
            format!("{LIBRARY} could not be loaded")
        } else {
            CStr::from_ptr(err).to_string_lossy().into_owned()
        })
    }
}

#[cfg(not(target_os = "linux"))]
fn open() -> Result<(), String> {
    Err(format!("loading {LIBRARY} is implemented on Linux only"))
}
