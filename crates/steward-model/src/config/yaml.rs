//! A YAML document as a tree of [`Node`]s that remember where they were written.
//!
//! We build our own tree from the parser's events instead of deserializing with serde
//! because Steward must report *every* problem in a configuration at once, each at its
//! `file:line:column`; serde stops at the first error and forgets positions.

use std::collections::HashMap;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::diagnostics::{Diagnostic, Pos};

/// A configuration file larger than this is refused before parsing.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// The most values (scalars and collections) one document may hold once its aliases
/// are expanded: a few hundred bytes of nested aliases ("billion laughs") would
/// otherwise expand to gigabytes. Real configurations hold a few thousand.
pub const MAX_NODES: usize = 1_000_000;
/// The deepest nesting of lists and mappings; deeper trees risk the stack when dropped.
pub const MAX_DEPTH: usize = 128;

/// One YAML value and the position of its first character.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A string scalar. `quoted` is true when the user quoted it, which makes
    /// `"10"` a string where `10` is a number.
    Str {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Entries in the order written; duplicate keys are rejected while parsing.
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str { .. } => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The scalar's text as written (numbers and booleans included), if it is a scalar.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str { text, .. } => Some(text.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Parses one YAML document. An empty file is an empty mapping.
pub fn parse(file: &Arc<str>, text: &str) -> Result<Node, Diagnostic> {
    let mut documents = parse_all(file, text, true)?;
    Ok(if documents.is_empty() { Node { value: Value::Map(Vec::new()), pos: Pos::new(file, 1, 1) } } else { documents.remove(0) })
}

/// Parses every document of a stream (`---`-separated), as files from other tools
/// (OpenSLO, Kubernetes) hold them; empty documents are left out.
pub fn parse_documents(file: &Arc<str>, text: &str) -> Result<Vec<Node>, Diagnostic> {
    parse_all(file, text, false)
}

fn parse_all(file: &Arc<str>, text: &str, one: bool) -> Result<Vec<Node>, Diagnostic> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::error(
            Pos::new(file, 1, 1),
            format!("the file is {} bytes; a configuration file is at most {MAX_FILE_BYTES} bytes (8 MiB)", text.len()),
        )
        .with_hint("split it into several files in a config directory"));
    }
    let mut builder = Builder { file: file.clone(), stack: Vec::new(), anchors: HashMap::new(), root: None, nodes: 0 };
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    let mut out = Vec::new();
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| {
            let m = e.marker();
            Diagnostic::error(Pos::new(file, m.line(), m.col() + 1), format!("invalid YAML: {}", e.info()))
                .with_hint("check the indentation and quoting around this position")
        })?;
        if let Event::DocumentStart(_) = event {
            documents += 1;
            if one && documents > 1 {
                return Err(Diagnostic::error(builder.pos(&span), "a configuration file holds one YAML document; found a second `---`")
                    .with_hint("split the documents into separate files in a config directory"));
            }
        }
        if let Event::DocumentEnd = event {
            out.extend(builder.root.take());
        }
        builder.on_event(event, span)?;
    }
    out.extend(builder.root.take());
    Ok(out)
}

struct Builder {
    file: Arc<str>,
    /// Open collections: the node being filled and, for mappings, a key waiting for its value.
    stack: Vec<(Node, Option<Node>, usize)>,
    /// Anchored nodes with how many values each holds (what an alias to it costs).
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    /// Values created so far, aliases counted as the copies they make.
    nodes: usize,
}

impl Builder {
    fn pos(&self, span: &Span) -> Pos {
        Pos::new(&self.file, span.start.line(), span.start.col() + 1)
    }

