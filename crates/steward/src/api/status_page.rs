//! The page an operator opens first: services by tier, each check's health, latency
//! and last change. Server-rendered, no JavaScript, refreshes itself every 5 seconds.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::ServiceView;
use super::incidents::PublicIncident;
use crate::checks::state::Health;

pub fn render(services: &[ServiceView], incidents: &[PublicIncident], now: DateTime<Utc>) -> String {
    let all = services.iter().flat_map(|s| &s.checks);
    let (mut up, mut down, mut unknown) = (0, 0, 0);
    for c in all {
        match c.health {
            Health::Healthy => up += 1,
            Health::Unhealthy => down += 1,
            Health::Unknown => unknown += 1,
        }
    }
    let overall = if down > 0 {
        ("unhealthy", format!("{down} check(s) failing"))
    } else if up > 0 {
        ("healthy", "All checks healthy".to_string())
    } else {
        ("unknown", "Waiting for first results".to_string())
    };
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Steward status</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}}
header{{padding:16px 24px;background:#1d2330;color:#fff}} header h1{{margin:0;font-size:20px}}
main{{padding:16px 24px;max-width:1200px}}
.banner{{padding:12px 16px;border-radius:6px;margin-bottom:16px;font-weight:600}}
.banner.healthy{{background:#d9f2e1}} .banner.unhealthy{{background:#fbdada}} .banner.unknown{{background:#e6e8ec}}
h2{{font-size:15px;margin:20px 0 8px;color:#4a5263;text-transform:uppercase;letter-spacing:.04em}}
section.service{{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin-bottom:12px}}
section.service>div{{padding:10px 14px;border-bottom:1px solid #eef0f3;display:flex;gap:12px;align-items:center}}
table{{width:100%;border-collapse:collapse}} td,th{{padding:6px 14px;text-align:left;border-bottom:1px solid #f0f2f5;vertical-align:top}}
th{{font-weight:500;color:#6b7385;font-size:12px}}
.badge{{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}}
.badge.healthy{{background:#d9f2e1;color:#12662f}} .badge.unhealthy{{background:#fbdada;color:#9b1c1c}} .badge.unknown{{background:#e6e8ec;color:#4a5263}}
.incident{{background:#fff;border:1px solid #dde1e7;border-left:4px solid #c0392b;border-radius:6px;padding:10px 14px;margin-bottom:12px}}
.incident.resolved{{border-left-color:#27ae60}} .incident.mitigated{{border-left-color:#e67e22}} .incident ul{{margin:6px 0 0;padding-left:18px}}
.muted{{color:#6b7385}} .reason{{color:#9b1c1c;font-family:ui-monospace,monospace;font-size:12px}}
</style></head><body>
<header><h1>Steward status</h1><span class="muted">{up} healthy · {down} unhealthy · {unknown} unknown · updated {}</span></header>
<main><div class="banner {}" id="overall">{}</div>
"#,
        now.format("%Y-%m-%d %H:%M:%S UTC"),
        overall.0,
        esc(&overall.1)
    );
    if !incidents.is_empty() {
        h.push_str("<h2>Incidents</h2>\n");
        for i in incidents {
            let _ = write!(
                h,
                r#"<section class="incident {status}" data-incident="{id}"><strong>{title}</strong> <span class="muted">{status} · {services} · since {started}</span><ul>"#,
                id = i.id,
                status = i.status,
                title = esc(&i.title),
                services = esc(&i.services.join(", ")),
                started = i.started_at.format("%Y-%m-%d %H:%M UTC"),
            );
            for u in i.updates.iter().rev() {
                let _ = write!(h, "<li>{} {}</li>", ago(now, u.at), esc(&u.text));
            }
            h.push_str("</ul></section>\n");
        }
    }
    let mut last_tier = None;
    for s in services {
        if last_tier != Some(s.tier) {
            last_tier = Some(s.tier);
            let title = if s.tier == 0 { "Other checks".to_string() } else { format!("Tier {}", s.tier) };
            let _ = writeln!(h, "<h2>{title}</h2>");
        }
        let _ = write!(
            h,
            r#"<section class="service" data-service="{name}"><div><strong>{name}</strong><span class="badge {health}">{health}</span>{owner}{deps}</div>
<table><tr><th>Check</th><th>Kind</th><th>Target</th><th>State</th><th>Latency</th><th>Last change</th></tr>
"#,
            name = esc(&s.name),
            health = s.health.as_str(),
            owner = s.owner.as_ref().map(|o| format!(r#"<span class="muted">owner {}</span>"#, esc(o))).unwrap_or_default(),
            deps = if s.depends_on.is_empty() {
                String::new()
            } else {
                format!(r#"<span class="muted">depends on {}</span>"#, esc(&s.depends_on.join(", ")))
            },
        );
        for c in &s.checks {
            let latency = c.latency_ms.map(|l| format!("{l:.1} ms")).unwrap_or_else(|| "–".into());
            let since = c.since.filter(|_| c.health != Health::Unknown).map(|t| ago(now, t)).unwrap_or_else(|| "–".into());
            let reason = match (&c.reason, c.health) {
                (Some(r), _) => format!(r#"<div class="reason">{}</div>"#, esc(r)),
                _ => String::new(),
            };
            let _ = writeln!(
                h,
                r#"<tr data-check="{name}"><td>{name}{reason}</td><td>{kind}</td><td class="muted">{target}</td><td><span class="badge {health}">{health}</span></td><td>{latency}</td><td>{since}</td></tr>"#,
                name = esc(&c.name),
                kind = c.kind,
                target = esc(&c.target),
                health = c.health.as_str(),
            );
        }
        h.push_str("</table></section>\n");
    }
    if services.is_empty() {
        h.push_str("<p class=\"muted\">No checks are configured.</p>");
    }
    h.push_str("</main></body></html>\n");
    h
}

fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    let rel = match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    };
    format!(r#"<time datetime="{}">{rel}</time>"#, t.to_rfc3339())
}

pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(super::esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
