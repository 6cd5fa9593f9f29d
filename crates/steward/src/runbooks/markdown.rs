//! Markdown runbooks in and out: `steward runbook import` turns a team's prose runbook
//! into reviewable Steward runbooks; `steward runbook export` writes one back as
//! Markdown for the team's docs.
//!
//! Import, as decided (the issue left the shape open):
//! - Each heading whose section holds shell blocks becomes **one runbook** (a document
//!   is many procedures — "Manual failover", "Rollback" — and running them all in
//!   order would be wrong); its name is the heading's slug, prefixed by its parent's
//!   when two sections share a title.
//! - Each fenced `bash`/`sh`/`shell`/`zsh` block becomes **one shell step**, never joined
//!   with another nor split; a `console` block keeps its `$ ` command lines. The prose
//!   since the last block is the step's description; a bold label before it
//!   (`**Manual failover**:`) or the block's first comment names it.
//! - `$VAR`, `${VAR}`, `${VAR:-default}` (upper case, not assigned in the block, not the
//!   shell's own) and `<placeholder>` become typed parameters; placeholders are replaced
//!   by the variable, quoted for where they stand. Scripts are never templated, so a
//!   parameter reaches the shell as data, never as code.
//! - A block with a destructive command (`DROP`, `TRUNCATE`, `rm -rf`, `FLUSHALL`,
//!   `kubectl delete`, promotions, `REPLICAOF`, failovers…) gets an approval step before it.
//! - Blocks in other languages, unlabelled blocks and indented code are kept as YAML
//!   comments beside the step they precede; the report says so, line by line.
//!
//! Written here rather than taken from a crate: pulldown-cmark reads the Markdown; the
//! YAML is written by hand because its shape is fixed and small, and its strings are
//! JSON strings (valid YAML double-quoted scalars) or literal blocks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::LazyLock;

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Parser, Tag, TagEnd};
use regex::Regex;

use crate::config::runbooks::{Items, ParamKind, Runbook, ShellProgram, Step, StepKind, WaitProbe, env_name};

/// A Markdown file larger than this is refused (as a configuration file is).
pub const MAX_MARKDOWN_BYTES: usize = 8 * 1024 * 1024;
/// Names (runbooks, steps) are cut to this many characters.
const MAX_NAME: usize = 60;

/// What an import produced: the runbooks, and what the reviewer should know.
#[derive(Debug, Default)]
pub struct Imported {
    pub runbooks: Vec<Draft>,
    pub findings: Vec<Finding>,
}

#[derive(Debug)]
pub struct Draft {
    pub name: String,
    pub description: String,
    pub params: BTreeMap<String, DraftParam>,
    pub steps: Vec<DraftStep>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DraftParam {
    pub kind: &'static str,
    pub default: Option<String>,
    pub description: String,
}

#[derive(Debug)]
pub struct DraftStep {
    pub name: String,
    pub description: String,
    /// Blocks not converted, kept as comments before the step.
    pub comments: Vec<String>,
    pub action: DraftAction,
    pub line: usize,
}

#[derive(Debug)]
pub enum DraftAction {
    /// `secrets`: variables read by reference from Steward's own environment
    /// (`env: {NAME: "${env:NAME}"}`), never parameters.
    Shell {
        shell: &'static str,
        script: String,
        secrets: BTreeSet<String>,
    },
    Approve {
        prompt: String,
    },
}

/// One line of the import report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub kind: FindingKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FindingKind {
    /// A command that needs a second look: an approval step was put before it.
    Destructive,
    /// Not converted (another language, no label, indented code, empty).
    Skipped,
    /// A parameter made from the text.
    Parameter,
    /// Left as it is, said for the record.
    Note,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Destructive => "destructive",
            FindingKind::Skipped => "not converted",
            FindingKind::Parameter => "parameter",
            FindingKind::Note => "note",
        }
    }
}

/// Commands that destroy or move data or roles, each with the name the report uses.
static DESTRUCTIVE: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"(?i)\bdrop\s+(table|database|schema|index|user|role|keyspace)\b", "DROP"),
        (r"(?i)\btruncate\b", "TRUNCATE"),
        (r"(?i)\bdelete\s+from\b", "DELETE FROM"),
        (r"\brm\s+(-[a-zA-Z]+\s+)*-[a-zA-Z]*(r[a-zA-Z]*f|f[a-zA-Z]*r)[a-zA-Z]*\b", "rm -rf"),
        (r"(?i)\bflush(all|db)\b", "FLUSHALL"),
        (r"\bkubectl\b[^\n|;&]*\s(delete|drain)\b", "kubectl delete/drain"),
        (r"\bkubectl\b[^\n|;&]*\bscale\b[^\n|;&]*--replicas[= ]0\b", "scale to zero"),
        (r"\bhelm\s+(uninstall|delete|rollback)\b", "helm uninstall/rollback"),
        (r"\bpg_promote\b|\bpg_ctl(cluster)?\b[^\n|;&]*\bpromote\b", "promote"),
        (r"(?i)\b(replicaof|slaveof)\b", "REPLICAOF"),
        (r"(?i)\bsentinel\s+failover\b|\bpatronictl\b[^\n|;&]*\b(failover|switchover)\b|\bfailover\s+--", "failover"),
        (r"\bdropdb\b", "dropdb"),
        (r"\bterraform\s+(destroy|apply)\b", "terraform destroy/apply"),
        (r"(?i)\bnodetool\b[^\n|;&]*\b(decommission|removenode|assassinate)\b", "nodetool decommission"),
        (r"\bdropDatabase\s*\(|\.drop\s*\(\s*\)", "MongoDB drop"),
        (r"\bpg_restore\b[^\n|;&]*(--clean\b|\s-c\b)", "pg_restore --clean"),
    ]
    .into_iter()
    .map(|(re, name)| (Regex::new(re).expect("valid"), name))
    .collect()
});

