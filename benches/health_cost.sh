#!/usr/bin/env bash
# CPU cost of health checks: N servers (default 1000), each checked over HTTP
# every second, against one local test origin; prints the CPU share of the
# daemon's health thread over a measuring window. Release build expected.
#   benches/health_cost.sh [N] [SECONDS]
set -euo pipefail
N=${1:-1000}
SECS=${2:-20}
BIN=${BIN:-target/release/fulcrum}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
oport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" origin --listen "127.0.0.1:$oport" --name o >/dev/null 2>&1 &
{
  echo '[global]'
  echo 'threads = 1'
  echo 'log_level = "warn"'
  echo '[[frontend]]'
  echo 'name = "f"'
  echo 'listen = ["127.0.0.1:0"]'
  echo 'mode = "http"'
  echo 'default_backend = "b"'
  echo '[[backend]]'
  echo 'name = "b"'
  echo 'health = { check = "http", path = "/healthz", interval = "1s", timeout = "500ms" }'
  echo 'servers = ['
  for i in $(seq 1 "$N"); do echo "  { name = \"s$i\", address = \"127.0.0.1:$oport\" },"; done
  echo ']'
} > "$dir/c.toml"
"$BIN" run -c "$dir/c.toml" >/dev/null 2>&1 &
pid=$!
sleep 3
task=$(grep -l fulcrum-health /proc/$pid/task/*/comm | head -1 | xargs dirname)
ticks() { awk '{print $14 + $15}' "$task/stat"; }
t0=$(ticks); sleep "$SECS"; t1=$(ticks)
hz=$(getconf CLK_TCK)
python3 -c "print(f'{$N} servers, http check every 1s: health thread {100*($t1-$t0)/$hz/$SECS:.2f} % of one core over {$SECS} s')"
