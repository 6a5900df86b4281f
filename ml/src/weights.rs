//! Loading a Hugging Face `model.safetensors` into a VarStore built from the config: prefixes
//! stripped once, integer buffers skipped, and every disagreement reported by name and shape.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use super::error::{MlError, MlResult};

/// The checkpoint prefixes of the base model that our keys omit.
const PREFIXES: [&str; 3] = ["bert.", "roberta.", "model."];

/// Tensors a checkpoint may carry that this encoder never reads (pooler, NSP head, the
/// decoder's copies of tied tensors). They are neither loaded nor reported.
fn ignorable(key: &str) -> bool {
    key.starts_with("pooler.")
        || key.starts_with("cls.seq_relationship.")
        || key.ends_with("decoder.bias")
        || key.ends_with("decoder.weight")
}

/// Old (TensorFlow-converted) BERT checkpoints name LayerNorm parameters gamma and beta.
fn modern_name(key: String) -> String {
    if let Some(stem) = key.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = key.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        key
    }
}

/// Copies the checkpoint at `path` into `vs`. Every variable of `vs` must be found with its
/// shape; tensors left over are an error unless they are [`ignorable`] or belong to a head
/// (`optional_prefixes`) the caller does not use.
pub(crate) fn load_into(
    vs: &mut VarStore,
    path: &Path,
    optional_prefixes: &[&str],
) -> MlResult<()> {
    if !path.exists() {
        return Err(MlError::MissingFile { path: path.into() });
    }
    let raw = Tensor::read_safetensors(path).map_err(|e| MlError::Safetensors {
        path: path.into(),
        message: e.to_string(),
    })?;
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (key, tensor) in raw {
        if !matches!(
            tensor.kind(),
            Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double
        ) {
            continue; // position_ids, token_type_ids buffers
        }
        let key = PREFIXES
            .iter()
            .find_map(|p| key.strip_prefix(p))
            .map(str::to_string)
            .unwrap_or(key);
        tensors.insert(modern_name(key), tensor);
    }
    let vars: HashMap<String, Tensor> = vs.variables();
    let mut details = Vec::new();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in &names {
        let var = &vars[*name];
        match tensors.get(*name) {
            None => details.push(format!("missing tensor {name} {:?}", var.size())),
            Some(t) if t.size() != var.size() => details.push(format!(
                "tensor {name}: the checkpoint has shape {:?}, the config implies {:?}",
                t.size(),
                var.size()
            )),
            Some(_) => {}
        }
    }
    for (key, t) in &tensors {
        let used = vars.contains_key(key);
        let optional = optional_prefixes.iter().any(|p| key.starts_with(p));
        if !used && !optional && !ignorable(key) {
            details.push(format!("unexpected tensor {key} {:?}", t.size()));
        }
    }
    if !details.is_empty() {
        return Err(MlError::WeightsMismatch {
            path: path.into(),
            details,
        });
    }
    tch::no_grad(|| -> MlResult<()> {
        for (name, var) in &vars {
            let mut var = var.shallow_clone();
            var.f_copy_(&tensors[name])?;
        }
        Ok(())
    })?;
    vs.freeze();
    Ok(())
}
