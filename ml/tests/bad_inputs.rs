//! Bad inputs below the CLI (tests/bad_inputs.rs runs the binary): non-finite projector weights
//! and activations, and the rows a split file drops (Hugging Face's -1 "no gold label", null or
//! blank text) in every format, counted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use promptgrid_common::catalog::{
    LabelValue, Metric, Splits, TaskDef, TaskKind, Templates, Verbalizer,
};
use promptgrid_ml::activations::mask_of;
use promptgrid_ml::data::{Dropped, read_split, read_text_split};
use promptgrid_ml::{MlError, Projector, ProjectorMeta};
use tch::{Device, Kind, Tensor};

/// HF `snli`: premise, hypothesis, label 0 entailment / 1 neutral / 2 contradiction / -1.
fn snli() -> TaskDef {
    TaskDef {
        name: "snli".into(),
        title: "SNLI".into(),
        task_type: "nli".into(),
        kind: TaskKind::Classification,
        metric: Metric::Accuracy,
        labels: vec![
            "contradiction".into(),
            "neutral".into(),
            "entailment".into(),
        ],
        label_values: Some(vec![
            LabelValue::Int(2),
            LabelValue::Int(1),
            LabelValue::Int(0),
        ]),
        verbalizer: Some(Verbalizer {
            encoder: vec!["no".into(), "maybe".into(), "yes".into()],
            bert: None,
            t5: vec![
                "contradiction".into(),
                "neutral".into(),
                "entailment".into(),
            ],
        }),
        template: Templates {
            encoder: Some("{mask} {hypothesis} {sep} {premise}".into()),
            t5: "hypothesis: {hypothesis} premise: {premise}".into(),
        },
        columns: BTreeMap::from([("label".to_string(), "label".to_string())]),
        splits: Splits {
            train: "train".into(),
            dev: "validation".into(),
            test: Some("test".into()),
            dev_holdout_percent: None,
        },
        data_dir: None,
        source: None,
        t5: None,
        also: vec![],
    }
}

/// Rows: (premise, hypothesis, label); `None` is null.
type Rows<'a> = [(Option<&'a str>, Option<&'a str>, i64)];

/// Writes rows as one split file format.
type Writer = fn(&Path, &Rows);

const ROWS: &Rows = &[
    (Some("a man plays"), Some("a man is playing"), 0),
    (Some("a dog runs"), Some("a cat sleeps"), 2),
    (Some("two people"), Some("a crowd"), -1),
    (None, Some("someone"), 1),
    (Some("a child"), Some("   "), 0),
    (Some("a woman eats"), Some("she is hungry"), 1),
    (Some("the sun"), Some("it is night"), -1),
];

