//! The `prometheus` section (the server PromQL rules are evaluated by) and
//! `rule_files`: Prometheus rule files (`groups:` / `rules:`), loaded as they are.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::alerting::{AlertRule, AlertingRefs, SEVERITIES, label_map, promql, template_map};
use super::decode::{self as de, Fields};
use super::diagnostics::{Diagnostic, Diagnostics, Pos};
use super::secret::SecretString;
use super::sections::{env_map, url};
use super::yaml::{self, Node};

pub(super) const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(15);

/// Where PromQL rules are evaluated: a Prometheus-compatible query API.
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    pub url: SecretString,
    pub headers: Vec<(String, SecretString)>,
    /// One query may take this long; a slow server delays only PromQL rules.
    pub timeout: Duration,
    pub evaluation_interval: Duration,
    pub pos: Pos,
}

pub(super) fn source(node: &Node, d: &mut Diagnostics, secrets: &mut Vec<String>) -> Option<PrometheusSource> {
    let mut f = Fields::of(node, "the `prometheus` section", d)?;
    let url = f.require("url", d).and_then(|n| url(n, "prometheus url", &["http", "https"], d, secrets));
    let headers = f.take("headers").map_or(Some(vec![]), |n| env_map(n, "prometheus headers", d, secrets));
    let timeout = f.take("timeout").map_or(Some(Duration::from_secs(10)), |n| de::duration(n, "prometheus timeout", d));
    let evaluation_interval =
        f.take("evaluation_interval").map_or(Some(DEFAULT_EVALUATION_INTERVAL), |n| de::duration(n, "prometheus evaluation_interval", d));
    f.finish(&["url", "headers", "timeout", "evaluation_interval"], d);
    Some(PrometheusSource {
        url: url?,
        headers: headers?,
        timeout: timeout?,
        evaluation_interval: evaluation_interval?,
        pos: node.pos.clone(),
    })
}

/// Reads every file named by a `rule_files` list. Relative paths are relative to the
/// configuration file that names them; a directory means its `*.yml` / `*.yaml` files.
pub(super) fn rule_files(node: &Node, d: &mut Diagnostics, refs: &mut AlertingRefs, notes: &mut Vec<Diagnostic>) -> Vec<AlertRule> {
    let Some(items) = de::list(node, "`rule_files`", d) else { return vec![] };
    let base = Path::new(&*node.pos.file).parent().map(Path::to_path_buf).unwrap_or_default();
    let mut rules = Vec::new();
    for item in items {
        let Some(text) = de::string(item, "each item of `rule_files`", d) else { continue };
        let path = base.join(&text);
        let files = match files_at(&path) {
            Ok(f) => f,
            Err(e) => {
                d.push(
                    Diagnostic::error(item.pos.clone(), format!("rule file `{}`: {e}", path.display()))
                        .with_hint("paths are relative to this configuration file; name a file or a directory of .yml files"),
                );
                continue;
            }
        };
        for file in files {
            let name: Arc<str> = Arc::from(file.display().to_string());
            match std::fs::read_to_string(&file) {
                Ok(text) => match yaml::parse(&name, &text) {
                    Ok(doc) => rules.extend(rule_file(&doc, d, refs, notes)),
                    Err(diag) => d.push(diag),
                },
                Err(e) => d.push(Diagnostic::error(item.pos.clone(), format!("cannot read rule file `{}`: {e}", file.display()))),
            }
        }
    }
    rules
}

fn files_at(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !std::fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

/// One Prometheus rule file: `groups:` of `rules:` with `alert:`, `expr:`, `for:`,
/// `keep_firing_for:`, `labels:`, `annotations:`. Recording rules are noted and
/// skipped: they belong in Prometheus, which stores their output.
fn rule_file(doc: &Node, d: &mut Diagnostics, refs: &mut AlertingRefs, notes: &mut Vec<Diagnostic>) -> Vec<AlertRule> {
    let mut out = Vec::new();
    let Some(mut top) = Fields::of(doc, "a Prometheus rule file", d) else { return out };
    let groups = top.require("groups", d).and_then(|n| de::list(n, "`groups`", d)).unwrap_or_default();
    top.finish(&["groups"], d);
    for group in groups {
        let Some(mut g) = Fields::of(group, "a rule group", d) else { continue };
        let name = g.require("name", d).and_then(|n| de::string(n, "the group name", d)).unwrap_or_default();
        let what = format!("rule group `{name}`");
        let every = g.take("interval").and_then(|n| de::duration(n, &format!("{what} interval"), d)).unwrap_or(Duration::ZERO);
        let group_labels = label_map(g.take("labels"), &format!("{what} labels"), d).unwrap_or_default();
        // Accepted for compatibility; steward evaluates at `interval` and returns every series.
        g.take("limit");
        g.take("query_offset");
        let rules = g.require("rules", d).and_then(|n| de::list(n, &format!("{what} rules"), d)).unwrap_or_default();
        g.finish(&["name", "interval", "labels", "limit", "query_offset", "rules"], d);
        for r in rules {
            let Some(mut f) = Fields::of(r, format!("a rule of {what}"), d) else { continue };
            if let Some(record) = f.take("record") {
                f.take("expr");
                f.take("labels");
                notes.push(Diagnostic::error(
                    record.pos.clone(),
                    format!(
                        "recording rule `{}` skipped: steward evaluates alerting rules; keep recording rules in Prometheus",
                        record.scalar_text().unwrap_or_default()
                    ),
                ));
                continue;
            }
            let Some(alert) = f.require("alert", d).and_then(|n| {
                let s = de::string(n, "the alert name", d)?;
                refs.rules.push((s.clone(), n.pos.clone()));
                Some(s)
            }) else {
                continue;
            };
            let what = format!("alert `{alert}`");
            let when = f.require("expr", d).and_then(|n| promql(n, &what, d, refs));
            let for_ = f.take("for").map_or(Some(Duration::ZERO), |n| de::duration(n, &format!("{what} for"), d));
            let keep = f.take("keep_firing_for").map_or(Some(Duration::ZERO), |n| de::duration(n, &format!("{what} keep_firing_for"), d));
            let labels = label_map(f.take("labels"), &format!("{what} labels"), d).map(|mut l| {
                for (k, v) in &group_labels {
                    l.entry(k.clone()).or_insert_with(|| v.clone());
                }
                l
            });
            let annotations = template_map(f.take("annotations"), &what, d);
            f.finish(&["alert", "expr", "for", "keep_firing_for", "labels", "annotations"], d);
            let (Some(when), Some(for_), Some(keep_firing_for), Some(labels), Some(annotations)) = (when, for_, keep, labels, annotations)
            else {
                continue;
            };
            // The severity label is kept as written; the rule's severity is it when
            // steward knows the word, so incident policies can read it.
            let severity = labels
                .get("severity")
                .and_then(|s| SEVERITIES.iter().find(|v| v.eq_ignore_ascii_case(s)))
                .map_or("warning".to_string(), |s| s.to_string());
            out.push(AlertRule {
                name: alert,
                when,
                for_,
                keep_firing_for,
                severity,
                labels,
                annotations,
                runbook: None,
                every,
                pos: r.pos.clone(),
            });
        }
    }
    out
}
