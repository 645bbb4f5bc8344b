#!/usr/bin/env bash
# Third-party checks against a live server: the graphql-http audit suite (GraphQL over HTTP),
# GraphiQL driven in headless Chromium with the outside network blocked, and the ops console on
# a phone-sized screen (staff sign-in, saved recipes run).
# Starts its own server on a free port with its own database, and removes both afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ruizhu-target}"

if ! command -v chromium >/dev/null 2>&1; then
  echo "conformance: installing chromium"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
fi
(cd tests/conformance && npm ci --no-audit --no-fund --silent)

cargo build --locked --quiet
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
db="rz_conformance_$$"
export RUIZHU_HTTP__ADDR="127.0.0.1:${port}"
export RUIZHU_DATABASE__URL="mysql://root@127.0.0.1:3306/${db}"
export RUIZHU_REDIS__KEY_PREFIX="rz-conformance-$$:"
export RUIZHU_AUTH__DEV_LOGIN=true
log=$(mktemp)
"$CARGO_TARGET_DIR/debug/ruizhu" serve >"$log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`${db}\`" || true
  redis-cli -h 127.0.0.1 --scan --pattern "rz-conformance-$$:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:${port}/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:${port}/readyz" >/dev/null || { cat "$log"; exit 1; }

# a staff account for the ops console check (signs in through GraphiQL's own form)
ops_user="ops-conformance"
export OPS_CONSOLE_PASSWORD="conformance-$$-$(date +%s)-pw"
"$CARGO_TARGET_DIR/debug/ruizhu" staff create --username "$ops_user" --role OPS \
  --display-name "Conformance ops" --password-env OPS_CONSOLE_PASSWORD >/dev/null

passed=0; failed=0
if node tests/conformance/graphql-http-audit.mjs "http://127.0.0.1:${port}/graphql"; then
  passed=$((passed + 1)); else failed=$((failed + 1)); fi
if node tests/conformance/graphiql-browser.mjs "http://127.0.0.1:${port}"; then
  passed=$((passed + 1)); else failed=$((failed + 1)); fi
if node tests/conformance/graphiql-ops-console.mjs "http://127.0.0.1:${port}" "$ops_user"; then
  passed=$((passed + 1)); else failed=$((failed + 1)); fi
echo "conformance: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