/// Variables a shell or the environment provides: never parameters.
const SHELL_OWN: &[&str] = &[
    "PATH",
    "HOME",
    "SHELL",
    "IFS",
    "ENV",
    "BASH_ENV",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "PS4",
    "PWD",
    "OLDPWD",
    "USER",
    "CDPATH",
    "SHELLOPTS",
    "HOSTNAME",
    "RANDOM",
    "SECONDS",
    "LINENO",
    "UID",
    "EUID",
    "PPID",
    "TERM",
    "LANG",
    "TMPDIR",
    "BASH_SOURCE",
    "FUNCNAME",
    "PIPESTATUS",
    "REPLY",
    "OPTARG",
    "OPTIND",
    "BASHPID",
];

static VARIABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-=]([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)").expect("valid"));
static ASSIGNED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)(?:^|[;&|({\s])(?:export\s+|local\s+|readonly\s+|declare\s+(?:-\w+\s+)*)?([A-Za-z_][A-Za-z0-9_]*)\+?=|\bfor\s+([A-Za-z_][A-Za-z0-9_]*)\s+in\b|\bread\s+(?:-\w+\s+)*([A-Za-z_][A-Za-z0-9_]*)")
        .expect("valid")
});
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<([A-Za-z][A-Za-z0-9_-]*[A-Za-z0-9]|[A-Za-z])>").expect("valid"));
/// Steward's template syntax, which a script may not hold (see `check_script`).
static TEMPLATE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{\{-?\s*(params|steps|item|run|alert)\b").expect("valid"));
static SECRET_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)(password|passwd|secret|token|api_?key|private_?key|webhook|credential)").expect("valid"));
static NUMERIC_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(^|_)(replicas?|count|port|size|limit|percent|number|num|threads|workers|retries|attempts|days|hours|minutes|seconds|mb|gb)($|_)")
        .expect("valid")
});

/// What a block of the Markdown is, by its fence's language.
fn block_kind(info: &str) -> BlockKind {
    match info.split_whitespace().next().unwrap_or("").to_ascii_lowercase().as_str() {
        "bash" => BlockKind::Shell("bash"),
        "sh" | "shell" => BlockKind::Shell("sh"),
        "zsh" => BlockKind::Shell("bash"),
        "console" | "shell-session" => BlockKind::Console,
        "" => BlockKind::Unlabelled,
        _ => BlockKind::Other,
    }
}

