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
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    sources(&src, &mut files);
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            let line = line.trim_start();
            for kind in ["pub struct ", "pub enum ", "pub trait ", "pub type "] {
                if let Some(rest) = line.strip_prefix(kind) {
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    seen.entry(name).or_default().push(file.strip_prefix(&src).unwrap().display().to_string());
                }
            }
        }
    }
    assert!(seen.len() > 100, "the scan found the crate's types: {}", seen.len());
    let clashes: Vec<_> = seen.iter().filter(|(_, places)| places.len() > 1).collect();
    assert!(clashes.is_empty(), "public types that share a name: {clashes:?}");
}
