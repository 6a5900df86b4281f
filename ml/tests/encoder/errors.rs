//! Bad input ends with an error that says what and where, never a panic.

use std::path::Path;

use promptgrid_ml::{
    EncoderModel, Example, Head, Init, Layout, MlError, PromptFile, TaskData, TuneConfig, tune,
};
use tch::{Device, Tensor};

use crate::util::{data_dir, load};

fn copy_fixture(name: &str, to: &Path) {
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(data_dir(name).join(f), to.join(f)).unwrap();
    }
}

fn edit_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(&path, v.to_string()).unwrap();
}

fn examples(n: usize) -> Vec<Example> {
    (0..n)
        .map(|i| Example {
            fields: [("text".to_string(), "the movie was good".to_string())].into(),
            label: i % 2,
        })
        .collect()
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

#[test]
fn missing_folder_and_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = EncoderModel::load(
        &tmp.path().join("nope"),
        Head::Tied,
        Layout::Prefix,
        Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, MlError::MissingFile { .. }), "{err}");
    copy_fixture("tiny-bert", tmp.path());
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let err = EncoderModel::load(tmp.path(), Head::Tied, Layout::Prefix, Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, MlError::MissingFile { path } if path.ends_with("model.safetensors")),
        "{err}"
    );
    assert!(err.is_bad_input());
}

#[test]
fn config_that_does_not_match_the_weights_lists_the_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("tiny-bert", tmp.path());
    edit_config(tmp.path(), "num_hidden_layers", 3.into());
    let err = EncoderModel::load(tmp.path(), Head::Mlm, Layout::Prefix, Device::Cpu).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MlError::WeightsMismatch { .. }), "{text}");
    assert!(
        text.contains("missing tensor encoder.layer.2.attention.self.query.weight [32, 32]"),
        "{text}"
    );

    copy_fixture("tiny-bert", tmp.path());
    edit_config(tmp.path(), "num_hidden_layers", 1.into());
    let text = EncoderModel::load(tmp.path(), Head::Mlm, Layout::Prefix, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("unexpected tensor encoder.layer.1.output.dense.weight [32, 64]"),
        "{text}"
    );

    copy_fixture("tiny-bert", tmp.path());
    edit_config(tmp.path(), "intermediate_size", 48.into());
    let text = EncoderModel::load(tmp.path(), Head::Mlm, Layout::Prefix, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(text.contains("tensor encoder.layer.0.intermediate.dense.weight: the checkpoint has shape [64, 32], the config implies [48, 32]"), "{text}");
}

#[test]
fn mlm_head_on_a_checkpoint_without_one_is_an_error_but_tied_loads() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("tiny-bert", tmp.path());
    let kept: Vec<(String, Tensor)> =
        Tensor::read_safetensors(tmp.path().join("model.safetensors"))
            .unwrap()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("cls."))
            // Sentence-transformers exports have no `bert.` prefix.
            .map(|(k, t)| (k.trim_start_matches("bert.").to_string(), t))
            .collect();
    Tensor::write_safetensors(&kept, tmp.path().join("model.safetensors")).unwrap();
    let text = EncoderModel::load(tmp.path(), Head::Mlm, Layout::Prefix, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("missing tensor cls.predictions.transform.dense.weight"),
        "{text}"
    );
    EncoderModel::load(tmp.path(), Head::Tied, Layout::Prefix, Device::Cpu).unwrap();
}

#[test]
fn multi_token_label_word_names_the_word_and_its_pieces() {
    let model = load("tiny-bert", Head::Tied, Layout::Prefix);
    let err = model
        .tokenizer
        .label_ids(&words(&["great", "goods"]))
        .unwrap_err();
    match &err {
        MlError::MultiTokenLabelWord { word, pieces } => {
            assert_eq!(word, "goods");
            assert_eq!(pieces, &words(&["good", "##s"]));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("\"goods\""));
    let err = model
        .tokenizer
        .label_ids(&words(&["xylophone"]))
        .unwrap_err();
    assert!(
        matches!(err, MlError::MultiTokenLabelWord { .. }),
        "an unknown word is [UNK]: {err}"
    );
}

#[test]
fn prompt_longer_than_the_positions_is_an_error() {
    let model = load("tiny-bert", Head::Tied, Layout::Prefix);
    let err = TaskData::encode_with(
        &model,
        "{text} it was {mask} .",
        &words(&["terrible", "great"]),
        &examples(2),
        64,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            MlError::PromptTooLong {
                prompt_len: 64,
                max_positions: 64,
                ..
            }
        ),
        "{err}"
    );
    // The template alone (without its text) does not fit next to 60 prompt tokens.
    let err = TaskData::encode_with(
        &model,
        "{text} it was really very very {mask} .",
        &words(&["terrible", "great"]),
        &examples(2),
        60,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, MlError::PromptTooLong { .. }), "{err}");
    // Data encoded for 4 prompt tokens, trained with a 62-token prompt from a file.
    let data = TaskData::encode_with(
        &model,
        "{text} it was {mask} .",
        &words(&["terrible", "great"]),
        &examples(2),
        4,
        None,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("long.safetensors");
    PromptFile::new(
        &Tensor::zeros([62, 32], (tch::Kind::Float, Device::Cpu)),
        "m",
        "t",
        0,
        None,
    )
    .save(&file)
    .unwrap();
    let cfg = TuneConfig {
        init: Init::From(file),
        max_steps: 1,
        ..TuneConfig::default()
    };
    let err = tune(&model, &data, None, &cfg, None, &mut ()).unwrap_err();
    assert!(
        matches!(err, MlError::PromptTooLong { prompt_len: 62, .. }),
        "{err}"
    );
}