enum BlockKind {
    Shell(&'static str),
    Console,
    Unlabelled,
    Other,
}

/// A section being read: its heading and what it holds so far.
struct Section {
    title: String,
    parent: Option<String>,
    line: usize,
    steps: Vec<DraftStep>,
}

/// Reads `markdown` (named `source` in descriptions) into runbook drafts.
pub fn import(markdown: &str, source: &str) -> Imported {
    let line_of = line_index(markdown);
    let mut out = Imported::default();
    let mut headings: Vec<(HeadingLevel, String)> = Vec::new();
    let mut sections: Vec<Section> = Vec::new();
    let mut current: Option<Section> = None;
    let mut prose = String::new();
    let mut label: Option<String> = None;
    let mut comments: Vec<String> = Vec::new();
    let mut title: Option<String> = None;

    // What the parser is inside of.
    let mut heading_text: Option<(HeadingLevel, String, usize)> = None;
    let mut code: Option<(BlockKind, String, usize, String)> = None;
    let mut paragraph: Option<(String, bool)> = None; // text, only-bold-so-far
    let mut strong_depth = 0usize;

    for (event, range) in Parser::new(markdown).into_offset_iter() {
        let line = line_of(range.start);
        match event {
            Event::Start(Tag::Heading { level, .. }) => heading_text = Some((level, String::new(), line)),
            Event::End(TagEnd::Heading(_)) => {
                let Some((level, text, at)) = heading_text.take() else { continue };
                let text = text.trim().to_string();
                if level == HeadingLevel::H1 && title.is_none() {
                    title = Some(text.clone());
                }
                headings.retain(|(l, _)| *l < level);
                let parent = headings.last().map(|(_, t)| t.clone());
                headings.push((level, text.clone()));
                if let Some(done) = current.take() {
                    sections.push(done);
                }
                current = Some(Section { title: text, parent, line: at, steps: Vec::new() });
                prose.clear();
                label = None;
                comments.clear();
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                let (kind, info) = match kind {
                    CodeBlockKind::Fenced(info) => {
                        // pulldown-cmark ends an unclosed fence at the end of the file.
                        let whole = markdown[range.clone()].trim_end();
                        if !(whole.ends_with("```") || whole.ends_with("~~~")) || whole.lines().count() < 2 {
                            let message = "a code block is never closed: it runs to the end of the file".to_string();
                            out.findings.push(Finding { line, kind: FindingKind::Note, message });
                        }
                        (block_kind(&info), info.to_string())
                    }
                    CodeBlockKind::Indented => (BlockKind::Other, "indented".to_string()),
                };
                code = Some((kind, String::new(), line, info));
            }
            Event::End(TagEnd::CodeBlock) => {
                let Some((kind, text, at, info)) = code.take() else { continue };
                let script = match kind {
                    BlockKind::Shell(shell) => Some((shell, text)),
                    BlockKind::Console => Some(("bash", console_commands(&text))),
                    BlockKind::Unlabelled | BlockKind::Other => {
                        let what = if info.is_empty() { "an unlabelled block".to_string() } else { format!("a `{info}` block") };
                        let why = if info.is_empty() {
                            "kept as a comment: mark it ```bash to make it a step"
                        } else {
                            "kept as a comment: only shell blocks become steps"
                        };
                        out.findings.push(Finding { line: at, kind: FindingKind::Skipped, message: format!("{what}: {why}") });
                        comments.push(format!("from {what} at line {at}:\n{}", text.trim_end()));
                        None
                    }
                };
                let Some((shell, script)) = script else { continue };
                let script = dedent(&script);
                let unfit = if script.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
                    Some("a shell block with no command (only comments): no step")
                } else if TEMPLATE.is_match(&script) {
                    Some(
                        "a shell block with `{{ … }}` templates: kept as a comment (scripts are never templated; pass such values through a step's `env:`)",
                    )
                } else {
                    None
                };
                if let Some(why) = unfit {
                    out.findings.push(Finding { line: at, kind: FindingKind::Skipped, message: why.into() });
                    comments.push(format!("from a shell block at line {at}:\n{script}"));
                    continue;
                }
                let section = current.get_or_insert_with(|| Section { title: file_stem(source), parent: None, line: 1, steps: Vec::new() });
                let name = label.take().or_else(|| first_comment(&script)).unwrap_or_else(|| format!("step-{}", section.steps.len() + 1));
                section.steps.push(DraftStep {
                    name,
                    description: collapse(&prose),
                    comments: std::mem::take(&mut comments),
                    action: DraftAction::Shell { shell, script, secrets: BTreeSet::new() },
                    line: at,
                });
                prose.clear();
            }
            Event::Start(Tag::Paragraph) => paragraph = Some((String::new(), true)),
            Event::End(TagEnd::Paragraph) => {
                let Some((text, only_bold)) = paragraph.take() else { continue };
                let text = text.trim();
                // `**Manual Failover**:` alone on its line names the block after it.
                if only_bold && !text.is_empty() && text.len() <= 80 {
                    label = Some(text.trim_end_matches(':').trim().to_string());
                    continue;
                }
                if !prose.is_empty() {
                    prose.push(' ');
                }
                prose.push_str(text);
            }
            Event::Start(Tag::Strong) => strong_depth += 1,
            Event::End(TagEnd::Strong) => strong_depth = strong_depth.saturating_sub(1),
            Event::End(TagEnd::Item) => prose.push(';'),
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, text, _)) = heading_text.as_mut() {
                    text.push_str(&t);
                } else if let Some((_, text, _, _)) = code.as_mut() {
                    text.push_str(&t);
                } else if let Some((text, only_bold)) = paragraph.as_mut() {
                    let punctuation = t.trim().chars().all(|c| c == ':' || c == '.');
                    if strong_depth == 0 && !punctuation {
                        *only_bold = false;
                    }
                    text.push_str(&t);
                } else {
                    // List items without paragraphs, table cells: prose.
                    if !prose.is_empty() && !prose.ends_with(' ') {
                        prose.push(' ');
                    }
                    prose.push_str(t.trim());
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some((text, _)) = paragraph.as_mut() {
                    text.push(' ');
                }
            }
            _ => {}
        }
    }
    if let Some(done) = current.take() {
        sections.push(done);
    }
    // Blocks kept after a section's last step have no step to sit beside: the report
    // lists them.

    let mut used_names: HashMap<String, usize> = HashMap::new();
    let document = title.unwrap_or_else(|| file_stem(source));
    for section in sections.into_iter().filter(|s| !s.steps.is_empty()) {
        let mut name = slug(&section.title, "runbook");
        if used_names.contains_key(&name)
            && let Some(parent) = &section.parent
        {
            name = slug(&format!("{parent} {}", section.title), "runbook");
        }
        let n = used_names.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            name = format!("{}-{n}", cut(&name, MAX_NAME - 3));
        }
        let mut draft = Draft {
            name,
            description: format!("{} — imported from {source} (\"{}\", line {})", section.title, document, section.line),
            params: BTreeMap::new(),
            steps: Vec::new(),
        };
        let mut step_names: HashMap<String, usize> = HashMap::new();
        for mut step in section.steps {
            let mut base = slug(&step.name, "step");
            let k = step_names.entry(base.clone()).or_insert(0);
            *k += 1;
            if *k > 1 {
                base = format!("{}-{k}", cut(&base, MAX_NAME - 3));
            }
            step.name = base;
            let DraftAction::Shell { script, secrets, .. } = &mut step.action else { unreachable!("sections hold shell steps") };
            *script = parameterize(script, &step.name, step.line, &mut draft.params, secrets, &mut out.findings);
            let found = destructive(script);
            if !found.is_empty() {
                let list = found.join(", ");
                out.findings.push(Finding {
                    line: step.line,
                    kind: FindingKind::Destructive,
                    message: format!("runbook `{}` step `{}` runs {list}: an approval step is put before it", draft.name, step.name),
                });
                draft.steps.push(DraftStep {
                    name: cut(&format!("approve-{}", step.name), MAX_NAME),
                    description: String::new(),
                    comments: std::mem::take(&mut step.comments),
                    action: DraftAction::Approve { prompt: format!("Step {} runs {list}. Checked, and go ahead?", step.name) },
                    line: step.line,
                });
            }
            draft.steps.push(step);
        }
        out.runbooks.push(draft);
    }
    out.findings.sort_by_key(|f| (f.line, f.kind));
    out
}