    /// Counts `n` more values, refusing a document that grows past [`MAX_NODES`].
    fn grow(&mut self, n: usize, span: &Span) -> Result<(), Diagnostic> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(Diagnostic::error(
                self.pos(span),
                format!("the document expands to more than {MAX_NODES} values (aliases count as the copies they make)"),
            )
            .with_hint(
                "a configuration this large is almost certainly nested aliases (a \"billion laughs\" document); write the values out",
            ));
        }
        Ok(())
    }

    fn open(&mut self, value: Value, anchor: usize, span: &Span) -> Result<(), Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Diagnostic::error(self.pos(span), format!("lists and mappings are nested more than {MAX_DEPTH} levels deep")));
        }
        self.grow(1, span)?;
        self.stack.push((Node { value, pos: self.pos(span) }, None, anchor));
        Ok(())
    }

    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), Diagnostic> {
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                self.grow(1, &span)?;
                let node = Node { value: resolve_scalar(&text, style), pos: self.pos(&span) };
                self.push(node, anchor, 1)
            }
            Event::SequenceStart(anchor, _) => self.open(Value::Seq(Vec::new()), anchor, &span),
            Event::MappingStart(anchor, _) => self.open(Value::Map(Vec::new()), anchor, &span),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, _, anchor) = self.stack.pop().expect("parser balances collection events");
                let size = if anchor == 0 { 0 } else { count(&node) };
                self.push(node, anchor, size)
            }
            Event::Alias(id) => {
                let (node, size) =
                    self.anchors.get(&id).ok_or_else(|| Diagnostic::error(self.pos(&span), "alias refers to an unknown anchor"))?;
                let (node, size) = (node.clone(), *size);
                // Counted before the copy is pushed, so the bound holds while building.
                self.grow(size, &span)?;
                self.push(node, 0, 0)
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd | Event::Nothing => Ok(()),
        }
    }

    /// Attaches a finished node to its parent; `size` is its value count when anchored.
    fn push(&mut self, node: Node, anchor: usize, size: usize) -> Result<(), Diagnostic> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        let Some((parent, pending_key, _)) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match pending_key.take() {
                None => {
                    if !matches!(node.value, Value::Str { .. } | Value::Int(_) | Value::Bool(_) | Value::Null) {
                        return Err(Diagnostic::error(node.pos, "mapping keys must be plain strings"));
                    }
                    let name = node.scalar_text().unwrap_or_default();
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.scalar_text().as_deref() == Some(name.as_str())) {
                        return Err(Diagnostic::error(node.pos.clone(), format!("duplicate key `{name}`"))
                            .with_hint(format!("`{name}` is already set at line {}; keep one of them", first.pos.line)));
                    }
                    *pending_key = Some(node);
                }
                Some(key) => entries.push((key, node)),
            },
            _ => unreachable!("only collections are pushed on the stack"),
        }
        Ok(())
    }
}

/// How many values a node holds, itself included.
fn count(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(k, v)| count(k) + count(v)).sum::<usize>(),
        _ => 1,
    }
}

/// YAML 1.2 core schema for plain scalars; anything quoted or block-styled is a string.
fn resolve_scalar(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::Str { text: text.to_string(), quoted: true };
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return Value::Int(i);
    }
    if digits.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str { text: text.to_string(), quoted: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Node, Diagnostic> {
        parse(&Arc::from("t.yaml"), text)
    }

    #[test]
    fn positions_are_one_based() {
        let root = p("a: 1\nb:\n  - x\n").unwrap();
        let Value::Map(entries) = root.value else { panic!("map") };
        assert_eq!((entries[1].0.pos.line, entries[1].0.pos.col), (2, 1));
        let Value::Seq(items) = &entries[1].1.value else { panic!("seq") };
        assert_eq!((items[0].pos.line, items[0].pos.col), (3, 5));
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let root = p("a: 10\nb: \"10\"\nc: yes\nd: 1.5\ne: ~\n").unwrap();
        let Value::Map(e) = root.value else { panic!() };
        assert!(matches!(e[0].1.value, Value::Int(10)));
        assert!(matches!(&e[1].1.value, Value::Str { quoted: true, .. }));
        assert!(matches!(&e[2].1.value, Value::Str { quoted: false, .. }), "yes is a string in YAML 1.2");
        assert!(matches!(e[3].1.value, Value::Float(f) if f == 1.5));
        assert!(matches!(e[4].1.value, Value::Null));
    }

    #[test]
    fn duplicate_keys_are_errors_with_both_lines() {
        let err = p("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(err.hint.unwrap().contains("line 1"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = p("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(err.pos.line >= 1);
    }

    #[test]
    fn alias_bombs_are_refused_quickly_with_the_limit_named() {
        // Nine levels of ten aliases: 10^9 values if expanded.
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            doc.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        assert!(doc.len() < 600);
        let started = std::time::Instant::now();
        let err = p(&doc).unwrap_err();
        assert!(err.message.contains("more than 1000000 values"), "{}", err.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    }

    #[test]
    fn deep_nesting_and_huge_files_are_refused() {
        let deep = format!("a: {}{}", "[".repeat(200), "]".repeat(200));
        assert!(p(&deep).unwrap_err().message.contains("nested more than 128"));
        let huge = format!("a: \"{}\"", "x".repeat(MAX_FILE_BYTES));
        assert!(p(&huge).unwrap_err().message.contains("at most 8388608 bytes"));
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let root = p("a: &x {k: 1}\nb: *x\n").unwrap();
        let Value::Map(e) = root.value else { panic!() };
        assert!(matches!(&e[1].1.value, Value::Map(m) if m.len() == 1));
    }
}
