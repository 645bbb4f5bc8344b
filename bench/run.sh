#!/usr/bin/env bash
# The benchmark suite (issue 11): one command, a release build, MySQL, Redis and the broker.
#
# Read path (this script): servers pinned to core 0, the load generator (`bench/src/bin/load.rs`,
# which checks every response for `data` and no `errors`) on core 1, medians of RUNS interleaved
# runs, baselines in the same run from `bench/src/bin/baseline.rs` (the same bytes from a plain
# axum route; the same list serialized with serde_json per request). Servers, all on core 0, all
# over one demo database, loaded one at a time:
#   A  production settings (response cache on)
#   B  response cache off (`RUIZHU_CACHE__RESPONSES=false`): the data-level caches only
#   L  as B with DataLoader batches on the runtime's timer, the previous behaviour
#      (`RUIZHU_GRAPHQL__LOADER_AT_POLL_END=false`, 200 µs window)
# Then `bench/checkout.sh` and `bench/fanout.sh` (SKIP_CHECKOUT=1 / SKIP_FANOUT=1 to leave them
# out) with the same binaries.
# Writes bench/results/suite.json, docs/img/*.svg and the suite section of docs/performance.md.
#
#   bench/run.sh                      # DURATION=5 RUNS=3 CONCURRENCY=32 by default
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ruizhu-target}"
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
CONCURRENCY=${CONCURRENCY:-32}
SIZES=${SIZES:-"1 5 20 50"}
CONCURRENCIES=${CONCURRENCIES:-"1 8 32 64"}
LOW_RATE=${LOW_RATE:-100}

scripts/services.sh >/dev/null
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --quiet -p ruizhu -p bench
  # a private copy: the target directory may be rebuilt by someone else while this runs
  BIN=$(mktemp -d /tmp/ruizhu-bench-bin.XXXXXX)
  for b in ruizhu bench baseline load extensions fanout notify; do
    cp "$CARGO_TARGET_DIR/release/$b" "$BIN/"
  done
fi
export BIN

