//! The ON indicator's input: FFN activations at the readout position for "prompt + start token"
//! equal transformers' forward hooks within 1e-4 in both layouts, and their masks pack and
//! round-trip. Golden values: scripts/make-activation-fixtures.py (activations.safetensors).

use std::collections::HashMap;

use promptgrid_common::mask::MaskFile;
use promptgrid_ml::activations::{encoder_activations, encoder_mask};
use promptgrid_ml::{EncoderModel, Head, Layout, MlError};
use tch::{Device, Kind, Tensor};

use crate::util::{data_dir, load, max_abs_diff};

fn fixture(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(data_dir(name).join("activations.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Prefix => "prefix",
        Layout::Official => "official",
    }
}

fn matches_transformers(name: &str, layout: Layout) {
    let fx = fixture(name);
    let model = load(name, Head::Mlm, layout);
    let acts = encoder_activations(&model, &fx["prompt"]).unwrap();
    assert_eq!(acts.len() as i64, model.config.num_hidden_layers);
    for (i, act) in acts.iter().enumerate() {
        let want = &fx[&format!("act.{}.{i}", layout_name(layout))];
        assert_eq!(act.size(), vec![model.config.intermediate_size]);
        assert_eq!((act.kind(), act.device()), (Kind::Float, Device::Cpu));
        let err = max_abs_diff(act, want);
        println!("{name} {layout:?} layer {i}: max abs error {err:.3e}");
        assert!(err <= 1e-4, "{name} {layout:?} layer {i}: {err:e}");
    }
    // The mask is `> 0` of the same values (the fixture has no value within 1e-4 of 0).
    let mask = encoder_mask(&model, &fx["prompt"], "m", "t").unwrap();
    for (l, act) in acts.iter().enumerate() {
        let want: Vec<f32> =
            Vec::try_from(&fx[&format!("act.{}.{l}", layout_name(layout))]).unwrap();
        assert_eq!(want.len(), act.size()[0] as usize);
        for (n, v) in want.iter().enumerate() {
            assert_eq!(
                mask.get(l, n),
                *v > 0.0,
                "{name} {layout:?} layer {l} neuron {n}"
            );
        }
    }
}

#[test]
fn bert_prefix_activations_match_transformers() {
    matches_transformers("tiny-bert", Layout::Prefix);
}

#[test]
fn bert_official_activations_match_transformers() {
    matches_transformers("tiny-bert", Layout::Official);
}

#[test]
fn roberta_prefix_activations_match_transformers() {
    matches_transformers("tiny-roberta", Layout::Prefix);
}

#[test]
fn roberta_official_activations_match_transformers() {
    matches_transformers("tiny-roberta", Layout::Official);
}

#[test]
fn the_layouts_read_different_activations() {
    let fx = fixture("tiny-roberta");
    let prefix = encoder_activations(
        &load("tiny-roberta", Head::Tied, Layout::Prefix),
        &fx["prompt"],
    );
    let official = encoder_activations(
        &load("tiny-roberta", Head::Tied, Layout::Official),
        &fx["prompt"],
    );
    assert!(max_abs_diff(&prefix.unwrap()[0], &official.unwrap()[0]) > 1e-2);
}

#[test]
fn mask_round_trips_through_bytes_and_is_deterministic() {
    let fx = fixture("tiny-bert");
    let model = load("tiny-bert", Head::Tied, Layout::Prefix);
    let mask = encoder_mask(&model, &fx["prompt"], "tiny-bert", "sst2").unwrap();
    assert_eq!((mask.layers, mask.neurons), (2, 64));
    assert_eq!(
        (mask.model.as_str(), mask.task.as_str()),
        ("tiny-bert", "sst2")
    );
    assert!(
        mask.active() > 0 && mask.active() < 128,
        "{}",
        mask.active()
    );
    let back = MaskFile::from_bytes(&mask.to_bytes(), "mask/test").unwrap();
    assert_eq!(back, mask);

    // The same prompt gives the same mask (so ON of a prompt with itself is 1); another prompt
    // gives another.
    let again = encoder_mask(&model, &fx["prompt"], "tiny-bert", "sst2").unwrap();
    assert_eq!(again.words, mask.words);
    let other = encoder_mask(&model, &(-&fx["prompt"]), "tiny-bert", "sst2").unwrap();
    assert_ne!(other.words, mask.words);
}

#[test]
fn a_prompt_needing_grad_on_the_model_device_works() {
    // A prompt straight from training: requires grad; capture runs without building a graph.
    let fx = fixture("tiny-bert");
    let model = load("tiny-bert", Head::Mlm, Layout::Official);
    let p = fx["prompt"].copy().set_requires_grad(true);
    let acts = encoder_activations(&model, &p).unwrap();
    assert!(acts.iter().all(|a| !a.requires_grad()));
}

#[test]
fn a_prompt_of_the_wrong_width_is_a_clear_error() {
    let model = load("tiny-bert", Head::Tied, Layout::Prefix);
    let p = Tensor::zeros([5, 31], (Kind::Float, Device::Cpu));
    let err = encoder_mask(&model, &p, "m", "t").unwrap_err();
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
    assert_eq!(
        err.to_string(),
        "activation prompt (shape [5, 31]): the prompt is 31 wide but the model's hidden size is 32"
    );
    assert!(err.is_bad_input());

    let err = encoder_activations(
        &model,
        &Tensor::zeros([2, 5, 32], (Kind::Float, Device::Cpu)),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("expected one [L, 32] prompt"),
        "{err}"
    );
    let err = encoder_activations(&model, &Tensor::zeros([0, 32], (Kind::Float, Device::Cpu)))
        .unwrap_err();
    assert!(err.to_string().contains("empty prompt"), "{err}");
}

#[test]
fn a_model_without_layers_is_a_clear_error() {
    // tiny-bert with num_hidden_layers 0 and its layers' tensors dropped.
    let tmp = tempfile::tempdir().unwrap();
    let src = data_dir("tiny-bert");
    std::fs::copy(
        src.join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["num_hidden_layers"] = 0.into();
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    let mut tensors = Tensor::read_safetensors(src.join("model.safetensors")).unwrap();
    tensors.retain(|(k, _)| !k.contains(".layer."));
    Tensor::write_safetensors(&tensors, tmp.path().join("model.safetensors")).unwrap();

    let model = EncoderModel::load(tmp.path(), Head::Mlm, Layout::Prefix, Device::Cpu).unwrap();
    let fx = fixture("tiny-bert");
    let err = encoder_mask(&model, &fx["prompt"], "m", "t").unwrap_err();
    assert!(err.to_string().contains("has no FFN layers"), "{err}");
}
