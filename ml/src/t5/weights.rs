//! Reading a T5 checkpoint into a frozen `VarStore`: every tensor the config calls for is taken
//! by its checkpoint key, and whatever is missing, misshapen or left over is reported together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor, nn};

use crate::{MlError, MlResult};

/// Checkpoint tensors that transformers itself ignores or derives from `shared.weight`.
const IGNORED: [&str; 3] = [
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    // Older checkpoints carry an unused bias table in the decoder's first cross-attention.
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
];

/// The tensors of a checkpoint not yet placed in the model, and the problems found so far.
pub(super) struct Weights {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    device: Device,
    problems: Vec<String>,
}

impl Weights {
    /// Reads `model.safetensors`, or the shards that `model.safetensors.index.json` lists.
    pub(super) fn read(dir: &Path, device: Device) -> MlResult<Weights> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files = if single.exists() || !index.exists() {
            vec![single.clone()]
        } else {
            shard_files(&index)?
        };
        let mut tensors = BTreeMap::new();
        for file in &files {
            if !file.exists() {
                return Err(MlError::MissingFile { path: file.clone() });
            }
            let read = Tensor::read_safetensors(file).map_err(|e| MlError::Safetensors {
                path: file.clone(),
                message: e.to_string(),
            })?;
            tensors.extend(read);
        }
        strip_prefix(&mut tensors);
        Ok(Weights {
            path: if files.len() == 1 { single } else { index },
            tensors,
            device,
            problems: vec![],
        })
    }

    /// Whether the checkpoint holds `key` (not yet taken).
    pub(super) fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Moves the tensor `p.name` into the var store under the same key, as a frozen float32
    /// variable on the model's device. A missing or misshapen tensor is recorded and replaced by
    /// an empty placeholder; [`Weights::finish`] then fails.
    pub(super) fn take(&mut self, p: &nn::Path, name: &str, shape: &[i64]) -> Tensor {
        let key = p.path(name);
        let tensor = match self.tensors.remove(&key) {
            Some(t) if t.size() == shape && t.is_floating_point() => {
                t.to_kind(Kind::Float).to_device(self.device)
            }
            Some(t) => {
                self.problems.push(format!(
                    "{key}: {:?} of shape {:?}, expected float of shape {shape:?}",
                    t.kind(),
                    t.size()
                ));
                Tensor::zeros([0], (Kind::Float, self.device))
            }
            None => {
                self.problems
                    .push(format!("{key}: missing, expected shape {shape:?}"));
                Tensor::zeros([0], (Kind::Float, self.device))
            }
        };
        p.add(name, tensor, false)
    }

    /// Moves the tensor `key` out as `p.name` if the checkpoint has it (the embedding fallback).
    pub(super) fn rename(&mut self, key: &str, to: &str) {
        if let Some(t) = self.tensors.remove(key) {
            self.tensors.insert(to.to_string(), t);
        }
    }

    /// Fails with every problem found, and every tensor the model did not use.
    pub(super) fn finish(mut self) -> MlResult<()> {
        for key in IGNORED {
            self.tensors.remove(key);
        }
        for (key, t) in &self.tensors {
            self.problems
                .push(format!("{key}: unexpected tensor of shape {:?}", t.size()));
        }
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(MlError::WeightsMismatch {
                path: self.path,
                details: self.problems,
            })
        }
    }
}

/// Removes a `model.` / `transformer.` (T5's `base_model_prefix`) prefix that some exports put
/// in front of every key, once, so that the rest of loading sees transformers' own names.
fn strip_prefix(tensors: &mut BTreeMap<String, Tensor>) {
    if tensors.contains_key("shared.weight") || tensors.contains_key("encoder.embed_tokens.weight")
    {
        return;
    }
    for prefix in ["model.", "transformer."] {
        if tensors.contains_key(&format!("{prefix}shared.weight")) {
            *tensors = std::mem::take(tensors)
                .into_iter()
                .map(|(k, v)| match k.strip_prefix(prefix) {
                    Some(rest) => (rest.to_string(), v),
                    None => (k, v),
                })
                .collect();
            return;
        }
    }
}

/// The distinct files of a sharded checkpoint's `weight_map`, in order.
fn shard_files(index: &Path) -> MlResult<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| MlError::io(index, e))?;
    let parsed: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| MlError::Safetensors {
            path: index.into(),
            message: e.to_string(),
        })?;
    let map = parsed
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| MlError::Safetensors {
            path: index.into(),
            message: "no weight_map object".into(),
        })?;
    let mut files: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
    files.sort_unstable();
    files.dedup();
    let dir = index.parent().unwrap_or(Path::new("."));
    // Shard names come from the file; keep them inside the model folder.
    files
        .into_iter()
        .map(|f| {
            if Path::new(f).components().count() == 1 {
                Ok(dir.join(f))
            } else {
                Err(MlError::Safetensors {
                    path: index.into(),
                    message: format!("shard {f:?} is not a file name"),
                })
            }
        })
        .collect()
}
