//! The condition language of checks: `<path> <op> <value>`.
//!
//! ```text
//! body.status == "ok"        response_time < 500ms     cert.days_left > 14
//! row.lag_seconds < 30       info.role == "master"     stream.messages < 10000
//! stdout < 85                headers.content-type =~ "json"   body.items[0].id != null
//! ```
//!
//! Conditions are parsed when the configuration loads (so a typo is a config error with a
//! position) and evaluated against the JSON *observation* a probe produces. A condition
//! that cannot be evaluated — missing field, wrong type — fails the check with a reason
//! that says so; it never passes silently.

use std::fmt;
use std::time::Duration;

use regex::Regex;
use serde_json::Value as Json;

use crate::config::duration::{format_duration, parse_duration};

#[derive(Debug, Clone)]
pub struct Condition {
    /// The condition as written, for reasons and listings.
    pub source: String,
    pub path: Vec<Segment>,
    pub op: Op,
    pub expected: Literal,
    regex: Option<Regex>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Matches,
    NotMatches,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    /// Compared with observations measured in milliseconds (`response_time`).
    Duration(Duration),
    Bool(bool),
    Null,
}

/// A parse error: character offset into the condition, message, hint.
#[derive(Debug)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
    pub hint: &'static str,
}

const SYNTAX_HINT: &str =
    "write `<field> <op> <value>`, e.g. `body.status == \"ok\"` or `response_time < 500ms`; ops: == != < <= > >= =~ !~ contains";

