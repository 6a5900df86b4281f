//! Interned names of models, tasks and splits inside job specs.
//!
//! A planned grid of a million jobs holds a few hundred distinct names, each repeated in
//! thousands of specs. As `String`s they were four allocations of 24 bytes plus heap per
//! transfer job; a [`Symbol`] is one pointer, and two symbols are equal exactly when they are
//! the same pointer. Every distinct name is kept for the life of the process: they come from
//! sweep files and job messages, so there are as many as a site has models, tasks and splits.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name, interned: `Copy`, one pointer wide, compared by address, read as a `&str`.
#[derive(Clone, Copy)]
pub struct Symbol(&'static &'static str);

fn table() -> &'static Mutex<HashMap<&'static str, Symbol>> {
    static TABLE: OnceLock<Mutex<HashMap<&'static str, Symbol>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

impl Symbol {
    /// The symbol of `name`, interning it on first use.
    pub fn new(name: &str) -> Symbol {
        // A poisoned table is still consistent: an insert is the last thing done under it.
        let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&s) = t.get(name) {
            return s;
        }
        let text: &'static str = Box::leak(name.into());
        let s = Symbol(Box::leak(Box::new(text)));
        t.insert(text, s);
        s
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl std::ops::Deref for Symbol {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// Equal strings are one symbol, so `Hash` (of the text) and `Eq` (of the address) agree with
/// `str`'s and a map keyed by symbols can be searched with a `&str`.
impl std::borrow::Borrow<str> for Symbol {
    fn borrow(&self) -> &str {
        self.0
    }
}

impl PartialEq for Symbol {
    fn eq(&self, other: &Symbol) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Symbol {}

impl std::hash::Hash for Symbol {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.hash(h)
    }
}

/// By the text, so that sorted output does not depend on the order names were first seen.
impl Ord for Symbol {
    fn cmp(&self, other: &Symbol) -> std::cmp::Ordering {
        self.0.cmp(other.0)
    }
}

impl PartialOrd for Symbol {
    fn partial_cmp(&self, other: &Symbol) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq<str> for Symbol {
    fn eq(&self, other: &str) -> bool {
        *self.0 == other
    }
}

impl PartialEq<&str> for Symbol {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<String> for Symbol {
    fn eq(&self, other: &String) -> bool {
        *self.0 == other.as_str()
    }
}

impl PartialEq<Symbol> for str {
    fn eq(&self, other: &Symbol) -> bool {
        self == *other.0
    }
}

impl PartialEq<Symbol> for &str {
    fn eq(&self, other: &Symbol) -> bool {
        *self == *other.0
    }
}

impl PartialEq<Symbol> for String {
    fn eq(&self, other: &Symbol) -> bool {
        self.as_str() == *other.0
    }
}

impl From<&str> for Symbol {
    fn from(s: &str) -> Symbol {
        Symbol::new(s)
    }
}

impl From<&String> for Symbol {
    fn from(s: &String) -> Symbol {
        Symbol::new(s)
    }
}

impl From<String> for Symbol {
    fn from(s: String) -> Symbol {
        Symbol::new(&s)
    }
}

impl From<Symbol> for String {
    fn from(s: Symbol) -> String {
        s.0.to_string()
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

/// As the plain string: job ids hash the serialized spec, which must not change.
impl Serialize for Symbol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Symbol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Symbol, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Symbol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Symbol, E> {
                Ok(Symbol::new(v))
            }
        }
        d.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_are_one_symbol_and_read_back_as_their_text() {
        let a = Symbol::new("roberta-base");
        let b = Symbol::from(String::from("roberta-base"));
        let c = Symbol::new("roberta-large");
        assert!(std::ptr::eq(a.0, b.0));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, "roberta-base");
        assert_eq!(&*a, "roberta-base");
        assert!(a < c, "ordered by text");
        assert_eq!(std::mem::size_of::<Symbol>(), 8);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"roberta-base\"");
        assert_eq!(serde_json::from_str::<Symbol>(&json).unwrap(), a);
        let mut m = std::collections::HashMap::new();
        m.insert(a, 1);
        assert_eq!(m.get("roberta-base"), Some(&1));
    }
}