#[test]
fn prompt_file_for_another_width_is_an_error() {
    let model = load("tiny-bert", Head::Tied, Layout::Prefix);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("wide.safetensors");
    PromptFile::new(
        &Tensor::zeros([4, 48], (tch::Kind::Float, Device::Cpu)),
        "other",
        "t",
        0,
        None,
    )
    .save(&file)
    .unwrap();
    let err = PromptFile::load(&file, Some(model.hidden_size())).unwrap_err();
    assert!(
        matches!(
            err,
            MlError::PromptWidth {
                got: 48,
                expected: 32,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("wide.safetensors"));
    let data = TaskData::encode_with(
        &model,
        "{text} it was {mask} .",
        &words(&["terrible", "great"]),
        &examples(2),
        4,
        None,
    )
    .unwrap();
    let cfg = TuneConfig {
        init: Init::From(file),
        max_steps: 1,
        ..TuneConfig::default()
    };
    assert!(matches!(
        tune(&model, &data, None, &cfg, None, &mut ()),
        Err(MlError::PromptWidth { .. })
    ));
    let wrong = Tensor::zeros([4, 16], (tch::Kind::Float, Device::Cpu));
    let err = promptgrid_ml::evaluate_prompts(&model, &[&wrong], &data, 8).unwrap_err();
    assert!(matches!(err, MlError::PromptWidth { .. }), "{err}");
}

#[test]
fn nan_loss_is_an_error_naming_the_step() {
    let model = load("tiny-bert", Head::Tied, Layout::Prefix);
    let data = TaskData::encode_with(
        &model,
        "{text} it was {mask} .",
        &words(&["terrible", "great"]),
        &examples(4),
        4,
        None,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // A NaN prompt file is refused when read (bad input, naming the file)...
    let file = tmp.path().join("nan.safetensors");
    PromptFile::new(
        &Tensor::full([4, 32], f64::NAN, (tch::Kind::Float, Device::Cpu)),
        "m",
        "t",
        0,
        None,
    )
    .save(&file)
    .unwrap();
    let cfg = TuneConfig {
        init: Init::From(file),
        max_steps: 3,
        batch_size: 2,
        ..TuneConfig::default()
    };
    let err = tune(&model, &data, None, &cfg, None, &mut ()).unwrap_err();
    assert!(
        matches!(err, MlError::NonFinite { count: 128, .. }),
        "{err}"
    );
    assert!(err.is_bad_input() && err.to_string().contains("nan.safetensors"));
    // ...while a finite prompt that overflows the forward pass is a NaN loss at its step.
    let file = tmp.path().join("huge.safetensors");
    PromptFile::new(
        &Tensor::full([4, 32], 3.0e38, (tch::Kind::Float, Device::Cpu)),
        "m",
        "t",
        0,
        None,
    )
    .save(&file)
    .unwrap();
    let cfg = TuneConfig {
        init: Init::From(file),
        ..cfg
    };
    let err = tune(&model, &data, None, &cfg, None, &mut ()).unwrap_err();
    assert!(matches!(err, MlError::NanLoss { step: 1 }), "{err}");
    assert!(!err.is_bad_input());
}

#[test]
fn bad_settings_are_errors() {
    assert!("from:".parse::<Init>().is_err());
    assert!("zeros".parse::<Init>().is_err());
    assert_eq!(
        "from:a.safetensors".parse::<Init>().unwrap(),
        Init::From("a.safetensors".into())
    );
    assert!("lm".parse::<Head>().is_err());
    assert!("suffix".parse::<Layout>().is_err());
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("tiny-bert", tmp.path());
    edit_config(tmp.path(), "model_type", "gpt2".into());
    let err = EncoderModel::load(tmp.path(), Head::Tied, Layout::Prefix, Device::Cpu).unwrap_err();
    assert!(matches!(err, MlError::Config { .. }), "{err}");
    std::fs::write(tmp.path().join("config.json"), "{not json").unwrap();
    assert!(matches!(
        EncoderModel::load(tmp.path(), Head::Tied, Layout::Prefix, Device::Cpu),
        Err(MlError::Config { .. })
    ));
}

#[test]
fn devices_parse() {
    use promptgrid_ml::parse_device;
    assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
    assert!(parse_device("gpu").is_err());
    assert!(parse_device("cuda:x").is_err());
    assert!(parse_device("cuda:99").is_err());
}

/// libtorch's CUDA kernels are in a library that the linker drops; asking for a CUDA device
/// loads it. Here (no GPU, a CUDA build of torch) the library loads and the device is refused.
#[test]
fn a_cuda_device_loads_libtorchs_cuda_kernels() {
    use promptgrid_ml::parse_device;
    let maps = || std::fs::read_to_string("/proc/self/maps").unwrap();
    let libtorch_cpu = maps()
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .last()
                .filter(|p| p.ends_with("/libtorch_cpu.so"))
        })
        .map(std::path::PathBuf::from)
        .expect("libtorch is mapped");
    let cuda_build = libtorch_cpu.with_file_name("libtorch_cuda.so").exists();
    match parse_device("cuda") {
        Ok(device) => assert!(tch::Cuda::is_available(), "{device:?}"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.starts_with("device cuda: "), "{e}");
            if cuda_build {
                assert!(e.contains("no CUDA device is visible"), "{e}");
            }
        }
    }
    let loaded = || maps().contains("/libtorch_cuda.so");
    assert_eq!(loaded(), cuda_build);
    assert_eq!(
        parse_device("auto").unwrap() == Device::Cpu,
        !tch::Cuda::is_available()
    );
}

