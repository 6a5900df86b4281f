//! Typed access to Arrow columns by name: the [`Kind`] of a column (its Arrow type and array) and
//! the [`Cell`] a field's Rust type makes of it (a value, or an `Option` for a nullable column),
//! so the table declarations in [`crate::schema`] name each column once, and a foreign file fails
//! with the table and the column named instead of a panic.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, TimeUnit};

use crate::error::{Result, ResultsError};

fn table_err(table: &'static str, message: String) -> ResultsError {
    ResultsError::Table {
        table,
        // The caller that knows the file fills it in (`store::for_each_batch`).
        path: Default::default(),
        message,
    }
}

fn lookup<'a>(batch: &'a RecordBatch, table: &'static str, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| table_err(table, format!("column `{name}` is missing")))
}

/// Column `name` of `batch` as the array type `A`.
pub(crate) fn column<'a, A: Array + 'static>(
    batch: &'a RecordBatch,
    table: &'static str,
    name: &str,
) -> Result<&'a A> {
    let c = lookup(batch, table, name)?;
    c.as_any().downcast_ref::<A>().ok_or_else(|| {
        let got = c.data_type();
        table_err(table, format!("column `{name}` has the wrong type {got}"))
    })
}

/// An Arrow column type and the Rust value one of its cells holds.
pub(crate) trait Kind {
    type Value: 'static;
    type Array: Array + 'static;
    fn data_type() -> DataType;
    fn array<'a>(cells: impl Iterator<Item = Option<&'a Self::Value>>) -> ArrayRef;
    /// The value at `i`, which the caller has checked is not null.
    fn value(array: &Self::Array, i: usize) -> Self::Value;
}

/// The column kinds the tables use; a field names one in its declaration.
pub(crate) mod kind {
    pub(crate) struct Utf8;
    pub(crate) struct Int64;
    pub(crate) struct Float64;
    pub(crate) struct Boolean;
    /// Milliseconds since the Unix epoch, stored as a UTC timestamp so tools show dates.
    pub(crate) struct TimestampMsUtc;
}

impl Kind for kind::Utf8 {
    type Value = String;
    type Array = StringArray;
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn array<'a>(cells: impl Iterator<Item = Option<&'a String>>) -> ArrayRef {
        Arc::new(
            cells
                .map(|c| c.map(String::as_str))
                .collect::<StringArray>(),
        )
    }
    fn value(array: &StringArray, i: usize) -> String {
        array.value(i).to_string()
    }
}

/// Kinds whose value is a `Copy` primitive read and written as is.
macro_rules! primitive_kind {
    ($kind:ident, $value:ty, $array:ty, $data_type:expr) => {
        impl Kind for kind::$kind {
            type Value = $value;
            type Array = $array;
            fn data_type() -> DataType {
                $data_type
            }
            fn array<'a>(cells: impl Iterator<Item = Option<&'a $value>>) -> ArrayRef {
                Arc::new(cells.map(|c| c.copied()).collect::<$array>())
            }
            fn value(array: &$array, i: usize) -> $value {
                array.value(i)
            }
        }
    };
}
primitive_kind!(Int64, i64, Int64Array, DataType::Int64);
primitive_kind!(Float64, f64, Float64Array, DataType::Float64);
primitive_kind!(Boolean, bool, BooleanArray, DataType::Boolean);

impl Kind for kind::TimestampMsUtc {
    type Value = i64;
    type Array = TimestampMillisecondArray;
    fn data_type() -> DataType {
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    }
    fn array<'a>(cells: impl Iterator<Item = Option<&'a i64>>) -> ArrayRef {
        let a = cells
            .map(|c| c.copied())
            .collect::<TimestampMillisecondArray>();
        Arc::new(a.with_timezone("UTC"))
    }
    fn value(array: &TimestampMillisecondArray, i: usize) -> i64 {
        array.value(i)
    }
}

/// A field's Rust type in a column of kind `K`: the value itself (a non-null column) or an
/// `Option` of it (a nullable one).
pub(crate) trait Cell<K: Kind>: Sized {
    const NULLABLE: bool;
    fn get(&self) -> Option<&K::Value>;
    /// `None` for a null in a non-null column.
    fn from_value(v: Option<K::Value>) -> Option<Self>;
}

impl<K: Kind> Cell<K> for Option<K::Value> {
    const NULLABLE: bool = true;
    fn get(&self) -> Option<&K::Value> {
        self.as_ref()
    }
    fn from_value(v: Option<K::Value>) -> Option<Self> {
        Some(v)
    }
}

/// Plain values are non-null cells of every kind that holds them (`i64` of `Int64` and of
/// `TimestampMsUtc`); one impl per type, since a blanket one would overlap `Option`'s.
macro_rules! non_null_cell {
    ($($value:ty),+) => {$(
        impl<K: Kind<Value = $value>> Cell<K> for $value {
            const NULLABLE: bool = false;
            fn get(&self) -> Option<&$value> {
                Some(self)
            }
            fn from_value(v: Option<$value>) -> Option<Self> {
                v
            }
        }
    )+};
}
non_null_cell!(String, i64, f64, bool);

/// The schema field of a column of kind `K` holding `T`.
pub(crate) fn field<K: Kind, T: Cell<K>>(name: &str) -> Field {
    Field::new(name, K::data_type(), T::NULLABLE)
}

/// One field of every row, as a column of kind `K`.
pub(crate) fn write<'a, K: Kind, T: Cell<K> + 'a>(cells: impl Iterator<Item = &'a T>) -> ArrayRef {
    K::array(cells.map(T::get))
}

/// Column `name` of `batch` as one `T` per row: it must exist, be exactly of kind `K`, and hold no
/// null unless `T` is an `Option`.
pub(crate) fn read<K: Kind, T: Cell<K>>(
    batch: &RecordBatch,
    table: &'static str,
    name: &str,
) -> Result<Vec<T>> {
    if T::NULLABLE && batch.column_by_name(name).is_none() {
        // A part written before this nullable column was appended (the store lets only those
        // be missing): null in every row.
        return Ok((0..batch.num_rows())
            .filter_map(|_| T::from_value(None))
            .collect());
    }
    let (got, want) = (lookup(batch, table, name)?.data_type(), K::data_type());
    if *got != want {
        return Err(table_err(
            table,
            format!("column `{name}` is {got}, expected {want}"),
        ));
    }
    let c = column::<K::Array>(batch, table, name)?;
    (0..c.len())
        .map(|i| {
            let v = c.is_valid(i).then(|| K::value(c, i));
            T::from_value(v)
                .ok_or_else(|| table_err(table, format!("column `{name}` is null at row {i}")))
        })
        .collect()
}
