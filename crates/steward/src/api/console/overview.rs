//! The overview: what is wrong, in words, then every service by tier.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use minijinja::{Value, context};

use super::session::Signed;
use super::view::{PageError, page};
use crate::alerting::AlertState;
use crate::api::{AppState, ServiceView, aggregate};
use crate::checks::state::Health;

/// Failing checks named per service on the overview; the rest are a link.
const FAILING_SHOWN: usize = 5;

/// A service's checks on the overview: every health, and the failing ones (name, reason).
type ServiceChecks<'a> = (Vec<Health>, Vec<(&'a str, Option<&'a str>)>);
use crate::runbooks::{RunQuery, RunStatus};
use crate::store::IncidentQuery;

pub(super) async fn show(State(s): State<Arc<AppState>>, Extension(who): Extension<Signed>) -> Result<Response, PageError> {
    let config = s.engine.config();
    let states = s.engine.checks.states();
    // Per service: its health, how many checks, the failing ones (name, reason). One
    // pass over the checks and no per-check copies: the page costs the same with
    // 20,000 checks as the summary it shows.
    let mut per_service: HashMap<&str, ServiceChecks> = HashMap::new();
    for c in &config.checks {
        let Some(service) = c.service.as_deref() else { continue };
        let entry = per_service.entry(service).or_default();
        let state = states.get(&c.name);
        let health = state.map_or(Health::Unknown, |s| s.health);
        entry.0.push(health);
        if health == Health::Unhealthy {
            entry.1.push((c.name.as_str(), state.and_then(|s| s.last_reason.as_deref())));
        }
    }
    let mut services: Vec<ServiceView> = config
        .services
        .iter()
        .map(|sv| ServiceView {
            name: sv.name.clone(),
            tier: sv.tier,
            owner: None,
            depends_on: sv.depends_on.clone(),
            labels: Default::default(),
            health: aggregate(per_service.get(sv.name.as_str()).into_iter().flat_map(|e| e.0.iter().copied())),
            checks: vec![],
        })
        .collect();
    services.sort_by(|a, b| (a.tier, &a.name).cmp(&(b.tier, &b.name)));
    let causes = root_causes(&services);
    let incidents = s.engine.store.incidents(&IncidentQuery { open: true, limit: 20, ..Default::default() }).await?;
    let alerts = s.engine.alerting.alerts();
    let firing = alerts.iter().filter(|a| a.state == AlertState::Firing).count();
    let waiting = s.engine.store.runs(&RunQuery { status: Some(RunStatus::Waiting), limit: 20, ..Default::default() }).await?;
    let count = |h: Health| services.iter().filter(|v| v.health == h).count();
    // SLOs come with the uptime history: one cached reading shared with the status page.
    let uptimes = s.uptime.get(&config, &s.engine.store).await;
    // Each service with its failing checks only (at most a few named): the overview
    // stays one small page however many checks there are.
    let summaries: Vec<Value> = services
        .iter()
        .map(|sv| {
            let (healths, failing) = per_service.get(sv.name.as_str()).map_or((0, &[][..]), |e| (e.0.len(), &e.1[..]));
            let shown: Vec<Value> =
                failing.iter().take(FAILING_SHOWN).map(|(name, reason)| context! { name, reason => reason.map(str::to_string) }).collect();
            context! {
                name => sv.name,
                tier => sv.tier,
                health => sv.health,
                depends_on => sv.depends_on,
                checks => healths,
                failing => shown,
                more_failing => failing.len().saturating_sub(FAILING_SHOWN),
                slos => uptimes.get(&sv.name).map(|u| u.slos.iter().map(slo_view).collect::<Vec<_>>()).unwrap_or_default(),
            }
        })
        .collect();
    let ctx = context! {
        causes,
        services => summaries,
        healthy => count(Health::Healthy),
        unhealthy => count(Health::Unhealthy),
        unknown => count(Health::Unknown),
        incidents => Value::from_serialize(&incidents),
        firing,
        waiting => Value::from_serialize(&waiting),
    };
    page(&who, "overview", "overview.html", ctx)
}

