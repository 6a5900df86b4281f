//! Dataset splits: JSONL, CSV/TSV and Parquet files read through a task's column mapping into
//! [`Example`]s (classification) or [`TextExample`]s (generation), and their encoding for an
//! encoder ([`TaskData`]; T5: [`super::t5data`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{
    Array, ArrayRef, GenericListArray, LargeListArray, ListArray, OffsetSizeTrait, StringArray,
    StructArray,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use promptgrid_common::catalog::{LabelValue, Rows, TaskDef, TaskKind};
use serde_json::Value;

use super::config::Family;
use super::error::{MlError, MlResult};
use super::model::{Encoded, EncoderModel};
use super::template;

/// One example: the text of each template field, and the label's index into `task.labels`.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub fields: BTreeMap<String, String>,
    pub label: usize,
}

/// One example of a generation task: the text of each template field, and its gold targets
/// (training uses the first; scoring takes the best over all of them).
#[derive(Debug, Clone, PartialEq)]
pub struct TextExample {
    pub fields: BTreeMap<String, String>,
    pub targets: Vec<String>,
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

/// The rows of a split file through the task's column mapping: the template fields and the
/// label (classification) or target (generation) column's values.
fn read_rows(path: &Path, task: &TaskDef) -> MlResult<Vec<Row>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "parquet" => read_parquet(path, task),
        "jsonl" | "json" => read_jsonl(path, task),
        "tsv" => read_delimited(path, task, b'\t'),
        "csv" => read_delimited(path, task, b','),
        _ => Err(MlError::data(
            path,
            "unknown split format (parquet, jsonl, csv, tsv)",
        )),
    }
}

/// Rows of a split file left out, and why. The official code drops the same rows (SNLI's -1,
/// Prompt-Transferability-1.0/dataset/snliDataset.py) or would crash on them (null text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Rows whose label is -1, Hugging Face's "no gold label" (SNLI pairs without annotator
    /// consensus, hidden GLUE test labels), where -1 is not one of the task's label values.
    pub no_gold_label: usize,
    /// Rows with a null or blank template field, by the first such column of the row.
    pub empty_text: BTreeMap<String, usize>,
}

impl Dropped {
    pub fn total(&self) -> usize {
        self.no_gold_label + self.empty_text.values().sum::<usize>()
    }

    /// "2 with label -1 (no gold label), 1 with null or empty text (column "premise": 1)".
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.no_gold_label > 0 {
            parts.push(format!(
                "{} with label -1 (no gold label)",
                self.no_gold_label
            ));
        }
        let empty: usize = self.empty_text.values().sum();
        if empty > 0 {
            let columns: Vec<String> = self
                .empty_text
                .iter()
                .map(|(c, n)| format!("column {c:?}: {n}"))
                .collect();
            parts.push(format!(
                "{empty} with null or empty text ({})",
                columns.join(", ")
            ));
        }
        parts.join(", ")
    }
}

/// The examples of a split file, how many rows it held and which were dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitRows<T> {
    pub examples: Vec<T>,
    /// Rows in the file (blank JSONL lines and the CSV header not counted).
    pub rows: usize,
    pub dropped: Dropped,
}

impl<T> SplitRows<T> {
    /// Refuses a split with nothing left, and warns (naming the file) when rows were dropped.
    fn checked(self, path: &Path) -> MlResult<SplitRows<T>> {
        if self.rows == 0 {
            return Err(MlError::data(path, "the split has no rows"));
        }
        if self.examples.is_empty() {
            return Err(MlError::data(
                path,
                format!(
                    "no usable rows: all {} rows were dropped: {}",
                    self.rows,
                    self.dropped.describe()
                ),
            ));
        }
        if self.dropped.total() > 0 {
            tracing::warn!(
                file = %path.display(),
                rows = self.rows,
                dropped = self.dropped.total(),
                "{}: dropped {} of {} rows: {}",
                path.display(),
                self.dropped.total(),
                self.rows,
                self.dropped.describe()
            );
        }
        Ok(self)
    }
}

/// The first template field of a row that is null or blank (its column name).
fn empty_field<'c>(
    fields: &BTreeMap<String, String>,
    columns: &'c [(String, String)],
) -> Option<&'c str> {
    columns
        .iter()
        .find(|(f, _)| fields.get(f).is_none_or(|v| v.trim().is_empty()))
        .map(|(_, c)| c.as_str())
}

/// Reads every example of a generation task's split: its fields and gold targets. A list-valued
/// target column (`answers.text`, NQ-Open's `answer`) gives all its items, in order.
pub fn load_text_split(path: &Path, task: &TaskDef) -> MlResult<Vec<TextExample>> {
    Ok(read_text_split(path, task)?.examples)
}

