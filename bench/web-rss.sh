#!/usr/bin/env bash
# The server's resident memory with the web dashboard's listener on (BENCHMARKS.md, "Dashboard"):
# `bench/web-rss.sh [RUNS]` boots a release `micro server` RUNS times (default 3), each in a fresh
# MICRO_HOME on ephemeral loopback ports, and reads VmRSS as the boot section of micro-bench
# does (1 s after the server is ready, bench/src/boot.rs), three ways:
#
#   web off     --web-address off, idle after boot
#   web on      --web-address 127.0.0.1:0, idle after boot
#   login       the same server after a login through the dashboard (the login page, then
#               /api/login: one argon2 hash, whose memory the server keeps for the next one)
#   web used    then after a browser's worth of dashboard use, made with curl: every asset
#               gzipped, the services page, an endpoint page and its description; each read
#               1 s after the last request
#
# Prints one line per run and server, in KiB. Needs a release build (`cargo build --release
# --bins`; `MICRO_BIN` names another binary) and curl. Every server it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
micro=${MICRO_BIN:-target/release/micro}
[[ -x $micro ]] || { echo "no $micro: run cargo build --release --bins first" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/micro-web-rss.XXXXXX")
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Boots a server with "$@"; sets pid, web (the dashboard's address, when on) and log.
boot() {
    local home
    home=$(mktemp -d "$work/home.XXXXXX")
    log=$home.log
    MICRO_HOME=$home "$micro" server --proxy-address 127.0.0.1:0 --api-address 127.0.0.1:0 "$@" 2>"$log" &
    pid=$!
    web=
    for _ in $(seq 300); do
        # Ready: the last listener's line is logged once every listener is bound.
        if grep -q "HTTP listening" "$log" && { [[ $* == *off* ]] || grep -q "web listening" "$log"; }; then
            web=$(grep -o 'web listening addr=[^ ]*' "$log" | sed 's/.*addr=//' || true)
            return 0
        fi
        sleep 0.1
    done
    echo "the server did not start:" >&2 && cat "$log" >&2 && exit 1
}

stop() {
    kill "$pid" && wait "$pid" 2>/dev/null || true
    pid=
}

# A login through the dashboard (one argon2 hash), with a cookie jar.
log_in() {
    local base=http://$web jar=$work/jar csrf
    rm -f "$jar"
    curl -sf --compressed -c "$jar" -b "$jar" "$base/login" -o /dev/null
    csrf=$(awk '$6 == "micro-csrf" { print $7 }' "$jar")
    curl -sf -c "$jar" -b "$jar" -H 'Content-Type: application/json' -H "X-CSRF-Token: $csrf" \
        -d '{"username":"admin","password":"micro","namespace":"micro"}' "$base/api/login" -o /dev/null
}

# What a browser does on the dashboard after logging in.
use_dashboard() {
    local base=http://$web jar=$work/jar csrf asset
    csrf=$(awk '$6 == "micro-csrf" { print $7 }' "$jar")
    for asset in app.js runtime.js data.js admin.js app.css; do
        curl -sf --compressed "$base/assets/$asset" -o /dev/null
    done
    curl -sf --compressed -b "$jar" "$base/services" -o /dev/null
    curl -sf --compressed -b "$jar" "$base/services/store/Store.Read" -o /dev/null
    curl -sf -b "$jar" -H "X-CSRF-Token: $csrf" "$base/api/describe/store/Store.Read" -o /dev/null
}

for run in $(seq "$runs"); do
    boot --web-address off
    sleep 1
    off=$(rss "$pid")
    stop
    boot --web-address 127.0.0.1:0
    sleep 1
    on=$(rss "$pid")
    log_in
    sleep 1
    login=$(rss "$pid")
    use_dashboard
    sleep 1
    used=$(rss "$pid")
    stop
    echo "run $run: web off $off KiB, web on $on KiB, after a login $login KiB, web used $used KiB"
done
