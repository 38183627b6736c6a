#!/usr/bin/env bash
# Issue 11, item 4: the latency of cache hits while accel-dns reloads a large
# hosts file. A 200,000-line hosts file is configured; one name is put in the
# cache; dnsperf asks that name at a steady rate (cache hits only) for a
# quiet stretch, then again while RELOADS SIGHUPs are sent GAP seconds apart
# (each one parses and compiles the whole file). Prints p50/p99/p99.9/max of
# both stretches and how long each reload took (from the log). Runs in a
# private network namespace (root), like soak.sh. RELOAD_LATENCY_WORKERS sets
# the runtime's worker threads (TOKIO_WORKER_THREADS; default: one per core):
# 1 is what a pod with a CPU limit of one core gets.
#
#   bash bench/reload_latency.sh [BIN] [LINES] [RELOADS] [GAP] [QPS]
#   # defaults: target/release/accel-dns 200000 5 3 2000
set -euo pipefail
BIN=$(realpath "${1:-target/release/accel-dns}")
LINES=${2:-200000}
RELOADS=${3:-5}
GAP=${4:-3}
QPS=${5:-2000}
# The server and dnsperf run at this nice level, to keep other work on a
# shared machine from dominating the tail.
NICE=${RELOAD_LATENCY_NICE:--10}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${RELOAD_LATENCY_IN_NETNS:-} ]]; then
    exec unshare --net -- env RELOAD_LATENCY_IN_NETNS=1 RELOAD_LATENCY_NICE="${RELOAD_LATENCY_NICE:--10}" \
        RELOAD_LATENCY_WORKERS="${RELOAD_LATENCY_WORKERS:-}" bash "${BASH_SOURCE[0]}" "$BIN" "$LINES" "$RELOADS" "$GAP" "$QPS"
fi
ip link set lo up
for tool in dig dnsperf python3; do
    command -v "$tool" >/dev/null || { echo "reload_latency.sh: $tool is not installed" >&2; exit 2; }
done
DIR=$(mktemp -d /tmp/accel-dns-reload-latency.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

python3 "$REPO/bench/slow_upstream.py" 127.0.0.3 5300 0 >"$DIR/upstream.log" 2>&1 &
PIDS+=($!)
awk -v n="$LINES" 'BEGIN { for (i = 0; i < n; i++)
    printf "10.%d.%d.%d h%07d.hosts.test\n", int(i / 65536) % 256, int(i / 256) % 256, i % 256, i }' >"$DIR/big.hosts"
cat >"$DIR/accel-dns.toml" <<CONF
[server]
listen = ["127.0.0.20:5300"]
[upstream]
servers = ["127.0.0.3:5300"]
timeout = "2s"
[admin]
listen = ""
[log]
level = "info"
[records]
hosts_files = ["$DIR/big.hosts"]
CONF
if [[ -n ${RELOAD_LATENCY_WORKERS:-} ]]; then export TOKIO_WORKER_THREADS=$RELOAD_LATENCY_WORKERS; fi
nice -n "$NICE" "$BIN" serve --config "$DIR/accel-dns.toml" 2>"$DIR/server.log" &
PID=$!
PIDS+=("$PID")
deadline=$((SECONDS + 60))
until dig +short +time=1 +tries=1 @127.0.0.20 -p 5300 hot.bench.test 2>/dev/null | grep -q 198.51.100.7; do
    ((SECONDS < deadline)) || { cat "$DIR/server.log" >&2; echo "accel-dns did not come up" >&2; exit 1; }
    sleep 0.2
done
echo "hot.bench.test A" >"$DIR/hits.txt"

# run NAME SECONDS: dnsperf of cache hits; per-query latencies in NAME.raw
run() {
    timeout $(($2 + 20)) nice -n "$NICE" dnsperf -s 127.0.0.20 -p 5300 -d "$DIR/hits.txt" -l "$2" -Q "$QPS" \
        -c 1 -q 50 -t 2 -v >"$DIR/$1.raw" 2>&1 || true
}
# summary NAME: answered/lost and latency percentiles (ms)
summary() {
    local sent lost
    sent=$(awk '/Queries sent:/ { print $3 }' "$DIR/$1.raw")
    lost=$(awk '/Queries lost:/ { print $3 }' "$DIR/$1.raw")
    awk '/^> / && $NF ~ /^[0-9.]+$/ { printf "%.3f\n", $NF * 1000 }' "$DIR/$1.raw" | sort -n >"$DIR/$1.sorted"
    awk -v name="$1" -v sent="$sent" -v lost="$lost" '{ v[NR] = $1 }
        END {
            n = NR
            printf "%-7s n=%d sent=%s lost=%s  p50=%.3f ms  p99=%.3f ms  p99.9=%.3f ms  max=%.3f ms\n",
                name, n, sent, lost, v[int(n * 0.5) + 1], v[int(n * 0.99) + 1], v[int(n * 0.999) + 1], v[n]
        }' "$DIR/$1.sorted"
}
run quiet $((RELOADS * GAP))
reloads_before=$(grep -c "configuration reloaded" "$DIR/server.log" || true)
run during $((RELOADS * GAP + 2)) &
LOAD=$!
sleep 1
for _ in $(seq "$RELOADS"); do
    kill -HUP "$PID"
    sleep "$GAP"
done
wait "$LOAD" || true
reloaded=$(($(grep -c "configuration reloaded" "$DIR/server.log" || true) - reloads_before))
echo "binary: $BIN; runtime workers: ${RELOAD_LATENCY_WORKERS:-one per core}"
echo "hosts file: $LINES lines ($(du -h "$DIR/big.hosts" | cut -f1)); cache hits at $QPS/s; $RELOADS SIGHUPs ${GAP}s apart, $reloaded reloads logged"
summary quiet
summary during
# Reload time: from the oldest SIGHUP not yet served to the next "configuration reloaded".
awk 'function t(stamp) { split(substr(stamp, 12, 15), p, ":"); return p[1] * 3600 + p[2] * 60 + p[3] }
    /SIGHUP: reloading/ { if (pending == "") pending = t($1) }
    /configuration reloaded/ && pending != "" { printf "%d ms ", (t($1) - pending) * 1000; pending = "" }
    END { print "" }' "$DIR/server.log" | sed 's/^/reload time (oldest pending SIGHUP to swapped, incl. the 100 ms debounce): /'
kill -0 "$PID" 2>/dev/null && echo "server alive after the run: yes" || echo "server alive after the run: NO"
rm -rf "$DIR"
