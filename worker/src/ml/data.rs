//! Dataset splits: JSONL, CSV/TSV and Parquet files read through a task's column mapping into
//! [`Example`]s, and their encoding for a model ([`TaskData`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, StringArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use promptgrid_common::catalog::{LabelValue, TaskDef};
use serde_json::Value;

use super::error::{MlError, MlResult};
use super::model::{Encoded, EncoderModel};
use super::template;

/// One example: the text of each template field, and the label's index into `task.labels`.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub fields: BTreeMap<String, String>,
    pub label: usize,
}

/// File extensions tried, in order, for a split's stem.
const EXTENSIONS: [&str; 5] = ["parquet", "jsonl", "json", "tsv", "csv"];

/// The file of split `stem` in `dir` (`train` → `train.parquet`, `train.jsonl`, ...).
pub fn find_split(dir: &Path, stem: &str) -> MlResult<PathBuf> {
    let direct = dir.join(stem);
    if direct.extension().is_some() && direct.is_file() {
        return Ok(direct);
    }
    EXTENSIONS
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
        .ok_or_else(|| MlError::MissingFile {
            path: dir.join(format!("{stem}.{{{}}}", EXTENSIONS.join(","))),
        })
}

/// Reads every example of a split file through the task's column mapping.
pub fn load_split(path: &Path, task: &TaskDef) -> MlResult<Vec<Example>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let rows = match ext.as_str() {
        "parquet" => read_parquet(path, task)?,
        "jsonl" | "json" => read_jsonl(path, task)?,
        "tsv" => read_delimited(path, task, b'\t')?,
        "csv" => read_delimited(path, task, b',')?,
        _ => {
            return Err(MlError::data(
                path,
                "unknown split format (parquet, jsonl, csv, tsv)",
            ));
        }
    };
    rows.into_iter()
        .enumerate()
        .map(|(i, (fields, label))| {
            let label = parse_label(&label, task).ok_or_else(|| {
                MlError::data(
                    path,
                    format!(
                        "row {}: label {label:?} is not one of {:?} nor an index into them",
                        i + 1,
                        task.labels
                    ),
                )
            })?;
            Ok(Example { fields, label })
        })
        .collect()
}

/// A stored label to its index: as a name (or `label_values` text) first, then as an integer.
fn parse_label(value: &str, task: &TaskDef) -> Option<usize> {
    let value = value.trim();
    if let Some(i) = task.label_index(&LabelValue::Text(value.to_string())) {
        return Some(i);
    }
    let f: f64 = value.parse().ok()?;
    (f.fract() == 0.0)
        .then(|| task.label_index(&LabelValue::Int(f as i64)))
        .flatten()
}

/// Template fields and their columns, and the label column.
fn mapping(task: &TaskDef) -> MlResult<(Vec<(String, String)>, String)> {
    let template = task
        .template
        .encoder
        .as_deref()
        .unwrap_or(&task.template.t5);
    let fields = TaskDef::template_fields(template)
        .into_iter()
        .map(|f| {
            let column = task.columns.get(&f).cloned().unwrap_or_else(|| f.clone());
            (f, column)
        })
        .collect();
    let label = task
        .columns
        .get("label")
        .cloned()
        .unwrap_or_else(|| "label".into());
    Ok((fields, label))
}

type Row = (BTreeMap<String, String>, String);

fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn read_jsonl(path: &Path, task: &TaskDef) -> MlResult<Vec<Row>> {
    let text = std::fs::read_to_string(path).map_err(|e| MlError::io(path, e))?;
    let (fields, label) = mapping(task)?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| MlError::data(path, format!("line {}: {e}", i + 1)))?;
        let get = |col: &str| {
            v.get(col)
                .map(json_text)
                .ok_or_else(|| MlError::data(path, format!("line {}: no column {col:?}", i + 1)))
        };
        let mut map = BTreeMap::new();
        for (f, c) in &fields {
            map.insert(f.clone(), get(c)?);
        }
        rows.push((map, get(&label)?));
    }
    Ok(rows)
}

/// RFC 4180 records: quoted fields may hold delimiters, doubled quotes and newlines.
fn parse_delimited(text: &str, delim: u8) -> Vec<Vec<String>> {
    let delim = delim as char;
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            '\r' => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            c if c == delim => record.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records.retain(|r| !(r.len() == 1 && r[0].is_empty()));
    records
}

