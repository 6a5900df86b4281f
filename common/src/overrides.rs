//! `--set key=value` overrides of a sweep file, the way Hydra users expect them: run the paper's
//! own sweep with a few settings changed on the command line instead of copying the file.
//!
//! A key is a dotted path into the TOML document. In an array of tables (`model`, `task`,
//! `studies.cross_model`) a segment picks elements: a number is an index, `*` is every element,
//! and any other word is the element whose `name` (or, for `studies.cross_model`, `src->tgt`)
//! equals it. So `prompt.max_steps=2`, `task.sst2.prompt.max_steps=4`,
//! `model.*.prompt.learning_rate=0.1` and `studies.cross_model.0.steps=3` all work. A value is read
//! as a TOML value (`2`, `0.1`, `true`, `[1, 2]`, `"text"`); anything that does not parse as one
//! is taken as a bare string, so `init=vocab` needs no quotes. Missing tables are created; the
//! sweep's validation then refuses unknown keys exactly as it does in a file.

use std::fmt;
use std::str::FromStr;

use toml::{Table, Value};

/// One `key=value` override.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The dotted path, split at '.'.
    pub path: Vec<String>,
    pub value: Value,
    /// The argument as given, for messages.
    pub text: String,
}

/// Why an override could not be parsed or applied; names the argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--set {text}: {message}")]
pub struct OverrideError {
    pub text: String,
    pub message: String,
}

impl FromStr for Override {
    type Err = OverrideError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |message: &str| OverrideError {
            text: text.to_string(),
            message: message.to_string(),
        };
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| err("expected key=value, e.g. prompt.max_steps=10"))?;
        let path: Vec<String> = key.trim().split('.').map(str::to_string).collect();
        if path.iter().any(|s| s.is_empty()) {
            return Err(err("the key has an empty segment"));
        }
        Ok(Override {
            path,
            value: parse_value(value.trim()),
            text: text.to_string(),
        })
    }
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A TOML value, or the text itself as a string when it is not one.
fn parse_value(text: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(text.to_string()))
}

/// Applies `overrides` in order to a parsed sweep document.
pub fn apply(doc: &mut Table, overrides: &[Override]) -> Result<(), OverrideError> {
    for o in overrides {
        let hits = set(doc, &o.path, &o.value).map_err(|message| OverrideError {
            text: o.text.clone(),
            message,
        })?;
        if hits == 0 {
            return Err(OverrideError {
                text: o.text.clone(),
                message: "no element of the array matches".into(),
            });
        }
    }
    Ok(())
}

/// Sets `path` under `table` to `value`; returns how many places were set.
fn set(table: &mut Table, path: &[String], value: &Value) -> Result<usize, String> {
    let (head, rest) = path.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        table.insert(head.clone(), value.clone());
        return Ok(1);
    }
    let entry = table
        .entry(head.clone())
        .or_insert_with(|| Value::Table(Table::new()));
    match entry {
        Value::Table(inner) => set(inner, rest, value),
        Value::Array(items) => {
            let (selector, rest) = rest.split_first().ok_or("empty key")?;
            if rest.is_empty() {
                return Err(format!(
                    "{head} is a list: name an element and a key inside it, e.g. {head}.0.<key>"
                ));
            }
            let mut hits = 0;
            for (i, item) in items.iter_mut().enumerate() {
                let Value::Table(inner) = item else {
                    return Err(format!("{head} is a list of values, not of tables"));
                };
                if selects(selector, i, inner) {
                    hits += set(inner, rest, value)?;
                }
            }
            Ok(hits)
        }
        other => Err(format!("{head} is a {}, not a table", other.type_str())),
    }
}

/// Whether `selector` picks element `index`, a table.
fn selects(selector: &str, index: usize, item: &Table) -> bool {
    if selector == "*" {
        return true;
    }
    if let Ok(i) = selector.parse::<usize>() {
        return i == index;
    }
    if item.get("name").and_then(Value::as_str) == Some(selector) {
        return true;
    }
    // A cross-model pair has no name: `src->tgt` picks it.
    match (
        item.get("src").and_then(Value::as_str),
        item.get("tgt").and_then(Value::as_str),
    ) {
        (Some(src), Some(tgt)) => selector == format!("{src}->{tgt}"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Table {
        toml::from_str(
            r#"
            [prompt]
            max_steps = 100
            [[model]]
            name = "a"
            [[model]]
            name = "b"
            prompt = { learning_rate = 0.1 }
            [[studies.cross_model]]
            src = "a"
            tgt = "b"
            steps = 10
            "#,
        )
        .unwrap()
    }

    fn run(args: &[&str]) -> Result<Table, OverrideError> {
        let mut d = doc();
        let o: Vec<Override> = args.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
        apply(&mut d, &o)?;
        Ok(d)
    }

    #[test]
    fn sets_scalars_creates_tables_and_reads_bare_strings() {
        let d = run(&[
            "prompt.max_steps=2",
            "prompt.init=vocab",
            "studies.tpt.pairs=all",
        ])
        .unwrap();
        assert_eq!(d["prompt"]["max_steps"].as_integer(), Some(2));
        assert_eq!(d["prompt"]["init"].as_str(), Some("vocab"));
        assert_eq!(d["studies"]["tpt"]["pairs"].as_str(), Some("all"));
    }

    #[test]
    fn selects_array_elements_by_name_index_star_and_pair() {
        let d = run(&[
            "model.b.prompt.learning_rate=0.5",
            "model.0.head=tied",
            "model.*.layout=official",
            "studies.cross_model.a->b.steps=3",
        ])
        .unwrap();
        let models = d["model"].as_array().unwrap();
        assert_eq!(models[1]["prompt"]["learning_rate"].as_float(), Some(0.5));
        assert_eq!(models[0]["head"].as_str(), Some("tied"));
        assert!(
            models
                .iter()
                .all(|m| m["layout"].as_str() == Some("official"))
        );
        assert_eq!(
            d["studies"]["cross_model"][0]["steps"].as_integer(),
            Some(3)
        );
    }

    #[test]
    fn refuses_unmatched_elements_and_bad_syntax_naming_the_argument() {
        let e = run(&["model.zzz.head=tied"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--set model.zzz.head=tied: no element of the array matches"
        );
        let e = run(&["prompt.max_steps"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--set prompt.max_steps: expected key=value")
        );
        let e = run(&["prompt.max_steps.x=1"]).unwrap_err();
        assert!(
            e.message.contains("max_steps is a integer, not a table"),
            "{e}"
        );
        let e = run(&["model.head=tied"]).unwrap_err();
        assert!(e.message.contains("model is a list"), "{e}");
    }
}
