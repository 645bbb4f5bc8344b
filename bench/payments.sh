#!/usr/bin/env bash
# Payment notification benchmark (issue: WeChat Pay).
#
# `POST /webhooks/wechatpay/notify` end to end: signature verification (RSA-2048), resource
# decryption (AES-256-GCM), business checks and the PENDING_PAYMENT → PAID transaction with the
# payment row and timeline entry — each notification for its own unpaid order, signed and
# encrypted the way WeChat Pay does with keys generated here. Baseline in the same run: MariaDB's
# own `sysbench oltp_read_write` tx/s (interleaved, RUNS times, medians). Then an open-loop run at
# the brief's peak (RATE/s) measures latency and the server's CPU share, and an in-process run
# measures the cryptographic share per notification. Server pinned to core 0, load to core 1.
# Writes bench/results/payments.json and the payments section of docs/performance.md.
#
#   bench/payments.sh                 # DURATION=8 RUNS=3 CONCURRENCY=16 RATE=100 by default
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ruizhu-target}"
DURATION=${DURATION:-8}
RUNS=${RUNS:-3}
CONCURRENCY=${CONCURRENCY:-16}
RATE=${RATE:-100}
RATE_SECONDS=${RATE_SECONDS:-20}
COUNT=${COUNT:-20000}

scripts/services.sh >/dev/null
command -v sysbench >/dev/null || (apt-get update -qq && apt-get install -y -qq sysbench >/dev/null)
# BIN: a directory with ready binaries (bench/run.sh passes its private copy)
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --quiet -p ruizhu -p bench
  BIN="$CARGO_TARGET_DIR/release"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
