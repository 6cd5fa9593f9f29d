//! Typed reading of [`Node`]s that records every problem instead of stopping at the first.
//!
//! Each reader returns `Option<T>`: `None` means "a diagnostic was recorded", so callers
//! can keep going and report everything wrong with a file in one pass.

use std::collections::BTreeMap;
use std::time::Duration;

use super::diagnostics::{Diagnostic, Diagnostics, Pos, closest};
use super::duration::parse_duration;
use super::yaml::{Node, Value};

/// The fields of one YAML mapping, taken one by one; whatever is left is an unknown key.
pub struct Fields<'n> {
    node: &'n Node,
    what: String,
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
    taken: Vec<bool>,
}

impl<'n> Fields<'n> {
    /// `what` names the thing for messages, e.g. "check `api-health`".
    pub fn of(node: &'n Node, what: impl Into<String>, d: &mut Diagnostics) -> Option<Fields<'n>> {
        let what = what.into();
        let Value::Map(entries) = &node.value else {
            d.push(Diagnostic::error(node.pos.clone(), format!("{what} must be a mapping of keys to values, found {}", node.type_name())));
            return None;
        };
        let entries: Vec<_> = entries
            .iter()
            .map(|(k, v)| match &k.value {
                Value::Str { text, .. } => (text.as_str(), k, v),
                _ => ("", k, v),
            })
            .collect();
        let taken = vec![false; entries.len()];
        Some(Fields { node, what, entries, taken })
    }

    pub fn pos(&self) -> &Pos {
        &self.node.pos
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// Takes the value of `key`, if present.
    pub fn take(&mut self, key: &str) -> Option<&'n Node> {
        let i = self.entries.iter().position(|(k, _, _)| *k == key)?;
        self.taken[i] = true;
        Some(self.entries[i].2)
    }

    /// Whether `key` is present, without taking it.
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _, _)| *k == key)
    }

    /// Takes a required value, recording an error if it is missing.
    pub fn require(&mut self, key: &str, d: &mut Diagnostics) -> Option<&'n Node> {
        let v = self.take(key);
        if v.is_none() {
            d.push(Diagnostic::error(self.node.pos.clone(), format!("{} is missing the required key `{key}`", self.what)));
        }
        v
    }

    /// Records an error for every key nobody took, suggesting the closest known key.
    pub fn finish(&self, known: &[&str], d: &mut Diagnostics) {
        for (i, (key, key_node, _)) in self.entries.iter().enumerate() {
            if self.taken[i] {
                continue;
            }
            let hint = match closest(key, known.iter().copied()) {
                Some(k) => format!("did you mean `{k}`?"),
                None => format!("known keys here: {}", known.join(", ")),
            };
            d.push(Diagnostic::error(key_node.pos.clone(), format!("unknown key `{key}` in {}", self.what)).with_hint(hint));
        }
    }
}

pub fn string(node: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    match &node.value {
        Value::Str { text, .. } => Some(text.clone()),
        _ => {
            d.push(type_error(node, what, "a string"));
            None
        }
    }
}

/// A string, or a number written without quotes (for things like `stdout < 85`).
pub fn text(node: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    match &node.value {
        Value::Str { .. } | Value::Int(_) | Value::Float(_) => node.scalar_text(),
        _ => {
            d.push(type_error(node, what, "a string"));
            None
        }
    }
}

pub fn boolean(node: &Node, what: &str, d: &mut Diagnostics) -> Option<bool> {
    match &node.value {
        Value::Bool(b) => Some(*b),
        _ => {
            d.push(type_error(node, what, "true or false"));
            None
        }
    }
}

pub fn integer(node: &Node, what: &str, range: std::ops::RangeInclusive<i64>, d: &mut Diagnostics) -> Option<i64> {
    match &node.value {
        Value::Int(i) if range.contains(i) => Some(*i),
        Value::Int(i) => {
            d.push(Diagnostic::error(node.pos.clone(), format!("{what} must be between {} and {}, found {i}", range.start(), range.end())));
            None
        }
        _ => {
            d.push(type_error(node, what, "an integer"));
            None
        }
    }
}

pub fn duration(node: &Node, what: &str, d: &mut Diagnostics) -> Option<Duration> {
    let Value::Str { text, .. } = &node.value else {
        let hint = match &node.value {
            Value::Int(i) => format!("write a unit, e.g. `{i}s` or `{i}ms`"),
            _ => "write a duration such as `500ms`, `10s`, `5m`, `2h` or `7d`".into(),
        };
        d.push(type_error(node, what, "a duration").with_hint(hint));
        return None;
    };
    match parse_duration(text) {
        Ok(v) => Some(v),
        Err(e) => {
            d.push(
                Diagnostic::error(node.pos.clone(), format!("{what}: {e}"))
                    .with_hint("write a duration such as `500ms`, `10s`, `5m`, `2h` or `7d`"),
            );
            None
        }
    }
}

pub fn list<'n>(node: &'n Node, what: &str, d: &mut Diagnostics) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        Value::Null => Some(&[]),
        _ => {
            d.push(type_error(node, what, "a list"));
            None
        }
    }
}

pub fn string_list(node: &Node, what: &str, d: &mut Diagnostics) -> Option<Vec<String>> {
    let items = list(node, what, d)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match text(item, &format!("each item of {what}"), d) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A mapping of string keys to scalar values (labels, headers).
pub fn string_map(node: &Node, what: &str, d: &mut Diagnostics) -> Option<BTreeMap<String, (String, Pos)>> {
    let Value::Map(entries) = &node.value else {
        d.push(type_error(node, what, "a mapping"));
        return None;
    };
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let key = k.scalar_text().unwrap_or_default();
        if let Some(value) = text(v, &format!("{what}.{key}"), d) {
            out.insert(key, (value, v.pos.clone()));
        }
    }
    Some(out)
}

pub fn type_error(node: &Node, what: &str, expected: &str) -> Diagnostic {
    Diagnostic::error(node.pos.clone(), format!("{what} must be {expected}, found {}", node.type_name()))
}