out=$(mktemp -d)
db="rz_suite_$$"
prefix="rz-suite-$$:"
export RUIZHU_DATABASE__URL="mysql://root@127.0.0.1:3306/${db}"
export RUIZHU_DATABASE__POOL_SIZE=16
export RUIZHU_REDIS__KEY_PREFIX="$prefix"
export RUIZHU_RATE_LIMITS__ENABLED=false
export RUIZHU_LOG__LEVEL=warn
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`${db}\`" || true
  redis-cli -h 127.0.0.1 --scan --pattern "${prefix}*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { for _ in $(seq 1 150); do curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "server on $1 not ready" >&2; return 1; }

"$BIN/ruizhu" migrate >/dev/null
"$BIN/ruizhu" seed --demo >/dev/null

start() { # name, port, extra env...
  local name=$1 port=$2; shift 2
  env RUIZHU_HTTP__ADDR="127.0.0.1:${port}" "$@" taskset -c 0 "$BIN/ruizhu" serve >"$out/server-$name.log" 2>&1 &
  pids+=($!)
  echo $! >"$out/pid-$name"
}
PA=$(free_port); PB=$(free_port); PL=$(free_port); PS=$(free_port)
start A "$PA"
start B "$PB" RUIZHU_CACHE__RESPONSES=false RUIZHU_WORKERS__IN_SERVE=false
start L "$PL" RUIZHU_CACHE__RESPONSES=false RUIZHU_WORKERS__IN_SERVE=false RUIZHU_GRAPHQL__LOADER_AT_POLL_END=false
for p in "$PA" "$PB" "$PL"; do wait_ready "$p"; done
taskset -c 0 "$BIN/baseline" --listen "127.0.0.1:${PS}" --graphql-url "http://127.0.0.1:${PA}/graphql" \
  --database-url "$RUIZHU_DATABASE__URL" --sizes "$(echo "$SIZES" | tr ' ' ',')" >"$out/baseline.json" 2>"$out/baseline.log" &
pids+=($!)
for _ in $(seq 1 150); do curl -fsS -XPOST "http://127.0.0.1:${PS}/static/typename" >/dev/null 2>&1 && break; sleep 0.2; done

# request files (see load.rs), APQ registration on A and B, hot product ids
python3 - "$out" "$SIZES" "$PA" "$PB" <<'PY'
import hashlib, json, sys, urllib.request
out, sizes, pa, pb = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
LIST = "query List($first: Int) { products(first: $first) { edges { node { id name nameEn priceRange { min { amount currency } max { amount currency } } skus { id code color size price { amount currency } available stockStatus } images { url alt } } } } }"
ONE = "query One($id: ID!) { product(id: $id) { id name nameEn priceRange { min { amount } } skus { id code price { amount } available stockStatus } images { url alt } } }"
FLAT = "query Flat { products(first: 20) { edges { node { id name } } } }"
NESTED = "query Nested { products(first: 20) { edges { node { id name skus { id product { id name } } } } } }"
h = hashlib.sha256(LIST.encode()).hexdigest()
def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))
def write(name, path, body):
    open(f"{out}/{name}.req", "w").write(f"POST {path}\ncontent-type: application/json\n\n{body}\n")
for port in (pa, pb):
    for n in sizes:
        r = post(port, {"query": LIST, "variables": {"first": int(n)},
                        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": h}}})
        assert "errors" not in r and r["data"]["products"]["edges"], r
apq = lambda n: json.dumps({"variables": {"first": int(n)}, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": h}}})
for n in sizes:
    write(f"apq-{n}", "/graphql", apq(n))
    write(f"static-{n}", f"/static/{n}", apq(n))
    write(f"serde-{n}", f"/serde/{n}", apq(n))
typename = json.dumps({"query": "{ __typename }"})
write("typename", "/graphql", typename)
write("static-typename", "/static/typename", typename)
write("flat", "/graphql", json.dumps({"query": FLAT}))
write("nested", "/graphql", json.dumps({"query": NESTED}))
ids = [e["node"]["id"] for e in post(pa, {"query": LIST, "variables": {"first": 3}})["data"]["products"]["edges"]]
for i, pid in enumerate(ids):
    write(f"one-hot-{i}", "/graphql", json.dumps({"query": ONE, "variables": {"id": pid}}))
# a text no cache has seen: the comment makes every request a new document
cold = json.dumps({"query": "#{nonce}\n" + ONE, "variables": {"id": ids[0]}})
write("one-cold", "/graphql", cold)
PY

load() { # name, port, concurrency, rate, duration, check, request files... (weights via WEIGHTS)
  local name=$1 port=$2 conc=$3 rate=$4 dur=$5 check=$6; shift 6
  local reqs=()
  for r in "$@"; do reqs+=(--request "$out/$r.req"); done
  local weights=()
  [ -n "${WEIGHTS:-}" ] && weights=(--weights "$WEIGHTS")
  echo "  $name" >&2
  taskset -c 1 "$BIN/load" --addr "127.0.0.1:${port}" "${reqs[@]}" "${weights[@]}" --concurrency "$conc" \
    --rate "$rate" --duration "$dur" --check "$check" >"$out/$name.json"
}

for run in $(seq 1 "$RUNS"); do
  echo "run $run/$RUNS" >&2
  load "static_typename-c${CONCURRENCY}-$run" "$PS" "$CONCURRENCY" 0 "$DURATION" true static-typename
  load "graphql_typename-c${CONCURRENCY}-$run" "$PA" "$CONCURRENCY" 0 "$DURATION" true typename
  for n in $SIZES; do
    load "static_list${n}-c${CONCURRENCY}-$run" "$PS" "$CONCURRENCY" 0 "$DURATION" true "static-$n"
    load "serde_list${n}-c${CONCURRENCY}-$run" "$PS" "$CONCURRENCY" 0 "$DURATION" true "serde-$n"
    load "cached_list${n}-c${CONCURRENCY}-$run" "$PA" "$CONCURRENCY" 0 "$DURATION" true "apq-$n"
    load "datacache_list${n}-c${CONCURRENCY}-$run" "$PB" "$CONCURRENCY" 0 "$DURATION" true "apq-$n"
  done
  for c in $CONCURRENCIES; do
    [ "$c" = "$CONCURRENCY" ] && continue
    load "static_list20-c${c}-$run" "$PS" "$c" 0 "$DURATION" true static-20
    load "cached_list20-c${c}-$run" "$PA" "$c" 0 "$DURATION" true apq-20
    load "datacache_list20-c${c}-$run" "$PB" "$c" 0 "$DURATION" true apq-20
  done
  # DataLoader window: p50 at a low open-loop rate, one and two nested loader levels
  for server in B L; do
    port=$PB; [ "$server" = L ] && port=$PL
    load "loader_${server}_flat-$run" "$port" 8 "$LOW_RATE" "$DURATION" true flat
    load "loader_${server}_nested-$run" "$port" 8 "$LOW_RATE" "$DURATION" true nested
  done
  # product(id), 90 % answered by the response cache: the maximum, then half of it open loop
  WEIGHTS=3,3,3,1 load "mix_max-$run" "$PA" "$CONCURRENCY" 0 "$DURATION" true one-hot-0 one-hot-1 one-hot-2 one-cold
  half=$(python3 -c "import json; print(round(json.load(open('$out/mix_max-$run.json'))['rps'] / 2))")
  WEIGHTS=3,3,3,1 load "mix_half-$run" "$PA" 64 "$half" $((DURATION * 2)) true one-hot-0 one-hot-1 one-hot-2 one-cold
done

echo "extensions (in process)" >&2
taskset -c 0 "$BIN/extensions" --database-url "$RUIZHU_DATABASE__URL" --redis-prefix "$prefix" >"$out/extensions.json"
# what a cached answer is: statements counted while the suite ran (A should have sent almost none)
curl -fsS "http://127.0.0.1:${PA}/metrics" >"$out/metrics-A.txt"

mkdir -p bench/results docs/img
python3 bench/suite_report.py "$out" "$RUNS" "$CONCURRENCY" "$DURATION" "$SIZES" "$CONCURRENCIES" "$LOW_RATE"

for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

[ -z "${SKIP_CHECKOUT:-}" ] && bench/checkout.sh
[ -z "${SKIP_FANOUT:-}" ] && bench/fanout.sh
exit 0