impl Condition {
    pub fn parse(source: &str) -> Result<Condition, ParseError> {
        let err = |offset: usize, message: String| ParseError { offset, message, hint: SYNTAX_HINT };
        let trimmed_start = source.len() - source.trim_start().len();
        let s = source.trim();
        let path_end = s.find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '<' | '>')).unwrap_or(s.len());
        let path_text = &s[..path_end];
        if path_text.is_empty() {
            return Err(err(trimmed_start, "a condition starts with the field to test".into()));
        }
        let path = parse_path(path_text).map_err(|(o, m)| err(trimmed_start + o, m))?;
        let rest = s[path_end..].trim_start();
        let op_offset = trimmed_start + s.len() - rest.len();
        let (op, op_len) = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("=~", Op::Matches),
            ("!~", Op::NotMatches),
            ("<", Op::Lt),
            (">", Op::Gt),
            ("contains ", Op::Contains),
        ]
        .into_iter()
        .find(|(t, _)| rest.starts_with(t))
        .map(|(t, op)| (op, t.len()))
        .ok_or_else(|| err(op_offset, format!("expected a comparison after `{path_text}`")))?;
        let value_text = rest[op_len..].trim();
        let value_offset = trimmed_start + s.len() - rest[op_len..].trim_start().len();
        if value_text.is_empty() {
            return Err(err(value_offset, "the condition has no value to compare with".into()));
        }
        let expected = parse_literal(value_text).map_err(|m| err(value_offset, m))?;
        let regex = match op {
            Op::Matches | Op::NotMatches => {
                let Literal::Str(pattern) = &expected else {
                    return Err(err(value_offset, "`=~` and `!~` take a quoted regular expression".into()));
                };
                Some(Regex::new(pattern).map_err(|e| err(value_offset, format!("invalid regular expression: {e}")))?)
            }
            _ => None,
        };
        if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) && matches!(expected, Literal::Bool(_) | Literal::Null) {
            return Err(err(value_offset, "ordering comparisons need a number, duration or string".into()));
        }
        Ok(Condition { source: s.to_string(), path, op, expected, regex })
    }

    /// The first path segment: which part of the observation it reads (`body`, `row`, …).
    pub fn root(&self) -> &str {
        match self.path.first() {
            Some(Segment::Key(k)) => k,
            _ => "",
        }
    }

    /// `Ok` when the condition holds; otherwise a reason fit for a person.
    pub fn evaluate(&self, observation: &Json) -> Result<(), String> {
        let actual =
            lookup(observation, &self.path).map_err(|missing| format!("condition `{}` cannot be evaluated: {missing}", self.source))?;
        match self.compare(actual) {
            Ok(true) => Ok(()),
            Ok(false) => {
                Err(format!("condition `{}` failed: {} is {}", self.source, path_string(&self.path), show(actual, &self.expected)))
            }
            Err(why) => Err(format!("condition `{}` cannot be evaluated: {why}", self.source)),
        }
    }

    fn compare(&self, actual: &Json) -> Result<bool, String> {
        let field = path_string(&self.path);
        let type_err = |want: &str| format!("{field} is {}, not {want}", json_type(actual));
        match (&self.op, &self.expected) {
            (Op::Matches | Op::NotMatches, _) => {
                let text = as_text(actual).ok_or_else(|| type_err("text"))?;
                let hit = self.regex.as_ref().is_some_and(|r| r.is_match(&text));
                Ok(hit == (self.op == Op::Matches))
            }
            (Op::Contains, lit) => match actual {
                Json::Array(items) => Ok(items.iter().any(|i| equals(i, lit) == Ok(true))),
                _ => {
                    let text = as_text(actual).ok_or_else(|| type_err("text or a list"))?;
                    let needle = match lit {
                        Literal::Str(s) => s.clone(),
                        Literal::Num(n) => fmt_num(*n),
                        other => return Err(format!("`contains` takes a string, not {other:?}")),
                    };
                    Ok(text.contains(&needle))
                }
            },
            (Op::Eq, lit) => equals(actual, lit).map_err(&type_err),
            (Op::Ne, lit) => equals(actual, lit).map(|b| !b).map_err(&type_err),
            (op, Literal::Str(s)) => {
                let text = as_text(actual).ok_or_else(|| type_err("text"))?;
                Ok(ordered(*op, text.as_str().cmp(s.as_str())))
            }
            (op, lit) => {
                let want = match lit {
                    Literal::Num(n) => *n,
                    Literal::Duration(d) => d.as_secs_f64() * 1000.0,
                    _ => unreachable!("rejected at parse time"),
                };
                let have = as_number(actual).ok_or_else(|| type_err("a number"))?;
                Ok(ordered(*op, have.partial_cmp(&want).unwrap_or(std::cmp::Ordering::Less)))
            }
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A field of an observation read as a number, recorded with each run for a forecast
/// (`info.used_memory`, `row.connections`, `response_time`).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The path as written: the key its values are stored under.
    pub source: String,
    path: Vec<Segment>,
}

impl Field {
    /// Parses a field path; the error is an offset into `text` and a message.
    pub fn parse(text: &str) -> Result<Field, (usize, String)> {
        let path = parse_path(text.trim())?;
        if path.is_empty() {
            return Err((0, "a field path names a field of the observation, e.g. `info.used_memory`".into()));
        }
        Ok(Field { source: path_string(&path), path })
    }

    /// The first path segment (`info`, `row`, …): what the probe must read.
    pub fn root(&self) -> &str {
        match self.path.first() {
            Some(Segment::Key(k)) => k,
            _ => "",
        }
    }

    /// The field's value in `observation` as a finite number (text such as Redis INFO's
    /// `"1048576"` included); `None` when it is missing or not a number.
    pub fn read(&self, observation: &Json) -> Option<f64> {
        lookup(observation, &self.path).ok().and_then(as_number).filter(|v| v.is_finite())
    }
}

fn ordered(op: Op, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Lt => ord == Less,
        Op::Le => ord != Greater,
        Op::Gt => ord == Greater,
        Op::Ge => ord != Less,
        _ => unreachable!(),
    }
}

