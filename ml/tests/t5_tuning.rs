//! Prompt tuning through the frozen T5: the teacher-forced loss on a small generation task goes
//! down when only the prompt is trained, the backbone does not move, and greedy decoding with the
//! trained prompt then produces the targets.

use std::path::PathBuf;

use promptgrid_ml::t5::{self, GenerateOptions};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor, nn};

#[test]
fn tuning_the_prompt_learns_a_generation_task() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/t5-v1_1");
    let model = t5::load(&dir, Device::Cpu).unwrap();
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
                keep_logits: false,
            },
        )
        .unwrap();
    let rows = Vec::<Vec<i64>>::try_from(&out.sequences).unwrap();
    assert_eq!(rows[0][1..5], [60, 61, 62, eos]);
    assert_eq!(rows[1][1..4], [70, 71, eos]);
}