/// The destructive commands in a script, by name, in the order of the list (comment
/// lines do not count).
fn destructive(script: &str) -> Vec<&'static str> {
    let code: String = script.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    DESTRUCTIVE.iter().filter(|(re, _)| re.is_match(&code)).map(|(_, name)| *name).collect()
}

/// Finds the parameters a script reads, records them (first use wins the description
/// and default), and replaces `<placeholder>`s with their variable.
fn parameterize(
    script: &str,
    step: &str,
    line: usize,
    params: &mut BTreeMap<String, DraftParam>,
    secrets: &mut BTreeSet<String>,
    findings: &mut Vec<Finding>,
) -> String {
    let assigned: BTreeSet<String> =
        ASSIGNED.captures_iter(script).filter_map(|c| c.get(1).or(c.get(2)).or(c.get(3)).map(|m| m.as_str().to_string())).collect();
    let mut add = |name: String, default: Option<String>, from: String, findings: &mut Vec<Finding>| {
        if params.contains_key(&name) {
            return;
        }
        let kind = match default.as_deref() {
            Some("true" | "false") => "bool",
            Some(d) if d.parse::<i64>().is_ok() => "int",
            Some(_) => "string",
            None if NUMERIC_NAME.is_match(&name) => "int",
            None => "string",
        };
        findings.push(Finding { line, kind: FindingKind::Parameter, message: format!("`{name}` ({kind}) from {from} in step `{step}`") });
        params.insert(name, DraftParam { kind, default, description: format!("{from} in the Markdown") });
    };
    let mut lowercase = BTreeSet::new();
    for c in VARIABLE.captures_iter(script) {
        let (var, default) = match (c.get(1), c.get(3)) {
            (Some(v), _) => (v.as_str(), c.get(2).map(|d| d.as_str().to_string())),
            (None, Some(v)) => (v.as_str(), None),
            _ => continue,
        };
        if assigned.contains(var) || SHELL_OWN.contains(&var) || var.starts_with("STEWARD_") {
            continue;
        }
        if var.chars().any(|c| c.is_ascii_lowercase()) {
            lowercase.insert(var.to_string());
            continue;
        }
        // A password is not a parameter (parameters are shown in plans and the audit):
        // the step reads it from Steward's environment, by reference.
        if SECRET_NAME.is_match(var) {
            if secrets.insert(var.to_string()) {
                findings.push(Finding {
                    line,
                    kind: FindingKind::Note,
                    message: format!(
                        "`${var}` in step `{step}` looks like a secret: read by reference (`${{env:{var}}}`), not a parameter"
                    ),
                });
            }
            continue;
        }
        let from = if default.is_some() { format!("`${{{var}:-…}}`") } else { format!("`${var}`") };
        add(var.to_ascii_lowercase(), default.filter(|d| !d.is_empty()), from, findings);
    }
    for var in lowercase {
        if !assigned.contains(&var) {
            findings.push(Finding {
                line,
                kind: FindingKind::Note,
                message: format!("`${var}` in step `{step}` is lower case: left to the shell, not made a parameter"),
            });
        }
    }
    // `<pod-name>` → "$POD_NAME", quoted for where it stands on its line.
    let mut out = String::with_capacity(script.len());
    for (i, l) in script.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut last = 0;
        for m in PLACEHOLDER.find_iter(l) {
            let before = &l[..m.start()];
            // Redirections and heredocs (`<<EOF`, `< file`) are not placeholders.
            if before.ends_with('<') || l[m.end()..].starts_with('>') || l.trim_start().starts_with('#') {
                continue;
            }
            let name = m.as_str().trim_matches(['<', '>']).replace('-', "_").to_ascii_lowercase();
            if SHELL_OWN.contains(&env_name(&name).as_str()) {
                continue;
            }
            add(name.clone(), None, format!("`{}`", m.as_str()), findings);
            out.push_str(&l[last..m.start()]);
            out.push_str(&quoted_variable(before, &env_name(&name)));
            last = m.end();
        }
        out.push_str(&l[last..]);
    }
    out
}

