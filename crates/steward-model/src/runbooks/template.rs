//! Templates and expressions in runbooks: minijinja with strict undefined, so a typo
//! in `{{ params.nodee }}` fails the step (and `steward validate`) instead of
//! rendering an empty string into a command.
//!
//! Secret references (`${env:X}`, `${file:/p}`) in a templated field are resolved when
//! the configuration loads and handed to the template as *values*, never as template
//! source: a secret containing `{{` stays a secret, and a parameter value containing
//! `${env:AWS_SECRET_ACCESS_KEY}` stays that literal text.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, OnceLock};

use minijinja::{Environment, UndefinedBehavior, Value};

/// The one environment every runbook template renders in.
fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Output goes into commands, URLs and SQL parameters, not HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env
    })
}

/// Marks where an expression's value starts and ends in a rendered URL (Unicode
/// private-use characters; a value that contains them is refused).
const VALUE_START: char = '\u{E000}';
const VALUE_END: char = '\u{E001}';
/// Marks a value the template already encoded with `| urlencode`: inserted as it is,
/// not encoded twice.
const ENCODED_START: char = '\u{E002}';
const ENCODED_END: char = '\u{E003}';
const MARKERS: [char; 4] = [VALUE_START, VALUE_END, ENCODED_START, ENCODED_END];

/// The environment URL templates render in: each `{{ … }}` value comes out between
/// markers, so [`place_url_values`] can encode it for the part of the URL it lands in.
fn url_environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = environment().clone();
        // Templates written before values were encoded automatically say `| urlencode`;
        // its output is kept as it is (marked), so it is not encoded a second time.
        env.add_filter("urlencode", |value: &Value| -> Result<String, minijinja::Error> {
            Ok(format!("{ENCODED_START}{}{ENCODED_END}", minijinja::filters::urlencode(value)?))
        });
        env.set_formatter(|out, state, value| {
            use std::fmt::Write;
            out.write_char(VALUE_START).map_err(|_| minijinja::Error::from(minijinja::ErrorKind::WriteFailure))?;
            minijinja::escape_formatter(out, state, value)?;
            out.write_char(VALUE_END).map_err(|_| minijinja::Error::from(minijinja::ErrorKind::WriteFailure))
        });
        env
    })
}

/// Characters a value keeps as they are in a URL's path, query or fragment: RFC 3986's
/// unreserved set. Everything else — `/ ? # & = + %`, spaces — is percent-encoded, so a
/// value is always exactly one path segment or one query value.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// In the authority (`user:password@host:port`) a value may also hold `:` and IPv6
/// brackets, but never `@ / ? #`, which would move it into another part.
const AUTHORITY: &percent_encoding::AsciiSet = &COMPONENT.remove(b':').remove(b'[').remove(b']');

