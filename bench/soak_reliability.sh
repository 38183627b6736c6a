#!/usr/bin/env bash
# Reliability soak of the release binary (issue 11): everything that goes
# wrong on a long-lived node at once, for DURATION seconds (default 600), on
# loopback in a private network namespace.
#
#  - a reload every 2 s, alternating a rename-replace of the config file
#    (seen by the watcher) and SIGHUP; each one changes a record's name, a
#    line of a 10 000-line hosts file and the upstream list, so snapshots,
#    upstream pools, loop probes and metric series come and go;
#  - an upstream that flaps between answering and dead every 30 s
#    (bench/flappy_upstream.py, TTL 10 s, on two addresses);
#  - TCP clients that connect, ask once and sit idle until the server's
#    idle timeout closes them, then come back (bench/tcp_idlers.py);
#  - a steady client (dnsperf, 500 queries a second: records, cache hits,
#    misses) for the whole run: every query must get an answer (SERVFAIL
#    while the upstream is dead counts as an answer; silence does not);
#  - in the middle, 30 s of a same-name flood (dnsperf, 5 000 in flight) of
#    a name the upstream never answers: its SERVFAILs are the bound at work,
#    and reported apart.
#
# The same load runs for WARMUP seconds (default 60) before the measured
# DURATION, so that the cache, the allocator and the metric registry have
# filled: the first measured minute is a running node, not a starting one.
# Every second: RSS, fds, threads and the number of series in /metrics. The
# summary compares the first and the last measured minute (within 10 %),
# counts lost answers and panics, and exits 1 if any check fails.
#
#   bash bench/soak_reliability.sh [DURATION] [WARMUP]   # as root (for the namespace)
#   ACCEL_DNS_BIN=/path/to/accel-dns ...          # skip `cargo build --release`
#   SOAK_OUT=dir SOAK_STEADY_QPS=500 SOAK_FLOOD_QPS=10000 SOAK_TCP_CLIENTS=32 ...
#
# Everything started is stopped by PID (on exit too); every wait has a
# deadline; dnsperf runs are bounded by -l and `timeout`.
set -euo pipefail

DURATION=${1:-600}
WARMUP=${2:-60}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${SOAK_OUT:-/tmp/accel-dns-soak-reliability/$(date +%Y%m%d-%H%M%S)}
SERVER_IP=127.0.0.20
SERVER_PORT=5300
ADMIN=127.0.0.20:9553
UPSTREAM_A=127.0.0.3:5300
UPSTREAM_B=127.0.0.4:5300
FLAP=${SOAK_FLAP:-30}
RELOAD_EVERY=${SOAK_RELOAD_EVERY:-2}
FLOOD=${SOAK_FLOOD:-30}
STEADY_QPS=${SOAK_STEADY_QPS:-500}
FLOOD_QPS=${SOAK_FLOOD_QPS:-10000}
TCP_CLIENTS=${SOAK_TCP_CLIENTS:-32}
HOSTS_LINES=${SOAK_HOSTS_LINES:-10000}

die() { echo "soak_reliability.sh: $*" >&2; exit 2; }
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
if [[ ! $DURATION =~ ^[0-9]+$ || ! $WARMUP =~ ^[0-9]+$ ]] || ((DURATION < 90)); then
    die "usage: soak_reliability.sh [DURATION >= 90 s] [WARMUP s]"
fi
TOTAL=$((WARMUP + DURATION))
for tool in dnsperf python3 curl; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install dnsperf curl)"
done

if [[ -z ${SOAK_IN_NETNS:-} && -z ${SOAK_NO_NETNS:-} ]]; then
    BIN=${ACCEL_DNS_BIN:-}
    if [[ -z $BIN ]]; then
        log "building the release binary"
        (cd "$REPO" && cargo build --release --locked -q)
        BIN=$REPO/target/release/accel-dns
    fi
    exec unshare --net -- env SOAK_IN_NETNS=1 ACCEL_DNS_BIN="$BIN" SOAK_OUT="$OUT" \
        bash "${BASH_SOURCE[0]}" "$@"
