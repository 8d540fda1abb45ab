#!/usr/bin/env bash
# CPU cost of the stats page: B browsers (default 20) each polling /stats.json
# once a second, as the dashboard does, against a daemon with 4 servers;
# prints the daemon's CPU share over a measuring window with and without them.
# Release build expected.
#   benches/dashboard_cost.sh [BROWSERS] [SECONDS]
set -euo pipefail
B=${1:-20}
SECS=${2:-30}
BIN=${BIN:-target/release/fulcrum}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
oport=$(port)
sport=$(port)
"$BIN" origin --listen "127.0.0.1:$oport" --name o >/dev/null 2>&1 &
cat > "$dir/c.toml" <<CONF
[global]
threads = 1
log_level = "warn"
[stats]
listen = "127.0.0.1:$sport"
[log]
access = "off"
[[frontend]]
name = "web"
listen = ["127.0.0.1:0"]
mode = "http"
default_backend = "app"
[[backend]]
name = "app"
health = { check = "http", path = "/healthz", interval = "2s" }
servers = [
  { name = "a", address = "127.0.0.1:$oport" }, { name = "b", address = "127.0.0.1:$oport" },
  { name = "c", address = "127.0.0.1:$oport" }, { name = "d", address = "127.0.0.1:$oport" },
]
CONF
"$BIN" run -c "$dir/c.toml" >/dev/null 2>&1 &
pid=$!
sleep 3
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
measure() {
  local t0 t1
  t0=$(ticks); sleep "$SECS"; t1=$(ticks)
  python3 -c "print(f'{100*($t1-$t0)/$hz/$SECS:.2f}')"
}
idle=$(measure)
# B pollers, each one request a second on a kept-alive connection (as a browser's fetch).
python3 - "$sport" "$B" "$((SECS + 5))" <<'PY' &
import http.client, sys, threading, time
port, browsers, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def browser(i):
    c = http.client.HTTPConnection("127.0.0.1", port)
    time.sleep(i / browsers)
    end = time.time() + secs
    first = True
    while time.time() < end:
        c.request("GET", "/stats.json?history=" + ("300" if first else "3"))
        c.getresponse().read()
        first = False
        time.sleep(1)
for i in range(browsers):
    threading.Thread(target=browser, args=(i,), daemon=True).start()
time.sleep(secs)
PY
sleep 2
busy=$(measure)
echo "daemon CPU, 4 servers: idle $idle % of one core; with $B dashboards polling every second $busy % (difference: $(python3 -c "print(f'{$busy-$idle:.2f}')") %)"