/// Replaces each marked value by its encoding for where it lands: before `://` (a value
/// that is the whole URL or its scheme) as it is; in the authority with [`AUTHORITY`];
/// after it with [`COMPONENT`]. Where a value lands is decided by the template's own
/// text, except after a value that is itself a whole base URL (it held `://`): what
/// follows that is path or query.
fn place_url_values(rendered: &str) -> Result<String, String> {
    #[derive(PartialEq)]
    enum Part {
        Scheme,
        Authority,
        Rest,
    }
    let mut out = String::with_capacity(rendered.len());
    let mut part = Part::Scheme;
    let mut rest = rendered;
    while !rest.is_empty() {
        let Some(start) = rest.find(VALUE_START) else {
            advance(&mut part, &mut out, rest);
            break;
        };
        advance(&mut part, &mut out, &rest[..start]);
        let value_and_more = &rest[start + VALUE_START.len_utf8()..];
        let end = value_and_more.find(VALUE_END).ok_or("a templated value holds reserved characters")?;
        let value = &value_and_more[..end];
        rest = &value_and_more[end + VALUE_END.len_utf8()..];
        if let Some(encoded) = value.strip_prefix(ENCODED_START).and_then(|v| v.strip_suffix(ENCODED_END))
            && !encoded.contains(MARKERS)
        {
            out.push_str(encoded);
            continue;
        }
        if value.contains(MARKERS) {
            return Err("a templated value holds reserved characters (U+E000…U+E003), or mixes `| urlencode` output with other text; \
                        write them as separate {{ … }}"
                .into());
        }
        match part {
            // A value that is the whole base URL (`{{ params.base }}/health`): what
            // follows it is path or query, as if the template had written the base.
            Part::Scheme => {
                out.push_str(value);
                if let Some((_, after)) = out.split_once("://") {
                    part = if after.contains(['/', '?', '#']) { Part::Rest } else { Part::Authority };
                }
            }
            Part::Authority => out.extend(percent_encoding::utf8_percent_encode(value, AUTHORITY)),
            Part::Rest => out.extend(percent_encoding::utf8_percent_encode(value, COMPONENT)),
        }
    }
    if out.contains(MARKERS) {
        return Err("a templated value holds reserved characters (U+E000…U+E003)".into());
    }
    return Ok(out);

    /// Copies template text, moving to the next part at `://` and at the first
    /// `/ ? #` after the authority.
    fn advance(part: &mut Part, out: &mut String, text: &str) {
        for c in text.chars() {
            out.push(c);
            match part {
                Part::Scheme if out.ends_with("://") => *part = Part::Authority,
                Part::Authority if matches!(c, '/' | '?' | '#') => *part = Part::Rest,
                _ => {}
            }
        }
    }
}

/// The variable that carries a field's secret values (not readable by users: the
/// name cannot be written in a YAML template without it being in the source).
const SECRETS_VAR: &str = "__steward_secrets";

/// A string field that may hold `{{ … }}` templates and secret references.
#[derive(Clone, PartialEq)]
pub struct Text {
    /// As written: shown in plans and records (secret references unresolved).
    pub written: String,
    /// The template source, secret references replaced by `{{ __steward_secrets[i] }}`.
    source: String,
    secrets: Arc<Vec<String>>,
    /// No template syntax and no secrets: renders to `written` without minijinja.
    literal: bool,
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.written, f)
    }
}

/// A compile error: character offset in the written text (when known) and message.
#[derive(Debug)]
pub struct TemplateError {
    pub message: String,
}

impl Text {
    pub fn literal(s: impl Into<String>) -> Text {
        let s = s.into();
        Text { source: s.clone(), written: s, secrets: Arc::new(vec![]), literal: true }
    }

    /// Compiles `written`, resolving secret references; `registry` collects the secret
    /// values for redaction. Errors carry a message fit for a diagnostic.
    pub fn parse(written: &str, registry: &mut Vec<String>) -> Result<Text, TemplateError> {
        let mut source = String::with_capacity(written.len());
        let mut secrets = Vec::new();
        let mut rest = written;
        while let Some(start) = rest.find("${") {
            source.push_str(&rest[..start]);
            let Some(end) = rest[start..].find('}') else {
                return Err(TemplateError { message: "unterminated secret reference; write `${env:NAME}` or `${file:/path}`".into() });
            };
            let reference = &rest[start..start + end + 1];
            let mut found = Vec::new();
            let value = crate::config::secret::resolve(reference, &mut found)
                .map_err(|(_, message, hint)| TemplateError { message: format!("{message} ({hint})") })?;
            registry.extend(found);
            source.push_str(&format!("{{{{ {SECRETS_VAR}[{}] }}}}", secrets.len()));
            secrets.push(value.expose().to_string());
            rest = &rest[start + end + 1..];
        }
        source.push_str(rest);
        let literal = secrets.is_empty() && !has_syntax(&source);
        if !literal {
            environment().template_from_str(&source).map_err(|e| TemplateError { message: describe(&e) })?;
        }
        Ok(Text { written: written.to_string(), source, secrets: Arc::new(secrets), literal })
    }

    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// Renders with `ctx` (a map of the variables templates may read).
    pub fn render(&self, ctx: &Value) -> Result<String, String> {
        self.render_in(environment(), ctx)
    }