fi
if [[ -n ${SOAK_IN_NETNS:-} ]]; then
    ip link set lo up || die "cannot bring lo up in the namespace"
fi
BIN=${ACCEL_DNS_BIN:-$REPO/target/release/accel-dns}
[[ -x $BIN ]] || die "no binary at $BIN"
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ------------------------------------------------------------ processes
STARTED=()
start_bg() { # LOG CMD... -> BG_PID
    local logfile=$1
    shift
    "$@" >"$logfile" 2>&1 &
    BG_PID=$!
    STARTED+=("$BG_PID")
}
stop_pid() { # PID: SIGTERM, SIGKILL after 10 s
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local i
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED[i]}"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ inputs
# The steady mix, one line per query, never wrapping: 40 % records (one
# health-free address record, one hosts-file name), 40 % hot names (cached
# for 10 s, then asked again: stale-served while the upstream is dead), 20 %
# unique names (a miss each: SERVFAIL after the 2 s timeout while dead).
awk -v n=$((STEADY_QPS * TOTAL + 10000)) 'BEGIN {
    srand(11); u = 0
    for (i = 0; i < n; i++) {
        r = int(rand() * 100)
        if (r < 25)      print "docker.io A"
        else if (r < 40) printf "h%07d.hosts.test A\n", int(rand() * 1000)
        else if (r < 80) printf "hot%03d.bench.test A\n", int(rand() * 200)
        else             printf "u%08d.bench.test A\n", u++
    }
}' >"$OUT/steady.txt"
printf 'same.flood.test A\n' >"$OUT/flood.txt"
awk -v n="$HOSTS_LINES" 'BEGIN { for (i = 0; i < n; i++)
    printf "10.%d.%d.%d h%07d.hosts.test\n", int(i / 65536) % 256, int(i / 256) % 256, i % 256, i }' >"$OUT/base.hosts"

# write_files GENERATION: the config and hosts file of that generation,
# replaced by rename (atomic, as editors and kubectl cp do).
write_files() {
    local g=$1 servers
    if ((g % 2)); then servers="\"$UPSTREAM_A\", \"$UPSTREAM_B\""; else servers="\"$UPSTREAM_A\""; fi
    { cat "$OUT/base.hosts"; echo "203.0.113.$((g % 200 + 1)) rotating-$g.hosts.test"; } >"$OUT/hosts.new"
    mv -f "$OUT/hosts.new" "$OUT/soak.hosts"
    cat >"$OUT/soak.toml.new" <<EOF
# generation $g
[server]
listen = ["$SERVER_IP:$SERVER_PORT"]
tcp_idle_timeout = "5s"
max_tcp_connections = 256

[upstream]
servers = [$servers]
timeout = "2s"

[cache]
max_entries = 2000
serve_stale = "10m"

[admin]
listen = "$ADMIN"

[log]
level = "info"

[records]
hosts_files = ["$OUT/soak.hosts"]

[[record]]
name = "docker.io"
a = ["203.0.113.10"]

[[record]]
name = "rotating-$g.test"
a = ["203.0.113.$((g % 200 + 1))"]
EOF
    mv -f "$OUT/soak.toml.new" "$OUT/soak.toml"
}