/// An SLO line: figures rounded down to what was delivered, and the budget's state
/// (`good` while at least a quarter is left, `warn` above none, `bad` when spent).
fn slo_view(f: &crate::api::uptime::SloFigure) -> Value {
    let state = match f.budget_remaining_percent {
        None => "unknown",
        Some(b) if b >= 25.0 => "good",
        Some(b) if b > 0.0 => "warn",
        Some(_) => "bad",
    };
    context! {
        name => f.name,
        objective => format!("{}%", f.objective_percent),
        window => f.window,
        sli => f.sli_percent.map(|p| format!("{:.3}%", (p * 1000.0 + 1e-6).floor() / 1000.0)),
        budget => match f.budget_remaining_percent {
            None => "no budget figure yet".to_string(),
            Some(b) if b > 0.0 => format!("{b:.1}% of the error budget left"),
            Some(_) => "error budget spent".to_string(),
        },
        state,
    }
}

/// One sentence per failing service that is not failing because of another: "auth is
/// down; payment, messaging and notification depend on it". A failing service whose
/// own dependency is failing is named under that dependency, not on its own.
pub(super) fn root_causes(services: &[ServiceView]) -> Vec<String> {
    let health: HashMap<&str, Health> = services.iter().map(|s| (s.name.as_str(), s.health)).collect();
    let down = |name: &str| health.get(name) == Some(&Health::Unhealthy);
    // Who depends on whom, reversed: service → the services that list it.
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in services {
        for d in &s.depends_on {
            dependents.entry(d.as_str()).or_default().push(s.name.as_str());
        }
    }
    let mut out = Vec::new();
    let mut named = BTreeSet::new();
    for s in services.iter().filter(|s| s.health == Health::Unhealthy) {
        if s.depends_on.iter().any(|d| down(d)) {
            continue;
        }
        named.insert(s.name.as_str());
        // Everything that depends on it, directly or through others.
        let mut affected = BTreeSet::new();
        let mut queue = vec![s.name.as_str()];
        while let Some(n) = queue.pop() {
            for d in dependents.get(n).into_iter().flatten() {
                if *d != s.name && affected.insert(*d) {
                    queue.push(d);
                }
            }
        }
        let failing: Vec<&str> = affected.iter().copied().filter(|d| down(d)).collect();
        named.extend(&failing);
        let sentence = match failing.as_slice() {
            [] if affected.is_empty() => format!("{} is down", s.name),
            [] => format!("{} is down; {} depend on it", s.name, list(&affected.iter().copied().collect::<Vec<_>>())),
            f => format!("{} is down; {} depend on it and are failing too", s.name, list(f)),
        };
        out.push(sentence);
    }
    // Failing services held only by each other (a dependency cycle) are still said.
    for s in services.iter().filter(|s| s.health == Health::Unhealthy && !named.contains(s.name.as_str())) {
        out.push(format!("{} is down", s.name));
    }
    out
}

/// `a`, `a and b`, `a, b and c`.
fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, deps: &[&str], health: Health) -> ServiceView {
        ServiceView {
            name: name.into(),
            tier: 1,
            owner: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            labels: Default::default(),
            health,
            checks: vec![],
        }
    }

    #[test]
    fn the_cause_is_named_with_what_depends_on_it() {
        use Health::*;
        let services = vec![
            svc("auth", &[], Unhealthy),
            svc("payment", &["auth"], Unhealthy),
            svc("messaging", &["auth"], Unhealthy),
            svc("notification", &["messaging"], Unhealthy),
            svc("search", &[], Healthy),
            svc("cache", &[], Unhealthy),
            svc("reports", &["cache"], Healthy),
        ];
        assert_eq!(
            root_causes(&services),
            vec![
                "auth is down; messaging, notification and payment depend on it and are failing too".to_string(),
                "cache is down; reports depend on it".to_string(),
            ]
        );
        assert!(root_causes(&[svc("a", &[], Healthy), svc("b", &["a"], Unknown)]).is_empty());
        // A cycle does not loop forever, and what fails in it is still said.
        assert_eq!(root_causes(&[svc("x", &["y"], Unhealthy), svc("y", &["x"], Unhealthy)]), vec!["x is down", "y is down"]);
    }
}
