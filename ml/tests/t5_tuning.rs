//! Prompt tuning through the frozen T5: the teacher-forced loss on a small generation task goes
//! down when only the prompt is trained, the backbone does not move, and greedy decoding with the
//! trained prompt then produces the targets.

use std::path::PathBuf;
use std::sync::Mutex;

use promptgrid_ml::t5::{self, GenerateOptions};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor, nn};

/// Torch's generator is one per process: the tests that seed it and draw from it take turns.
static TORCH_RNG: Mutex<()> = Mutex::new(());

#[test]
fn tuning_the_prompt_learns_a_generation_task() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/t5-v1_1");
    let model = t5::load(&dir, Device::Cpu).unwrap();
    let _rng = TORCH_RNG.lock().unwrap();
    tch::manual_seed(7);

    // Two inputs, each mapped to its own three-token answer followed by end-of-sequence.
    let eos = model.config().eos_token_ids()[0];
    let ids = Tensor::from_slice(&[5i64, 9, 13, 21, 30, 42, 3, 0]).view([2, 4]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    let targets = Tensor::from_slice(&[60i64, 61, 62, eos, 70, 71, eos, 0]).view([2, 4]);
    let target_mask = targets.ne(0).to_kind(Kind::Int64);

    let vs = nn::VarStore::new(Device::Cpu);
    let prompt = vs.root().randn("prompt", &[8, model.d_model()], 0.0, 1.0);
    let mut opt = nn::Adam::default().build(&vs, 0.1).unwrap();
    let frozen = model.var_store().variables();
    let before: Vec<(String, Tensor)> = frozen.iter().map(|(k, v)| (k.clone(), v.copy())).collect();

    let loss_of = |p: &Tensor| {
        model
            .teacher_forced_loss(Some(p), &ids, &mask, &targets, &target_mask)
            .unwrap()
    };
    let first = tch::no_grad(|| loss_of(&prompt)).double_value(&[]);
    let mut last = first;
    for _ in 0..100 {
        let loss = loss_of(&prompt);
        opt.backward_step(&loss);
        last = loss.double_value(&[]);
    }
    println!("loss {first:.4} -> {last:.4}");
    assert!(last < 0.1 * first, "loss {first} -> {last}");

    for (key, value) in &before {
        assert!(frozen[key].equal(value), "{key} changed");
    }

    let out = model
        .greedy_generate(
            Some(&prompt),
            &ids,
            &mask,
            GenerateOptions {
                max_new_tokens: 6,
                min_new_tokens: 0,
                keep_logits: false,
            },
        )
        .unwrap();
    let rows = Vec::<Vec<i64>>::try_from(&out.sequences).unwrap();
    assert_eq!(rows[0][1..5], [60, 61, 62, eos]);
    assert_eq!(rows[1][1..4], [70, 71, eos]);
}

/// T5 in `train()` mode, as the official training runs it: dropout wherever transformers' T5
/// applies `dropout_rate`, masks from torch's seeded generator, nothing dropped at p = 0.
#[test]
fn dropout_acts_in_training_only_and_repeats_with_the_seed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/t5-v1_0");
    let model = t5::load(&dir, Device::Cpu).unwrap();
    let _rng = TORCH_RNG.lock().unwrap();
    let ids = Tensor::from_slice(&[5i64, 9, 13, 21, 30, 42, 3, 0]).view([2, 4]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    let targets = Tensor::from_slice(&[60i64, 61, 70, 0]).view([2, 2]);
    let target_mask = targets.ne(0).to_kind(Kind::Int64);
    let prompt = Tensor::randn([4, model.d_model()], (Kind::Float, Device::Cpu));
    let loss = |p: f64| {
        tch::no_grad(|| {
            model
                .teacher_forced_loss_dropout(Some(&prompt), &ids, &mask, &targets, &target_mask, p)
                .unwrap()
                .double_value(&[])
        })
    };
    let eval = tch::no_grad(|| {
        model
            .teacher_forced_loss(Some(&prompt), &ids, &mask, &targets, &target_mask)
            .unwrap()
            .double_value(&[])
    });
    assert_eq!(loss(0.0), eval);
    let (a, b) = (loss(0.1), loss(0.1));
    assert_ne!(a, b, "two dropout forwards draw different masks");
    assert_ne!(a, eval);
    tch::manual_seed(3);
    let c = loss(0.1);
    tch::manual_seed(3);
    assert_eq!(c, loss(0.1), "the same seed drops the same units");
    let err = model
        .teacher_forced_loss_dropout(Some(&prompt), &ids, &mask, &targets, &target_mask, 1.0)
        .unwrap_err();
    assert!(err.to_string().contains("dropout 1"), "{err}");
}

/// `min_new_tokens` keeps end-of-sequence out of the first steps, as transformers'
/// `min_length` (the official BLEU decodes with min_length 2 or 3).
#[test]
fn greedy_decoding_holds_the_end_back_for_min_new_tokens() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/t5-v1_0");
    let model = t5::load(&dir, Device::Cpu).unwrap();
    let eos = model.config().eos_token_ids()[0];
    let ids = Tensor::from_slice(&[5i64, 9, 13, 21]).view([1, 4]);
    let mask = ids.ones_like();
    let _rng = TORCH_RNG.lock().unwrap();
    // A prompt that makes the end the first choice: its logit raised through the head is not
    // available, so search seeds until greedy decoding ends at once.
    let ends_at_once = (0..200).find_map(|seed| {
        tch::manual_seed(seed);
        let prompt = Tensor::randn([4, model.d_model()], (Kind::Float, Device::Cpu)) * 5.0;
        let first = tch::no_grad(|| model.first_step_logits(Some(&prompt), &ids, &mask))
            .unwrap()
            .argmax(-1, false)
            .int64_value(&[0]);
        (first == eos).then_some(prompt)
    });
    let Some(prompt) = ends_at_once else {
        panic!("no prompt among 200 seeds makes the end-of-sequence the first choice");
    };
    let generate = |min_new_tokens| {
        let out = model
            .greedy_generate(
                Some(&prompt),
                &ids,
                &mask,
                GenerateOptions {
                    max_new_tokens: 4,
                    min_new_tokens,
                    keep_logits: false,
                },
            )
            .unwrap();
        Vec::<Vec<i64>>::try_from(&out.sequences).unwrap().remove(0)
    };
    assert_eq!(generate(0)[1], eos);
    let held = generate(2);
    assert!(held[1] != eos && held[2] != eos, "{held:?}");
}