/// `$NAME` written so the shell reads it as one word where it stands: inside double
/// quotes as it is, inside single quotes by leaving and re-entering them.
fn quoted_variable(before: &str, var: &str) -> String {
    let (mut single, mut double, mut escaped) = (false, false, false);
    for c in before.chars() {
        match c {
            '\\' if !single => escaped = !escaped,
            '\'' if !double && !escaped => single = !single,
            '"' if !single && !escaped => double = !double,
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    if single {
        format!("'\"${{{var}}}\"'")
    } else if double {
        format!("${{{var}}}")
    } else {
        format!("\"${{{var}}}\"")
    }
}

/// A `console` block's commands: lines starting with `$ ` (or `# ` as root), their
/// output dropped.
fn console_commands(text: &str) -> String {
    text.lines().filter_map(|l| l.strip_prefix("$ ").or_else(|| l.strip_prefix("# "))).collect::<Vec<_>>().join("\n")
}

/// The first comment line of a script, as a step name (`# Force pod recreation`).
fn first_comment(script: &str) -> Option<String> {
    let line = script.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("#!"))?;
    let text = line.strip_prefix('#')?.trim().trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == ')').trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Lower case, words joined by `-`, at most [`MAX_NAME`] characters; `fallback` when
/// nothing is left.
fn slug(text: &str, fallback: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || (c == '_' && !out.is_empty()) {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = cut(out.trim_end_matches('-'), MAX_NAME).trim_end_matches('-').to_string();
    let out = out.trim_start_matches(|c: char| c.is_ascii_digit() || c == '-').to_string();
    if out.is_empty() { fallback.to_string() } else { out }
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn collapse(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let joined = words.join(" ");
    let joined = joined.trim_matches(|c: char| c == ';' || c.is_whitespace()).to_string();
    if joined.chars().count() > 500 { format!("{}…", cut(&joined, 499)) } else { joined }
}

/// Removes the indentation every non-blank line shares, and blank lines at both ends.
fn dedent(text: &str) -> String {
    let indent = text.lines().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start_matches(' ').len()).min().unwrap_or(0);
    let lines: Vec<&str> = text.lines().map(|l| if l.trim().is_empty() { "" } else { &l[indent.min(l.len())..] }).collect();
    let start = lines.iter().position(|l| !l.is_empty()).unwrap_or(lines.len());
    let end = lines.iter().rposition(|l| !l.is_empty()).map_or(start, |e| e + 1);
    lines[start..end].iter().map(|l| l.trim_end()).collect::<Vec<_>>().join("\n")
}

fn file_stem(source: &str) -> String {
    std::path::Path::new(source).file_stem().map_or_else(|| "imported".to_string(), |s| s.to_string_lossy().into_owned())
}

/// Byte offset → 1-based line number.
fn line_index(text: &str) -> impl Fn(usize) -> usize + '_ {
    let starts: Vec<usize> = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
    move |offset| starts.partition_point(|&s| s <= offset)
}

impl Imported {
    /// The drafts as a configuration file `steward validate` accepts.
    pub fn to_yaml(&self, source: &str) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "# Imported by `steward runbook import` from {source}: a draft. Review every step before");
        let _ = writeln!(y, "# running it; `steward runbook import --report` lists what was not converted and why.");
        if self.runbooks.is_empty() {
            y.push_str("runbooks: []\n");
            return y;
        }
        y.push_str("runbooks:\n");
        for rb in &self.runbooks {
            let _ = writeln!(y, "  - name: {}", rb.name);
            let _ = writeln!(y, "    description: {}", json_string(&rb.description));
            if !rb.params.is_empty() {
                y.push_str("    params:\n");
                for (name, p) in &rb.params {
                    let default = match (&p.default, p.kind) {
                        (None, _) => String::new(),
                        (Some(d), "int" | "bool") => format!(", default: {d}"),
                        (Some(d), _) => format!(", default: {}", json_string(d)),
                    };
                    let _ = writeln!(y, "      {name}: {{ type: {}{default}, description: {} }}", p.kind, json_string(&p.description));
                }
            }
            y.push_str("    steps:\n");
            for step in &rb.steps {
                for c in &step.comments {
                    for line in c.lines() {
                        let _ = writeln!(y, "      #   {line}");
                    }
                }
                let _ = writeln!(y, "      - name: {}", step.name);
                if !step.description.is_empty() {
                    let _ = writeln!(y, "        description: {}", json_string(&step.description));
                }
                match &step.action {
                    DraftAction::Approve { prompt } => {
                        let _ = writeln!(y, "        approve: {{ prompt: {} }}", json_string(prompt));
                    }
                    DraftAction::Shell { shell, script, secrets } => {
                        y.push_str("        shell:\n");
                        if *shell != "sh" {
                            let _ = writeln!(y, "          shell: {shell}");
                        }
                        if !secrets.is_empty() {
                            let env: Vec<String> =
                                secrets.iter().map(|v| format!("{v}: {}", json_string(&format!("${{env:{v}}}")))).collect();
                            let _ = writeln!(y, "          env: {{ {} }}", env.join(", "));
                        }
                        let _ = writeln!(y, "          script: {}", yaml_block(script, 12));
                    }
                }
            }
        }
        y
    }

    /// The report, one finding per line: `FILE:LINE: kind: message`.
    pub fn report(&self, source: &str) -> String {
        let mut r = String::new();
        for f in &self.findings {
            let _ = writeln!(r, "{source}:{}: {}: {}", f.line, f.kind.as_str(), f.message);
        }
        let steps: usize = self.runbooks.iter().map(|d| d.steps.len()).sum();
        let _ = writeln!(
            r,
            "{} runbook(s), {steps} step(s); {} destructive block(s) behind an approval, {} block(s) not converted",
            self.runbooks.len(),
            self.findings.iter().filter(|f| f.kind == FindingKind::Destructive).count(),
            self.findings.iter().filter(|f| f.kind == FindingKind::Skipped).count()
        );
        r
    }
}

