//! Split files through a column mapping, templates, truncation and metrics.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use promptgrid_common::catalog::{
    LabelValue, Metric, Splits, TaskDef, TaskKind, Templates, Verbalizer,
};
use promptgrid_ml::data::{find_split, load_split};
use promptgrid_ml::{Example, Head, Layout, MlError, TaskData, metrics};

use crate::util::load;

fn task(template: &str) -> TaskDef {
    TaskDef {
        name: "toy".into(),
        title: "Toy".into(),
        task_type: "sentiment".into(),
        kind: TaskKind::Classification,
        metric: Metric::Accuracy,
        labels: vec!["negative".into(), "positive".into()],
        label_values: None,
        verbalizer: Some(Verbalizer {
            encoder: vec!["terrible".into(), "great".into()],
            bert: None,
            t5: vec!["bad".into(), "good".into()],
        }),
        template: Templates {
            encoder: Some(template.into()),
            t5: "{premise} {hypothesis}".into(),
        },
        columns: BTreeMap::from([
            ("premise".to_string(), "sentence1".to_string()),
            ("hypothesis".to_string(), "sentence2".to_string()),
            ("label".to_string(), "gold".to_string()),
        ]),
        splits: Splits {
            train: "train".into(),
            dev: "dev".into(),
            test: None,
            dev_holdout_percent: None,
        },
        data_dir: None,
        source: None,
        t5: None,
        also: vec![],
    }
}

fn expected() -> Vec<Example> {
    let ex = |a: &str, b: &str, label| Example {
        fields: BTreeMap::from([
            ("premise".to_string(), a.to_string()),
            ("hypothesis".to_string(), b.to_string()),
        ]),
        label,
    };
    vec![
        ex("it was good, really", "yes \"so\" good", 1),
        ex("bad", "no", 0),
        ex("fine", "maybe", 1),
    ]
}

#[test]
fn jsonl_csv_tsv_and_parquet_read_alike() {
    let t = task("{premise} ? {mask} , {hypothesis}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("train.jsonl"),
        "{\"sentence1\": \"it was good, really\", \"sentence2\": \"yes \\\"so\\\" good\", \"gold\": 1}\n\
         {\"sentence1\": \"bad\", \"sentence2\": \"no\", \"gold\": \"negative\"}\n\n\
         {\"sentence1\": \"fine\", \"sentence2\": \"maybe\", \"gold\": \"positive\", \"extra\": 3}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a.csv"),
        "idx,sentence1,sentence2,gold\r\n0,\"it was good, really\",\"yes \"\"so\"\" good\",1\r\n1,bad,no,negative\r\n2,fine,maybe,1\r\n",
    )
    .unwrap();
    std::fs::write(dir.join("b.tsv"), "sentence2\tsentence1\tgold\nyes \"so\" good\tit was good, really\t1\nno\tbad\t0\nmaybe\tfine\tpositive\n").unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("sentence1", DataType::Utf8, false),
        Field::new("sentence2", DataType::Utf8, false),
        Field::new("gold", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![
                "it was good, really",
                "bad",
                "fine",
            ])),
            Arc::new(StringArray::from(vec!["yes \"so\" good", "no", "maybe"])),
            Arc::new(Int64Array::from(vec![1, 0, 1])),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(dir.join("dev.parquet")).unwrap();
    let mut w = ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let want = expected();
    assert_eq!(find_split(dir, "train").unwrap(), dir.join("train.jsonl"));
    assert_eq!(find_split(dir, "dev").unwrap(), dir.join("dev.parquet"));
    assert!(matches!(
        find_split(dir, "test"),
        Err(MlError::MissingFile { .. })
    ));
    for f in ["train.jsonl", "a.csv", "b.tsv", "dev.parquet"] {
        assert_eq!(load_split(&dir.join(f), &t).unwrap(), want, "{f}");
    }
    std::fs::write(
        dir.join("bad.jsonl"),
        "{\"sentence1\": \"x\", \"sentence2\": \"y\", \"gold\": 7}\n",
    )
    .unwrap();
    let err = load_split(&dir.join("bad.jsonl"), &t)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 1") && err.contains("bad.jsonl"), "{err}");
    std::fs::write(dir.join("bad.csv"), "sentence1,gold\nx,1\n").unwrap();
    let err = load_split(&dir.join("bad.csv"), &t)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sentence2"), "{err}");
}

