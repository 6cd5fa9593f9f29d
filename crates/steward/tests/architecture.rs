//! Rules about the code itself that a reader relies on (see ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Two public types with one name make every `use` a guess (three `Outcome`s and two
/// `Action`s once meant different things in checks, ingest, runbooks and incidents).
#[test]
fn no_two_public_types_share_a_name() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![];
    for krate in ["steward-model", "steward-store", "steward"] {
        sources(&crates.join(krate).join("src"), &mut files);
    }
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            let line = line.trim_start();
            for kind in ["pub struct ", "pub enum ", "pub trait ", "pub type "] {
                if let Some(rest) = line.strip_prefix(kind) {
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    seen.entry(name).or_default().push(file.strip_prefix(&crates).unwrap().display().to_string());
                }
            }
        }
    }
    assert!(seen.len() > 100, "the scan found the crate's types: {}", seen.len());
    let clashes: Vec<_> = seen.iter().filter(|(_, places)| places.len() > 1).collect();
    assert!(clashes.is_empty(), "public types that share a name: {clashes:?}");
}

/// Subsystems work from their own contexts (ARCHITECTURE.md, "Subsystems"): only
/// assembly (`engine.rs`) and what sits on top of it (the API, the CLI, the demo) may
/// name `Engine`. A subsystem that took the engine back could reach into any other.
#[test]
fn only_assembly_and_its_users_name_the_engine() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    sources(&src, &mut files);
    let allowed = ["engine.rs", "cluster.rs", "lib.rs", "main.rs", "api/", "cli/", "demo/"];
    let mut offenders = vec![];
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap().display().to_string();
        if allowed.iter().any(|a| rel == *a || (a.ends_with('/') && rel.starts_with(a))) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        if text.contains("crate::engine")
            || text.lines().any(|l| !l.trim_start().starts_with("//") && (l.contains("Engine>") || l.contains("&Engine")))
        {
            offenders.push(rel);
        }
    }
    assert!(files.len() > 50, "the scan found the crate's sources: {}", files.len());
    assert!(offenders.is_empty(), "modules that take the engine instead of their own context: {offenders:?}");
}

/// The crates are the layers (ARCHITECTURE.md, "Crates"): the model speaks no protocol
/// and holds no runtime, the store knows only the model, and only the top crate
/// assembles. Cargo refuses cycles; this refuses a layer reaching down past its place.
#[test]
fn each_crate_depends_only_on_the_layers_below_it() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dependencies = |krate: &str| -> Vec<String> {
        let text = std::fs::read_to_string(crates.join(krate).join("Cargo.toml")).unwrap();
        let section = text.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
        section
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split(['.', ' ', '=']).next().unwrap().to_string())
            .collect()
    };
    let model = dependencies("steward-model");
    assert!(model.len() > 5, "the manifest was read: {model:?}");
    let runtime = ["tokio", "tokio-util", "sqlx", "reqwest", "axum", "redis", "async-nats", "object_store", "steward-store", "steward"];
    let reached: Vec<_> = model.iter().filter(|d| runtime.contains(&d.as_str())).collect();
    assert!(reached.is_empty(), "the model layer depends on runtime crates: {reached:?}");
    let store = dependencies("steward-store");
    assert!(store.contains(&"steward-model".to_string()) && !store.contains(&"steward".to_string()), "{store:?}");
}

/// Inside the `steward` crate the top-level modules depend one way too (the first wave
/// had one import cycle through every module): a module names another as `crate::NAME`,
/// and following those names never leads back to where it started.
#[test]
fn the_modules_of_the_steward_crate_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    sources(&src, &mut files);
    let top = |p: &Path| -> String {
        let rel = p.strip_prefix(&src).unwrap();
        rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string()
    };
    let modules: std::collections::BTreeSet<String> = files.iter().map(|f| top(f)).collect();
    let mut uses: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = top(file);
        let text = std::fs::read_to_string(file).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if name != from && modules.contains(&name) {
                uses.entry(from.clone()).or_default().insert(name);
            }
        }
    }
    assert!(uses.get("engine").is_some_and(|u| u.contains("alerting")), "the scan found the imports: {uses:?}");
    // Depth-first search for a path back to each module.
    for start in uses.keys() {
        let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(path) = stack.pop() {
            for next in uses.get(path.last().unwrap()).into_iter().flatten() {
                let mut longer = path.clone();
                longer.push(next.clone());
                assert!(next != start, "an import cycle: {}", longer.join(" → "));
                if seen.insert(next.clone()) {
                    stack.push(longer);
                }
            }
        }
    }
}