/// [`load_text_split`] with the row counts; rows with an empty template field are dropped.
pub fn read_text_split(path: &Path, task: &TaskDef) -> MlResult<SplitRows<TextExample>> {
    let (columns, _) = mapping(task)?;
    let rows = read_rows(path, task)?;
    let mut out = SplitRows {
        examples: Vec::with_capacity(rows.len()),
        rows: rows.len(),
        dropped: Dropped::default(),
    };
    for (i, (fields, targets)) in rows.into_iter().enumerate() {
        if let Some(column) = empty_field(&fields, &columns) {
            *out.dropped.empty_text.entry(column.into()).or_default() += 1;
            continue;
        }
        if targets.is_empty() {
            return Err(MlError::data(
                path,
                format!("row {}: the target column holds no text", i + 1),
            ));
        }
        out.examples.push(TextExample { fields, targets });
    }
    out.checked(path)
}

/// A split file and the rows of it that a role reads ([`Splits::of`]).
///
/// [`Splits::of`]: promptgrid_common::catalog::Splits::of
#[derive(Debug, Clone, Copy)]
pub struct SplitFile<'a> {
    pub path: &'a Path,
    pub rows: Rows,
}

/// [`load_split`] of the rows `file` names.
pub fn load_split_rows(file: SplitFile<'_>, task: &TaskDef) -> MlResult<Vec<Example>> {
    super::holdout::select(
        load_split(file.path, task)?,
        file.rows,
        &task.name,
        file.path,
    )
}

/// Reads every example of a split file through the task's column mapping. Rows with label -1
/// (no gold label) or an empty template field are dropped with a warning that counts them; a
/// split with nothing left is an error.
pub fn load_split(path: &Path, task: &TaskDef) -> MlResult<Vec<Example>> {
    Ok(read_split(path, task)?.examples)
}

/// [`load_split`] with the row counts.
pub fn read_split(path: &Path, task: &TaskDef) -> MlResult<SplitRows<Example>> {
    let (columns, label_column) = mapping(task)?;
    let rows = read_rows(path, task)?;
    let mut out = SplitRows {
        examples: Vec::with_capacity(rows.len()),
        rows: rows.len(),
        dropped: Dropped::default(),
    };
    for (i, (fields, labels)) in rows.into_iter().enumerate() {
        let label = labels.into_iter().next().unwrap_or_default();
        let Some(index) = parse_label(&label, task) else {
            if is_no_gold_label(&label) {
                out.dropped.no_gold_label += 1;
                continue;
            }
            let what = if label.trim().is_empty() {
                format!("the label (column {label_column:?}) is null or empty")
            } else {
                format!(
                    "label {label:?} (column {label_column:?}) is not one of {} nor an index into them",
                    describe_labels(task)
                )
            };
            return Err(MlError::data(path, format!("row {}: {what}", i + 1)));
        };
        if let Some(column) = empty_field(&fields, &columns) {
            *out.dropped.empty_text.entry(column.into()).or_default() += 1;
            continue;
        }
        out.examples.push(Example {
            fields,
            label: index,
        });
    }
    out.checked(path)
}

/// The task's labels, with the stored values where `label_values` maps them.
fn describe_labels(task: &TaskDef) -> String {
    match &task.label_values {
        Some(values) => {
            let pairs: Vec<String> = task
                .labels
                .iter()
                .zip(values)
                .map(|(l, v)| match v {
                    LabelValue::Int(i) => format!("{i} ({l})"),
                    LabelValue::Text(t) => format!("{t:?} ({l})"),
                })
                .collect();
            format!("[{}]", pairs.join(", "))
        }
        None => format!("{:?}", task.labels),
    }
}

/// Hugging Face's ClassLabel stores -1 for a row without a label.
fn is_no_gold_label(value: &str) -> bool {
    value.trim().parse::<f64>().is_ok_and(|v| v == -1.0)
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
    // The fields of both templates, so that one reading serves encoders and T5.
    let mut names = Vec::new();
    for template in task.template.encoder.iter().chain([&task.template.t5]) {
        for f in TaskDef::template_fields(template) {
            if !names.contains(&f) {
                names.push(f);
            }
        }
    }
    let fields = names
        .into_iter()
        .map(|f| {
            let column = task.columns.get(&f).cloned().unwrap_or_else(|| f.clone());
            (f, column)
        })
        .collect();
    // Generation tasks have no label: their answer column is `target`.
    let key = match task.kind {
        TaskKind::Classification => "label",
        TaskKind::Generation => "target",
    };
    let label = task.columns.get(key).cloned().unwrap_or_else(|| key.into());
    Ok((fields, label))
}

