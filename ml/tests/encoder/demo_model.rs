//! Real weights: the offline demo's MiniLM-L6 (scripts/prepare-demo puts it under
//! $PROMPTGRID_HOME/assets/models/minilm-l6) gives transformers' hidden states within 1e-4.
//! The reference is computed here by the venv's transformers, since the checkpoint (90 MB) is
//! not part of the repository.

use std::path::PathBuf;
use std::process::Command;

use promptgrid_ml::{Encoded, Head, Layout};
use tch::{Device, Tensor};

use crate::util::max_abs_diff;

fn promptgrid_home() -> PathBuf {
    std::env::var_os("PROMPTGRID_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("promptgrid")
        })
}

const REFERENCE: &str = r#"
import sys, torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import BertModel
model = BertModel.from_pretrained(sys.argv[1], attn_implementation="eager").eval()
tok = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
tok.no_padding()
tok.no_truncation()
texts = sys.argv[3:]
encs = [tok.encode(t).ids for t in texts]
width = max(map(len, encs))
ids = torch.zeros(len(encs), width, dtype=torch.long)
mask = torch.zeros_like(ids)
for i, e in enumerate(encs):
    ids[i, :len(e)] = torch.tensor(e)
    mask[i, :len(e)] = 1
with torch.no_grad():
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
save_file({"hidden": hidden.contiguous(), "input_ids": ids}, sys.argv[2])
"#;

#[test]
fn minilm_hidden_states_match_transformers() {
    let dir = promptgrid_home()
        .join("assets")
        .join("models")
        .join("minilm-l6");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/prepare-demo",
        dir.display()
    );
    let model =
        promptgrid_ml::EncoderModel::load(&dir, Head::Tied, Layout::Prefix, Device::Cpu).unwrap();
    let texts = [
        "a gripping , beautifully acted film . it was [MASK] .",
        "dull . it was [MASK] .",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ref.safetensors");
    let python = crate::prompts::python();
    let run = Command::new(&python)
        .args(["-c", REFERENCE])
        .arg(&dir)
        .arg(&out)
        .args(texts)
        .output()
        .unwrap_or_else(|e| panic!("running {python} (source scripts/env.sh): {e}"));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let reference: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    let encoded: Vec<Encoded> = texts
        .iter()
        .map(|t| model.encode_text(t).unwrap())
        .collect();
    let refs: Vec<&Encoded> = encoded.iter().collect();
    let batch = model.batch(&refs);
    let hidden = tch::no_grad(|| model.hidden_states(&model.no_prompt(), &batch).unwrap());
    // Compare real tokens only: transformers' padded rows are not part of the contract.
    for (i, e) in encoded.iter().enumerate() {
        let n = e.ids.len() as i64;
        let ids: Vec<i64> =
            Vec::try_from(reference["input_ids"].get(i as i64).narrow(0, 0, n)).unwrap();
        assert_eq!(ids, e.ids);
        let d = max_abs_diff(
            &hidden.get(i as i64).narrow(0, 0, n),
            &reference["hidden"].get(i as i64).narrow(0, 0, n),
        );
        println!("minilm-l6 example {i}: hidden states differ by {d:.2e}");
        assert!(d < 1e-4, "example {i}: {d}");
    }
}
