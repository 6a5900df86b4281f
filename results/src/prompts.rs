//! Loading soft prompts from disk: plain safetensors files holding one `prompt` tensor `[L, d]`,
//! or PEFT prompt-tuning adapters (`adapter_model.safetensors` with `prompt_embeddings` next to an
//! `adapter_config.json`). Anything else is rejected with the file named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, ResultsError, io_at};

/// The tensor name promptgrid and the reference prompts use.
pub const PROMPT_TENSOR: &str = "prompt";
/// The tensor name PEFT writes for prompt tuning.
pub const PEFT_TENSOR: &str = "prompt_embeddings";

/// One soft prompt, widened to f64 once so every indicator accumulates in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub name: String,
    /// Number of soft tokens L.
    pub tokens: usize,
    /// Hidden size d.
    pub dim: usize,
    /// Row-major `[L, d]`.
    pub data: Vec<f64>,
}

impl Prompt {
    pub fn new(name: impl Into<String>, tokens: usize, dim: usize, data: Vec<f64>) -> Self {
        assert_eq!(data.len(), tokens * dim, "prompt data must be L*d");
        Self {
            name: name.into(),
            tokens,
            dim,
            data,
        }
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Reads one safetensors file and returns tensor `name` as a prompt named `task`.
fn read_tensor(path: &Path, tensor: &str, task: &str) -> Result<Prompt> {
    let bad = |message: String| ResultsError::Prompt {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(io_at(path))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
    let names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    if names.len() != 1 || names[0] != tensor {
        return Err(bad(format!(
            "expected exactly one tensor named `{tensor}`, found {names:?}"
        )));
    }
    let view = st.tensor(tensor).map_err(|e| bad(e.to_string()))?;
    let shape = view.shape().to_vec();
    // PEFT stores [L, d]; some exporters keep a leading batch axis of 1.
    let (tokens, dim) = match shape.as_slice() {
        [l, d] => (*l, *d),
        [1, l, d] => (*l, *d),
        _ => {
            return Err(bad(format!(
                "tensor `{tensor}` has shape {shape:?}, expected [L, d]"
            )));
        }
    };
    if tokens == 0 || dim == 0 {
        return Err(bad(format!("tensor `{tensor}` is empty (shape {shape:?})")));
    }
    let raw = view.data();
    let data: Vec<f64> = match view.dtype() {
        Dtype::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => raw
            .chunks_exact(2)
            .map(|c| f16_to_f64(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::BF16 => raw
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
            .collect(),
        other => {
            return Err(bad(format!(
                "tensor `{tensor}` has dtype {other:?}, expected a float type"
            )));
        }
    };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!(
            "tensor `{tensor}` holds a non-finite value at flat index {i}"
        )));
    }
    Ok(Prompt::new(task, tokens, dim, data))
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 => {
            if frac == 0.0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Loads one prompt: a `<task>.safetensors` file or a PEFT adapter folder named after the task.
pub fn load_prompt(path: &Path) -> Result<Prompt> {
    let task = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| ResultsError::Prompt {
            path: path.to_path_buf(),
            message: "no task name in the file name".into(),
        })?
        .to_string();
    if path.is_dir() {
        let config = path.join("adapter_config.json");
        let text = std::fs::read_to_string(&config).map_err(io_at(&config))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ResultsError::Json {
                path: config.clone(),
                source,
            })?;
        let peft = json.get("peft_type").and_then(|v| v.as_str()).unwrap_or("");
        if peft != "PROMPT_TUNING" {
            return Err(ResultsError::Prompt {
                path: config,
                message: format!("peft_type is {peft:?}, expected \"PROMPT_TUNING\""),
            });
        }
        let prompt = read_tensor(&path.join("adapter_model.safetensors"), PEFT_TENSOR, &task)?;
        if let Some(l) = json.get("num_virtual_tokens").and_then(|v| v.as_u64())
            && l as usize != prompt.tokens
        {
            return Err(ResultsError::Prompt {
                path: config,
                message: format!(
                    "num_virtual_tokens is {l} but the tensor has {} rows",
                    prompt.tokens
                ),
            });
        }
        Ok(prompt)
    } else {
        read_tensor(path, PROMPT_TENSOR, &task)
    }
}

/// Loads every prompt of a folder (files `*.safetensors` and PEFT adapter folders), sorted by task
/// name. All prompts must share one shape: they are prompts of one model.
pub fn load_prompt_dir(dir: &Path) -> Result<Vec<Prompt>> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let path = entry.map_err(io_at(dir))?.path();
        let is_prompt = if path.is_dir() {
            path.join("adapter_config.json").exists()
        } else {
            path.extension().is_some_and(|e| e == "safetensors")
        };
        if !is_prompt {
            continue;
        }
        let task = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if let Some(prev) = found.insert(task.clone(), path.clone()) {
            return Err(ResultsError::Prompts {
                dir: dir.to_path_buf(),
                message: format!(
                    "task {task} has two prompts: {} and {}",
                    prev.display(),
                    path.display()
                ),
            });
        }
    }
    if found.is_empty() {
        return Err(ResultsError::Prompts {
            dir: dir.to_path_buf(),
            message: "no *.safetensors prompt and no PEFT adapter folder".into(),
        });
    }
    let prompts = found
        .values()
        .map(|p| load_prompt(p))
        .collect::<Result<Vec<_>>>()?;
    let (l, d) = (prompts[0].tokens, prompts[0].dim);
    if let Some(p) = prompts.iter().find(|p| (p.tokens, p.dim) != (l, d)) {
        return Err(ResultsError::Prompts {
            dir: dir.to_path_buf(),
            message: format!(
                "prompt {} is [{}, {}] but {} is [{l}, {d}]; indicators compare prompts of one model",
                p.name, p.tokens, p.dim, prompts[0].name
            ),
        });
    }
    Ok(prompts)
}
