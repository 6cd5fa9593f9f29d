//! Annotation templates in the subset of Prometheus' Go-template language that alert
//! rules use in practice, so rules copied from Prometheus render the same:
//!
//! ```text
//! {{ $labels.instance }}  {{ .Labels.instance }}  {{ $value }}  {{ .Value }}
//! {{ $value | humanize }}  {{ $value | humanizePercentage }}  {{ $value | humanizeDuration }}
//! {{ printf "%.2f" $value }}
//! ```
//!
//! Templates are parsed when the configuration is loaded: an unknown variable or
//! function is a configuration error with its column, never a surprise at 3 a.m.

use super::matcher::Labels;

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Expr { source: Source, printf: Option<String>, filters: Vec<Filter> },
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Value,
    Label(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Filter {
    Humanize,
    HumanizePercentage,
    HumanizeDuration,
}

/// A template error: byte offset into the template text, and what is wrong.
pub type TemplateSyntaxError = (usize, String);

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateSyntaxError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let end = rest[start..].find("}}").ok_or((offset + start, "`{{` is never closed with `}}`".to_string()))? + start;
            let inner = &rest[start + 2..end];
            let inner_offset = offset + start + 2;
            parts.push(parse_expr(inner.trim_matches('-'), inner_offset)?);
            offset += end + 2;
            rest = &rest[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    pub fn render(&self, labels: &Labels, value: Option<f64>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr { source, printf, filters } => {
                    let mut text = match source {
                        Source::Label(name) => labels.get(name).cloned().unwrap_or_default(),
                        Source::Value => match (value, printf) {
                            (Some(v), Some(fmt)) => go_printf(fmt, v),
                            (Some(v), None) => format_value(v),
                            (None, _) => String::new(),
                        },
                    };
                    for f in filters {
                        if let Ok(v) = text.parse::<f64>() {
                            text = match f {
                                Filter::Humanize => humanize(v),
                                Filter::HumanizePercentage => format!("{}%", format_sig(v * 100.0)),
                                Filter::HumanizeDuration => humanize_duration(v),
                            };
                        }
                    }
                    out.push_str(&text);
                }
            }
        }
        out
    }
}

fn parse_expr(inner: &str, offset: usize) -> Result<Part, TemplateSyntaxError> {
    let mut stages = inner.split('|');
    let head = stages.next().unwrap_or("").trim();
    let lead = offset + inner.find(head).unwrap_or(0);
    let (printf, subject) = match head.strip_prefix("printf") {
        Some(rest) => {
            let rest = rest.trim_start();
            let Some(body) = rest.strip_prefix('"') else {
                return Err((lead, "printf needs a quoted format, e.g. printf \"%.2f\" $value".into()));
            };
            let close = body.find('"').ok_or((lead, "printf format is never closed with `\"`".to_string()))?;
            (Some(body[..close].to_string()), body[close + 1..].trim())
        }
        None => (None, head),
    };
    let source = match subject {
        "$value" | ".Value" => Source::Value,
        s if s.starts_with("$labels.") || s.starts_with(".Labels.") => {
            let name = s.strip_prefix("$labels.").or_else(|| s.strip_prefix(".Labels.")).unwrap_or_default();
            if !super::matcher::valid_label_name(name) {
                return Err((lead, format!("`{s}` does not name a label")));
            }
            Source::Label(name.to_string())
        }
        other => return Err((lead, format!("unknown template variable `{other}`; use $value, $labels.NAME, .Value or .Labels.NAME"))),
    };
    if printf.is_some() && !matches!(source, Source::Value) {
        return Err((lead, "printf formats numbers: use it with $value".into()));
    }
    let mut filters = Vec::new();
    for stage in stages {
        filters.push(match stage.trim() {
            "humanize" => Filter::Humanize,
            "humanizePercentage" => Filter::HumanizePercentage,
            "humanizeDuration" => Filter::HumanizeDuration,
            other => {
                return Err((
                    offset + inner.find(stage).unwrap_or(0),
                    format!("unknown template function `{other}`; use humanize, humanizePercentage or humanizeDuration"),
                ));
            }
        });
    }
    Ok(Part::Expr { source, printf, filters })
}

/// `$value` as Prometheus prints it: integers without a fraction, others in full.
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

/// Up to four significant digits, trailing zeros dropped.
fn format_sig(v: f64) -> String {
    let s = format!("{:.4}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn humanize(v: f64) -> String {
    const UNITS: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    let mut v = v;
    let mut unit = 0;
    while v.abs() >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{}{}", format_sig(v), UNITS[unit])
}

fn humanize_duration(seconds: f64) -> String {
    if seconds < 1.0 {
        return format!("{}ms", format_sig(seconds * 1000.0));
    }
    let total = seconds as u64;
    let (d, h, m, s) = (total / 86_400, total / 3600 % 24, total / 60 % 60, total % 60);
    let mut out = String::new();
    for (n, u) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 || (u == "s" && out.is_empty()) {
            out.push_str(&format!("{n}{u} "));
        }
    }
    out.trim_end().to_string()
}

/// Go's printf for one float argument: %f, %.Nf, %g, %d, %v, %s and %%.
fn go_printf(fmt: &str, v: f64) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut precision = String::new();
        if chars.peek() == Some(&'.') {
            chars.next();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                precision.push(*d);
                chars.next();
            }
        }
        match chars.next() {
            Some('f') => out.push_str(&format!("{:.*}", precision.parse().unwrap_or(6), v)),
            Some('d') => out.push_str(&format!("{}", v.round() as i64)),
            Some('g') | Some('v') | Some('s') => out.push_str(&format_value(v)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, value: f64) -> String {
        let labels: Labels = [("instance".to_string(), "db-1:9100".to_string())].into_iter().collect();
        Template::parse(t).unwrap().render(&labels, Some(value))
    }

    #[test]
    fn renders_prometheus_style_rules() {
        assert_eq!(render("{{ $labels.instance }} is down", 1.0), "db-1:9100 is down");
        assert_eq!(render("Disk usage is {{ $value }}%", 72.0), "Disk usage is 72%");
        assert_eq!(render("{{ .Labels.instance }} at {{ .Value }}", 0.5), "db-1:9100 at 0.5");
        assert_eq!(render("error rate {{ $value | humanizePercentage }}", 0.0523), "error rate 5.23%");
        assert_eq!(render("{{ printf \"%.2f\" $value }} ms", 12.3456), "12.35 ms");
        assert_eq!(render("{{ $value | humanize }}B", 2_500_000.0), "2.5MB");
        assert_eq!(render("lag {{ $value | humanizeDuration }}", 3725.0), "lag 1h 2m 5s");
        assert_eq!(render("{{ $labels.missing }}|", 1.0), "|");
    }

    #[test]
    fn mistakes_are_found_at_load_time_with_their_column() {
        let (at, msg) = Template::parse("value {{ $vlaue }}").unwrap_err();
        assert_eq!(at, 9);
        assert!(msg.contains("unknown template variable `$vlaue`"), "{msg}");
        let (_, msg) = Template::parse("{{ $value | humanise }}").unwrap_err();
        assert!(msg.contains("unknown template function `humanise`"), "{msg}");
        let (at, msg) = Template::parse("ok {{ $value").unwrap_err();
        assert_eq!(at, 3);
        assert!(msg.contains("never closed"), "{msg}");
    }
}