/// Equality with light coercion: protocol text such as Redis INFO or a command's stdout
/// compares with numbers when it parses as one.
fn equals(actual: &Json, lit: &Literal) -> Result<bool, &'static str> {
    match lit {
        Literal::Null => Ok(actual.is_null()),
        Literal::Str(s) => as_text(actual).map(|t| &t == s).ok_or("text"),
        Literal::Num(n) => as_number(actual).map(|v| v == *n).ok_or("a number"),
        Literal::Duration(d) => as_number(actual).map(|v| v == d.as_secs_f64() * 1000.0).ok_or("a duration"),
        Literal::Bool(b) => match actual {
            Json::Bool(v) => Ok(v == b),
            Json::String(s) if s == "true" || s == "false" => Ok((s == "true") == *b),
            _ => Err("a boolean"),
        },
    }
}

fn as_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn as_number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "text",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

fn show(actual: &Json, expected: &Literal) -> String {
    let mut s = match (actual, expected) {
        // A target may send any number: one too large for a Duration is shown as it is
        // (from_secs_f64 would panic; found by fuzzing).
        (Json::Number(n), Literal::Duration(_)) => match Duration::try_from_secs_f64(n.as_f64().unwrap_or(0.0).max(0.0) / 1000.0) {
            Ok(d) => format_duration(d),
            Err(_) => format!("{n}ms"),
        },
        (Json::String(s), _) => format!("{s:?}"),
        (other, _) => other.to_string(),
    };
    if s.len() > 200 {
        s.truncate(s.floor_char_boundary(200));
        s.push('…');
    }
    s
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { n.to_string() }
}

pub fn path_string(path: &[Segment]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Segment::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn lookup<'a>(root: &'a Json, path: &[Segment]) -> Result<&'a Json, String> {
    let mut cur = root;
    for (i, seg) in path.iter().enumerate() {
        let here = || path_string(&path[..i + 1]);
        cur = match (seg, cur) {
            (Segment::Key(k), Json::Object(map)) => match map.get(k.as_str()) {
                Some(v) => v,
                None => {
                    let mut keys: Vec<_> = map.keys().take(12).map(String::as_str).collect();
                    keys.sort_unstable();
                    let known = if keys.is_empty() { "it is empty".to_string() } else { format!("present: {}", keys.join(", ")) };
                    return Err(format!("field `{}` is missing ({known})", here()));
                }
            },
            (Segment::Index(n), Json::Array(items)) => {
                items.get(*n).ok_or_else(|| format!("`{}` is out of range (the list has {} items)", here(), items.len()))?
            }
            (_, other) => {
                let parent = if i == 0 { "the observation".to_string() } else { format!("`{}`", path_string(&path[..i])) };
                return Err(format!("{parent} is {}, so `{}` does not exist", json_type(other), here()));
            }
        };
    }
    Ok(cur)
}

fn parse_path(text: &str) -> Result<Vec<Segment>, (usize, String)> {
    let mut segments = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'.' if !segments.is_empty() => i += 1,
            b'[' => {
                let close = text[i..].find(']').ok_or((i, "unclosed `[` in field path".to_string()))? + i;
                let n = text[i + 1..close].parse().map_err(|_| (i, "a list index is a whole number, e.g. `items[0]`".to_string()))?;
                segments.push(Segment::Index(n));
                i = close + 1;
            }
            _ => {
                let end = text[i..].find(['.', '[']).map_or(text.len(), |e| e + i);
                let key = &text[i..end];
                if key.is_empty() || !key.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-')) {
                    return Err((i, format!("`{key}` is not a field name (letters, digits, `_` and `-`)")));
                }
                segments.push(Segment::Key(key.to_string()));
                i = end;
            }
        }
    }
    Ok(segments)
}

