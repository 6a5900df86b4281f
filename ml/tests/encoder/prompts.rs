//! Prompt files and the PEFT adapter export.

use std::process::Command;

use promptgrid_ml::PromptFile;
use tch::{Device, Kind, Tensor};

use crate::util::{data_dir, max_abs_diff};

#[test]
fn prompt_files_round_trip_with_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sub").join("p.safetensors");
    let prompt = Tensor::randn([6, 32], (Kind::Float, Device::Cpu));
    PromptFile::new(&prompt, "tiny-bert", "sst2", 120, Some(0.875))
        .save(&path)
        .unwrap();
    let back = PromptFile::load(&path, Some(32)).unwrap();
    assert_eq!(max_abs_diff(&back.prompt, &prompt), 0.0);
    assert_eq!(back.metadata["model"], "tiny-bert");
    assert_eq!(back.metadata["task"], "sst2");
    assert_eq!(back.metadata["steps"], "120");
    assert_eq!(back.metadata["score"], "0.875");
}

/// The venv's python (scripts/env.sh), else python3 on PATH.
pub fn python() -> String {
    match std::env::var("PROMPTGRID_VENV") {
        Ok(venv) => format!("{venv}/bin/python"),
        Err(_) => "python3".into(),
    }
}

/// `peft` loads the exported adapter onto the base model and holds our prompt.
#[test]
fn peft_loads_the_exported_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let prompt = Tensor::randn([5, 32], (Kind::Float, Device::Cpu));
    let adapter = tmp.path().join("adapter");
    let base = data_dir("tiny-bert");
    PromptFile::new(&prompt, "tiny-bert", "toy", 1, None)
        .export_peft(&adapter, &base.to_string_lossy(), 2, 4)
        .unwrap();
    let script = r#"
import sys, torch
from safetensors.torch import load_file
from transformers import BertForMaskedLM
from peft import PeftModel
base = BertForMaskedLM.from_pretrained(sys.argv[1])
model = PeftModel.from_pretrained(base, sys.argv[2])
got = model.get_prompt_embedding_to_save("default")
want = load_file(sys.argv[3])["prompt"]
assert got.shape == want.shape, (got.shape, want.shape)
assert torch.allclose(got, want), (got - want).abs().max()
print("peft ok", tuple(got.shape), model.peft_config["default"].num_virtual_tokens)
"#;
    let file = tmp.path().join("p.safetensors");
    PromptFile::new(&prompt, "tiny-bert", "toy", 1, None)
        .save(&file)
        .unwrap();
    let out = Command::new(python())
        .args(["-c", script])
        .arg(&base)
        .arg(&adapter)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("running {} (source scripts/env.sh): {e}", python()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "peft could not load the adapter:\n{text}"
    );
    assert!(text.contains("peft ok (5, 32) 5"), "{text}");
}