fn write_parquet(path: &Path, rows: &Rows) {
    let column = |i: usize| -> ArrayRef {
        let values: Vec<Option<&str>> = rows.iter().map(|r| [r.0, r.1][i]).collect();
        Arc::new(StringArray::from(values))
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("premise", column(0)),
        ("hypothesis", column(1)),
        (
            "label",
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
        ),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch =
        RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn write_jsonl(path: &Path, rows: &Rows) {
    let lines: Vec<String> = rows
        .iter()
        .map(|(p, h, l)| serde_json::json!({"premise": p, "hypothesis": h, "label": l}).to_string())
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

/// A JSON array of records, as the official SemEval and SNLI files are (`json.load`).
fn write_json_array(path: &Path, rows: &Rows) {
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|(p, h, l)| serde_json::json!({"premise": p, "hypothesis": h, "label": l}))
        .collect();
    std::fs::write(path, serde_json::to_string_pretty(&items).unwrap()).unwrap();
}

/// CSV with a byte-order mark (as some GLUE files have); null is an empty field.
fn write_csv(path: &Path, rows: &Rows) {
    let mut text = "\u{feff}premise,hypothesis,label\n".to_string();
    for (p, h, l) in rows {
        text.push_str(&format!("{},{},{l}\n", p.unwrap_or(""), h.unwrap_or("")));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn snli_rows_without_a_gold_label_or_text_are_dropped_and_counted_in_every_format() {
    let task = snli();
    let tmp = tempfile::tempdir().unwrap();
    let writers: [(&str, Writer); 4] = [
        ("train.parquet", write_parquet),
        ("train.jsonl", write_jsonl),
        ("train.json", write_json_array),
        ("train.csv", write_csv),
    ];
    for (name, write) in writers {
        let path = tmp.path().join(name);
        write(&path, ROWS);
        let split = read_split(&path, &task).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(split.rows, 7, "{name}");
        assert_eq!(
            split.dropped,
            Dropped {
                no_gold_label: 2,
                empty_text: BTreeMap::from([
                    ("premise".to_string(), 1),
                    ("hypothesis".to_string(), 1)
                ]),
            },
            "{name}"
        );
        assert_eq!(split.dropped.total(), 4);
        // HF 0 entailment -> labels[2], 2 contradiction -> labels[0], 1 neutral -> labels[1].
        let labels: Vec<usize> = split.examples.iter().map(|e| e.label).collect();
        assert_eq!(labels, vec![2, 0, 1], "{name}");
        assert_eq!(split.examples[0].fields["premise"], "a man plays", "{name}");
    }

    // Nothing left: the split is refused, naming the file and why.
    let path = tmp.path().join("test.parquet");
    write_parquet(&path, &ROWS[2..5]);
    let err = read_split(&path, &task).unwrap_err();
    assert!(err.is_bad_input());
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no usable rows: all 3 rows were dropped: 1 with label -1 (no gold label), \
             2 with null or empty text (column \"hypothesis\": 1, column \"premise\": 1)",
            path.display()
        )
    );
}

#[test]
fn minus_one_is_a_label_where_the_task_says_so() {
    let mut task = snli();
    task.label_values = Some(vec![
        LabelValue::Int(-1),
        LabelValue::Int(0),
        LabelValue::Int(2),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("train.jsonl");
    write_jsonl(&path, &ROWS[..3]);
    let split = read_split(&path, &task).unwrap();
    assert_eq!(split.dropped, Dropped::default());
    let labels: Vec<usize> = split.examples.iter().map(|e| e.label).collect();
    assert_eq!(labels, vec![1, 2, 0]);
}

#[test]
fn generation_rows_with_empty_text_are_dropped() {
    let mut task = snli();
    task.kind = TaskKind::Generation;
    task.labels.clear();
    task.label_values = None;
    task.verbalizer = None;
    task.template.encoder = None;
    task.columns = BTreeMap::from([("target".to_string(), "answer".to_string())]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("train.jsonl");
    std::fs::write(
        &path,
        "{\"premise\": \"a\", \"hypothesis\": \"b\", \"answer\": [\"x\", \"y\"]}\n\
         {\"premise\": null, \"hypothesis\": \"b\", \"answer\": [\"x\"]}\n",
    )
    .unwrap();
    let split = read_text_split(&path, &task).unwrap();
    assert_eq!((split.rows, split.examples.len()), (2, 1));
    assert_eq!(split.examples[0].targets, vec!["x", "y"]);
    assert_eq!(split.dropped.empty_text["premise"], 1);
}

#[test]
fn projector_file_with_nan_weights_is_refused_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("proj.safetensors");
    let p = Projector::new(2, 4, 6, 8, 0, Device::Cpu).unwrap();
    let meta = ProjectorMeta {
        src_model: "a".into(),
        tgt_model: "b".into(),
        objective: "distance".into(),
        train_tasks: vec!["sst2".into()],
    };
    p.save(&path, &meta).unwrap();
    Projector::load(&path, Device::Cpu).unwrap();
    // The last value of the file is the last value of its last tensor.
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = Projector::load(&path, Device::Cpu).unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    match &err {
        MlError::NonFinite {
            path: at, count, ..
        } => assert_eq!((at.as_path(), *count), (path.as_path(), 1)),
        other => panic!("{other}"),
    }
    assert!(
        err.to_string().contains("proj.safetensors: tensor"),
        "{err}"
    );
}

#[test]
fn activations_with_nan_give_no_mask() {
    let ok = [Tensor::from_slice(&[0.5f32, -1.0, 2.0])];
    assert_eq!(mask_of(&ok, "m", "t").unwrap().active(), 2);
    let nan = [
        Tensor::from_slice(&[0.5f32, 1.0]),
        Tensor::from_slice(&[f32::NAN, 1.0]).to_kind(Kind::Float),
    ];
    let err = mask_of(&nan, "m", "t").unwrap_err().to_string();
    assert!(err.contains("layer 1's activations hold NaN"), "{err}");
}
