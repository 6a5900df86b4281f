//! Indicators, ON and Spearman on inputs with known answers.

use promptgrid_results::ResultsError;
use promptgrid_results::activation::{
    ActivationMask, LayerSpan, OnWindows, on_indicator, on_indicator_with,
};
use promptgrid_results::indicators::prompt_indicators;
use promptgrid_results::prompts::{Prompt, load_prompt, load_prompt_dir};
use promptgrid_results::spearman::{correlate, ranks, spearman};

use crate::util::{assert_close, write_prompt};

#[test]
fn prompt_indicators_have_the_planted_values() {
    // P2 = 2·P1 with orthogonal tokens: every formula has a closed form.
    let p1 = Prompt::new("a", 2, 2, vec![1.0, 0.0, 0.0, 1.0]);
    let p2 = Prompt::new("b", 2, 2, vec![2.0, 0.0, 0.0, 2.0]);
    let p3 = Prompt::new("c", 2, 2, vec![-1.0, 0.0, 0.0, -1.0]);
    let all = prompt_indicators(&[p1, p2, p3]);
    assert_eq!(all.len(), 9);
    let ab = &all[1];
    assert_eq!((ab.task_a.as_str(), ab.task_b.as_str()), ("a", "b"));
    let s5 = 5f64.sqrt();
    assert_close(ab.e_concat, 1.0 / (1.0 + 2f64.sqrt()), 1e-12, "E_concat");
    assert_close(
        ab.e_average,
        1.0 / (1.0 + (1.0 + s5) / 2.0),
        1e-12,
        "E_average",
    );
    assert_close(ab.c_concat, 1.0, 1e-12, "C_concat");
    assert_close(ab.c_average, 0.5, 1e-12, "C_average");
    assert_close(ab.c_mean, 1.0, 1e-12, "C_mean");
    let ac = &all[2];
    assert_close(ac.c_concat, -1.0, 1e-12, "C_concat a,c");
    assert_close(ac.c_mean, -1.0, 1e-12, "C_mean a,c");
    assert_close(ac.c_average, -0.5, 1e-12, "C_average a,c");
    // Symmetric: (b, a) equals (a, b).
    assert_close(all[3].e_average, ab.e_average, 0.0, "symmetry");
    assert_eq!(all[0].e_concat, 1.0);
}

#[test]
fn prompt_files_with_a_wrong_name_or_shape_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bad_name = write_prompt(dir.path(), "x", "weights", &[2, 2], &[0.0; 4]);
    let err = load_prompt(&bad_name).unwrap_err();
    assert!(matches!(err, ResultsError::Prompt { .. }), "{err}");
    assert!(
        err.to_string().contains("x.safetensors") && err.to_string().contains("prompt"),
        "{err}"
    );
    let bad_shape = write_prompt(dir.path(), "y", "prompt", &[2, 2, 2], &[0.0; 8]);
    let err = load_prompt(&bad_shape).unwrap_err();
    assert!(
        err.to_string().contains("y.safetensors") && err.to_string().contains("[L, d]"),
        "{err}"
    );
    // Different shapes in one folder are prompts of different models.
    let mixed = tempfile::tempdir().unwrap();
    write_prompt(mixed.path(), "a", "prompt", &[2, 3], &[1.0; 6]);
    write_prompt(mixed.path(), "b", "prompt", &[3, 3], &[1.0; 9]);
    let err = load_prompt_dir(mixed.path()).unwrap_err();
    assert!(err.to_string().contains("[3, 3]"), "{err}");
}

#[test]
fn peft_adapters_load_like_plain_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("sst2");
    write_prompt(
        &adapter,
        "adapter_model",
        "prompt_embeddings",
        &[2, 3],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    );
    std::fs::write(
        adapter.join("adapter_config.json"),
        r#"{"peft_type":"PROMPT_TUNING","num_virtual_tokens":2}"#,
    )
    .unwrap();
    write_prompt(dir.path(), "mnli", "prompt", &[2, 3], &[1.0; 6]);
    let prompts = load_prompt_dir(dir.path()).unwrap();
    assert_eq!(
        prompts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["mnli", "sst2"]
    );
    assert_eq!(prompts[1].data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // Without transfer results: indicators only.
    let out = tempfile::tempdir().unwrap();
    let summary = promptgrid_results::run_indicators(dir.path(), None, out.path()).unwrap();
    assert_eq!(summary.indicators.len(), 2 * 2 * 5);
    assert!(
        summary.relative.is_empty() && summary.correlations.is_empty() && summary.figure.is_none()
    );
    std::fs::write(
        adapter.join("adapter_config.json"),
        r#"{"peft_type":"LORA"}"#,
    )
    .unwrap();
    assert!(
        load_prompt_dir(dir.path())
            .unwrap_err()
            .to_string()
            .contains("PROMPT_TUNING")
    );
}