/// A JSON string: a valid YAML double-quoted scalar with every character escaped.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// A script as a YAML literal block indented by `indent`, or a double-quoted scalar
/// when a literal block could not hold it as it is (tabs, a first line that starts with
/// spaces, characters YAML does not allow raw).
fn yaml_block(script: &str, indent: usize) -> String {
    let raw_ok =
        !script.is_empty() && !script.starts_with(' ') && script.chars().all(|c| c == '\n' || (!c.is_control() && c != '\u{feff}'));
    if !raw_ok {
        return json_string(script);
    }
    let pad = " ".repeat(indent);
    let mut out = String::from("|-");
    for line in script.lines() {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    out
}

/// A runbook as Markdown: title, what it is for, parameters, each step with its
/// command or what it does, and the rollback — readable without Steward.
pub fn export(rb: &Runbook) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# {}\n", rb.name);
    if let Some(d) = &rb.description {
        let _ = writeln!(m, "{d}\n");
    }
    let mut facts = Vec::new();
    if let Some(o) = &rb.owner {
        facts.push(format!("Owner: {o}"));
    }
    if !rb.tags.is_empty() {
        facts.push(format!("Tags: {}", rb.tags.join(", ")));
    }
    if let Some(t) = rb.timeout {
        facts.push(format!("Timeout: {}", crate::config::duration::format_duration(t)));
    }
    if let Some(l) = &rb.lock {
        facts.push(format!("Lock: `{}`", l.written));
    }
    for s in &rb.schedules {
        facts.push(format!("Schedule: `{}` ({})", s.cron, s.timezone));
    }
    if !facts.is_empty() {
        let _ = writeln!(m, "{}\n", facts.join(" · "));
    }
    let _ = writeln!(m, "Run it with `steward run {}`{}.\n", rb.name, if rb.params.is_empty() { "" } else { " -p NAME=VALUE …" });
    // The steps sit under the title, named in bold: `steward runbook import` reads this
    // page back as one runbook with the same steps.
    export_steps(&mut m, &rb.steps, "");
    if !rb.params.is_empty() {
        m.push_str("## Parameters\n\n| name | type | default | description |\n|---|---|---|---|\n");
        for p in &rb.params {
            let kind = match &p.kind {
                ParamKind::Enum(values) => format!("one of {}", values.join(", ")),
                ParamKind::Int { min, max } => match (min, max) {
                    (Some(a), Some(b)) => format!("int, {a} to {b}"),
                    _ => "int".into(),
                },
                k => k.name().to_string(),
            };
            let default =
                p.default.as_ref().map_or_else(|| if p.required { "(required)".into() } else { String::new() }, |d| format!("`{d}`"));
            let _ = writeln!(
                m,
                "| `{}` (`${}`) | {kind} | {default} | {} |",
                p.name,
                env_name(&p.name),
                table_cell(p.description.as_deref().unwrap_or(""))
            );
        }
        m.push('\n');
    }
    if !rb.on_failure.is_empty() {
        m.push_str("## On failure\n\nRun when a step fails or the run times out:\n\n");
        export_steps(&mut m, &rb.on_failure, "");
    }
    m.trim_end().to_string() + "\n"
}

