#!/usr/bin/env bash
# Subscription fan-out benchmark (issue: events and real time).
#
# One server (pinned to core 0) with Kafka (the local tansu) and its event workers; S members each
# watching their own order with `orderStatusChanged` (graphql-transport-ws) while orders are paid
# open-loop at RATE/s for DURATION s (load generator on core 1): every payment is an `order.paid`
# event for one socket among S. Reports delivery latency from the event's commit to the client
# (p50/p99) and server memory per idle connection, for S = 100 (the baseline), 1000 and 5000.
# Each size on a fresh server process.
# Writes bench/results/fanout.json and the fan-out section of docs/performance.md.
#
#   bench/fanout.sh                   # RATE=100 DURATION=10 SIZES="100 1000 5000" by default
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ruizhu-target}"
RATE=${RATE:-100}
DURATION=${DURATION:-10}
SIZES=${SIZES:-"100 1000 5000"}
ulimit -n "$(ulimit -Hn)" # 5000 sockets on each side

scripts/services.sh >/dev/null
# BIN: a directory with ready binaries (bench/run.sh passes its private copy)
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --quiet -p ruizhu -p bench
  BIN="$CARGO_TARGET_DIR/release"
fi
out=$(mktemp -d)
db="rz_fanout_$$"
export RUIZHU_DATABASE__URL="mysql://root@127.0.0.1:3306/${db}"
export RUIZHU_DATABASE__POOL_SIZE=32
export RUIZHU_REDIS__KEY_PREFIX="rz-fanout-$$:"
export RUIZHU_AUTH__DEV_LOGIN=true
# every simulated member signs in and orders from this one address: the rate limits would
# measure themselves, not the service
export RUIZHU_RATE_LIMITS__ENABLED=false
export RUIZHU_ORDERS__PAYMENT_WINDOW_SECS=86400
export RUIZHU_LOG__LEVEL=warn
export RUIZHU_KAFKA__BROKERS=127.0.0.1:9092
export RUIZHU_KAFKA__TOPIC_PREFIX="rz-fanout-$$-"
export RUIZHU_KAFKA__GROUP_PREFIX="rz-fanout-$$"
export RUIZHU_HTTP__WS_MAX_SUBSCRIPTIONS=5
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`${db}\`" || true
  redis-cli -h 127.0.0.1 --scan --pattern "rz-fanout-$$:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT

"$BIN/ruizhu" migrate >/dev/null
printf 'bench-ops-password\n' | "$BIN/ruizhu" staff create --username bench-ops --role OPS >/dev/null
for size in $SIZES; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  export RUIZHU_HTTP__ADDR="127.0.0.1:${port}"
  taskset -c 0 "$BIN/ruizhu" serve >"$out/server-$size.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:${port}/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  sleep 3 # consumer groups join
  echo "fan-out to $size subscribers" >&2
  from=$(mysql -N -uroot -h127.0.0.1 "$db" -e "SELECT COALESCE(MAX(id), 0) FROM outbox_events")
  taskset -c 1 "$BIN/fanout" --url "http://127.0.0.1:${port}" --pid "$server" --subscribers "$size" \
    --rate "$RATE" --duration "$DURATION" > "$out/fanout-$size.json"
  # the first stage alone: from the event's commit to the relay's mark after the broker's ack
  mysql -N -uroot -h127.0.0.1 "$db" -e "SELECT TIMESTAMPDIFF(MICROSECOND, occurred_at, published_at)
    FROM outbox_events WHERE id > $from AND event_type = 'order.paid' AND published_at IS NOT NULL" \
    > "$out/stage-$size.txt"
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
done

mkdir -p bench/results
python3 - "$out" "$SIZES" "$RATE" "$DURATION" <<'PY'
import json, re, sys, datetime, platform, subprocess, pathlib
out, sizes, rate, dur = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4])
runs = {s: json.load(open(f"{out}/fanout-{s}.json")) for s in sizes}
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
for s in sizes:
    acked = [int(l) / 1000 for l in open(f"{out}/stage-{s}.txt").read().split()]
    runs[s]["published_p50_ms"], runs[s]["published_p99_ms"] = pct(acked, 0.5), pct(acked, 0.99)
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.getoutput("lscpu").splitlines()
            if l.startswith("Model name")), "unknown CPU")
res = {"date": datetime.date.today().isoformat(),
       "machine": f"{platform.machine()}, {subprocess.getoutput('nproc')} cores, {cpu}",
       "rate": rate, "seconds": dur, "runs": runs}
pathlib.Path("bench/results/fanout.json").write_text(json.dumps(res, indent=2) + "\n")
base = runs[sizes[0]]
rows = []
for s in sizes:
    r = runs[s]
    rows.append(f"| {s} | {r['deliveries']}/{r['deliveries_expected']} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
                f"{r['published_p50_ms']:.1f} / {r['published_p99_ms']:.1f} ms | "
                f"{r['p99_ms']/max(base['p99_ms'],0.001):.2f} | {r['kib_per_idle_connection']:.0f} KiB |")
table = f"""<!-- fanout:start -->
Measured {res['date']} on {res['machine']}; tansu 0.6.0 (memory storage) as the broker. Each subscriber
is a member watching their own order; orders are paid open-loop at {rate}/s for {dur} s, so each event
goes to one socket among all of them (the hub routes by order). Latency is from the event's `at`
(written in the payment's transaction) through the outbox, Kafka and the fan-out consumer to the
client; "commit → acknowledged" is the first stage alone (the relay's `published_at`, set after the
broker acknowledged the event, minus its commit time), the rest is the fan-out consumer's fetch,
the hub and the socket; memory is the server's RSS growth after the sockets opened and subscribed,
per connection (raw numbers: `bench/results/fanout.json`).

| subscribers | delivered | p50 | p99 | commit → acknowledged p50 / p99 | p99 ratio to {sizes[0]} subscribers | server memory per idle connection |
|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}
<!-- fanout:end -->"""
doc = pathlib.Path("docs/performance.md")
text = doc.read_text()
if "<!-- fanout:start -->" in text:
    text = re.sub(r"<!-- fanout:start -->.*<!-- fanout:end -->", lambda _: table, text, flags=re.S)
else:
    text += "\n" + table + "\n"
doc.write_text(text)
print(table)
PY
