#!/usr/bin/env bash
# Fault drills (docs/reliability.md): the real service under a mixed load while Redis, MySQL,
# the broker, a server and the worker fail, then the invariants checked on the database.
# The runner starts its own MariaDB, Redis and broker on spare ports: the shared services
# are never touched.
#
#   scripts/drills.sh                          # PROFILE=short (CI), every drill
#   PROFILE=full BUILD=release scripts/drills.sh   # longer phases, more members
#   scripts/drills.sh --drill mysql-restart    # one drill
#   DOCS=1 scripts/drills.sh                   # also rewrite the results in docs/reliability.md
#
# Writes bench/results/drills-$PROFILE.json. Exits non-zero on any violation.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ruizhu-target}"
PROFILE=${PROFILE:-short}
BUILD=${BUILD:-debug}

scripts/services.sh >/dev/null   # installs the broker binary when missing
TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
if [ "$BUILD" = release ]; then
  cargo build --release --locked --quiet -p ruizhu -p bench --bins
else
  cargo build --locked --quiet -p ruizhu -p bench --bins
fi
# private copies: another build in the same target directory must not swap them mid-run
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
cp "$CARGO_TARGET_DIR/$BUILD/ruizhu" "$CARGO_TARGET_DIR/$BUILD/drills" "$bin/"
mkdir -p bench/results
out="bench/results/drills-$PROFILE.json"
status=0
"$bin/drills" --profile "$PROFILE" --ruizhu "$bin/ruizhu" --tansu "$TANSU" --json "$out" "$@" \
  >/dev/null || status=$?
python3 scripts/drills_report.py "$out" "$BUILD" "$([ -n "${DOCS:-}" ] && echo docs/reliability.md || echo -)"
exit $status
