#!/usr/bin/env bash
# Makes sure the services the tests need are up on this machine: MariaDB/MySQL on :3306 and
# Redis on :6379. Starts the local ones when they are installed but stopped; never touches
# anything already running.
set -euo pipefail

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then echo "services: $name is up"; return 0; fi
    sleep 0.5
  done
  echo "services: $name did not come up" >&2
  return 1
}

if ! mysqladmin -uroot -h127.0.0.1 ping >/dev/null 2>&1; then
  echo "services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
wait_for MariaDB mysqladmin -uroot -h127.0.0.1 ping

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping

# The Kafka-protocol broker for development and tests: tansu (crates.io), memory storage,
# 127.0.0.1:9092. Installed once (a ~15 minute build) and started when not running.
if ! (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; then
  if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
    echo "services: installing tansu 0.6.0 (once)"
    cargo install tansu --version 0.6.0 --locked --features dynostore
  fi
  TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
  echo "services: starting tansu on 127.0.0.1:9092"
  mkdir -p "${TMPDIR:-/tmp}/ruizhu"
  nohup "$TANSU" broker --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/ \
    >"${TMPDIR:-/tmp}/ruizhu/tansu.log" 2>&1 &
fi
wait_for "Kafka broker (tansu)" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9092'