/// The template fields' texts, and the label or target column's values (one, or a list's items).
type Row = (BTreeMap<String, String>, Vec<String>);

fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// What a JSON value is, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `col` of a JSON row: the key itself, else a dotted path into nested objects
/// (`answers.text`).
fn json_lookup<'v>(v: &'v Value, col: &str) -> Option<&'v Value> {
    v.get(col).or_else(|| {
        col.split('.')
            .try_fold(v, |node, key| node.as_object()?.get(key))
    })
}

/// A label or target value: a list's items, or the value as one text.
fn json_texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(json_text).collect(),
        other => vec![json_text(other)],
    }
}

/// A split file as UTF-8 text, without a leading byte-order mark (Excel and some GLUE files
/// start with one, which would otherwise become part of the first column's name).
fn read_text(path: &Path) -> MlResult<String> {
    let bytes = std::fs::read(path).map_err(|e| MlError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        MlError::data(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {}); re-encode the file as UTF-8",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// JSON Lines, or (`.json` files such as the official SemEval ones) one JSON array of rows.
fn read_jsonl(path: &Path, task: &TaskDef) -> MlResult<Vec<Row>> {
    let text = read_text(path)?;
    let values: Vec<(String, Value)> = if text.trim_start().starts_with('[') {
        let all: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| MlError::data(path, format!("a JSON array of rows: {e}")))?;
        all.into_iter()
            .enumerate()
            .map(|(i, v)| (format!("row {}", i + 1), v))
            .collect()
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .map(|v| (format!("line {}", i + 1), v))
                    .map_err(|e| MlError::data(path, format!("line {}: {e}", i + 1)))
            })
            .collect::<MlResult<_>>()?
    };
    let (fields, label) = mapping(task)?;
    let mut rows = Vec::with_capacity(values.len());
    for (at, v) in values {
        if !v.is_object() {
            return Err(MlError::data(
                path,
                format!(
                    "{at}: {} where a row (a JSON object) belongs",
                    json_kind(&v)
                ),
            ));
        }
        let get = |col: &str| {
            json_lookup(&v, col).ok_or_else(|| {
                let have: Vec<&String> = v
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
                MlError::data(
                    path,
                    format!("{at}: no column {col:?}; the row has {have:?}"),
                )
            })
        };
        let mut map = BTreeMap::new();
        for (f, c) in &fields {
            let value = get(c)?;
            // Text fields hold text (or null, dropped later): a number or a list here means
            // the column mapping names the wrong column.
            if !matches!(value, Value::String(_) | Value::Null) {
                return Err(MlError::data(
                    path,
                    format!(
                        "{at}: column {c:?} (template field {{{f}}}) holds {}, not text",
                        json_kind(value)
                    ),
                ));
            }
            map.insert(f.clone(), json_text(value));
        }
        let value = get(&label)?;
        if task.kind == TaskKind::Classification && (value.is_array() || value.is_object()) {
            return Err(MlError::data(
                path,
                format!(
                    "{at}: label column {label:?} holds {}; a label is one integer or name",
                    json_kind(value)
                ),
            ));
        }
        rows.push((map, json_texts(value)));
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
    let text = read_text(path)?;
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
            Ok((map, vec![get(label_col)?]))
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
        let column = |name: &str| -> MlResult<ArrayRef> {
            parquet_column(&batch, name).ok_or_else(|| {
                let have: Vec<&str> = batch
                    .schema_ref()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                MlError::data(path, format!("no column {name:?}; the file has {have:?}"))
            })
        };
        let cols: Vec<(String, StringArray)> = fields
            .iter()
            .map(|(f, c)| {
                let array = column(c)?;
                // A number column read as text would train on digits: the mapping names the
                // wrong column.
                if !is_text_type(array.data_type()) {
                    return Err(MlError::data(
                        path,
                        format!(
                            "column {c:?} (template field {{{f}}}) is {}, not text",
                            array.data_type()
                        ),
                    ));
                }
                Ok((f.clone(), utf8(&array, c, path)?))
            })
            .collect::<MlResult<_>>()?;
        let label_array = column(&label)?;
        if task.kind == TaskKind::Classification && !is_label_type(label_array.data_type()) {
            return Err(MlError::data(
                path,
                format!(
                    "label column {label:?} is {}; a label is one integer or name",
                    label_array.data_type()
                ),
            ));
        }
        let labels = parquet_texts(&label_array, &label, path)?;
        for (i, label) in labels.into_iter().enumerate() {
            let map = cols
                .iter()
                .map(|(f, a)| (f.clone(), text_at(a, i)))
                .collect();
            rows.push((map, label));
        }
    }
    Ok(rows)
}