    /// Renders a URL: each value is percent-encoded for the part of the URL it lands in
    /// (see [`place_url_values`]), so `x&admin=1` stays one query value and `a/../b` one
    /// path segment.
    pub fn render_url(&self, ctx: &Value) -> Result<String, String> {
        if self.literal {
            return Ok(self.written.clone());
        }
        place_url_values(&self.render_in(url_environment(), ctx)?)
    }

    fn render_in(&self, env: &Environment<'static>, ctx: &Value) -> Result<String, String> {
        if self.literal {
            return Ok(self.written.clone());
        }
        let ctx = if self.secrets.is_empty() {
            ctx.clone()
        } else {
            minijinja::context! { __steward_secrets => Value::from_serialize(&*self.secrets), ..ctx.clone() }
        };
        env.render_str(&self.source, ctx).map_err(|e| describe(&e))
    }

    /// The variables the template reads, as dotted paths (`params.node`, `steps.lag.json`).
    pub fn variables(&self) -> BTreeSet<String> {
        if self.literal {
            return BTreeSet::new();
        }
        match environment().template_from_str(&self.source) {
            Ok(t) => t.undeclared_variables(true).into_iter().filter(|v| !v.starts_with(SECRETS_VAR)).collect(),
            Err(_) => BTreeSet::new(),
        }
    }
}

fn has_syntax(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// An expression such as `params.env == "prod"` or `steps.lag.json.seconds < 10`.
#[derive(Clone, PartialEq)]
pub struct Expr {
    pub source: String,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.source, f)
    }
}

impl Expr {
    pub fn parse(source: &str) -> Result<Expr, TemplateError> {
        // Tolerate `{{ … }}` around an expression: people write it out of habit.
        let trimmed = source.trim();
        let inner = trimmed.strip_prefix("{{").and_then(|s| s.strip_suffix("}}")).map_or(trimmed, str::trim);
        // An expression has no template delimiters of its own; minijinja 2.24's expression
        // lexer panics on a stray `}}` ("empty lexer stack", found by fuzzing), so they
        // are refused here, with a message, before it sees them.
        if let Some(d) = ["{{", "}}", "{%", "%}", "{#", "#}"].into_iter().find(|d| inner.contains(d)) {
            return Err(TemplateError { message: format!("an expression cannot contain `{d}`; write it bare, e.g. `params.n > 2`") });
        }
        compile_guarded(inner).map_err(|message| TemplateError { message })?;
        Ok(Expr { source: inner.to_string() })
    }

    pub fn eval(&self, ctx: &Value) -> Result<Value, String> {
        let expr = compile_guarded(&self.source)?;
        expr.eval(ctx).map_err(|e| describe(&e))
    }

    pub fn is_true(&self, ctx: &Value) -> Result<bool, String> {
        self.eval(ctx).map(|v| v.is_true())
    }

    pub fn variables(&self) -> BTreeSet<String> {
        match compile_guarded(&self.source) {
            Ok(e) => e.undeclared_variables(true).into_iter().collect::<HashSet<_>>().into_iter().collect(),
            Err(_) => BTreeSet::new(),
        }
    }
}

/// Compiles an expression; a panic inside minijinja's compiler (a bug there, for input
/// our own checks did not foresee) becomes an error instead of taking down validation,
/// a reload or a run.
fn compile_guarded<'s>(source: &'s str) -> Result<minijinja::Expression<'s, 's>, String> {
    std::panic::catch_unwind(|| environment().compile_expression(source))
        .map_err(|_| "the expression could not be compiled (the template engine failed on it)".to_string())?
        .map_err(|e| describe(&e))
}

/// minijinja's message without the template-name noise.
fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.detail().map_or_else(|| e.kind().to_string(), |d| format!("{}: {d}", e.kind()));
    if let Some(line) = e.line()
        && line > 1
    {
        msg.push_str(&format!(" (template line {line})"));
    }
    msg
}

#[cfg(test)]
mod tests {
    use minijinja::context;

    use super::*;

