//! `promptgrid activations`: one activation mask from a prompt file, without NATS, on the worker's
//! tiny test checkpoints. The mask it writes is the artifact the results crate reads for ON.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use promptgrid_common::mask::MaskFile;
use promptgrid_results::activation::{ActivationMask, LayerSpan, on_indicator};

#[path = "../ml/tests/t5util/vocab.rs"]
mod t5vocab;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("ml/tests/data")
        .join(name)
}

/// A copy of T5 fixture `name` in `dir` with the tests' tokenizer, which holds `<extra_id_0>`,
/// the official T5 probe token (the fixtures ship without a tokenizer).
fn t5_model(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    t5vocab::write_model(name, &path);
    path
}

/// A prompt file as `PromptFile::save` writes it: one float32 tensor `prompt` [rows, cols] and
/// string metadata, written by hand because this crate has no tensor library.
fn write_prompt(path: &Path, rows: usize, cols: usize, seed: f32, task: &str) {
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i as f32 + seed) * 0.7).sin())
        .collect();
    let header = serde_json::json!({
        "__metadata__": { "model": "tiny-roberta", "task": task },
        "prompt": { "dtype": "F32", "shape": [rows, cols], "data_offsets": [0, values.len() * 4] },
    })
    .to_string();
    // Readers expect the data 8-byte aligned, as safetensors pads its header with spaces.
    let header = format!("{header:<width$}", width = header.len().next_multiple_of(8));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

fn activations(model: &Path, prompt: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promptgrid"))
        .arg("activations")
        .arg("--model")
        .arg(model)
        .arg("--prompt")
        .arg(prompt)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run promptgrid activations")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn encoder_mask_is_written_and_has_on_one_with_itself() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("sst2.safetensors");
    write_prompt(&prompt, 4, 32, 0.0, "sst2");
    let out = dir.path().join("masks/sst2.mask.safetensors");
    let o = activations(&data("tiny-roberta"), &prompt, &out, &["--head", "tied"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = stdout(&o);
    assert!(
        line.starts_with("tiny-roberta / sst2: 2 layers x 64 neurons, ")
            && line.contains("% active; mask written to"),
        "{line}"
    );

    let mask = MaskFile::load(&out).unwrap();
    assert_eq!(
        (
            mask.layers,
            mask.neurons,
            mask.model.as_str(),
            mask.task.as_str()
        ),
        (2, 64, "tiny-roberta", "sst2")
    );
    assert!(mask.active() > 0);
    let a = ActivationMask::from_mask_file(&mask).unwrap();
    let on = on_indicator(&a, &a, 1).unwrap();
    assert_eq!(on[0], (LayerSpan::All, Some(1.0)));
    assert!(
        on.iter().all(|(_, v)| (v.unwrap() - 1.0).abs() < 1e-12),
        "{on:?}"
    );

    // The official layout reads elsewhere: another mask, ON below 1 against the prefix one.
    let official = dir.path().join("official.safetensors");
    let o = activations(
        &data("tiny-roberta"),
        &prompt,
        &official,
        &["--layout", "official"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = ActivationMask::from_mask_file(&MaskFile::load(&official).unwrap()).unwrap();
    let on = on_indicator(&a, &b, 3).unwrap()[0].1.unwrap();
    assert!(on < 1.0, "{on}");
}

#[test]
fn t5_is_detected_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("rte.safetensors");
    write_prompt(&prompt, 3, 32, 1.0, "rte");
    let out = dir.path().join("rte.mask.safetensors");
    let o = activations(&t5_model(dir.path(), "t5-v1_1"), &prompt, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).starts_with("t5-v1_1 / rte: 2 layers x 48 neurons"),
        "{}",
        stdout(&o)
    );
    let mask = MaskFile::load(&out).unwrap();
    assert_eq!((mask.layers, mask.neurons), (2, 48));
}

#[test]
fn a_prompt_of_the_wrong_width_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("wide.safetensors");
    write_prompt(&prompt, 4, 31, 0.0, "sst2");
    let out = dir.path().join("mask.safetensors");
    let o = activations(&data("tiny-bert"), &prompt, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "bad input exits 2");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("wide.safetensors")
            && err.contains("the prompt is 31 wide but the model's hidden size is 32"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn bf16_products_give_nearly_the_same_mask_and_a_wrong_precision_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("sst2.safetensors");
    write_prompt(&prompt, 4, 32, 0.0, "sst2");
    let mut masks = Vec::new();
    let t5 = t5_model(dir.path(), "t5-v1_1");
    for precision in ["fp32", "bf16"] {
        for model in ["tiny-roberta", "t5-v1_1"] {
            let out = dir.path().join(format!("{model}-{precision}.safetensors"));
            let path = if model == "t5-v1_1" {
                t5.clone()
            } else {
                data(model)
            };
            let o = activations(&path, &prompt, &out, &["--precision", precision]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            masks.push(ActivationMask::from_mask_file(&MaskFile::load(&out).unwrap()).unwrap());
        }
    }
    // Rounding flips only activations near zero.
    for (model, (fp32, bf16)) in ["tiny-roberta", "t5-v1_1"]
        .iter()
        .zip(masks[..2].iter().zip(&masks[2..]))
    {
        let on = on_indicator(fp32, bf16, 1).unwrap()[0].1.unwrap();
        assert!(on > 0.9, "{model}: ON between fp32 and bf16 masks {on}");
    }

    // auto picks by the hardware and says so.
    let out = dir.path().join("auto.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_promptgrid"))
        .args(["activations", "--precision", "auto", "--model"])
        .arg(data("tiny-bert"))
        .arg("--prompt")
        .arg(&prompt)
        .arg("--out")
        .arg(&out)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let native = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|i| i.contains(" avx512_bf16"));
    let expected = if native {
        "matrix products in bf16: --precision auto: this CPU has AVX512-BF16"
    } else {
        "matrix products in fp32: --precision auto: this device has no native bf16 products"
    };
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(expected), "{err}");

    let out = dir.path().join("fp16.safetensors");
    let o = activations(&data("tiny-bert"), &prompt, &out, &["--precision", "fp16"]);
    assert_eq!(o.status.code(), Some(2), "bad input exits 2");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("precision \"fp16\""), "{err}");
    assert!(!out.exists());
}