#[test]
fn templates_fill_fields_and_truncate_to_fit() {
    let model = load("tiny-bert", Head::Tied, Layout::Prefix);
    let t = task("{premise} ? {mask} , {hypothesis}");
    let short = TaskData::encode(&model, &t, &expected(), 5, None).unwrap();
    let first = &short.inputs[0];
    let tokens: Vec<String> = first
        .ids
        .iter()
        .map(|&i| model.tokenizer.id_to_token(i))
        .collect();
    assert_eq!(
        tokens.join(" "),
        "[CLS] it was good , really ? [MASK] , yes [UNK] so [UNK] good [SEP]"
    );
    assert_eq!(tokens[first.mask_index], "[MASK]");
    assert_eq!(short.labels, vec![1, 0, 1]);

    let long = "the movie was great and the music was fun . ".repeat(20);
    let ex = Example {
        fields: BTreeMap::from([
            ("premise".into(), long.clone()),
            ("hypothesis".into(), "yes".into()),
        ]),
        label: 1,
    };
    // 64 positions: 10 prompt tokens leave 54.
    let data = TaskData::encode(&model, &t, std::slice::from_ref(&ex), 10, None).unwrap();
    assert!(
        data.inputs[0].ids.len() <= 54 && data.inputs[0].ids.len() >= 50,
        "{}",
        data.inputs[0].ids.len()
    );
    let capped = TaskData::encode(&model, &t, &[ex], 10, Some(20)).unwrap();
    let tokens: Vec<String> = capped.inputs[0]
        .ids
        .iter()
        .map(|&i| model.tokenizer.id_to_token(i))
        .collect();
    assert!(capped.inputs[0].ids.len() <= 20);
    assert_eq!(
        &tokens[tokens.len() - 5..],
        ["?", "[MASK]", ",", "yes", "[SEP]"]
    );

    // RoBERTa (byte-level BPE, positions offset by 2): 66 positions hold 64 tokens.
    let roberta = load("tiny-roberta", Head::Tied, Layout::Prefix);
    let ex = Example {
        fields: BTreeMap::from([
            ("premise".into(), long),
            ("hypothesis".into(), "yes".into()),
        ]),
        label: 0,
    };
    let data = TaskData::encode(&roberta, &t, &[ex], 4, None).unwrap();
    assert!(
        data.inputs[0].ids.len() <= 60,
        "{}",
        data.inputs[0].ids.len()
    );
}

#[test]
fn accuracy_and_macro_f1() {
    let p = [0, 0, 1, 1, 2, 0];
    let l = [0, 1, 1, 1, 2, 2];
    assert!((metrics::accuracy(&p, &l) - 4.0 / 6.0).abs() < 1e-12);
    // Per class F1: 0: 2·1/(3+1)=0.5, 1: 2·2/(2+3)=0.8, 2: 2·1/(1+2)=2/3.
    let want = (0.5 + 0.8 + 2.0 / 3.0) / 3.0;
    assert!((metrics::macro_f1(&p, &l, 3) - want).abs() < 1e-12);
    assert_eq!(metrics::accuracy(&[], &[]), 0.0);
    assert_eq!(
        metrics::score(Metric::MacroF1, &p, &l, 3),
        Some(metrics::macro_f1(&p, &l, 3))
    );
}

#[test]
fn separator_fields_and_label_values() {
    let model = load("tiny-bert", Head::Tied, Layout::Prefix);
    let t = task("{mask} {premise} {sep} {hypothesis}");
    let data = TaskData::encode(&model, &t, &expected()[1..2], 5, None).unwrap();
    let tokens: Vec<String> = data.inputs[0]
        .ids
        .iter()
        .map(|&i| model.tokenizer.id_to_token(i))
        .collect();
    assert_eq!(tokens.join(" "), "[CLS] [MASK] bad [SEP] no [SEP]");
    assert_eq!(data.inputs[0].mask_index, 1);

    // label_values: the dataset's 1 is labels[0] (the official order differs from GLUE's).
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.jsonl");
    std::fs::write(&path, "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"gold\": 1}\n{\"sentence1\": \"a\", \"sentence2\": \"b\", \"gold\": 0}\n").unwrap();
    let mut t = task("{premise} {mask} {hypothesis}");
    t.label_values = Some(vec![LabelValue::Int(1), LabelValue::Int(0)]);
    let labels: Vec<usize> = load_split(&path, &t)
        .unwrap()
        .iter()
        .map(|e| e.label)
        .collect();
    assert_eq!(labels, vec![0, 1]);
}
