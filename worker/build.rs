//! Build script of the worker: the libtorch rpath of every torch-linking crate (../rpath.rs),
//! and what the worker records as the provenance of its jobs: the git commit it is built from
//! (`PROMPTGRID_COMMIT`) and the libtorch version it links (`PROMPTGRID_TORCH`). A build from
//! a tarball has no git: set `PROMPTGRID_COMMIT` in the environment, or it reads `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../rpath.rs"]
mod rpath;

fn main() {
    rpath::main();
    if let Some(commit) = commit() {
        println!("cargo:rustc-env=PROMPTGRID_COMMIT={commit}");
    }
    if let Some(torch) = torch_version() {
        println!("cargo:rustc-env=PROMPTGRID_TORCH={torch}");
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The environment's `PROMPTGRID_COMMIT`, else `git rev-parse HEAD`; reruns when HEAD moves.
fn commit() -> Option<String> {
    println!("cargo:rerun-if-env-changed=PROMPTGRID_COMMIT");
    if let Ok(commit) = std::env::var("PROMPTGRID_COMMIT") {
        return Some(commit);
    }
    // HEAD names the branch; the branch's ref file (or packed-refs) moves on a commit.
    let mut watch = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        watch.push(Path::new(&dir).join("HEAD"));
    }
    if let Some(dir) = git(&["rev-parse", "--git-common-dir"]) {
        watch.push(Path::new(&dir).join("packed-refs"));
        if let Some(name) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(Path::new(&dir).join(name));
        }
    }
    // Cargo reruns a build script on every build while a watched path is missing (a clone
    // without packed-refs, a branch only in packed-refs), which would relink every test binary.
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    git(&["rev-parse", "HEAD"])
}

/// libtorch's version: torch-sys hands over its lib folder; a pip torch keeps the version in
/// `version.py` beside it, a libtorch download in `build-version`.
fn torch_version() -> Option<String> {
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").ok()?);
    let root = lib.parent()?;
    let pip = std::fs::read_to_string(root.join("version.py"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
        });
    pip.or_else(|| {
        std::fs::read_to_string(root.join("build-version"))
            .ok()
            .map(|v| v.trim().to_string())
    })
    .filter(|v| !v.is_empty())
}