    #[test]
    fn strict_undefined_fails_instead_of_rendering_empty() {
        let t = Text::parse("restart {{ params.nodee }}", &mut vec![]).unwrap();
        let err = t.render(&context! { params => context! { node => "db1" } }).unwrap_err();
        assert!(err.contains("undefined"), "{err}");
        let ok = Text::parse("restart {{ params.node }}", &mut vec![]).unwrap();
        assert_eq!(ok.render(&context! { params => context! { node => "db1" } }).unwrap(), "restart db1");
    }

    #[test]
    fn secrets_are_values_not_template_source() {
        // SAFETY: tests in this module are the only readers of this variable.
        unsafe { std::env::set_var("STEWARD_TEMPLATE_TEST_SECRET", "s3cr{{ params.x }}t") };
        let mut registry = vec![];
        let t = Text::parse("password=${env:STEWARD_TEMPLATE_TEST_SECRET} user={{ params.user }}", &mut registry).unwrap();
        assert_eq!(registry, vec!["s3cr{{ params.x }}t".to_string()]);
        let out = t.render(&context! { params => context! { user => "${env:STEWARD_TEMPLATE_TEST_SECRET}" } }).unwrap();
        // The secret is inserted verbatim; the parameter's reference text is not resolved.
        assert_eq!(out, "password=s3cr{{ params.x }}t user=${env:STEWARD_TEMPLATE_TEST_SECRET}");
        assert_eq!(t.variables().into_iter().collect::<Vec<_>>(), vec!["params.user".to_string()]);
    }

    #[test]
    fn url_values_are_encoded_for_the_part_they_land_in() {
        let ctx = context! { params => context! {
            q => "x&admin=1#frag", seg => "a/../b c", host => "db-1.internal", port => 8080, base => "https://api.example.com/v1",
        } };
        let url = |t: &str| Text::parse(t, &mut vec![]).unwrap().render_url(&ctx).unwrap();
        assert_eq!(url("http://h/items?q={{ params.q }}&n=1"), "http://h/items?q=x%26admin%3D1%23frag&n=1");
        assert_eq!(url("http://h/{{ params.seg }}/x"), "http://h/a%2F..%2Fb%20c/x");
        assert_eq!(url("http://{{ params.host }}:{{ params.port }}/health"), "http://db-1.internal:8080/health");
        // A value that is the whole base URL stays a URL.
        assert_eq!(url("{{ params.base }}/health?x={{ params.q }}"), "https://api.example.com/v1/health?x=x%26admin%3D1%23frag");
        // In the authority a value cannot add a user or a path.
        let evil = context! { params => context! { host => "evil.com/x?@good.com" } };
        let t = Text::parse("http://{{ params.host }}/ok", &mut vec![]).unwrap();
        assert_eq!(t.render_url(&evil).unwrap(), "http://evil.com%2Fx%3F%40good.com/ok");
        // `| urlencode` in a template is not encoded twice (the examples use it).
        assert_eq!(url("http://h/?q={{ params.q | urlencode }}&x={{ 'a b' | urlencode }}"), "http://h/?q=x%26admin%3D1%23frag&x=a%20b");
        let marker = context! { params => context! { q => "\u{E001}oops" } };
        assert!(Text::parse("http://h/?q={{ params.q }}", &mut vec![]).unwrap().render_url(&marker).is_err());
    }

    #[test]
    fn stray_delimiters_in_expressions_are_errors_not_panics() {
        for source in ["}}{{", "a }} b", "{% if %}", "x #}"] {
            assert!(Expr::parse(source).is_err(), "{source}");
        }
    }

    #[test]
    fn syntax_errors_are_reported_at_parse() {
        assert!(Text::parse("{{ params.x ", &mut vec![]).is_err());
        assert!(Expr::parse("params.x ==").is_err());
        let e = Expr::parse("{{ params.n > 2 }}").unwrap();
        assert!(e.is_true(&context! { params => context! { n => 3 } }).unwrap());
        assert_eq!(e.variables().into_iter().collect::<Vec<_>>(), vec!["params.n".to_string()]);
    }
}
