//! Typed access to Arrow columns by name, so each table's row conversion reads as a list of
//! fields and a foreign schema fails with the column named.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};

use crate::error::{Result, ResultsError};

pub(crate) fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    table: &'static str,
    name: &str,
) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| ResultsError::Table {
            table,
            path: Default::default(),
            message: format!("column `{name}` is missing or has the wrong type"),
        })
}

fn null_err(table: &'static str, name: &str, row: usize) -> ResultsError {
    ResultsError::Table {
        table,
        path: Default::default(),
        message: format!("column `{name}` is null at row {row}"),
    }
}

pub(crate) fn strings(b: &RecordBatch, table: &'static str, name: &str) -> Result<Vec<String>> {
    let c = column::<StringArray>(b, table, name)?;
    (0..c.len())
        .map(|i| {
            if c.is_null(i) {
                Err(null_err(table, name, i))
            } else {
                Ok(c.value(i).to_string())
            }
        })
        .collect()
}

pub(crate) fn opt_strings(
    b: &RecordBatch,
    table: &'static str,
    name: &str,
) -> Result<Vec<Option<String>>> {
    let c = column::<StringArray>(b, table, name)?;
    Ok(c.iter().map(|v| v.map(str::to_string)).collect())
}

pub(crate) fn ints(b: &RecordBatch, table: &'static str, name: &str) -> Result<Vec<i64>> {
    let c = column::<Int64Array>(b, table, name)?;
    (0..c.len())
        .map(|i| {
            if c.is_null(i) {
                Err(null_err(table, name, i))
            } else {
                Ok(c.value(i))
            }
        })
        .collect()
}

pub(crate) fn opt_ints(
    b: &RecordBatch,
    table: &'static str,
    name: &str,
) -> Result<Vec<Option<i64>>> {
    Ok(column::<Int64Array>(b, table, name)?.iter().collect())
}

pub(crate) fn floats(b: &RecordBatch, table: &'static str, name: &str) -> Result<Vec<f64>> {
    let c = column::<Float64Array>(b, table, name)?;
    (0..c.len())
        .map(|i| {
            if c.is_null(i) {
                Err(null_err(table, name, i))
            } else {
                Ok(c.value(i))
            }
        })
        .collect()
}

pub(crate) fn opt_floats(
    b: &RecordBatch,
    table: &'static str,
    name: &str,
) -> Result<Vec<Option<f64>>> {
    Ok(column::<Float64Array>(b, table, name)?.iter().collect())
}

pub(crate) fn opt_bools(
    b: &RecordBatch,
    table: &'static str,
    name: &str,
) -> Result<Vec<Option<bool>>> {
    Ok(column::<BooleanArray>(b, table, name)?.iter().collect())
}

pub(crate) fn opt_times(
    b: &RecordBatch,
    table: &'static str,
    name: &str,
) -> Result<Vec<Option<i64>>> {
    Ok(column::<TimestampMillisecondArray>(b, table, name)?
        .iter()
        .collect())
}

pub(crate) fn str_col<'a>(v: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

pub(crate) fn opt_str_col<'a>(v: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<StringArray>())
}

pub(crate) fn int_col(v: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}

pub(crate) fn opt_int_col(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<Int64Array>())
}

pub(crate) fn float_col(v: impl IntoIterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(v))
}

pub(crate) fn opt_float_col(v: impl IntoIterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<Float64Array>())
}

pub(crate) fn opt_bool_col(v: impl IntoIterator<Item = Option<bool>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<BooleanArray>())
}

pub(crate) fn opt_time_col(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        v.into_iter()
            .collect::<TimestampMillisecondArray>()
            .with_timezone("UTC"),
    )
}