fn is_text_type(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_text_type(values),
        _ => false,
    }
}

/// Class labels: integers (Hugging Face ClassLabel), names, or whole floats.
fn is_label_type(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(_, values) => is_label_type(values),
        t => is_text_type(t) || t.is_integer() || t.is_floating(),
    }
}

/// `name` of a record batch: the column itself, else a dotted path into struct columns
/// (`answers.text` of the SQuAD export).
fn parquet_column(batch: &RecordBatch, name: &str) -> Option<ArrayRef> {
    if let Some(array) = batch.column_by_name(name) {
        return Some(array.clone());
    }
    let mut parts = name.split('.');
    let mut array = batch.column_by_name(parts.next()?)?.clone();
    for part in parts {
        let child = array
            .as_any()
            .downcast_ref::<StructArray>()?
            .column_by_name(part)?
            .clone();
        array = child;
    }
    Some(array)
}

fn utf8(array: &ArrayRef, name: &str, path: &Path) -> MlResult<StringArray> {
    let cast = arrow::compute::cast(array, &DataType::Utf8)
        .map_err(|e| MlError::data(path, format!("column {name:?}: {e}")))?;
    cast.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| MlError::data(path, format!("column {name:?} is not text")))
}

/// Row `i` of a text column; null reads as empty.
fn text_at(a: &StringArray, i: usize) -> String {
    if a.is_null(i) {
        String::new()
    } else {
        a.value(i).to_string()
    }
}

/// Per row, the texts of a label or target column: a list's (non-null) items, or the value.
fn parquet_texts(array: &ArrayRef, name: &str, path: &Path) -> MlResult<Vec<Vec<String>>> {
    if let Some(list) = array.as_any().downcast_ref::<ListArray>() {
        return list_texts(list, name, path);
    }
    if let Some(list) = array.as_any().downcast_ref::<LargeListArray>() {
        return list_texts(list, name, path);
    }
    let texts = utf8(array, name, path)?;
    Ok((0..texts.len()).map(|i| vec![text_at(&texts, i)]).collect())
}

fn list_texts<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
    name: &str,
    path: &Path,
) -> MlResult<Vec<Vec<String>>> {
    (0..list.len())
        .map(|i| {
            if list.is_null(i) {
                return Ok(Vec::new());
            }
            let items = utf8(&list.value(i), name, path)?;
            Ok((0..items.len())
                .filter(|&j| !items.is_null(j))
                .map(|j| items.value(j).to_string())
                .collect())
        })
        .collect()
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
    /// Encodes `examples` with the task's encoder template and verbalizer (its BERT words for a
    /// BERT checkpoint, where it has them), leaving room for a prompt of `prompt_len` tokens;
    /// `max_text_tokens` caps the text further.
    pub fn encode(
        model: &EncoderModel,
        task: &TaskDef,
        examples: &[Example],
        prompt_len: usize,
        max_text_tokens: Option<usize>,
    ) -> MlResult<TaskData> {
        let template = task.template.encoder.as_deref().ok_or_else(|| {
            MlError::Invalid(format!(
                "task `{}` has no encoder template (T5 only)",
                task.name
            ))
        })?;
        let words = task
            .encoder_words(model.family == Family::Bert)
            .ok_or_else(|| MlError::Invalid(format!("task `{}` has no verbalizer", task.name)))?;
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
        // Before any example is encoded or any prompt allocated.
        super::limits::check_prompt_len(&model.config, model.layout, prompt_len, &model.name)?;
        let label_ids = model.tokenizer.label_ids(label_words)?;
        let max_positions = model.config.max_tokens();
        let mut budget = model.text_budget(prompt_len);
        if let Some(cap) = max_text_tokens.filter(|&cap| cap < budget) {
            // The cap, not the model, binds: a template that cannot fit it is the cap's fault,
            // and the message must say so rather than blame the prompt.
            let empty: BTreeMap<String, String> = TaskDef::template_fields(template)
                .into_iter()
                .map(|f| (f, String::new()))
                .collect();
            let rendered = template::render(
                template,
                &empty,
                &model.tokenizer.mask_token,
                &model.tokenizer.sep_token,
            )?;
            let needed = model.tokenizer.encode(&rendered)?.len();
            if needed > cap {
                return Err(MlError::TextCap {
                    cap,
                    needed,
                    template: template.to_string(),
                });
            }
            budget = cap;
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