fn parse_literal(text: &str) -> Result<Literal, String> {
    let first = text.chars().next().unwrap_or(' ');
    if first == '"' || first == '\'' {
        if text.len() < 2 || !text.ends_with(first) {
            return Err(format!("unterminated string {text}"));
        }
        let inner = &text[1..text.len() - 1];
        return Ok(Literal::Str(if first == '"' { inner.replace("\\\"", "\"").replace("\\\\", "\\") } else { inner.to_string() }));
    }
    match text {
        "true" => return Ok(Literal::Bool(true)),
        "false" => return Ok(Literal::Bool(false)),
        "null" => return Ok(Literal::Null),
        _ => {}
    }
    if let Ok(n) = text.parse::<f64>() {
        return Ok(Literal::Num(n));
    }
    if text.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_duration(text).map(Literal::Duration);
    }
    Err(format!("`{text}` is not a value; quote strings, e.g. \"{text}\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(cond: &str, obs: Json) -> Result<(), String> {
        Condition::parse(cond).unwrap().evaluate(&obs)
    }

    #[test]
    fn compares_json_body_fields() {
        let obs = json!({"body": {"status": "ok", "items": [{"id": 7}]}});
        assert!(eval(r#"body.status == "ok""#, obs.clone()).is_ok());
        assert!(eval("body.items[0].id >= 7", obs.clone()).is_ok());
        let reason = eval(r#"body.status == "degraded""#, obs.clone()).unwrap_err();
        assert_eq!(reason, r#"condition `body.status == "degraded"` failed: body.status is "ok""#);
    }

    #[test]
    fn missing_fields_and_wrong_types_fail_with_a_reason() {
        let obs = json!({"body": {"status": "ok"}});
        let r = eval("body.uptime > 3", obs.clone()).unwrap_err();
        assert!(r.contains("cannot be evaluated") && r.contains("`body.uptime` is missing") && r.contains("present: status"), "{r}");
        let r = eval("body.status > 3", obs.clone()).unwrap_err();
        assert!(r.contains("body.status is text, not a number"), "{r}");
        let r = eval("body.status.deep == 1", obs).unwrap_err();
        assert!(r.contains("`body.status` is text"), "{r}");
        let r = eval("body.x[3] == 1", json!({"body": {"x": [1]}})).unwrap_err();
        assert!(r.contains("out of range"), "{r}");
    }

    #[test]
    fn durations_compare_with_milliseconds() {
        assert!(eval("response_time < 500ms", json!({"response_time": 120.0})).is_ok());
        let r = eval("response_time < 500ms", json!({"response_time": 1500.0})).unwrap_err();
        assert!(r.ends_with("response_time is 1s500ms"), "{r}");
    }

    #[test]
    fn protocol_text_coerces_to_numbers() {
        assert!(eval("stdout < 85", json!({"stdout": "42"})).is_ok());
        assert!(eval("info.connected_slaves == 0", json!({"info": {"connected_slaves": "0"}})).is_ok());
        assert!(eval("stdout < 85", json!({"stdout": "n/a"})).unwrap_err().contains("not a number"));
    }

    #[test]
    fn regex_contains_and_null() {
        let obs = json!({"headers": {"content-type": "application/json; charset=utf-8"}, "body": {"tags": ["a", "b"], "err": null}});
        assert!(eval(r#"headers.content-type =~ "json""#, obs.clone()).is_ok());
        assert!(eval(r#"headers.content-type !~ "xml""#, obs.clone()).is_ok());
        assert!(eval(r#"body.tags contains "b""#, obs.clone()).is_ok());
        assert!(eval("body.err == null", obs.clone()).is_ok());
        assert!(eval(r#"body.tags contains "z""#, obs).is_err());
    }

    #[test]
    fn parse_errors_point_at_the_problem() {
        let e = Condition::parse("body.status = 'ok'").unwrap_err();
        assert_eq!(e.offset, 12);
        let e = Condition::parse("status == ok").unwrap_err();
        assert_eq!(e.offset, 10);
        assert!(e.message.contains("quote strings"));
        assert!(Condition::parse(r#"body =~ "(""#).unwrap_err().message.contains("regular expression"));
        assert!(Condition::parse("a > true").is_err());
        assert!(Condition::parse("a[x] == 1").is_err());
        assert!(Condition::parse("== 1").is_err());
        assert!(Condition::parse("a ==").is_err());
    }
}
