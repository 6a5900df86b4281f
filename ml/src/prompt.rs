//! Prompt files: a safetensors file holding `prompt` [L, d] (float32) with string metadata
//! (model, task, steps, score), and the export to a PEFT prompt-tuning adapter.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::error::{MlError, MlResult};

/// The tensor name of the prompt inside a prompt file.
pub const PROMPT_KEY: &str = "prompt";

/// A trained (or initial) soft prompt with what it came from.
#[derive(Debug)]
pub struct PromptFile {
    /// [L, d], float32, on the CPU.
    pub prompt: Tensor,
    /// `model`, `task`, `steps`, `score` and anything else worth keeping; sorted, so the
    /// file's bytes do not depend on the order of insertion.
    pub metadata: BTreeMap<String, String>,
}

impl PromptFile {
    pub fn new(
        prompt: &Tensor,
        model: &str,
        task: &str,
        steps: usize,
        score: Option<f64>,
    ) -> PromptFile {
        let mut metadata = BTreeMap::new();
        metadata.insert("model".into(), model.to_string());
        metadata.insert("task".into(), task.to_string());
        metadata.insert("steps".into(), steps.to_string());
        if let Some(score) = score {
            metadata.insert("score".into(), format!("{score}"));
        }
        PromptFile {
            prompt: prompt.detach().to_device(Device::Cpu).to_kind(Kind::Float),
            metadata,
        }
    }

    pub fn save(&self, path: &Path) -> MlResult<()> {
        write_tensors(path, &[(PROMPT_KEY, &self.prompt)], Some(&self.metadata))
    }

    /// Reads a prompt file; `expected_width` (the model's hidden size) is checked when given.
    pub fn load(path: &Path, expected_width: Option<i64>) -> MlResult<PromptFile> {
        let (mut tensors, metadata) = read_tensors(path)?;
        let prompt = tensors
            .remove(PROMPT_KEY)
            .ok_or_else(|| MlError::Safetensors {
                path: path.into(),
                message: format!("no tensor named {PROMPT_KEY:?}"),
            })?;
        let size = prompt.size();
        if size.len() != 2 {
            return Err(MlError::PromptWidth {
                what: format!("{} (shape {size:?}, expected [L, d])", path.display()),
                got: *size.last().unwrap_or(&0),
                expected: expected_width.unwrap_or(0),
            });
        }
        if let Some(width) = expected_width.filter(|w| *w != size[1]) {
            return Err(MlError::PromptWidth {
                what: path.display().to_string(),
                got: size[1],
                expected: width,
            });
        }
        let prompt = prompt.to_kind(Kind::Float);
        check_finite(&prompt, path, PROMPT_KEY)?;
        Ok(PromptFile { prompt, metadata })
    }

    /// Writes a PEFT prompt-tuning adapter folder (`adapter_config.json` +
    /// `adapter_model.safetensors` with `prompt_embeddings`) that `PeftModel.from_pretrained`
    /// loads on `base_model` (a name or path recorded as `base_model_name_or_path`).
    pub fn export_peft(
        &self,
        dir: &Path,
        base_model: &str,
        num_layers: i64,
        num_heads: i64,
    ) -> MlResult<()> {
        std::fs::create_dir_all(dir).map_err(|e| MlError::io(dir, e))?;
        let size = self.prompt.size();
        let config = serde_json::json!({
            "peft_type": "PROMPT_TUNING",
            "task_type": null,
            "base_model_name_or_path": base_model,
            "inference_mode": true,
            "num_virtual_tokens": size[0],
            "token_dim": size[1],
            "num_transformer_submodules": 1,
            "num_attention_heads": num_heads,
            "num_layers": num_layers,
            "prompt_tuning_init": "RANDOM",
            "prompt_tuning_init_text": null,
            "tokenizer_name_or_path": null,
            "tokenizer_kwargs": null,
            "revision": null,
        });
        let path = dir.join("adapter_config.json");
        let text =
            serde_json::to_string_pretty(&config).map_err(|e| MlError::Invalid(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| MlError::io(&path, e))?;
        write_tensors(
            &dir.join("adapter_model.safetensors"),
            &[("prompt_embeddings", &self.prompt)],
            None,
        )
    }
}

/// Refuses a tensor read from `path` that holds NaN or infinity: a NaN prompt scores a
/// plausible-looking accuracy (every readout ties), a NaN projector projects NaN prompts.
pub(crate) fn check_finite(t: &Tensor, path: &Path, name: &str) -> MlResult<()> {
    let bad = t.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]) as usize;
    if bad > 0 {
        return Err(MlError::NonFinite {
            path: path.into(),
            tensor: name.to_string(),
            count: bad,
            total: t.numel(),
        });
    }
    Ok(())
}

