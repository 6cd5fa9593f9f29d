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
        if self.literal {
            return Ok(self.written.clone());
        }
        let ctx = if self.secrets.is_empty() {
            ctx.clone()
        } else {
            minijinja::context! { __steward_secrets => Value::from_serialize(&*self.secrets), ..ctx.clone() }
        };
        environment().render_str(&self.source, ctx).map_err(|e| describe(&e))
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
        environment().compile_expression(inner).map_err(|e| TemplateError { message: describe(&e) })?;
        Ok(Expr { source: inner.to_string() })
    }

    pub fn eval(&self, ctx: &Value) -> Result<Value, String> {
        let expr = environment().compile_expression(&self.source).map_err(|e| describe(&e))?;
        expr.eval(ctx).map_err(|e| describe(&e))
    }

    pub fn is_true(&self, ctx: &Value) -> Result<bool, String> {
        self.eval(ctx).map(|v| v.is_true())
    }

    pub fn variables(&self) -> BTreeSet<String> {
        match environment().compile_expression(&self.source) {
            Ok(e) => e.undeclared_variables(true).into_iter().collect::<HashSet<_>>().into_iter().collect(),
            Err(_) => BTreeSet::new(),
        }
    }
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
    fn syntax_errors_are_reported_at_parse() {
        assert!(Text::parse("{{ params.x ", &mut vec![]).is_err());
        assert!(Expr::parse("params.x ==").is_err());
        let e = Expr::parse("{{ params.n > 2 }}").unwrap();
        assert!(e.is_true(&context! { params => context! { n => 3 } }).unwrap());
        assert_eq!(e.variables().into_iter().collect::<Vec<_>>(), vec!["params.n".to_string()]);
    }
}
