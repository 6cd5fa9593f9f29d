//! The public status page: what the users of the system may see. Services by tier with
//! their status, and the incidents someone chose to tell users about, with the public
//! updates written for them. Nothing internal: no check names, targets, command lines,
//! failure reasons or output, no owners (those are in the API, behind a token).
//! Each service has 90 days of uptime bars (see [`super::uptime`]), each day's share
//! said in its tooltip and the whole window's in words beside them.
//! Server-rendered, no JavaScript, refreshes itself every 30 seconds.

use std::collections::HashMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::incidents::{PublicIncident, PublicService};
use super::uptime::{DAYS, ServiceUptime, percent_text as percent};

pub(super) fn render(
    services: &[PublicService],
    uptimes: &HashMap<String, ServiceUptime>,
    incidents: &[PublicIncident],
    now: DateTime<Utc>,
) -> String {
    let count = |status: &str| services.iter().filter(|s| s.status == status).count();
    let (outage, degraded, unknown) = (count("major_outage"), count("degraded"), count("unknown"));
    let overall = if outage > 0 {
        ("major_outage", format!("Major outage: {outage} service(s) down"))
    } else if degraded > 0 {
        ("degraded", format!("{degraded} service(s) degraded"))
    } else if services.is_empty() {
        ("unknown", "No services are listed".to_string())
    } else if unknown > 0 {
        // Not "all healthy": some services have not been checked yet.
        ("unknown", format!("{unknown} service(s) not checked yet; the others are operational"))
    } else {
        ("operational", "All services operational".to_string())
    };
    let mut h = String::with_capacity(8 * 1024);
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Steward status</title>
<style>
body{{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}}
header{{padding:16px;background:#1d2330;color:#fff}} header h1{{margin:0;font-size:20px}}
main{{padding:16px;max-width:760px;margin:auto}}
.banner{{padding:12px 16px;border-radius:6px;margin-bottom:16px;font-weight:600;overflow-wrap:anywhere}}
.operational{{background:#d9f2e1}} .degraded{{background:#fde8c8}} .major_outage{{background:#fbdada}} .unknown{{background:#e6e8ec}}
h2{{font-size:14px;margin:20px 0 8px;color:#4a5263;text-transform:uppercase;letter-spacing:.04em}}
ul.services{{list-style:none;margin:0;padding:0;background:#fff;border:1px solid #dde1e7;border-radius:6px}}
ul.services li{{padding:10px 14px;border-bottom:1px solid #eef0f3;overflow-wrap:anywhere}}
ul.services li:last-child{{border-bottom:0}}
.row{{display:flex;justify-content:space-between;gap:12px}}
.bars{{display:flex;gap:1px;height:26px;margin-top:8px}}
.bars i{{flex:1 1 0;min-width:0;border-radius:1px;background:#c9ced6}}
.bars i.up{{background:#27ae60}} .bars i.partial{{background:#e67e22}} .bars i.down{{background:#c0392b}}
.span{{display:flex;justify-content:space-between;gap:8px;font-size:12px}}
.badge{{flex:none;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}}
.incident{{background:#fff;border:1px solid #dde1e7;border-left:4px solid #c0392b;border-radius:6px;padding:10px 14px;margin-bottom:12px;overflow-wrap:anywhere}}
.incident.resolved{{border-left-color:#27ae60}} .incident.mitigated{{border-left-color:#e67e22}} .incident ul{{margin:6px 0 0;padding-left:18px}}
.muted{{color:#6b7385}}
</style></head><body>
<header><h1>Steward status</h1><span class="muted">updated {}</span></header>
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
            if last_tier.is_some() {
                h.push_str("</ul>\n");
            }
            last_tier = Some(s.tier);
            let _ = writeln!(h, "<h2>Tier {}</h2><ul class=\"services\">", s.tier);
        }
        let _ = write!(
            h,
            r#"<li data-service="{name}"><div class="row"><span>{name}</span><span class="badge {status}">{label}</span></div>"#,
            name = esc(&s.name),
            status = s.status,
            label = s.status.replace('_', " "),
        );
        if let Some(u) = uptimes.get(&s.name) {
            bars(&mut h, &s.name, u);
            for slo in &u.slos {
                let delivered = slo.sli_percent.map_or_else(|| "no data yet".to_string(), |p| format!("{} delivered", slo_percent(p)));
                let _ = write!(
                    h,
                    r#"<div class="slo muted" data-slo="{name}">{name}: {delivered} of {objective} promised over {window}</div>"#,
                    name = esc(&slo.name),
                    objective = slo_percent(slo.objective_percent),
                    window = esc(&slo.window),
                );
            }
        }
        h.push_str("</li>\n");
    }
    if last_tier.is_some() {
        h.push_str("</ul>\n");
    }
    h.push_str("</main></body></html>\n");
    h
}

/// One bar per day, oldest first; its tooltip and the list's label say the figures, so
/// the colours are not the only way to read them.
fn bars(h: &mut String, service: &str, u: &ServiceUptime) {
    let overall = u.total().hundredths().map_or_else(|| "no data".to_string(), |p| format!("{} uptime", percent(p)));
    let _ = write!(h, r#"<div class="bars" role="img" aria-label="{}: {overall} over the last {DAYS} days">"#, esc(service));
    for (date, day) in u.dated() {
        let said = day.hundredths().map_or_else(|| "no data".to_string(), |p| format!("{} up", percent(p)));
        let _ = write!(h, r#"<i class="{}" title="{date}: {said}"></i>"#, day.class());
    }
    let _ = write!(h, r#"</div><div class="span muted"><span>{DAYS} days ago</span><span>{overall}</span><span>today</span></div>"#);
}

/// An SLO figure to three decimals, trailing zeros dropped, never rounded up to a
/// promise it missed: 99.8996 reads 99.899 %, not 99.9 %.
fn slo_percent(p: f64) -> String {
    // The epsilon keeps a figure stored as 99.89999999999999 at 99.9.
    let text = format!("{:.3}", (p * 1000.0 + 1e-6).floor() / 1000.0);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
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

/// HTML-escaped, with control characters (NUL, ESC, …) dropped and line breaks and
/// tabs shown as spaces: text people typed reaches the page as text only.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
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
    fn slo_figures_never_round_up_to_the_promise() {
        assert_eq!(super::slo_percent(99.8996), "99.899%");
        assert_eq!(super::slo_percent(99.9), "99.9%");
        assert_eq!(super::slo_percent(100.0), "100%");
        assert_eq!(super::slo_percent(95.0), "95%");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(super::esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(super::esc("a\0b\u{1b}[31mc\nd\u{7f}"), "ab[31mc d");
    }

    #[test]
    fn percentages_read_as_people_write_them() {
        use super::percent;
        assert_eq!(percent(10_000), "100%");
        assert_eq!(percent(9_999), "99.99%");
        assert_eq!(percent(8_750), "87.5%");
        assert_eq!(percent(1_000), "10%");
        assert_eq!(percent(0), "0%");
    }
}
