//! The same job with the same seed writes byte-identical artifacts: prompt files, checkpoints,
//! PEFT adapters, activation masks and projector files. Each is produced twice in one process
//! and the written bytes compared; safetensors metadata used to come from a `HashMap`, whose
//! order differs between two maps of the same content, so these compare files, not tensors.

use std::path::Path;

use promptgrid_ml::activations::encoder_mask;
use promptgrid_ml::{
    Checkpoint, Head, Init, Layout, MlResult, Projector, ProjectorConfig, ProjectorMeta,
    PromptFile, TaskData, TuneConfig, TuneObserver, random_baseline, train_distance, tune,
};
use tch::Device;

use crate::util::load;

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Keeps the bytes of every checkpoint the run hands over.
#[derive(Default)]
struct Checkpoints(Vec<Vec<u8>>);

impl TuneObserver for Checkpoints {
    fn on_checkpoint(&mut self, ck: &Checkpoint) -> MlResult<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        ck.save(&path)?;
        self.0.push(read(&path));
        Ok(())
    }
}

/// Tunes a prompt and writes its prompt file and PEFT adapter under `dir`; returns the bytes
/// of the prompt file, the adapter's two files and the checkpoints.
fn tune_and_write(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    let model = load("tiny-roberta", Head::Tied, Layout::Prefix);
    let words = vec!["terrible".to_string(), "great".to_string()];
    let data = |n, seed| {
        let examples = crate::toy::generate(n, seed, ["terrible", "great"]);
        TaskData::encode_with(&model, "{text} it was {mask} .", &words, &examples, 8, None).unwrap()
    };
    let (train, dev) = (data(40, 5), data(30, 6));
    let config = TuneConfig {
        prompt_len: 8,
        lr: 0.2,
        batch_size: 16,
        max_steps: 6,
        eval_every: 3,
        checkpoint_every: 3,
        seed: 11,
        init: Init::Random,
        ..TuneConfig::default()
    };
    let mut checkpoints = Checkpoints::default();
    let out = tune(&model, &train, Some(&dev), &config, None, &mut checkpoints).unwrap();
    let file = PromptFile::new(
        &out.best_prompt,
        "tiny-roberta",
        "toy",
        out.steps,
        out.best_score,
    );
    let path = dir.join("prompt.safetensors");
    file.save(&path).unwrap();
    let peft = dir.join("peft");
    file.export_peft(&peft, "tiny-roberta", 2, 2).unwrap();
    (
        read(&path),
        read(&peft.join("adapter_config.json")),
        read(&peft.join("adapter_model.safetensors")),
        checkpoints.0,
    )
}

#[test]
fn tuning_twice_writes_identical_prompt_checkpoint_and_peft_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = tune_and_write(a.path());
    let second = tune_and_write(b.path());
    assert_eq!(first.3.len(), 2, "checkpoints at steps 3 and 6");
    assert!(first.0 == second.0, "the prompt files differ in bytes");
    assert!(first.1 == second.1, "the PEFT configs differ in bytes");
    assert!(first.2 == second.2, "the PEFT weights differ in bytes");
    assert!(first.3 == second.3, "the checkpoints differ in bytes");
    // The temporary folders differ: nothing of the path went into the files.
    let folder = a.path().file_name().unwrap().to_string_lossy().into_owned();
    let text = String::from_utf8_lossy(&first.1);
    assert!(!text.contains(&folder), "{text}");
}

#[test]
fn a_prompt_file_saved_twice_from_one_tensor_has_the_same_bytes() {
    // Many metadata keys: with a HashMap, two maps of this content almost surely iterate apart.
    let prompt = random_baseline(4, 8, 1);
    let write = |dir: &Path| {
        let mut file = PromptFile::new(&prompt, "m", "t", 3, Some(0.5));
        for k in 0..12 {
            file.metadata.insert(format!("extra{k}"), k.to_string());
        }
        let path = dir.join("p.safetensors");
        file.save(&path).unwrap();
        read(&path)
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert!(write(a.path()) == write(b.path()));
    let back = PromptFile::load(&a.path().join("p.safetensors"), Some(8)).unwrap();
    assert_eq!(back.metadata["extra11"], "11");
    assert_eq!(back.metadata["score"], "0.5");
}

#[test]
fn an_activation_mask_computed_twice_has_the_same_bytes() {
    let mask = || {
        let model = load("tiny-bert", Head::Mlm, Layout::Prefix);
        let width = model.config.hidden_size as usize;
        let prompt = random_baseline(4, width, 9);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mask.safetensors");
        encoder_mask(&model, &prompt, "tiny-bert", "toy")
            .unwrap()
            .save(&path)
            .unwrap();
        read(&path)
    };
    let (a, b) = (mask(), mask());
    assert!(a.len() > 8);
    assert!(a == b, "the masks differ in bytes");
}

#[test]
fn a_projector_trained_twice_has_the_same_bytes() {
    let pairs: Vec<_> = (0..4)
        .map(|i| {
            (
                random_baseline(4, 8, 100 + i),
                random_baseline(4, 12, 200 + i),
            )
        })
        .collect();
    let config = ProjectorConfig {
        hidden: 16,
        learning_rate: 1e-3,
        steps: 20,
        batch_size: 2,
        seed: 7,
    };
    let meta = ProjectorMeta {
        src_model: "a".into(),
        tgt_model: "b".into(),
        objective: "distance".into(),
        train_tasks: vec!["t1".into(), "t2".into()],
    };
    let train = || {
        let mut p = Projector::new(4, 8, 12, 16, 3, Device::Cpu).unwrap();
        let out = train_distance(&mut p, &pairs, &config, &mut |_, _| true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proj.safetensors");
        p.save(&path, &meta).unwrap();
        (out.losses, read(&path))
    };
    let (a, b) = (train(), train());
    assert_eq!(a.0, b.0);
    assert!(a.1 == b.1, "the projector files differ in bytes");
}
