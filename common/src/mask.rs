//! The activation-mask artifact (`mask/<job id>`): which FFN neurons a prompt switches on in each
//! layer of a frozen model, for the ON indicator (docs/design.md, "Transferability indicators").
//!
//! The file is safetensors with one tensor `bits`, dtype U64, shape `[layers, wpl]` with
//! `wpl = neurons.div_ceil(64)`, and the string metadata `format` (`promptgrid-mask/1`),
//! `layers`, `neurons`, `model` and `task`. Neuron `n` of layer `l` is bit `n % 64` of word
//! `l * wpl + n / 64`, least significant bit first; padding bits past the last neuron are zero.
//! This is the packing `promptgrid_results::activation::ActivationMask::from_packed` takes.
//!
//! Lives here, without tch, because the worker writes masks and the results crate reads them.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

/// The `format` metadata value of this version of the file.
pub const MASK_FORMAT: &str = "promptgrid-mask/1";

/// The one tensor of a mask file.
pub const BITS_KEY: &str = "bits";

/// A mask file that cannot be written or read, naming the file (or artifact) and the field.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("mask {origin}: {source}")]
    Io {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mask {origin}: not a safetensors file: {message}")]
    Safetensors { origin: String, message: String },
    #[error("mask {origin}: {field}: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

fn invalid(origin: &str, field: &str, message: impl Into<String>) -> MaskError {
    MaskError::Invalid {
        origin: origin.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// A `[layers][neurons]` binary activation mask with the model and task it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskFile {
    pub layers: usize,
    pub neurons: usize,
    /// `layers * words_per_layer(neurons)` words, packed as the module says.
    pub words: Vec<u64>,
    pub model: String,
    pub task: String,
}

/// Words per layer: one bit per neuron, rounded up to whole `u64`s.
pub fn words_per_layer(neurons: usize) -> usize {
    neurons.div_ceil(64)
}

/// Bits of a layer's last word that lie past the last neuron.
fn padding(neurons: usize) -> u64 {
    if neurons.is_multiple_of(64) {
        0
    } else {
        !0u64 << (neurons % 64)
    }
}

impl MaskFile {
    /// Packs one `Vec<bool>` per layer (true = active); every layer must have the same, non-zero
    /// number of neurons.
    pub fn pack(model: &str, task: &str, layers: &[Vec<bool>]) -> Result<MaskFile, MaskError> {
        let origin = format!("for model {model}, task {task}");
        let neurons = layers.first().map_or(0, Vec::len);
        if layers.is_empty() {
            return Err(invalid(&origin, "layers", "no layers to pack"));
        }
        if neurons == 0 {
            return Err(invalid(&origin, "neurons", "layers have no neurons"));
        }
        if let Some((l, layer)) = layers.iter().enumerate().find(|(_, l)| l.len() != neurons) {
            return Err(invalid(
                &origin,
                "neurons",
                format!(
                    "layer {l} has {} neurons, layer 0 has {neurons}",
                    layer.len()
                ),
            ));
        }
        let wpl = words_per_layer(neurons);
        let mut words = vec![0u64; layers.len() * wpl];
        for (l, layer) in layers.iter().enumerate() {
            for (n, _) in layer.iter().enumerate().filter(|(_, on)| **on) {
                words[l * wpl + n / 64] |= 1 << (n % 64);
            }
        }
        Ok(MaskFile {
            layers: layers.len(),
            neurons,
            words,
            model: model.to_string(),
            task: task.to_string(),
        })
    }

    /// Whether neuron `n` of layer `l` is active (false outside the mask).
    pub fn get(&self, l: usize, n: usize) -> bool {
        let wpl = words_per_layer(self.neurons);
        n < self.neurons
            && l < self.layers
            && self
                .words
                .get(l * wpl + n / 64)
                .is_some_and(|w| (w >> (n % 64)) & 1 == 1)
    }

    /// Active neurons over all layers.
    pub fn active(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The fraction of active neurons over all layers (0 for an empty mask).
    pub fn active_fraction(&self) -> f64 {
        let total = (self.layers * self.neurons) as f64;
        if total == 0.0 {
            0.0
        } else {
            self.active() as f64 / total
        }
    }

    /// The safetensors bytes. Written by hand (8-byte little-endian header length, JSON header
    /// padded to 8 bytes, little-endian words) so that it cannot fail; a mask whose public fields
    /// were made inconsistent is caught by [`MaskFile::from_bytes`] on the way back.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wpl = words_per_layer(self.neurons);
        let data_len = self.words.len() * 8;
        let header = serde_json::json!({
            "__metadata__": {
                "format": MASK_FORMAT,
                "layers": self.layers.to_string(),
                "neurons": self.neurons.to_string(),
                "model": self.model,
                "task": self.task,
            },
            BITS_KEY: {
                "dtype": "U64",
                "shape": [self.layers, wpl],
                "data_offsets": [0, data_len],
            },
        });
        let mut header = header.to_string().into_bytes();
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut out = Vec::with_capacity(8 + header.len() + data_len);
        out.extend((header.len() as u64).to_le_bytes());
        out.extend(header);
        out.extend(self.words.iter().flat_map(|w| w.to_le_bytes()));
        out
    }

    /// Parses and checks a mask file; `origin` (its path or artifact name) goes into errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<MaskFile, MaskError> {
        let st_err = |e: safetensors::SafeTensorError| MaskError::Safetensors {
            origin: origin.to_string(),
            message: e.to_string(),
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(st_err)?;
        let meta: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
        let field = |key: &str| {
            meta.get(key)
                .ok_or_else(|| invalid(origin, key, "missing from the metadata"))
        };
        let format = field("format")?;
        if format != MASK_FORMAT {
            return Err(invalid(
                origin,
                "format",
                format!("{format:?} is not {MASK_FORMAT:?}"),
            ));
        }
        let count = |key: &str| -> Result<usize, MaskError> {
            let text = field(key)?;
            match text.parse::<usize>() {
                Ok(0) => Err(invalid(origin, key, "must be at least 1")),
                Ok(n) => Ok(n),
                Err(_) => Err(invalid(
                    origin,
                    key,
                    format!("{text:?} is not a whole number"),
                )),
            }
        };
        let (layers, neurons) = (count("layers")?, count("neurons")?);
        let (model, task) = (field("model")?.clone(), field("task")?.clone());

        let tensors = SafeTensors::deserialize(bytes).map_err(st_err)?;
        if let Some(other) = tensors.names().into_iter().find(|n| *n != BITS_KEY) {
            return Err(invalid(
                origin,
                other,
                format!("unexpected tensor (a mask holds only {BITS_KEY:?})"),
            ));
        }
        let bits = tensors
            .tensor(BITS_KEY)
            .map_err(|_| invalid(origin, BITS_KEY, "no such tensor"))?;
        if bits.dtype() != Dtype::U64 {
            return Err(invalid(
                origin,
                BITS_KEY,
                format!("dtype {:?}, expected U64", bits.dtype()),
            ));
        }
        let wpl = words_per_layer(neurons);
        if bits.shape() != [layers, wpl] {
            return Err(invalid(
                origin,
                BITS_KEY,
                format!(
                    "shape {:?} disagrees with the metadata's {layers} layers of {neurons} \
                     neurons (expected [{layers}, {wpl}])",
                    bits.shape()
                ),
            ));
        }
        let words: Vec<u64> = bits
            .data()
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        let pad = padding(neurons);
        if let Some(l) = (0..layers).find(|l| words[l * wpl + wpl - 1] & pad != 0) {
            return Err(invalid(
                origin,
                BITS_KEY,
                format!("layer {l} sets padding bits past neuron {neurons}"),
            ));
        }
        Ok(MaskFile {
            layers,
            neurons,
            words,
            model,
            task,
        })
    }

    pub fn load(path: &Path) -> Result<MaskFile, MaskError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| MaskError::Io {
            origin: origin.clone(),
            source,
        })?;
        MaskFile::from_bytes(&bytes, &origin)
    }

    /// Writes beside `path` and renames, so that a crash never leaves half a mask under its name.
    pub fn save(&self, path: &Path) -> Result<(), MaskError> {
        let io = |source| MaskError::Io {
            origin: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let name = path
            .file_name()
            .map_or_else(|| "mask".into(), |n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        if let Err(e) = std::fs::write(&tmp, self.to_bytes()) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MaskFile {
        // 70 neurons: two words per layer, the second with 58 padding bits.
        let layers: Vec<Vec<bool>> = (0..3)
            .map(|l| (0..70).map(|n| (n * 7 + l) % 3 == 0).collect())
            .collect();
        MaskFile::pack("tiny-roberta", "sst2", &layers).unwrap()
    }

    /// A file with `edit` applied to the metadata, the dtype, shape and words of `bits`.
    fn forged(
        edit_meta: impl FnOnce(&mut HashMap<String, String>),
        dtype: Dtype,
        shape: Vec<usize>,
        words: &[u64],
    ) -> Vec<u8> {
        let m = sample();
        let mut meta = HashMap::from([
            ("format".to_string(), MASK_FORMAT.to_string()),
            ("layers".to_string(), m.layers.to_string()),
            ("neurons".to_string(), m.neurons.to_string()),
            ("model".to_string(), m.model),
            ("task".to_string(), m.task),
        ]);
        edit_meta(&mut meta);
        let data: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(dtype, shape, &data).unwrap();
        safetensors::serialize([(BITS_KEY, view)], Some(meta)).unwrap()
    }

    fn error(bytes: &[u8]) -> String {
        MaskFile::from_bytes(bytes, "mask/abc")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn pack_sets_bits_least_significant_first() {
        let m = MaskFile::pack("m", "t", &[vec![true, false, true], vec![false; 3]]).unwrap();
        assert_eq!(m.words, vec![0b101, 0]);
        assert!(m.get(0, 2) && !m.get(0, 1) && !m.get(1, 0) && !m.get(0, 3));
        let wide: Vec<bool> = (0..130).map(|n| n == 64 || n == 129).collect();
        let m = MaskFile::pack("m", "t", &[wide]).unwrap();
        assert_eq!(m.words, vec![0, 1, 2]);
        assert_eq!(m.active(), 2);
    }

    #[test]
    fn round_trips_through_bytes_and_files() {
        let m = sample();
        let bytes = m.to_bytes();
        assert_eq!(MaskFile::from_bytes(&bytes, "x").unwrap(), m);
        // An ordinary safetensors reader sees the documented layout.
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let bits = st.tensor(BITS_KEY).unwrap();
        assert_eq!((bits.dtype(), bits.shape()), (Dtype::U64, &[3usize, 2][..]));
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap();
        assert_eq!(meta["format"], MASK_FORMAT);
        assert_eq!(
            (meta["layers"].as_str(), meta["neurons"].as_str()),
            ("3", "70")
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/mask.safetensors");
        m.save(&path).unwrap();
        assert_eq!(MaskFile::load(&path).unwrap(), m);
        // Only the mask is left: the temporary file was renamed.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["mask.safetensors"]);
    }

    #[test]
    fn pack_rejects_empty_and_ragged_layers() {
        let err = MaskFile::pack("m", "t", &[]).unwrap_err().to_string();
        assert_eq!(err, "mask for model m, task t: layers: no layers to pack");
        let err = MaskFile::pack("m", "t", &[vec![]]).unwrap_err().to_string();
        assert!(err.contains("neurons: layers have no neurons"), "{err}");
        let err = MaskFile::pack("m", "t", &[vec![true; 3], vec![true; 2]])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("layer 1 has 2 neurons, layer 0 has 3"),
            "{err}"
        );
    }

    #[test]
    fn wrong_format_is_rejected() {
        let m = sample();
        let bytes = forged(
            |meta| {
                meta.insert("format".into(), "promptgrid-mask/2".into());
            },
            Dtype::U64,
            vec![3, 2],
            &m.words,
        );
        assert_eq!(
            error(&bytes),
            "mask mask/abc: format: \"promptgrid-mask/2\" is not \"promptgrid-mask/1\""
        );
    }

    #[test]
    fn missing_and_non_numeric_metadata_are_rejected() {
        let m = sample();
        for key in ["format", "layers", "neurons", "model", "task"] {
            let bytes = forged(
                |meta| {
                    meta.remove(key);
                },
                Dtype::U64,
                vec![3, 2],
                &m.words,
            );
            assert_eq!(
                error(&bytes),
                format!("mask mask/abc: {key}: missing from the metadata")
            );
        }
        let bytes = forged(
            |meta| {
                meta.insert("neurons".into(), "seventy".into());
            },
            Dtype::U64,
            vec![3, 2],
            &m.words,
        );
        assert_eq!(
            error(&bytes),
            "mask mask/abc: neurons: \"seventy\" is not a whole number"
        );
    }

    #[test]
    fn zero_layers_or_neurons_are_rejected() {
        for key in ["layers", "neurons"] {
            let bytes = forged(
                |meta| {
                    meta.insert(key.into(), "0".into());
                },
                Dtype::U64,
                vec![0, 0],
                &[],
            );
            assert_eq!(
                error(&bytes),
                format!("mask mask/abc: {key}: must be at least 1")
            );
        }
    }

    #[test]
    fn metadata_disagreeing_with_the_shape_is_rejected() {
        let m = sample();
        let bytes = forged(
            |meta| {
                meta.insert("layers".into(), "2".into());
            },
            Dtype::U64,
            vec![3, 2],
            &m.words,
        );
        assert_eq!(
            error(&bytes),
            "mask mask/abc: bits: shape [3, 2] disagrees with the metadata's 2 layers of 70 \
             neurons (expected [2, 2])"
        );
        let bytes = forged(
            |meta| {
                meta.insert("neurons".into(), "200".into());
            },
            Dtype::U64,
            vec![3, 2],
            &m.words,
        );
        assert!(
            error(&bytes).contains("expected [3, 4]"),
            "{}",
            error(&bytes)
        );
    }

    #[test]
    fn wrong_dtype_is_rejected() {
        let m = sample();
        let bytes = forged(|_| {}, Dtype::I64, vec![3, 2], &m.words);
        assert_eq!(
            error(&bytes),
            "mask mask/abc: bits: dtype I64, expected U64"
        );
    }

    #[test]
    fn set_padding_bits_are_rejected() {
        let mut words = sample().words;
        words[3] |= 1 << 6; // layer 1's word 1, bit 6: neuron 70, past the last.
        let bytes = forged(|_| {}, Dtype::U64, vec![3, 2], &words);
        assert_eq!(
            error(&bytes),
            "mask mask/abc: bits: layer 1 sets padding bits past neuron 70"
        );
    }

    #[test]
    fn missing_or_extra_tensors_and_garbage_are_rejected() {
        let m = sample();
        let meta = HashMap::from([
            ("format".to_string(), MASK_FORMAT.to_string()),
            ("layers".to_string(), "3".to_string()),
            ("neurons".to_string(), "70".to_string()),
            ("model".to_string(), "m".to_string()),
            ("task".to_string(), "t".to_string()),
        ]);
        let data: Vec<u8> = m.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let view = || safetensors::tensor::TensorView::new(Dtype::U64, vec![3, 2], &data).unwrap();
        let bytes = safetensors::serialize([("masks", view())], Some(meta.clone())).unwrap();
        assert!(
            error(&bytes).starts_with("mask mask/abc: masks: unexpected tensor"),
            "{}",
            error(&bytes)
        );
        let bytes = safetensors::serialize(
            Vec::<(&str, safetensors::tensor::TensorView)>::new(),
            Some(meta),
        )
        .unwrap();
        assert_eq!(error(&bytes), "mask mask/abc: bits: no such tensor");
        assert!(
            error(b"not a mask").starts_with("mask mask/abc: not a safetensors file"),
            "{}",
            error(b"not a mask")
        );
        let err = MaskFile::load(Path::new("/nonexistent/mask.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("mask /nonexistent/mask.safetensors: "),
            "{err}"
        );
    }

    #[test]
    fn inconsistent_fields_are_caught_on_the_way_back() {
        let mut m = sample();
        m.words.pop();
        assert!(
            MaskFile::from_bytes(&m.to_bytes(), "x").is_err(),
            "a mask with a missing word must not load"
        );
    }
}
