#!/usr/bin/env bash
# Offline validation of the deployment files: Dockerfile (hadolint), docker-compose.yml
# (compose-spec schema), k8s/ overlays rendered and validated against the Kubernetes and
# prometheus-operator schemas, alert rules and prometheus.yml (promtool, with unit tests), the
# Grafana dashboard, every metric they name against the code, and every container's environment
# through `ruizhu check-config`. Details: scripts/validate_deploy.py.
#
# Installs its tools once into $RUIZHU_TOOLS (default ~/.cache/ruizhu-deploy-tools): a Python
# venv with pinned PyPI packages, and promtool taken from Debian's prometheus package (extracted,
# not installed: no daemon). Uses `kubectl kustomize` when kubectl is there, else a built-in
# renderer of the same subset.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ruizhu-target}"
tools="${RUIZHU_TOOLS:-$HOME/.cache/ruizhu-deploy-tools}"
venv="$tools/venv"
requirements="deploy/validate-requirements.txt"

if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/requirements.txt"; then
  echo "validate-deploy: installing the validators into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi

promtool="$tools/promtool/usr/bin/promtool"
if [ ! -x "$promtool" ]; then
  echo "validate-deploy: extracting promtool from Debian's prometheus package"
  work=$(mktemp -d)
  (cd "$work" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null 2>&1; }; })
  mkdir -p "$tools/promtool"
  dpkg-deb -x "$work"/prometheus_*.deb "$tools/promtool"
  rm -rf "$work"
fi

# a private copy of this tree's binary: a target directory shared with other checkouts may be
# rebuilt from another tree while the checks run
bin=$(mktemp -d)/ruizhu
trap 'rm -rf "$(dirname "$bin")"' EXIT
for _ in 1 2 3; do
  cargo build --locked --quiet --bin ruizhu
  cp "$CARGO_TARGET_DIR/debug/ruizhu" "$bin"
  "$bin" --help | grep -q check-config && break
done
export RUIZHU_BIN="$bin"
export PROMTOOL="$promtool"
export HADOLINT="$venv/bin/hadolint"
export PATH="$venv/bin:$PATH"
"$venv/bin/python" scripts/validate_deploy.py "$@"
