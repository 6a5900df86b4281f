//! Compiles the task catalog, `sweeps/tasks/*.toml`, into the crate, so that an installed
//! promptgrid knows its tasks without a clone beside it. Writes `$OUT_DIR/builtin_tasks.rs`: a
//! table of (file name, `include_str!` of the file), sorted by name as `Catalog::load` reads a
//! folder. Adding a task file needs no code change; the build reruns when the folder changes.

use std::error::Error;
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let dir = manifest.join("../sweeps/tasks");
    // The folder's own entry changes when a file is added or removed; each file's when edited.
    println!("cargo:rerun-if-changed={}", dir.display());
    let entries = std::fs::read_dir(&dir).map_err(|e| cannot_read(&dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| cannot_read(&dir, e))?.path();
        if path.extension().is_some_and(|x| x == "toml") {
            files.push(path);
        }
    }
    files.sort();

    let mut table = String::from(
        "/// `sweeps/tasks/*.toml` at build time: (file name, text), sorted by name.\n\
         const BUILTIN_TASKS: &[(&str, &str)] = &[\n",
    );
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = utf8(Path::new(path.file_name().unwrap_or_default()))?;
        // Debug formatting writes a valid Rust string literal, escapes included.
        writeln!(table, "    ({name:?}, include_str!({:?})),", utf8(path)?)?;
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("builtin_tasks.rs");
    std::fs::write(&out, table).map_err(|e| format!("{}: cannot write: {e}", out.display()))?;
    Ok(())
}

/// `include_str!` takes a string literal: a path that is not UTF-8 cannot be embedded.
fn utf8(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{}: the path is not UTF-8", path.display()))
}

fn cannot_read(dir: &Path, e: std::io::Error) -> String {
    format!("{}: cannot read the task catalog: {e}", dir.display())
}