#[test]
fn inputs_without_a_mask_or_outside_the_vocabulary_are_errors() {
    let model = load("tiny-bert", Head::Tied, Layout::Prefix);
    assert!(matches!(
        model.encode_text("no mask here"),
        Err(MlError::Invalid(_))
    ));
    assert!(matches!(
        model.encode_ids(vec![2, 4, 999, 3]),
        Err(MlError::Invalid(_))
    ));
    let e = model.encode_ids(vec![2, 4, 3]).unwrap();
    let batch = model.batch(&[&e]);
    let prompt = Tensor::zeros([70, 32], (tch::Kind::Float, Device::Cpu));
    assert!(matches!(
        model.full_logits(&prompt, &batch),
        Err(MlError::PromptTooLong { .. })
    ));
    let rows = Tensor::zeros([2, 3, 32], (tch::Kind::Float, Device::Cpu));
    assert!(matches!(
        model.full_logits(&rows, &batch),
        Err(MlError::Invalid(_))
    ));
    let full = model.full_logits(&model.no_prompt(), &batch).unwrap();
    assert_eq!(full.size(), [1, 81]);
}

#[test]
fn hand_built_task_data_is_checked() {
    let model = load("tiny-bert", Head::Tied, Layout::Prefix);
    let good = TaskData::encode_with(
        &model,
        "{text} it was {mask} .",
        &words(&["terrible", "great"]),
        &examples(4),
        4,
        None,
    )
    .unwrap();
    let prompt = Tensor::zeros([4, 32], (tch::Kind::Float, Device::Cpu));
    let eval = |d: &TaskData| promptgrid_ml::evaluate_prompts(&model, &[&prompt], d, 8);
    let mut bad = good.clone();
    bad.label_ids = vec![5, 500];
    assert!(matches!(eval(&bad), Err(MlError::Invalid(_))));
    let mut bad = good.clone();
    bad.labels[0] = 2;
    assert!(matches!(eval(&bad), Err(MlError::Invalid(_))));
    let mut bad = good.clone();
    bad.inputs[1].ids[0] = 81;
    assert!(matches!(eval(&bad), Err(MlError::Invalid(_))));
    let cfg = TuneConfig {
        max_steps: 1,
        prompt_len: 4,
        ..TuneConfig::default()
    };
    assert!(matches!(
        tune(&model, &bad, None, &cfg, None, &mut ()),
        Err(MlError::Invalid(_))
    ));
    assert_eq!(eval(&good).unwrap().len(), 1);
}

/// The demo's MiniLM tokenizer.json pads every encoding to 128 tokens, which made every label
/// word look like 128 pieces ("terrible", "[PAD]", ...). Padding and truncation are ours.
#[test]
fn tokenizer_json_padding_and_truncation_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("tiny-bert", tmp.path());
    let path = tmp.path().join("tokenizer.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["padding"] = serde_json::json!({"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"});
    v["truncation"] = serde_json::json!({"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0});
    std::fs::write(&path, v.to_string()).unwrap();
    let model = EncoderModel::load(tmp.path(), Head::Tied, Layout::Prefix, Device::Cpu).unwrap();
    assert_eq!(
        model
            .tokenizer
            .label_ids(&words(&["terrible", "great"]))
            .unwrap()
            .len(),
        2
    );
    let e = model
        .encode_text("the movie was great and it was [MASK] .")
        .unwrap();
    assert_eq!(e.ids.len(), 11);
}
