#!/usr/bin/env bash
# Checkout benchmark (issue: cart, checkout and orders).
#
# placeOrder throughput and latency through the full HTTP + GraphQL stack, with stock spread
# over many SKUs and with every order on one hot SKU, against MariaDB's own `sysbench
# oltp_read_write` transactions/s measured in the same run (interleaved, RUNS times, medians).
# The server is pinned to core 0; load generators (ours and sysbench) to core 1; MariaDB floats.
# Writes bench/results/checkout.json and the checkout section of docs/performance.md.
#
#   bench/checkout.sh                 # DURATION=10 RUNS=3 CONCURRENCY=16 by default
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ruizhu-target}"
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
CONCURRENCY=${CONCURRENCY:-16}

scripts/services.sh >/dev/null
command -v sysbench >/dev/null || (apt-get update -qq && apt-get install -y -qq sysbench >/dev/null)
# BIN: a directory with ready binaries (bench/run.sh passes its private copy)
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --quiet -p ruizhu -p bench
  BIN="$CARGO_TARGET_DIR/release"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
db="rz_bench_$$"
sb="rz_sysbench_$$"
export RUIZHU_HTTP__ADDR="127.0.0.1:${port}"
export RUIZHU_DATABASE__URL="mysql://root@127.0.0.1:3306/${db}"
export RUIZHU_DATABASE__POOL_SIZE=32
export RUIZHU_REDIS__KEY_PREFIX="rz-bench-$$:"
export RUIZHU_AUTH__DEV_LOGIN=true
# every simulated member signs in and orders from this one address: the rate limits would
# measure themselves, not the service
export RUIZHU_RATE_LIMITS__ENABLED=false
export RUIZHU_ORDERS__PAYMENT_WINDOW_SECS=86400
export RUIZHU_LOG__LEVEL=warn
out=$(mktemp -d)
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`${db}\`; DROP DATABASE IF EXISTS \`${sb}\`" || true
  redis-cli -h 127.0.0.1 --scan --pattern "rz-bench-$$:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT

"$BIN/ruizhu" migrate >/dev/null
printf 'bench-ops-password\n' | "$BIN/ruizhu" staff create --username bench-ops --role OPS >/dev/null
taskset -c 0 "$BIN/ruizhu" serve >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:${port}/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

mysql -uroot -h127.0.0.1 -e "CREATE DATABASE \`${sb}\`"
SB=(sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root --mysql-db="$sb"
    --tables=4 --table-size=20000 --threads="$CONCURRENCY" --time="$DURATION" --report-interval=0)
"${SB[@]}" prepare >/dev/null

# CPU time (clock ticks) of a process: where a run's bottleneck is
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
mysqld=$(pidof mariadbd || pidof mysqld || true)
# SQL statements the server has sent (its own counter), for statements per order
statements() { curl -fsS "http://127.0.0.1:${port}/metrics" | awk '/^ruizhu_db_statements_total/{print $2}'; }
for run in $(seq 1 "$RUNS"); do
  echo "run $run/$RUNS: sysbench" >&2
  db0=$(ticks "$mysqld")
  taskset -c 1 "${SB[@]}" run > "$out/sysbench-$run.txt"
  echo "0 $(( $(ticks "$mysqld") - db0 ))" > "$out/cpu-sysbench-$run.txt"
  for mode in spread hot; do
    echo "run $run/$RUNS: checkout $mode" >&2
    s0=$(ticks "$server"); db0=$(ticks "$mysqld"); st0=$(statements)
    taskset -c 1 "$BIN/bench" --url "http://127.0.0.1:${port}/graphql" --mode "$mode" \
      --concurrency "$CONCURRENCY" --duration "$DURATION" > "$out/checkout-$mode-$run.json"
    echo "$(( $(ticks "$server") - s0 )) $(( $(ticks "$mysqld") - db0 ))" > "$out/cpu-$mode-$run.txt"
    echo "$(( $(statements) - st0 ))" > "$out/statements-$mode-$run.txt"
  done
done

mkdir -p bench/results
python3 - "$out" "$RUNS" "$CONCURRENCY" "$DURATION" <<'PY'
import json, re, statistics, sys, datetime, platform, subprocess, pathlib
out, runs, conc, dur = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def tps(path):
    m = re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", open(path).read())
    return float(m.group(1))
sysbench = [tps(f"{out}/sysbench-{r}.txt") for r in range(1, runs + 1)]
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.getoutput("lscpu").splitlines()
            if l.startswith("Model name")), "unknown CPU")
res = {"date": datetime.date.today().isoformat(),
       "machine": f"{platform.machine()}, {subprocess.getoutput('nproc')} cores, {cpu}",
       "mariadb": subprocess.getoutput("mysql -uroot -h127.0.0.1 -N -e 'select version()'"),
       "concurrency": conc, "seconds_per_run": dur, "runs": runs,
       "sysbench_oltp_read_write_tps": {"runs": sysbench, "median": statistics.median(sysbench)}}
hz = int(subprocess.getoutput("getconf CLK_TCK"))
def cpu_share(name, r):
    # share of one core over the run: the server's and MariaDB's
    server, db = (int(x) for x in open(f"{out}/cpu-{name}-{r}.txt").read().split())
    return {"server_core_share": server / hz / dur, "mariadb_core_share": db / hz / dur}
res["sysbench_oltp_read_write_tps"]["mariadb_core_share"] = statistics.median(
    cpu_share("sysbench", r)["mariadb_core_share"] for r in range(1, runs + 1))
for mode in ("spread", "hot"):
    rs = [json.load(open(f"{out}/checkout-{mode}-{r}.json")) | cpu_share(mode, r) for r in range(1, runs + 1)]
    for r, run in enumerate(rs, 1):
        # everything the process sent meanwhile: the checkouts, the relay and the consumers
        run["statements_per_order"] = int(open(f"{out}/statements-{mode}-{r}.txt").read()) / max(run["orders"], 1)
    med = lambda k: statistics.median(r[k] for r in rs)
    res[mode] = {"orders_per_sec": med("orders_per_sec"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
                 "server_core_share": med("server_core_share"), "mariadb_core_share": med("mariadb_core_share"),
                 "statements_per_order": med("statements_per_order"),
                 "runs": rs, "ratio_to_sysbench": med("orders_per_sec") / res["sysbench_oltp_read_write_tps"]["median"]}
pathlib.Path("bench/results/checkout.json").write_text(json.dumps(res, indent=2) + "\n")
sb = res["sysbench_oltp_read_write_tps"]["median"]
table = f"""<!-- checkout:start -->
Measured {res['date']} on {res['machine']}; {res['mariadb']}. {conc} concurrent clients, {dur} s per run,
medians of {runs} interleaved runs (raw numbers: `bench/results/checkout.json`). Server pinned to core 0,
load generators to core 1, MariaDB unpinned.

CPU columns: share of one core used during the run by the server and by MariaDB (`/proc/<pid>/stat`);
statements: SQL statements the server sent per order meanwhile (checkout, outbox relay and consumers;
sysbench sends 18 per transaction).

| scenario | throughput | p50 | p99 | server CPU | MariaDB CPU | statements | ratio to baseline |
|---|---:|---:|---:|---:|---:|---:|---:|
| baseline: `sysbench oltp_read_write` (MariaDB alone) | {sb:.0f} tx/s | | | | {res['sysbench_oltp_read_write_tps']['mariadb_core_share']:.0%} | 18 | 1.00 |
| `placeOrder`, stock spread over ~200 SKUs | {res['spread']['orders_per_sec']:.0f} orders/s | {res['spread']['p50_ms']:.1f} ms | {res['spread']['p99_ms']:.1f} ms | {res['spread']['server_core_share']:.0%} | {res['spread']['mariadb_core_share']:.0%} | {res['spread']['statements_per_order']:.1f} | {res['spread']['ratio_to_sysbench']:.2f} |
| `placeOrder`, one hot SKU | {res['hot']['orders_per_sec']:.0f} orders/s | {res['hot']['p50_ms']:.1f} ms | {res['hot']['p99_ms']:.1f} ms | {res['hot']['server_core_share']:.0%} | {res['hot']['mariadb_core_share']:.0%} | {res['hot']['statements_per_order']:.1f} | {res['hot']['ratio_to_sysbench']:.2f} |
<!-- checkout:end -->"""
doc = pathlib.Path("docs/performance.md")
text = doc.read_text() if doc.exists() else ""
if "<!-- checkout:start -->" in text:
    text = re.sub(r"<!-- checkout:start -->.*<!-- checkout:end -->", lambda _: table, text, flags=re.S)
else:
    text += "\n" + table + "\n"
doc.write_text(text)
print(json.dumps({k: res[k] for k in ("sysbench_oltp_read_write_tps",)}), file=sys.stderr)
print(table)
PY
