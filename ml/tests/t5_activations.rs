//! T5's ON-indicator input: each decoder layer's FFN activation at the first decoding step for
//! the encoder input `[P ; <extra_id_0>]` (the official probe, activate_neuronPromptT5Formatter.py:40)
//! equals transformers' forward hooks within 1e-4. Golden values:
//! scripts/make-activation-fixtures.py (t5-v1_1/activations.safetensors).

mod t5util;

use std::collections::HashMap;
use std::path::PathBuf;

use promptgrid_common::mask::MaskFile;
use promptgrid_ml::MlError;
use promptgrid_ml::activations::{t5_activations, t5_backbone_mask, t5_mask};
use promptgrid_ml::t5::{self, T5Model};
use tch::{Device, Kind, Tensor};

fn load(name: &str) -> (T5Model, HashMap<String, Tensor>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let model = t5::load(&dir, Device::Cpu).unwrap();
    let fixture = Tensor::read_safetensors(dir.join("activations.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    (model, fixture)
}

#[test]
fn v1_1_decoder_ffn_activations_match_transformers() {
    let (model, fx) = load("t5-v1_1");
    let probe = fx["probe_ids"].int64_value(&[0]);
    assert_eq!(probe, t5util::EXTRA_ID_0);
    let acts = t5_activations(&model, &fx["prompt"], probe).unwrap();
    assert_eq!(acts.len() as i64, model.config().decoder_layers());
    for (i, act) in acts.iter().enumerate() {
        let want = &fx[&format!("act.decoder.{i}")];
        assert_eq!(act.size(), vec![model.config().d_ff]);
        assert_eq!((act.kind(), act.device()), (Kind::Float, Device::Cpu));
        let err = (act - want).abs().max().double_value(&[]);
        println!("t5-v1_1 decoder layer {i}: max abs error {err:.3e}");
        assert!(err <= 1e-4, "decoder layer {i}: {err:e}");
    }

    let mask = t5_mask(&model, &fx["prompt"], probe, "t5-v1_1", "rte").unwrap();
    assert_eq!(
        (mask.layers as i64, mask.neurons as i64),
        (2, model.config().d_ff)
    );
    for l in 0..mask.layers {
        let want: Vec<f32> = Vec::try_from(&fx[&format!("act.decoder.{l}")]).unwrap();
        for (n, v) in want.iter().enumerate() {
            assert_eq!(mask.get(l, n), *v > 0.0, "layer {l} neuron {n}");
        }
    }
    assert_eq!(MaskFile::from_bytes(&mask.to_bytes(), "t5").unwrap(), mask);
    let again = t5_mask(&model, &fx["prompt"], probe, "t5-v1_1", "rte").unwrap();
    assert_eq!(again.words, mask.words);

    // A worker's T5 (model and tokenizer) probes with its tokenizer's <extra_id_0>.
    let (_tmp, backbone, _) = t5util::backbone("t5-v1_1");
    let via_backbone = t5_backbone_mask(&backbone, &fx["prompt"], "t5-v1_1", "rte").unwrap();
    assert_eq!(via_backbone.words, mask.words);
    // With `</s>` after the prompt instead, the mask differs: the probe token matters.
    let eos = model.config().eos_token_ids()[0];
    let with_eos = t5_mask(&model, &fx["prompt"], eos, "t5-v1_1", "rte").unwrap();
    assert_ne!(with_eos.words, mask.words);
}

#[test]
fn v1_1_prompt_of_the_wrong_width_is_a_clear_error() {
    let (model, _) = load("t5-v1_1");
    let p = Tensor::zeros([5, 31], (Kind::Float, Device::Cpu));
    let err = t5_mask(&model, &p, t5util::EXTRA_ID_0, "m", "t").unwrap_err();
    assert!(
        matches!(
            err,
            MlError::PromptWidth {
                got: 31,
                expected: 32,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("31 wide") && err.to_string().contains("is 32"),
        "{err}"
    );
}
