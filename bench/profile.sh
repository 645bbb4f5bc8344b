#!/usr/bin/env bash
# Where the time goes in the suite's scenarios that miss their target: one release server pinned
# to core 0 under closed-loop load from core 1 (bench/src/bin/load.rs, every answer checked),
# sampled with `perf record` (cpu-clock, no call graphs: the release build has no frame
# pointers), reported as the hottest symbols grouped by crate, in bench/results/profile-*.txt.
#
#   BIN=/path/to/binaries bench/profile.sh     # default: build, then a private copy
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ruizhu-target}"
SECONDS_PER_PROFILE=${SECONDS_PER_PROFILE:-10}
scripts/services.sh >/dev/null
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --quiet -p ruizhu -p bench
  BIN=$(mktemp -d /tmp/ruizhu-bench-bin.XXXXXX)
  cp "$CARGO_TARGET_DIR/release/ruizhu" "$CARGO_TARGET_DIR/release/load" "$BIN/"
fi
out=$(mktemp -d)
db="rz_profile_$$"
prefix="rz-profile-$$:"
export RUIZHU_DATABASE__URL="mysql://root@127.0.0.1:3306/${db}"
export RUIZHU_REDIS__KEY_PREFIX="$prefix"
export RUIZHU_RATE_LIMITS__ENABLED=false
export RUIZHU_LOG__LEVEL=warn
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`${db}\`" || true
  redis-cli -h 127.0.0.1 --scan --pattern "${prefix}*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT
"$BIN/ruizhu" migrate >/dev/null
"$BIN/ruizhu" seed --demo >/dev/null

LIST='query List($first: Int) { products(first: $first) { edges { node { id name nameEn priceRange { min { amount currency } max { amount currency } } skus { id code color size price { amount currency } available stockStatus } images { url alt } } } } }'
ONE='query One($id: ID!) { product(id: $id) { id name nameEn priceRange { min { amount } } skus { id code price { amount } available stockStatus } images { url alt } } }'
python3 - "$out" "$LIST" "$ONE" <<'PY'
import json, sys
out, LIST, ONE = sys.argv[1:4]
def write(name, body):
    open(f"{out}/{name}.req", "w").write(f"POST /graphql\ncontent-type: application/json\n\n{json.dumps(body)}\n")
write("list20", {"query": LIST, "variables": {"first": 20}})
write("typename", {"query": "{ __typename }"})
write("cold-one", {"query": "#{nonce}\n" + ONE, "variables": {"id": "UHJvZHVjdDox"}})
PY

profile() { # name, request, env...
  local name=$1 request=$2; shift 2
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  env RUIZHU_HTTP__ADDR="127.0.0.1:${port}" "$@" taskset -c 0 "$BIN/ruizhu" serve >"$out/server-$name.log" 2>&1 &
  server=$!
  for _ in $(seq 1 150); do curl -fsS "http://127.0.0.1:${port}/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  taskset -c 1 "$BIN/load" --addr "127.0.0.1:${port}" --request "$out/$request.req" --concurrency 32 \
    --duration "$((SECONDS_PER_PROFILE + 2))" >"$out/load-$name.json" &
  local loadgen=$!
  sleep 2
  perf record -F 999 -e cpu-clock -p "$server" -o "$out/perf-$name.data" -- sleep "$SECONDS_PER_PROFILE" 2>/dev/null
  wait "$loadgen"
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
  {
    echo "# $name: $(cat "$out/load-$name.json")"
    echo "# by crate (share of server CPU samples)"
    nm -C --defined-only "$BIN/ruizhu" | grep -i ' [tw] ' | sort >"$out/nm.txt"
    perf report -i "$out/perf-$name.data" --stdio --no-children --sort dso,sym 2>/dev/null \
      | python3 -c '
import bisect, re, sys, collections
# perf leaves our (large, compressed-DWARF) binary unsymbolized: resolve its raw addresses by nm
starts, names = [], []
for l in open(sys.argv[1]):
    a, _, n = l.rstrip("\n").split(" ", 2)
    starts.append(int(a, 16)); names.append(n)
def resolve(sym):
    if not sym.startswith("0x"): return sym
    i = bisect.bisect_right(starts, int(sym, 16)) - 1
    return names[i] if i >= 0 else sym
by_crate = collections.Counter(); rows = []
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
    if not m: continue
    pct, dso, sym = float(m.group(1)), m.group(2), resolve(m.group(3).strip())
    crate = re.sub(r"^(<|_<)?", "", sym).split("::")[0] if "::" in sym else (dso if dso != "ruizhu" else sym.split("(")[0][:40])
    by_crate[crate] += pct; rows.append((pct, sym[:150]))
for crate, pct in by_crate.most_common(25): print(f"{pct:6.2f}%  {crate}")
print("# hottest symbols")
merged = collections.Counter()
for pct, sym in rows: merged[sym] += pct
for sym, pct in merged.most_common(40): print(f"{pct:6.2f}%  {sym}")
' "$out/nm.txt"
  } >"bench/results/profile-$name.txt"
  echo "bench/results/profile-$name.txt" >&2
}

mkdir -p bench/results
profile datacache-list20 list20 RUIZHU_CACHE__RESPONSES=false RUIZHU_WORKERS__IN_SERVE=false
profile typename typename
profile cold-product cold-one