#[test]
fn on_is_the_cosine_of_packed_masks_per_window() {
    // 4 layers × 70 neurons (two words per layer, the second one partial).
    let mut a = vec![vec![false; 70]; 4];
    let mut b = vec![vec![false; 70]; 4];
    // Layer 0: identical 2 neurons; layer 1: a has 4, b has 1 of them; layer 2: disjoint; layer 3: a empty.
    for n in [3, 69] {
        a[0][n] = true;
        b[0][n] = true;
    }
    for n in [0, 10, 64, 65] {
        a[1][n] = true;
    }
    b[1][64] = true;
    a[2][5] = true;
    b[2][6] = true;
    b[3][1] = true;
    let (ma, mb) = (
        ActivationMask::from_bools(&a).unwrap(),
        ActivationMask::from_bools(&b).unwrap(),
    );
    // The official windows: non-overlapping blocks from layer 0.
    let on = on_indicator(&ma, &mb, 2).unwrap();
    let spans: Vec<String> = on.iter().map(|(s, _)| s.label()).collect();
    assert_eq!(spans, ["all", "0-1", "2-3"]);
    // all: |a∧b| = 3, |a| = 7, |b| = 5.
    assert_close(on[0].1.unwrap(), 3.0 / 35f64.sqrt(), 1e-12, "ON all");
    assert_close(on[1].1.unwrap(), 3.0 / 18f64.sqrt(), 1e-12, "ON 0-1");
    assert_close(on[2].1.unwrap(), 0.0, 0.0, "ON 2-3");
    assert_eq!(on[0].0, LayerSpan::All);
    // Every stride-1 window only on request.
    let sliding = OnWindows {
        width: 2,
        sliding: true,
    };
    let on = on_indicator_with(&ma, &mb, sliding).unwrap();
    let spans: Vec<String> = on.iter().map(|(s, _)| s.label()).collect();
    assert_eq!(spans, ["all", "0-1", "1-2", "2-3"]);
    assert_close(on[2].1.unwrap(), 1.0 / 10f64.sqrt(), 1e-12, "ON 1-2");
    // A window where one mask is empty is undefined, not 0.
    let single = on_indicator(&ma, &mb, 1).unwrap();
    assert_eq!(single[4].1, None);
    // Padding bits past the last neuron must be zero.
    let err = ActivationMask::from_packed(1, 70, vec![0, 1 << 10]).unwrap_err();
    assert!(err.to_string().contains("padding"), "{err}");
    assert!(ActivationMask::from_packed(1, 70, vec![0]).is_err());
}

#[test]
fn spearman_uses_average_ranks_for_ties() {
    assert_eq!(ranks(&[10.0, 20.0, 20.0, 30.0]), vec![1.0, 2.5, 2.5, 4.0]);
    assert_close(
        spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 25.0, 100.0]).unwrap(),
        1.0,
        1e-12,
        "monotone",
    );
    assert_close(
        spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(),
        -1.0,
        1e-12,
        "reversed",
    );
    // Hand-computed: ranks x = 1..5, ranks y = [1, 2, 3.5, 5, 3.5]; Pearson of those.
    let rho = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5.0, 6.0, 7.0, 8.0, 7.0]).unwrap();
    assert_close(rho, 0.820_782_681_668_123_4, 1e-12, "ties");
    assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
    assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
}

#[test]
fn correlations_per_target_mean_and_global() {
    let key = |s: &str, t: &str| (s.to_string(), t.to_string());
    let mut ind = std::collections::BTreeMap::new();
    let mut rel = std::collections::BTreeMap::new();
    let tasks = ["a", "b", "c", "d"];
    for (i, s) in tasks.iter().enumerate() {
        for (j, t) in tasks.iter().enumerate() {
            let v = (i * 4 + j) as f64;
            rel.insert(key(s, t), v);
            // Agrees with relative transfer for target a, disagrees elsewhere.
            ind.insert(key(s, t), if *t == "a" { v } else { -v });
        }
        rel.insert(key("random", s), 0.0);
        ind.insert(key("random", s), 100.0);
    }
    let out = correlate(&ind, &rel, &["random"]);
    let get = |t: &str| out.iter().find(|c| c.target == t).unwrap();
    assert_close(get("a").spearman.unwrap(), 1.0, 1e-12, "a");
    assert_close(get("b").spearman.unwrap(), -1.0, 1e-12, "b");
    assert_eq!(get("a").n, 3);
    assert_close(get("mean").spearman.unwrap(), -0.5, 1e-12, "mean");
    assert_eq!(get("mean").n, 4);
    assert_eq!(get("global").n, 12);
}