fn export_steps(m: &mut String, steps: &[Step], prefix: &str) {
    for (i, s) in steps.iter().enumerate() {
        let number = format!("{prefix}{}", i + 1);
        let _ = writeln!(m, "**{number}. {}**\n", s.name);
        if let Some(d) = &s.description {
            let _ = writeln!(m, "{d}\n");
        }
        let mut notes = Vec::new();
        if let Some(w) = &s.when {
            notes.push(format!("only when `{}`", w.source));
        }
        if let Some(t) = s.timeout {
            notes.push(format!("timeout {}", crate::config::duration::format_duration(t)));
        }
        if s.retries > 0 {
            notes.push(format!("{} retries", s.retries));
        }
        if s.continue_on_error {
            notes.push("a failure does not stop the run".into());
        }
        if !notes.is_empty() {
            let _ = writeln!(m, "_{}_\n", notes.join("; "));
        }
        match &s.kind {
            StepKind::Shell(sh) => {
                match &sh.program {
                    ShellProgram::Script { shell, text } => {
                        let lang = if shell == "bash" { "bash" } else { "sh" };
                        let _ = writeln!(m, "{}", fenced(lang, text));
                    }
                    ShellProgram::Argv(argv) => {
                        let words: Vec<String> = argv
                            .iter()
                            .map(|a| shlex::try_quote(&a.written).map_or_else(|_| a.written.clone(), |q| q.into_owned()))
                            .collect();
                        let _ = writeln!(m, "{}", fenced("sh", &words.join(" ")));
                    }
                }
                for (k, v) in &sh.env {
                    let _ = writeln!(m, "- with `{k}` = `{}`", v.written);
                }
                if !sh.env.is_empty() {
                    m.push('\n');
                }
            }
            StepKind::Http(h) => {
                let _ = writeln!(
                    m,
                    "HTTP `{} {}`{}\n",
                    h.method,
                    h.url.written,
                    h.body.as_ref().map_or(String::new(), |b| format!(" with body `{}`", b.written))
                );
            }
            StepKind::Sql(q) => {
                let _ = writeln!(m, "SQL on `{}`:\n\n{}", q.url.written, fenced("sql", &q.query));
            }
            StepKind::Redis(r) => {
                let words: Vec<&str> = r.command.iter().map(|w| w.written.as_str()).collect();
                let _ = writeln!(m, "Redis on `{}`: `{}`\n", r.url.written, words.join(" "));
            }
            StepKind::Check(c) => {
                let _ = writeln!(m, "Run the check `{c}` now; unhealthy stops the run.\n");
            }
            StepKind::SloGate(g) => {
                let _ = writeln!(
                    m,
                    "Go on only while the SLO `{}` has at least {}% of its error budget left.\n",
                    g.slo,
                    g.min_budget_remaining * 100.0
                );
            }
            StepKind::WaitUntil(w) => match &w.probe {
                WaitProbe::Check(c) => {
                    let _ = writeln!(m, "Wait until the check `{c}` is healthy (every {}, at most {}).\n", fmt(w.interval), fmt(w.timeout));
                }
                WaitProbe::Step { kind, condition } => {
                    let _ = writeln!(
                        m,
                        "Repeat a `{}` action until `{}` (every {}, at most {}).\n",
                        kind.name(),
                        condition.source,
                        fmt(w.interval),
                        fmt(w.timeout)
                    );
                }
            },
            StepKind::Sleep(d) => {
                let _ = writeln!(m, "Wait {}.\n", d.written);
            }
            StepKind::Approve(a) => {
                let four_eyes = if a.distinct_approver { ", not by the person who started the run" } else { "" };
                let _ = writeln!(
                    m,
                    "> **Approval**: {} — by a `{}` or above{four_eyes}, within {}.\n",
                    a.prompt.written,
                    a.role.as_str(),
                    fmt(a.timeout)
                );
            }
            StepKind::Notify(n) => {
                let _ = writeln!(m, "Tell {}: \"{}\"\n", n.receivers.join(", "), n.message.written);
            }
            StepKind::ForEach(f) => {
                let items = match &f.items {
                    Items::List(l) => l.iter().map(|t| format!("`{}`", t.written)).collect::<Vec<_>>().join(", "),
                    Items::Expr(e) => format!("`{}`", e.source),
                };
                let _ = writeln!(m, "For each `{}` in {items} ({} at a time):\n", f.var, f.concurrency);
                export_steps(m, &f.steps, &format!("{number}."));
            }
            StepKind::Parallel(steps) => {
                m.push_str("At the same time:\n\n");
                export_steps(m, steps, &format!("{number}."));
            }
            StepKind::Runbook(c) => {
                let params: Vec<String> = c.params.iter().map(|(k, v)| format!("{k}={}", v.written)).collect();
                let _ = writeln!(
                    m,
                    "Run the runbook `{}`{}.\n",
                    c.runbook,
                    if params.is_empty() { String::new() } else { format!(" with {}", params.join(", ")) }
                );
            }
        }
    }
}

