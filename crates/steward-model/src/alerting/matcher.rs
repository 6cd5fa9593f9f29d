//! Label matchers with Alertmanager's syntax: `name="value"`, `name!=value`,
//! `name=~"regex"`, `name!~"regex"`. Regexes are anchored, as in Alertmanager, so
//! `severity=~"crit"` does not match `critical`.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
        if !valid_label_name(name) {
            return Err(format!("`{name}` is not a valid label name (letters, digits and `_`, not starting with a digit)"));
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("invalid regex `{value}`: {e}"))?)
            }
            _ => None,
        };
        Ok(Matcher { name: name.to_string(), op, value: value.to_string(), regex })
    }

    /// Parses `name<op>value`; the value may be double-quoted (with `\"` and `\\` escapes).
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let text = text.trim();
        let at = text.find(['=', '!']).ok_or_else(|| format!("`{text}` has no operator; write name=value, !=, =~ or !~"))?;
        let name = text[..at].trim();
        let rest = &text[at..];
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Regex, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Equal, v)
        } else {
            return Err(format!("`{text}` has no operator; write name=value, !=, =~ or !~"));
        };
        Matcher::new(name, op, &unquote(value.trim())?)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        // A missing label matches as the empty string, as in Alertmanager.
        let value = labels.get(&self.name).map_or("", String::as_str);
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }
}

pub fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// `name<op>"value"`, quoted with exactly the escapes [`Matcher::parse`] reads (`\\`,
/// `\"`, `\n`), so a matcher shown, stored and read back is the same matcher. (Rust's
/// `{:?}` escapes tabs and unusual characters as `\t`, `\u{…}`, which parse would not
/// undo: found by fuzzing.)
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}\"", self.name, self.op.as_str())?;
        for c in self.value.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        f.write_str("\"")
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Matcher, D::Error> {
        let text = String::deserialize(d)?;
        Matcher::parse(&text).map_err(serde::de::Error::custom)
    }
}

pub fn valid_label_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unquote(v: &str) -> Result<String, String> {
    let Some(inner) = v.strip_prefix('"') else {
        return Ok(v.to_string());
    };
    let inner = inner.strip_suffix('"').ok_or_else(|| format!("unterminated quote in `{v}`"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => return Err(format!("dangling `\\` in `{v}`")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn operators_follow_alertmanager() {
        let l = labels(&[("severity", "critical"), ("team", "chat")]);
        assert!(Matcher::parse(r#"severity="critical""#).unwrap().matches(&l));
        assert!(Matcher::parse("team!=payments").unwrap().matches(&l));
        assert!(Matcher::parse(r#"severity=~"crit.*|warning""#).unwrap().matches(&l));
        // Anchored: a partial match is no match.
        assert!(!Matcher::parse(r#"severity=~"crit""#).unwrap().matches(&l));
        assert!(Matcher::parse(r#"severity!~"info""#).unwrap().matches(&l));
        // Missing labels are the empty string.
        assert!(Matcher::parse(r#"region="""#).unwrap().matches(&l));
        assert!(!Matcher::parse("region=eu").unwrap().matches(&l));
    }

    #[test]
    fn bad_matchers_say_why() {
        assert!(Matcher::parse("severity").unwrap_err().contains("no operator"));
        assert!(Matcher::parse("1abc=x").unwrap_err().contains("not a valid label name"));
        assert!(Matcher::parse("a=~\"(\"").unwrap_err().contains("invalid regex"));
        assert!(Matcher::parse("a=\"x").unwrap_err().contains("unterminated"));
    }

    #[test]
    fn display_round_trips() {
        let m = Matcher::parse(r#"msg="say \"hi\"""#).unwrap();
        assert_eq!(m.value, r#"say "hi""#);
        assert_eq!(Matcher::parse(&m.to_string()).unwrap(), m);
    }
}