fn read_delimited(path: &Path, task: &TaskDef, delim: u8) -> MlResult<Vec<Row>> {
    let text = std::fs::read_to_string(path).map_err(|e| MlError::io(path, e))?;
    let mut records = parse_delimited(&text, delim).into_iter();
    let header = records
        .next()
        .ok_or_else(|| MlError::data(path, "empty file: no header row"))?;
    let col = |name: &str| {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            MlError::data(path, format!("no column {name:?} in the header {header:?}"))
        })
    };
    let (fields, label) = mapping(task)?;
    let field_cols: Vec<(String, usize)> = fields
        .iter()
        .map(|(f, c)| Ok((f.clone(), col(c)?)))
        .collect::<MlResult<_>>()?;
    let label_col = col(&label)?;
    records
        .enumerate()
        .map(|(i, r)| {
            let get = |j: usize| {
                r.get(j).cloned().ok_or_else(|| {
                    MlError::data(
                        path,
                        format!(
                            "row {}: {} fields, the header has {}",
                            i + 2,
                            r.len(),
                            header.len()
                        ),
                    )
                })
            };
            let mut map = BTreeMap::new();
            for (f, j) in &field_cols {
                map.insert(f.clone(), get(*j)?);
            }
            Ok((map, get(label_col)?))
        })
        .collect()
}

fn read_parquet(path: &Path, task: &TaskDef) -> MlResult<Vec<Row>> {
    let file = std::fs::File::open(path).map_err(|e| MlError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| MlError::data(path, e.to_string()))?;
    let (fields, label) = mapping(task)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| MlError::data(path, e.to_string()))?;
        let column = |name: &str| -> MlResult<StringArray> {
            let array = batch
                .column_by_name(name)
                .ok_or_else(|| MlError::data(path, format!("no column {name:?}")))?;
            let cast = arrow::compute::cast(array, &DataType::Utf8)
                .map_err(|e| MlError::data(path, format!("column {name:?}: {e}")))?;
            cast.as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| MlError::data(path, format!("column {name:?} is not text")))
        };
        let cols: Vec<(String, StringArray)> = fields
            .iter()
            .map(|(f, c)| Ok((f.clone(), column(c)?)))
            .collect::<MlResult<_>>()?;
        let labels = column(&label)?;
        for i in 0..batch.num_rows() {
            let text = |a: &StringArray| {
                if a.is_null(i) {
                    String::new()
                } else {
                    a.value(i).to_string()
                }
            };
            let map = cols.iter().map(|(f, a)| (f.clone(), text(a))).collect();
            rows.push((map, text(&labels)));
        }
    }
    Ok(rows)
}

/// A task's examples encoded for one model: ids, labels and the label words' token ids.
#[derive(Debug, Clone)]
pub struct TaskData {
    pub inputs: Vec<Encoded>,
    pub labels: Vec<i64>,
    /// One token id per label (the verbalizer's encoder words).
    pub label_ids: Vec<i64>,
}

impl TaskData {
    /// Encodes `examples` with the task's encoder template and verbalizer, leaving room for a
    /// prompt of `prompt_len` tokens; `max_text_tokens` caps the text further.
    pub fn encode(
        model: &EncoderModel,
        task: &TaskDef,
        examples: &[Example],
        prompt_len: usize,
        max_text_tokens: Option<usize>,
    ) -> MlResult<TaskData> {
        let template =
            task.template.encoder.as_deref().ok_or_else(|| {
                MlError::Invalid(format!("task {}: no encoder template", task.name))
            })?;
        let words = &task
            .verbalizer
            .as_ref()
            .ok_or_else(|| MlError::Invalid(format!("task {}: no verbalizer", task.name)))?
            .encoder;
        Self::encode_with(
            model,
            template,
            words,
            examples,
            prompt_len,
            max_text_tokens,
        )
    }

    /// [`Self::encode`] with an explicit template and label words.
    pub fn encode_with(
        model: &EncoderModel,
        template: &str,
        label_words: &[String],
        examples: &[Example],
        prompt_len: usize,
        max_text_tokens: Option<usize>,
    ) -> MlResult<TaskData> {
        let label_ids = model.tokenizer.label_ids(label_words)?;
        let max_positions = model.config.max_tokens();
        if model.layout == super::Layout::Prefix && prompt_len >= max_positions {
            return Err(MlError::PromptTooLong {
                prompt_len,
                template_len: 0,
                max_positions,
            });
        }
        let mut budget = model.text_budget(prompt_len);
        if let Some(cap) = max_text_tokens {
            budget = budget.min(cap);
        }
        let inputs = examples
            .iter()
            .map(|e| {
                template::encode(
                    &model.tokenizer,
                    template,
                    &e.fields,
                    budget,
                    prompt_len,
                    max_positions,
                )
            })
            .collect::<MlResult<Vec<_>>>()?;
        for e in examples {
            if e.label >= label_ids.len() {
                return Err(MlError::Invalid(format!(
                    "label {} but only {} label words",
                    e.label,
                    label_ids.len()
                )));
            }
        }
        Ok(TaskData {
            inputs,
            labels: examples.iter().map(|e| e.label as i64).collect(),
            label_ids,
        })
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    pub fn num_labels(&self) -> usize {
        self.label_ids.len()
    }
}