fn fmt(d: std::time::Duration) -> String {
    crate::config::duration::format_duration(d)
}

/// A fenced block that its own content cannot close (a longer fence when it holds one).
fn fenced(lang: &str, text: &str) -> String {
    let longest = text.lines().map(|l| l.trim_start().chars().take_while(|c| *c == '`').count()).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}{lang}\n{}\n{fence}\n", text.trim_end())
}

fn table_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_variables_quoted_for_where_they_stand() {
        let mut params = BTreeMap::new();
        let mut findings = Vec::new();
        let script =
            "kubectl delete pod <pod-name> -n \"<namespace>\"\npsql -c 'SELECT * FROM <table>'\ncat <<EOF\nx\nEOF\nsort < input.txt > out";
        let out = parameterize(script, "s", 1, &mut params, &mut BTreeSet::new(), &mut findings);
        assert_eq!(
            out,
            "kubectl delete pod \"${POD_NAME}\" -n \"${NAMESPACE}\"\npsql -c 'SELECT * FROM '\"${TABLE}\"''\ncat <<EOF\nx\nEOF\nsort < input.txt > out"
        );
        assert_eq!(params.keys().collect::<Vec<_>>(), ["namespace", "pod_name", "table"]);
    }

    #[test]
    fn variables_assigned_in_the_block_or_the_shells_own_are_not_parameters() {
        let mut params = BTreeMap::new();
        let mut findings = Vec::new();
        let script = "BACKUP_DIR=/tmp/b\nfor NODE in a b; do echo $NODE; done\necho $HOME $BACKUP_DIR ${REPLICAS:-3} $NAMESPACE ${MODE:-fast} $STEWARD_RUN_ID $rate\nread -r ANSWER\nmongodump --password \"$MONGO_PASSWORD\"";
        let mut secrets = BTreeSet::new();
        parameterize(script, "s", 7, &mut params, &mut secrets, &mut findings);
        assert_eq!(params.keys().collect::<Vec<_>>(), ["mode", "namespace", "replicas"]);
        assert_eq!(secrets.iter().collect::<Vec<_>>(), ["MONGO_PASSWORD"], "a password is read by reference, not a parameter");
        assert_eq!(
            params["replicas"],
            DraftParam { kind: "int", default: Some("3".into()), description: "`${REPLICAS:-…}` in the Markdown".into() }
        );
        assert_eq!(params["mode"].kind, "string");
        assert!(findings.iter().any(|f| f.message.contains("`$rate`") && f.kind == FindingKind::Note), "{findings:?}");
    }

    #[test]
    fn destructive_commands_are_found_outside_comments() {
        assert_eq!(destructive("# kubectl delete pod x\nkubectl get pods"), Vec::<&str>::new());
        assert_eq!(destructive("kubectl delete pod x -n ns"), ["kubectl delete/drain"]);
        assert_eq!(destructive("redis-cli -h h FLUSHALL"), ["FLUSHALL"]);
        assert_eq!(destructive("rm -rf /var/lib/x"), ["rm -rf"]);
        assert_eq!(destructive("rm -r -f /var/lib/x"), Vec::<&str>::new(), "a known gap, kept visible: separate flags");
        assert_eq!(destructive("psql -c \"DROP TABLE users\""), ["DROP"]);
        assert_eq!(destructive("pg_restore --clean -d app dump.pgc"), ["pg_restore --clean"]);
        assert_eq!(destructive("pg_ctl promote -D /data"), ["promote"]);
        assert_eq!(destructive("redis-cli SLAVEOF NO ONE"), ["REPLICAOF"]);
        assert_eq!(destructive("redis-cli -p 26379 SENTINEL failover mymaster"), ["failover"]);
        assert_eq!(destructive("kubectl get pods --field-selector=status.phase=Failed"), Vec::<&str>::new());
    }

    #[test]
    fn slugs_are_valid_names() {
        assert_eq!(slug("### 2. Database Primary Failure!", "x"), "database-primary-failure");
        assert_eq!(slug("🔥🔥", "runbook"), "runbook");
        assert!(slug(&"long words ".repeat(20), "x").len() <= MAX_NAME);
        assert_eq!(
            first_comment("# 1. Verify current production state\nkubectl get pods").as_deref(),
            Some("Verify current production state")
        );
    }
}