#[test]
fn on_rows_cover_every_pair_and_window() {
    use promptgrid_results::activation::on_rows;
    let m = |bits: &[bool]| {
        ActivationMask::from_bools(&bits.chunks(2).map(<[bool]>::to_vec).collect::<Vec<_>>())
            .unwrap()
    };
    let masks = vec![
        (
            "a".to_string(),
            m(&[true, false, true, true, false, true, true, true]),
        ),
        (
            "b".to_string(),
            m(&[true, false, false, true, false, true, false, false]),
        ),
    ];
    let rows = on_rows("m", &masks, 3).unwrap();
    // 2×2 pairs × (all + the official windows 0-2, 3).
    assert_eq!(rows.len(), 12);
    let spans: Vec<&str> = rows[..3]
        .iter()
        .filter_map(|r| r.layers.as_deref())
        .collect();
    assert_eq!(spans, ["all", "0-2", "3-3"]);
    let ab_all = rows
        .iter()
        .find(|r| r.task_a == "a" && r.task_b == "b" && r.layers.as_deref() == Some("all"))
        .unwrap();
    // |a| = 6, |b| = 3, |a∧b| = 3.
    assert_close(ab_all.value.unwrap(), 3.0 / 18f64.sqrt(), 1e-12, "ON all");
    assert_eq!(ab_all.indicator, "ON");
}

#[test]
fn top_k_ranks_sources_by_similarity_with_a_stable_order() {
    use promptgrid_results::indicators::{prompt_pair_value, top_k};
    let target = Prompt::new("t", 2, 2, vec![1.0, 0.0, 0.0, 1.0]);
    let near = Prompt::new("near", 2, 2, vec![1.0, 0.1, 0.0, 1.0]);
    let far = Prompt::new("far", 2, 2, vec![-1.0, 0.0, 0.0, -1.0]);
    let same = Prompt::new("same", 2, 2, vec![2.0, 0.0, 0.0, 2.0]);
    let by = |name: &str| -> Vec<(String, Option<f64>)> {
        [&near, &far, &same]
            .iter()
            .map(|p| (p.name.clone(), prompt_pair_value(&target, p, name)))
            .collect()
    };
    // Cosine: `same` points the same way (1), `near` almost, `far` the opposite way.
    assert_eq!(top_k(by("C_concat"), 2), ["same", "near"]);
    // Distance: `near` is closest; `same` is twice as long.
    assert_eq!(top_k(by("E_concat"), 1), ["near"]);
    assert_eq!(prompt_pair_value(&target, &near, "ON"), None);
    // Undefined values rank last; ties go to the name that sorts first.
    let scores = vec![
        ("b".to_string(), Some(0.5)),
        ("x".to_string(), None),
        ("a".to_string(), Some(0.5)),
        ("c".to_string(), Some(0.9)),
    ];
    assert_eq!(top_k(scores, 4), ["c", "a", "b", "x"]);
}

/// The official ON windows of a 12-layer model: [0,3), [3,6), [6,9), [9,12), plus all layers
/// (caculate_metric_value_for_correlation.py:60-116, 205); stride-1 windows only on request.
#[test]
fn on_windows_are_the_official_ones_unless_sliding_is_asked_for() {
    assert_eq!(
        OnWindows::official(3).spans(12),
        [(0, 3), (3, 6), (6, 9), (9, 12)]
    );
    assert_eq!(OnWindows::default(), OnWindows::official(3));
    assert_eq!(OnWindows::official(3).spans(24).len(), 8);
    // A width covering every layer adds nothing to `all`.
    assert!(OnWindows::official(12).spans(12).is_empty());
    let sliding = OnWindows {
        width: 3,
        sliding: true,
    };
    assert_eq!(sliding.spans(12).len(), 10);
    assert_eq!(sliding.spans(12)[1], (1, 4));
}
