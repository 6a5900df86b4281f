//! Times promptgrid's batched greedy T5 decoding on a folder written by
//! `scripts/bench_generate.py make DIR` (a random-weight checkpoint plus `bench_inputs.safetensors`
//! with `input_ids`, `attention_mask` and `prompt`): `bench_generate DIR [max_new_tokens repeats
//! threads]`. Prints one JSON line; scripts/bench-generate times transformers' `generate` on the
//! same folder and prints the comparison.

use std::time::Instant;

/// This process's CPU time in seconds, all threads (Linux's /proc/self/stat utime + stime, at
/// the usual 100 ticks a second), or NaN where unknown. Less disturbed than wall time by other
/// load on the machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(f64::NAN))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    match (fields.get(11), fields.get(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

use promptgrid_ml::t5::{self, GenerateOptions};
use tch::{Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: bench_generate DIR [max_new_tokens repeats threads]")?;
    let num =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (max_new_tokens, repeats, threads) = (num(2, 32), num(3, 5), num(4, 2));
    tch::set_num_threads(threads as i32);
    let dir = std::path::Path::new(dir);
    let model = t5::load(dir, Device::Cpu)?;
    let inputs = Tensor::read_safetensors(dir.join("bench_inputs.safetensors"))?;
    let get = |name: &str| {
        inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| format!("bench_inputs.safetensors has no {name}"))
    };
    let (ids, mask, prompt) = (get("input_ids")?, get("attention_mask")?, get("prompt")?);
    let options = GenerateOptions {
        max_new_tokens,
        keep_logits: false,
    };
    let mut seconds = Vec::new();
    let mut cpu = Vec::new();
    let mut sequences = None;
    // One untimed warm-up run, then `repeats` timed ones.
    for i in 0..=repeats {
        let (start, cpu_start) = (Instant::now(), cpu_seconds());
        let out = model.greedy_generate(Some(&prompt), &ids, &mask, options)?;
        let elapsed = start.elapsed().as_secs_f64();
        if i > 0 {
            seconds.push(elapsed);
            cpu.push(cpu_seconds() - cpu_start);
        }
        sequences = Some(out.sequences);
    }
    let sequences = sequences.ok_or("no run")?;
    let (batch, steps) = (sequences.size()[0], sequences.size()[1] - 1);
    let rows: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&sequences)?;
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let line = serde_json::json!({
        "impl": "promptgrid (tch)",
        "threads": tch::get_num_threads(),
        "batch": batch,
        "steps": steps,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "median_s": median,
        "tokens_per_s": (batch * steps) as f64 / median,
        "sequences": rows,
    });
    println!("{line}");
    Ok(())
}
