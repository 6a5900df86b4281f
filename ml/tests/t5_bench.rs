//! Timing of T5 decoding on a real-sized checkpoint (a benchmark, not a test; ignored by
//! default). Point `PROMPTGRID_T5_BENCH_DIR` at a Hugging Face T5 folder and run
//! `cargo test --release -p promptgrid-worker --test t5_bench -- --ignored --nocapture`.
//! Compare with transformers' `generate` on the same folder, batch and lengths.

use std::time::Instant;

use promptgrid_ml::t5::{self, GenerateOptions};
use tch::{Device, Kind, Tensor};

fn env_or(key: &str, default: i64) -> i64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "benchmark: needs PROMPTGRID_T5_BENCH_DIR"]
fn greedy_decoding_throughput() {
    let dir = std::env::var("PROMPTGRID_T5_BENCH_DIR").expect("set PROMPTGRID_T5_BENCH_DIR");
    let (batch, text, prompt_len, new_tokens) = (
        env_or("BENCH_BATCH", 8),
        env_or("BENCH_TEXT", 64),
        env_or("BENCH_PROMPT", 20),
        env_or("BENCH_NEW_TOKENS", 32),
    );
    let model = t5::load(dir.as_ref(), Device::cuda_if_available()).unwrap();
    tch::manual_seed(0);
    let v = model.config().vocab_size;
    let ids = Tensor::randint_low(2, v, [batch, text], (Kind::Int64, Device::Cpu));
    let mask = ids.ones_like();
    let prompt = Tensor::randn([prompt_len, model.d_model()], (Kind::Float, Device::Cpu));
    let options = GenerateOptions {
        max_new_tokens: new_tokens as usize,
        keep_logits: false,
    };
    // One warm-up run, then the median of three.
    let mut times = Vec::new();
    let mut steps = 0;
    for _ in 0..4 {
        let start = Instant::now();
        let out = model
            .greedy_generate(Some(&prompt), &ids, &mask, options)
            .unwrap();
        times.push(start.elapsed().as_secs_f64());
        steps = out.sequences.size()[1] - 1;
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    let median = times[1];
    println!(
        "greedy: batch {batch}, {text} text + {prompt_len} prompt tokens, {steps} steps: \
         {median:.3} s, {:.1} tokens/s",
        (batch * steps) as f64 / median
    );
}

#[test]
#[ignore = "benchmark: needs PROMPTGRID_T5_BENCH_DIR"]
fn prompt_tuning_step() {
    let dir = std::env::var("PROMPTGRID_T5_BENCH_DIR").expect("set PROMPTGRID_T5_BENCH_DIR");
    let (batch, text, prompt_len, target) = (
        env_or("BENCH_BATCH", 8),
        env_or("BENCH_TEXT", 64),
        env_or("BENCH_PROMPT", 20),
        env_or("BENCH_TARGET", 2),
    );
    let model = t5::load(dir.as_ref(), Device::cuda_if_available()).unwrap();
    tch::manual_seed(0);
    let v = model.config().vocab_size;
    let ids = Tensor::randint_low(2, v, [batch, text], (Kind::Int64, Device::Cpu));
    let targets = Tensor::randint_low(2, v, [batch, target], (Kind::Int64, Device::Cpu));
    let prompt = Tensor::randn([prompt_len, model.d_model()], (Kind::Float, Device::Cpu))
        .set_requires_grad(true);
    // One warm-up step, then the median of five forward + backward passes.
    let mut times = Vec::new();
    for _ in 0..6 {
        let start = Instant::now();
        let loss = model
            .teacher_forced_loss(
                Some(&prompt),
                &ids,
                &ids.ones_like(),
                &targets,
                &targets.ones_like(),
            )
            .unwrap();
        loss.backward();
        times.push(start.elapsed().as_secs_f64());
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    println!(
        "tuning step: batch {batch}, {text} text + {prompt_len} prompt tokens, {target} target tokens: {:.1} ms",
        times[2] * 1000.0
    );
}
