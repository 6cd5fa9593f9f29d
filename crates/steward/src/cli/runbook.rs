//! `steward runbook import FILE.md` and `steward runbook export NAME`: Markdown runbooks
//! in and out (see `runbooks::markdown`). Both work offline, on files.

use std::io::Write as _;
use std::path::Path;

use super::exit;
use crate::config;
use crate::runbooks::markdown;

/// Imports `file` and writes the YAML to `out` (stdout when `None`); the report goes to
/// stderr with `report`. Refuses to write YAML that `steward validate` would not accept
/// (that would be a bug here, and a draft nobody could load).
pub fn import(file: &Path, out: Option<&Path>, report: bool) -> u8 {
    let source = file.display().to_string();
    let bytes = match std::fs::metadata(file) {
        Ok(m) if m.len() > markdown::MAX_MARKDOWN_BYTES as u64 => {
            eprintln!("error: {source} is {} bytes; a Markdown runbook is at most {} (8 MiB)", m.len(), markdown::MAX_MARKDOWN_BYTES);
            return exit::FAILED;
        }
        _ => match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {source}: {e}");
                return exit::FAILED;
            }
        },
    };
    let Ok(text) = String::from_utf8(bytes) else {
        eprintln!("error: {source} is not UTF-8 text\n  hint: convert it first, e.g. iconv -t UTF-8");
        return exit::FAILED;
    };
    // Descriptions name the file, not where it lay on this machine.
    let name = file.file_name().map_or_else(|| source.clone(), |n| n.to_string_lossy().into_owned());
    let imported = markdown::import(&text, &name);
    let yaml = imported.to_yaml(&name);
    // As `steward validate` would: the secrets the steps read by reference need not be set here.
    if let (Err(d), _) = config::secret::deferring_unset(|| config::load_str("imported.yaml", &yaml)) {
        eprintln!("error: the import of {source} does not validate (a bug in steward; please report it with the file):\n{d}");
        return exit::FAILED;
    }
    if report {
        eprint!("{}", imported.report(&source));
    }
    match out {
        Some(path) => {
            if let Err(e) = write_new(path, &yaml) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return exit::FAILED;
            }
            let steps: usize = imported.runbooks.iter().map(|r| r.steps.len()).sum();
            eprintln!(
                "wrote {} runbook(s), {steps} step(s) to {}; check it with: steward validate -c {}",
                imported.runbooks.len(),
                path.display(),
                path.display()
            );
        }
        None => print!("{yaml}"),
    }
    if imported.runbooks.is_empty() {
        eprintln!("warning: {source} holds no shell block (```bash, ```sh, ```console): no runbook was made");
    }
    exit::OK
}

/// Writes the Markdown of runbook `name` from the configuration at `config_path`.
pub fn export(config_path: &Path, name: &str, out: Option<&Path>) -> u8 {
    // Markdown shows references as written: the secrets need not be here.
    let config = match config::load_deferring_secrets(config_path) {
        Ok((c, _)) => c,
        Err(d) => {
            super::print_diagnostics(&d);
            return exit::BAD_CONFIG;
        }
    };
    let Some(rb) = config.runbooks.iter().find(|r| r.name == name) else {
        let known: Vec<&str> = config.runbooks.iter().map(|r| r.name.as_str()).collect();
        eprintln!(
            "error: no runbook named `{name}` in {}\n  hint: known runbooks: {}",
            config_path.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        );
        return exit::FAILED;
    };
    let text = markdown::export(rb);
    match out {
        Some(path) => {
            if let Err(e) = write_new(path, &text) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return exit::FAILED;
            }
            eprintln!("wrote runbook `{name}` to {}", path.display());
        }
        None => print!("{text}"),
    }
    exit::OK
}

/// Writes `text` to `path` whole: a temporary file beside it, renamed over it, so a
/// failure never leaves half a file.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
