#!/usr/bin/env bash
# Profiles the `micro server` a bench run starts: `bench/profile-server.sh OUT SECONDS -- ARGS`
# runs `micro-bench ARGS` (e.g. `--quick --only proxy`), attaches `perf record` (DWARF call
# graphs, cpu-clock: hardware counters are not available on every machine) to the server once it
# is up, and leaves the profile in OUT for `perf report -i OUT`. Needs perf (Debian: linux-perf).
set -euo pipefail
out=$1 seconds=$2
shift 3
cd "$(dirname "$0")/.."
cargo build --release -q -p micro-bench
cargo run --release -q -p micro-bench -- "$@" &
bench=$!
# PROFILE_NTH=N profiles the Nth server the run starts instead of the first: sections that start
# several (`--only overhead`: off, metrics only, tracing only, on) each get a fresh one.
nth=${PROFILE_NTH:-1}
pid= seen=
for _ in $(seq 6000); do
    for p in $(pgrep -f "release/micro server --proxy-address 127.0.0.1:0" || true); do
        case " $seen " in *" $p "*) ;; *) seen="$seen $p" ;; esac
    done
    pid=$(echo $seen | awk -v n="$nth" '{print $n}')
    [ -n "$pid" ] && break
    sleep 0.1
done
[ -n "$pid" ] || { echo "server $nth did not appear" >&2; kill "$bench"; exit 1; }
perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$pid" -o "$out" -- sleep "$seconds"
wait "$bench"