/// The random-prompt baseline of zero-shot transfer and ON, [len, width] on the CPU: uniform on
/// [0, 1) as the official `torch.rand(prompt_num, d)` (tools/init_tool.py:353-358), not the
/// training init. Seeded, so a rerun scores the same prompt.
pub fn random_baseline(len: usize, width: usize, seed: u64) -> Tensor {
    use super::rng::Draws;
    let mut rng = super::rng::SplitMix64::new(seed ^ 0xBA5E_11E0_0000_0001);
    let values: Vec<f32> = (0..len * width).map(|_| rng.next_f32()).collect();
    Tensor::from_slice(&values).view([len as i64, width as i64])
}

/// Float32 copies of `tensors` as safetensors bytes; `origin` names them in errors.
///
/// The header is written here rather than by `safetensors::serialize`, which takes the metadata
/// as a `HashMap` and so writes its keys in an order that changes from process to process: the
/// same tensors and metadata must give the same bytes. Keys are sorted (`__metadata__` first
/// for the lowercase names used here) and the data follows in the tensors' name order, the
/// layout `safetensors::serialize` gives float32 tensors.
pub(crate) fn tensors_to_bytes(
    tensors: &[(&str, &Tensor)],
    metadata: Option<&BTreeMap<String, String>>,
    origin: &Path,
) -> MlResult<Vec<u8>> {
    let mut sorted: Vec<&(&str, &Tensor)> = tensors.iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    let mut header = BTreeMap::new();
    if let Some(metadata) = metadata {
        header.insert("__metadata__".to_string(), serde_json::json!(metadata));
    }
    let mut data = Vec::new();
    for (name, t) in sorted {
        let t = t
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        let entry = serde_json::json!({
            "dtype": "F32",
            "shape": t.size(),
            "data_offsets": [start, data.len()],
        });
        if header.insert(name.to_string(), entry).is_some() {
            return Err(MlError::Safetensors {
                path: origin.into(),
                message: format!("two tensors named {name:?}"),
            });
        }
    }
    let mut header = serde_json::to_vec(&header).map_err(|e| MlError::Invalid(e.to_string()))?;
    // safetensors aligns the data to 8 bytes by padding the header with spaces.
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend((header.len() as u64).to_le_bytes());
    out.extend(header);
    out.extend(data);
    Ok(out)
}

/// Writes float32 copies of `tensors` to a safetensors file.
pub(crate) fn write_tensors(
    path: &Path,
    tensors: &[(&str, &Tensor)],
    metadata: Option<&BTreeMap<String, String>>,
) -> MlResult<()> {
    let bytes = tensors_to_bytes(tensors, metadata, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| MlError::io(parent, e))?;
    }
    // Write beside the target and rename, so a crash never leaves half a file under its name.
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| MlError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| MlError::io(path, e))
}

/// Reads all tensors and the string metadata of a safetensors file.
pub(crate) fn read_tensors(
    path: &Path,
) -> MlResult<(HashMap<String, Tensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| MlError::io(path, e))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| MlError::Safetensors {
            path: path.into(),
            message: e.to_string(),
        })?;
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let tensors = Tensor::read_safetensors(path).map_err(|e| MlError::Safetensors {
        path: path.into(),
        message: e.to_string(),
    })?;
    Ok((tensors.into_iter().collect(), metadata))
}