wait_udp() { # IP PORT DEADLINE_S NAME
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        if timeout 2 dnsperf -s "$1" -p "$2" -d <(echo "$4 A") -n 1 -t 1 2>/dev/null |
            grep -q 'Queries completed: *1 '; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# sample PID CSV: about every second, t (seconds since the start),rss_kb,fds,threads,series
# (series 0: the scrape timed out, left out of the means)
sample() {
    local pid=$1 csv=$2 start=$SECONDS rss fds threads series
    echo "t,rss_kb,fds,threads,series" >"$csv"
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        series=$(curl -s --max-time 1 "http://$ADMIN/metrics" | grep -vc '^#' || true)
        echo "$((SECONDS - start)),$rss,$fds,$threads,$series" >>"$csv"
        sleep 1
    done
}

# dnsperf_run NAME FILE SECONDS CLIENTS OUTSTANDING TIMEOUT QPS: summary in NAME.dnsperf
dnsperf_run() {
    local name=$1 file=$2 secs=$3 clients=$4 outstanding=$5 qtimeout=$6 rate=$7
    timeout $((secs + 30)) dnsperf -s "$SERVER_IP" -p "$SERVER_PORT" -d "$file" -l "$secs" \
        -c "$clients" -q "$outstanding" -t "$qtimeout" -Q "$rate" >"$OUT/$name.raw" 2>&1 || true
    grep -E '^ *(Queries sent|Queries completed|Queries lost|Response codes|Queries per second|Average Latency)' \
        "$OUT/$name.raw" >"$OUT/$name.dnsperf" || true
}
field() { awk -v k="$2" '$0 ~ k { print $3; exit }' "$1"; }

STATUS=0
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

# ------------------------------------------------------------ the run
log "soak for ${WARMUP}s of warm-up + ${DURATION}s (output in $OUT)"
start_bg "$OUT/upstream.log" python3 "$REPO/bench/flappy_upstream.py" "$FLAP" "$UPSTREAM_A" "$UPSTREAM_B"
UPSTREAM_PID=$BG_PID
GENERATION=0
write_files "$GENERATION"
start_bg "$OUT/server.log" "$BIN" serve --config "$OUT/soak.toml"
SERVER_PID=$BG_PID
wait_udp "$SERVER_IP" "$SERVER_PORT" 20 docker.io || { cat "$OUT/server.log" >&2; die "accel-dns did not come up"; }
START=$SECONDS

sample "$SERVER_PID" "$OUT/samples.csv" &
SAMPLER=$!
STARTED+=("$SAMPLER")
start_bg "$OUT/tcp-idlers.log" python3 "$REPO/bench/tcp_idlers.py" "$SERVER_IP" "$SERVER_PORT" "$TCP_CLIENTS" "$TOTAL" docker.io
IDLERS=$BG_PID
# The steady client's timeout (5 s) is longer than the server's (2 s): a
# query that gets no answer in 5 s was dropped, not slow.
dnsperf_run steady "$OUT/steady.txt" "$TOTAL" 4 1000 5 "$STEADY_QPS" &
STEADY=$!
STARTED+=("$STEADY")

# The reloader: every RELOAD_EVERY s a new generation, alternately picked
# up by the watcher (rename) and by SIGHUP; the flood in the middle.
FLOOD_AT=$((WARMUP + DURATION / 2 - FLOOD / 2))
FLOODER=
while ((SECONDS - START < TOTAL)); do
    sleep "$RELOAD_EVERY"
    GENERATION=$((GENERATION + 1))
    write_files "$GENERATION"
    if ((GENERATION % 2 == 0)); then kill -HUP "$SERVER_PID" 2>/dev/null || true; fi
    if [[ -z $FLOODER ]] && ((SECONDS - START >= FLOOD_AT)); then
        log "same-name flood for ${FLOOD}s"
        dnsperf_run flood "$OUT/flood.txt" "$FLOOD" 8 5000 5 "$FLOOD_QPS" &
        FLOODER=$!
        STARTED+=("$FLOODER")
    fi
done
log "load done; waiting for the clients to finish"
wait "$STEADY" || true
[[ -z $FLOODER ]] || wait "$FLOODER" || true
wait "$IDLERS" || true
sleep 2
alive=yes
kill -0 "$SERVER_PID" 2>/dev/null || { alive=no; STATUS=1; }
metrics=$(curl -s --max-time 2 "http://$ADMIN/metrics" || true)
stop_pid "$SERVER_PID"
stop_pid "$SAMPLER"
stop_pid "$UPSTREAM_PID"

# ------------------------------------------------------------ summary
reloads_ok=$(awk '/^accel_dns_reloads_total\{result="ok"\}/ { print $2 }' <<<"$metrics")
reloads_error=$(awk '/^accel_dns_reloads_total\{result="error"\}/ { print $2 }' <<<"$metrics")
panics=$(grep -c 'panicked' "$OUT/server.log" || true)
sent=$(field "$OUT/steady.dnsperf" "Queries sent")
lost=$(field "$OUT/steady.dnsperf" "Queries lost")
say "== reliability soak, ${WARMUP}s warm-up + ${DURATION}s measured: reload every ${RELOAD_EVERY}s (rename / SIGHUP), upstream flapping every ${FLAP}s, $TCP_CLIENTS idle TCP clients, same-name flood ${FLOOD}s at ${FLOOD_AT}s"
say "binary: $BIN"
say "reloads: ${reloads_ok:-?} ok, ${reloads_error:-?} error; $GENERATION generations written"
say "steady client (${STEADY_QPS}/s, records/hits/misses): $(tr -s ' \n' ' ' <"$OUT/steady.dnsperf")"
if [[ ! $sent =~ ^[0-9]+$ || ! $lost =~ ^[0-9]+$ ]]; then
    say "FAIL: no dnsperf figures for the steady client"
    STATUS=1
elif ((lost > 0)); then
    say "FAIL: the steady client lost $lost of $sent queries (no answer within 5 s)"
    STATUS=1
fi
say "tcp: $(tail -1 "$OUT/tcp-idlers.log")"
if ! grep -q ' 0 lost' "$OUT/tcp-idlers.log"; then
    say "FAIL: a TCP query got no answer"
    STATUS=1
fi
if [[ -n $FLOODER ]]; then
    say "flood (same.flood.test, never answered upstream; SERVFAILs are the bound): $(tr -s ' \n' ' ' <"$OUT/flood.dnsperf")"
fi
say "upstream: $(tail -1 "$OUT/upstream.log")"
say "panics in the log: $panics; server alive after the run: $alive"
((panics == 0)) || STATUS=1
# Per minute: mean and max of RSS (MB), fds, threads, /metrics series
# (minute 0 is the warm-up).
say "per minute (mean/max): RSS MB, fds, threads, /metrics series"
awk -F, -v w="$WARMUP" 'NR > 1 && $2 > 0 {
        m = $1 < w ? 0 : int(($1 - w) / 60) + 1; n[m]++; rss[m] += $2; fds[m] += $3; thr[m] += $4
        if ($5 > 0) { ns[m]++; ser[m] += $5 }
        if ($2 > rmax[m]) rmax[m] = $2; if ($3 > fmax[m]) fmax[m] = $3
        if ($4 > tmax[m]) tmax[m] = $4; if ($5 > smax[m]) smax[m] = $5; last = m
    }
    END {
        for (m = 0; m <= last; m++) if (n[m] > 0)
            printf "  %s %d: RSS %.1f/%.1f  fds %.0f/%d  threads %.1f/%d  series %.0f/%d\n",
                m == 0 ? "warm-up" : "minute", m, rss[m] / n[m] / 1024, rmax[m] / 1024, fds[m] / n[m], fmax[m], thr[m] / n[m], tmax[m], (ns[m] ? ser[m] / ns[m] : 0), smax[m]
    }' "$OUT/samples.csv" | tee -a "$SUMMARY"
# First vs last full measured minute, by the mean.
verdict=$(awk -F, -v w="$WARMUP" 'NR > 1 && $2 > 0 && $1 >= w { m = int(($1 - w) / 60) + 1; n[m]++; rss[m] += $2; fds[m] += $3; if (m > last) last = m }
    END {
        if (n[last] < 30 && last > 1) last--
        r0 = rss[1] / n[1]; r1 = rss[last] / n[last]; f0 = fds[1] / n[1]; f1 = fds[last] / n[last]
        gr = 100 * (r1 - r0) / r0; gf = 100 * (f1 - f0) / f0
        printf "first vs last measured minute (1 vs %d): RSS %.1f -> %.1f MB (%+.1f %%), fds %.0f -> %.0f (%+.1f %%)\n",
            last, r0 / 1024, r1 / 1024, gr, f0, f1, gf
        exit (gr > 10 || gr < -10 || gf > 10 || gf < -10) ? 1 : 0
    }' "$OUT/samples.csv") || { STATUS=1; verdict="$verdict -- NOT FLAT"; }
say "$verdict"
say "results in $OUT; $( ((STATUS == 0)) && echo PASS || echo FAIL)"
exit "$STATUS"