db="rz_paybench_$$"
sb="rz_paysysbench_$$"
out=$(mktemp -d)
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$out/merchant.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$out/platform.pem" 2>/dev/null
openssl pkey -in "$out/platform.pem" -pubout -out "$out/platform_pub.pem"
APIV3=$(openssl rand -hex 16)
APP_ID=wxbench0000000000
export RUIZHU_HTTP__ADDR="127.0.0.1:${port}"
export RUIZHU_DATABASE__URL="mysql://root@127.0.0.1:3306/${db}"
export RUIZHU_DATABASE__POOL_SIZE=32
export RUIZHU_REDIS__KEY_PREFIX="rz-paybench-$$:"
export RUIZHU_AUTH__DEV_LOGIN=true
# every simulated member signs in and orders from this one address: the rate limits would
# measure themselves, not the service
export RUIZHU_RATE_LIMITS__ENABLED=false
export RUIZHU_LOG__LEVEL=warn
export RUIZHU_WECHAT__APP_ID=$APP_ID
export RUIZHU_WECHATPAY__MCH_ID=1900000001
export RUIZHU_WECHATPAY__API_BASE="http://127.0.0.1:9"
export RUIZHU_WECHATPAY__MERCHANT_KEY_PATH="$out/merchant.pem"
export RUIZHU_WECHATPAY__MERCHANT_SERIAL=BENCHSERIAL
export RUIZHU_WECHATPAY__PLATFORM_PUBLIC_KEY_PATH="$out/platform_pub.pem"
export RUIZHU_WECHATPAY__PLATFORM_KEY_ID=PUB_KEY_ID_0114232134912410000000000000
export RUIZHU_WECHATPAY__APIV3_KEY=$APIV3
export RUIZHU_WECHATPAY__NOTIFY_URL="https://bench.invalid/webhooks/wechatpay/notify"
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`${db}\`; DROP DATABASE IF EXISTS \`${sb}\`" || true
  redis-cli -h 127.0.0.1 --scan --pattern "rz-paybench-$$:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT

"$BIN/ruizhu" migrate >/dev/null
taskset -c 0 "$BIN/ruizhu" serve >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:${port}/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:${port}/graphql" -H 'Content-Type: application/json' \
  -d '{"query":"mutation { loginWithWeChat(code: \"dev:bench\") { accessToken } }"}' >/dev/null
orders=$(( RUNS * COUNT + RATE * RATE_SECONDS + 10 ))
mysql -uroot -h127.0.0.1 "$db" -e "
  INSERT INTO orders (order_no, member_id, status, subtotal_fen, total_fen, ship_recipient, ship_phone_enc,
                      ship_province, ship_city, ship_district, ship_detail, payment_deadline)
  SELECT CONCAT('B', LPAD(seq, 10, '0')), (SELECT MIN(id) FROM members), 'PENDING_PAYMENT', 100, 100,
         'bench', 'v1.bench.x', '上海市', '上海市', '黄浦区', 'bench', NOW(6) + INTERVAL 1 DAY
  FROM seq_1_to_${orders}"

mysql -uroot -h127.0.0.1 -e "CREATE DATABASE \`${sb}\`"
SB=(sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root --mysql-db="$sb"
    --tables=4 --table-size=20000 --threads="$CONCURRENCY" --time="$DURATION" --report-interval=0)
"${SB[@]}" prepare >/dev/null

NOTIFY=("$BIN/notify" --url "http://127.0.0.1:${port}" --platform-key "$out/platform.pem"
        --apiv3-key "$APIV3" --app-id "$APP_ID")
for run in $(seq 1 "$RUNS"); do
  echo "run $run/$RUNS: sysbench" >&2
  taskset -c 1 "${SB[@]}" run > "$out/sysbench-$run.txt"
  echo "run $run/$RUNS: notifications" >&2
  taskset -c 1 "${NOTIFY[@]}" --mode throughput --concurrency "$CONCURRENCY" --duration "$DURATION" \
    --first $(( (run - 1) * COUNT + 1 )) --count "$COUNT" > "$out/notify-$run.json"
done

echo "open loop at ${RATE}/s for ${RATE_SECONDS} s" >&2
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
# prepare first (outside the CPU window): the generator prints only after sending
first=$(( RUNS * COUNT + 1 ))
before=""
taskset -c 1 "${NOTIFY[@]}" --mode rate --rate "$RATE" --duration "$RATE_SECONDS" \
  --first "$first" --count $(( RATE * RATE_SECONDS )) > "$out/rate.json" &
gen=$!
# the generator prepares for a few seconds; sample the server's CPU over the sending window only
sleep 0.5
while [ -z "$before" ]; do
  if [ "$(mysql -uroot -h127.0.0.1 -N "$db" -e "SELECT COUNT(*) FROM payments WHERE out_trade_no >= 'B$(printf %010d "$first")'")" -gt 0 ]; then
    before=$(cpu); t0=$(date +%s.%N)
  else
    sleep 0.05
  fi
done
wait "$gen"
after=$(cpu); t1=$(date +%s.%N)
python3 -c "import json,sys; d=json.load(open('$out/rate.json')); d['server_cpu_share']=($after-$before)/$tck/($t1-$t0); json.dump(d, open('$out/rate.json','w'))"

"$BIN/notify" --mode crypto --platform-key "$out/platform.pem" --platform-public-key "$out/platform_pub.pem" \
  --merchant-key "$out/merchant.pem" --apiv3-key "$APIV3" --app-id "$APP_ID" --count 2000 > "$out/crypto.json"
paid=$(mysql -uroot -h127.0.0.1 -N "$db" -e "SELECT COUNT(*) FROM orders WHERE status = 'PAID'")
payments=$(mysql -uroot -h127.0.0.1 -N "$db" -e "SELECT COUNT(*) FROM payments")

mkdir -p bench/results
python3 - "$out" "$RUNS" "$CONCURRENCY" "$DURATION" "$RATE" "$paid" "$payments" <<'PY'
import json, re, statistics, sys, datetime, platform, subprocess, pathlib
out, runs, conc, dur, rate, paid, payments = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
def tps(path):
    return float(re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", open(path).read()).group(1))
sysbench = [tps(f"{out}/sysbench-{r}.txt") for r in range(1, runs + 1)]
rs = [json.load(open(f"{out}/notify-{r}.json")) for r in range(1, runs + 1)]
med = lambda k: statistics.median(r[k] for r in rs)
rate_run = json.load(open(f"{out}/rate.json"))
crypto = json.load(open(f"{out}/crypto.json"))
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.getoutput("lscpu").splitlines()
            if l.startswith("Model name")), "unknown CPU")
res = {"date": datetime.date.today().isoformat(),
       "machine": f"{platform.machine()}, {subprocess.getoutput('nproc')} cores, {cpu}",
       "mariadb": subprocess.getoutput("mysql -uroot -h127.0.0.1 -N -e 'select version()'"),
       "concurrency": conc, "seconds_per_run": dur, "runs": runs,
       "sysbench_oltp_read_write_tps": {"runs": sysbench, "median": statistics.median(sysbench)},
       "throughput": {"per_sec": med("per_sec"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "runs": rs},
       "open_loop": rate_run, "crypto": crypto,
       "check": {"orders_paid": paid, "payment_rows": payments}}
assert paid == payments, f"paid orders {paid} != payment rows {payments}"
sb = res["sysbench_oltp_read_write_tps"]["median"]
res["throughput"]["ratio_to_sysbench"] = res["throughput"]["per_sec"] / sb
pathlib.Path("bench/results/payments.json").write_text(json.dumps(res, indent=2) + "\n")
t = res["throughput"]
table = f"""<!-- payments:start -->
Measured {res['date']} on {res['machine']}; {res['mariadb']}. Closed loop: {conc} concurrent senders,
{dur} s per run, medians of {runs} interleaved runs; open loop: {rate}/s for {rate_run['seconds']:.0f} s
(raw numbers: `bench/results/payments.json`). Server pinned to core 0, load generators to core 1.
Afterwards {paid} orders were PAID with exactly {payments} payment rows.

| scenario | throughput | p50 | p99 | ratio to baseline |
|---|---:|---:|---:|---:|
| baseline: `sysbench oltp_read_write` (MariaDB alone) | {sb:.0f} tx/s | | | 1.00 |
| payment notifications, closed loop | {t['per_sec']:.0f} /s | {t['p50_ms']:.1f} ms | {t['p99_ms']:.1f} ms | {t['ratio_to_sysbench']:.2f} |
| payment notifications, open loop at {rate}/s (the brief's peak) | {rate_run['per_sec']:.0f} /s | {rate_run['p50_ms']:.1f} ms | {rate_run['p99_ms']:.1f} ms | server CPU {100*rate_run['server_cpu_share']:.1f} % of one core |
| verify (RSA-2048) + decrypt (AES-256-GCM) alone, in process | {1e6/crypto['us_per_notification']:.0f} /s | {crypto['us_per_notification']:.0f} µs each | | |
<!-- payments:end -->"""
doc = pathlib.Path("docs/performance.md")
text = doc.read_text()
if "<!-- payments:start -->" in text:
    text = re.sub(r"<!-- payments:start -->.*<!-- payments:end -->", lambda _: table, text, flags=re.S)
else:
    text += "\n" + table + "\n"
doc.write_text(text)
print(table)
PY
