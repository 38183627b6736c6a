#!/usr/bin/env bash
# Load and memory soak of the release binary (issue 7, README "How a query is answered", limits), on loopback
# in a private network namespace. Two phases, each on a fresh accel-dns:
#
#  1. soak (DURATION s, default 60): dnsperf at the highest rate it gets
#     (no -Q limit) over UDP with a mix of records, a CNAME record chased
#     through the cache, cache hits, unique misses and unique NXDOMAINs, plus
#     a second dnsperf over TCP at the same time. NSD is the upstream. The
#     cache is bounded to 20 000 entries so that it fills early and evicts.
#     VmRSS is sampled every second: it must level off (the second half of
#     the run may not grow more than 10 % over the first half's peak).
#  2. flood (FLOOD s, default 20): unique names only, against an upstream
#     that answers after 1 s, so upstream queries pile up to their bound
#     (MAX_IN_FLIGHT = 2048) and the excess must get SERVFAIL at once; at
#     the same time a slowloris client tries to hold 4x max_tcp_connections
#     TCP connections open. Memory must stay bounded, nothing may be lost.
#
#   bash bench/soak.sh [DURATION] [FLOOD]      # as root (for the namespace); 0 skips a phase
#   SOAK_NO_NETNS=1 bash bench/soak.sh ...     # in the current namespace
#   ACCEL_DNS_BIN=/path/to/accel-dns ...       # skip `cargo build --release`
#
# Everything started is stopped by PID (on exit too); every wait has a
# deadline; dnsperf runs are bounded by -l and `timeout`. Results (RSS
# samples, dnsperf output, summary) go to $SOAK_OUT (default
# /tmp/accel-dns-soak/<timestamp>). Exits 1 if the server died, memory kept
# growing, or queries were lost.
set -euo pipefail

DURATION=${1:-60}
FLOOD=${2:-20}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ZONES=${SOAK_ZONES:-/work/shared/bench/zones}
OUT=${SOAK_OUT:-/tmp/accel-dns-soak/$(date +%Y%m%d-%H%M%S)}
SERVER_IP=127.0.0.20
SERVER_PORT=5300
ADMIN=127.0.0.20:9553
NSD_IP=127.0.0.2
NSD_PORT=5300
SLOW_IP=127.0.0.3
SLOW_PORT=5300
MAX_ENTRIES=${SOAK_MAX_ENTRIES:-20000}
MAX_TCP=64
PROXY_CPU=${SOAK_PROXY_CPU:-1}
LOAD_CPU=${SOAK_LOAD_CPU:-0}

die() { echo "soak.sh: $*" >&2; exit 2; }
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
[[ $DURATION =~ ^[0-9]+$ && $FLOOD =~ ^[0-9]+$ ]] || die "usage: soak.sh [DURATION] [FLOOD]"
for tool in dnsperf nsd python3 taskset curl; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -d $ZONES ]] || die "no zones at $ZONES (set SOAK_ZONES)"

# A private network namespace whose only interface is lo: nothing leaves
# loopback and the 127.0.0.x:5300 ports cannot clash with anything.
if [[ -z ${SOAK_IN_NETNS:-} && -z ${SOAK_NO_NETNS:-} ]]; then
    BIN=${ACCEL_DNS_BIN:-}
    if [[ -z $BIN ]]; then
        log "building the release binary"
        (cd "$REPO" && cargo build --release --locked -q)
        BIN=$REPO/target/release/accel-dns
    fi
    exec unshare --net -- env SOAK_IN_NETNS=1 ACCEL_DNS_BIN="$BIN" SOAK_OUT="$OUT" SOAK_ZONES="$ZONES" \
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
start_bg() { # LOG CPU CMD... -> BG_PID
    local logfile=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$logfile" 2>&1 &
    BG_PID=$!
    STARTED+=("$BG_PID")
}
stop_pid() { # PID: SIGTERM, SIGKILL after 5 s
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local pid i
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        pid=${STARTED[i]}
        stop_pid "$pid"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_udp() { # IP PORT DEADLINE_S NAME: until the server answers NAME A
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

# ------------------------------------------------------------ queries
QUERIES=$OUT/queries
mkdir -p "$QUERIES"
# The soak mix, 400 000 lines (dnsperf loops over it): 35 % hot names (hits),
# 25 % unique names under bench.test (misses, each a new cache entry), 15 %
# unique names under nx.test (NXDOMAIN, negative entries), 15 % records
# (docker.io A and AAAA = NODATA), 5 % a CNAME record chased through the
# cache, 5 % hot AAAA. Deterministic.
awk 'BEGIN {
    srand(7); u = 0; x = 0
    for (i = 0; i < 400000; i++) {
        r = int(rand() * 100)
        if (r < 35)      printf "h%03d.bench.test A\n", int(rand() * 500)
        else if (r < 60) printf "u%07d.bench.test A\n", u++
        else if (r < 75) printf "x%07d.nx.test A\n", x++
        else if (r < 85) print "docker.io A"
        else if (r < 90) print "docker.io AAAA"
        else if (r < 95) print "production.cloudflare.docker.com A"
        else             printf "h%03d.bench.test AAAA\n", int(rand() * 500)
    }
}' >"$QUERIES/mix.txt"
# Over TCP: hot names and misses.
awk 'BEGIN { srand(8); for (i = 0; i < 100000; i++) {
    if (rand() < 0.7) printf "h%03d.bench.test A\n", int(rand() * 500)
    else printf "t%07d.bench.test A\n", i } }' >"$QUERIES/tcp.txt"
# A bystander during the flood: the record and a name it asks all the time.
printf 'docker.io A\n' >"$QUERIES/bystander.txt"
# The flood: unique names only, enough that dnsperf never wraps around (at
# the 130 000 queries a second seen here) and a name is never asked twice.
awk -v n=$((FLOOD * 160000 + 100000)) 'BEGIN { for (i = 0; i < n; i++) printf "f%08d.flood.test A\n", i }' >"$QUERIES/flood.txt"

# ------------------------------------------------------------ accel-dns
config() { # UPSTREAM -> config text
    cat <<EOF
[server]
listen = ["$SERVER_IP:$SERVER_PORT"]
tcp_idle_timeout = "2s"
max_tcp_connections = $MAX_TCP

[upstream]
servers = ["$1"]
timeout = "2s"

[cache]
max_entries = $MAX_ENTRIES

[admin]
listen = "$ADMIN"

[log]
level = "warn"

[[record]]
name = "docker.io"
a = ["203.0.113.10"]
ttl = 300

[[record]]
name = "production.cloudflare.docker.com"
cname = "edge.ga.test"
ttl = 300
EOF
}

start_server() { # NAME UPSTREAM -> SERVER_PID
    config "$2" >"$OUT/$1.toml"
    start_bg "$OUT/$1.server.log" "$PROXY_CPU" "$BIN" serve --config "$OUT/$1.toml"
    SERVER_PID=$BG_PID
    wait_udp "$SERVER_IP" "$SERVER_PORT" 20 docker.io || { cat "$OUT/$1.server.log" >&2; die "accel-dns did not come up"; }
}

# sample PID CSV: every second, t,rss_kb,hwm_kb,threads,fds,cache_entries
sample() {
    local pid=$1 csv=$2 t=0 rss hwm threads fds entries
    echo "t,rss_kb,hwm_kb,threads,fds,cache_entries" >"$csv"
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        entries=$(curl -s --max-time 1 "http://$ADMIN/metrics" | awk '/^accel_dns_cache_entries / { print $2 }')
        echo "$t,$rss,$hwm,$threads,$fds,${entries:-}" >>"$csv"
        t=$((t + 1))
        sleep 1
    done
}

# dnsperf_run NAME MODE FILE SECONDS CLIENTS OUTSTANDING TIMEOUT [MAX_QPS]:
# summary in $OUT/NAME.dnsperf
dnsperf_run() {
    local name=$1 mode=$2 file=$3 secs=$4 clients=$5 outstanding=$6 qtimeout=$7 rate=()
    [[ -z ${8:-} ]] || rate=(-Q "$8")
    taskset -c "$LOAD_CPU" timeout $((secs + 30)) dnsperf -m "$mode" -s "$SERVER_IP" -p "$SERVER_PORT" \
        -d "$file" -l "$secs" -c "$clients" -q "$outstanding" -t "$qtimeout" -v "${rate[@]}" \
        >"$OUT/$name.raw" 2>&1 || true
    # Latency percentiles from the per-query lines ("> RCODE name type seconds"),
    # by a histogram of 10 us buckets (no sort of millions of lines).
    awk '/^> / && $NF ~ /^[0-9.]+$/ { b = int($NF * 100000); h[b]++; n++ }
        END {
            split("0.5 0.9 0.99 0.999", q, " "); c = 0; k = 1
            for (b = 0; k <= 4 && b <= 1000000; b++) {
                c += h[b]
                while (k <= 4 && n > 0 && c >= q[k] * n) { p[k] = b / 100; k++ }
            }
            printf "latency_ms p50=%s p90=%s p99=%s p99.9=%s (n=%d)\n", p[1], p[2], p[3], p[4], n
        }' "$OUT/$name.raw" >"$OUT/$name.latency"
    grep -E '^ *(Queries sent|Queries completed|Queries lost|Response codes|Queries per second|Average Latency)' \
        "$OUT/$name.raw" >"$OUT/$name.dnsperf" || true
    cat "$OUT/$name.latency" >>"$OUT/$name.dnsperf"
    # The per-query lines run to hundreds of MB: kept only when asked.
    if [[ -n ${SOAK_KEEP_RAW:-} ]]; then gzip -f "$OUT/$name.raw"; else rm -f "$OUT/$name.raw"; fi
}

field() { awk -v k="$2" '$0 ~ k { print $3; exit }' "$1"; }

# UDP datagrams the kernel dropped for want of socket buffer space, in this
# network namespace (exact in the private one): a query lost there was
# never seen by any process.
udp_rcvbuf_errors() {
    awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}

# check_lost NAME: flags a run that lost more than 0.1 % of its queries
check_lost() {
    local sent lost
    sent=$(field "$OUT/$1.dnsperf" "Queries sent")
    lost=$(field "$OUT/$1.dnsperf" "Queries lost")
    [[ $sent =~ ^[0-9]+$ && $lost =~ ^[0-9]+$ ]] || { say "note: $1: no dnsperf figures"; STATUS=1; return; }
    if ((lost * 1000 > sent)); then
        say "FAIL: $1 lost $lost of $sent queries"
        STATUS=1
    fi
}

# rss_verdict CSV SECONDS -> prints a line; returns 1 if the second half grew > 10 %
rss_verdict() {
    awk -F, -v half=$(($2 / 2)) 'NR > 1 && $2 > 0 {
            if ($1 <= half) { if ($2 > a) a = $2 } else { if ($2 > b) b = $2 }
            if ($2 > peak) peak = $2; last = $2; if ($6 != "") entries = $6
        }
        END {
            g = a > 0 ? 100 * (b - a) / a : 0
            printf "peak RSS %.1f MB; first half peak %.1f MB, second half peak %.1f MB (%+.1f %%); last %.1f MB; cache entries %s\n",
                peak / 1024, a / 1024, b / 1024, g, last / 1024, entries
            exit (g > 10) ? 1 : 0
        }' "$1"
}

STATUS=0
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

# ------------------------------------------------------------ phase 1: soak
if ((DURATION > 0)); then
    log "phase 1: soak for ${DURATION}s (output in $OUT)"
    mkdir -p "$OUT/nsd"
    cat >"$OUT/nsd/nsd.conf" <<EOF
server:
    ip-address: $NSD_IP@$NSD_PORT
    port: $NSD_PORT
    server-count: 1
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$ZONES"
    database: ""
    zonelistfile: "$OUT/nsd/zone.list"
    xfrdfile: "$OUT/nsd/xfrd.state"
    pidfile: "$OUT/nsd/nsd.pid"
    logfile: "$OUT/nsd/nsd.log"
    verbosity: 0
    tcp-count: 1000
    receive-buffer-size: 4194304
    send-buffer-size: 4194304
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
EOF
    for zone in bench.test nx.test ga.test docker.io docker.com; do
        printf 'zone:\n    name: %s\n    zonefile: %s.zone\n' "$zone" "$zone" >>"$OUT/nsd/nsd.conf"
    done
    start_bg "$OUT/nsd/server.log" "$LOAD_CPU" nsd -d -c "$OUT/nsd/nsd.conf"
    NSD_PID=$BG_PID
    wait_udp "$NSD_IP" "$NSD_PORT" 20 ready.bench.test || { cat "$OUT/nsd/server.log" >&2; die "nsd did not come up"; }

    start_server soak "$NSD_IP:$NSD_PORT"
    drops_before=$(udp_rcvbuf_errors)
    sample "$SERVER_PID" "$OUT/soak.rss.csv" &
    SAMPLER=$!
    STARTED+=("$SAMPLER")
    dnsperf_run soak-tcp tcp "$QUERIES/tcp.txt" "$DURATION" 4 16 2 &
    TCP_LOAD=$!
    STARTED+=("$TCP_LOAD")
    dnsperf_run soak-udp udp "$QUERIES/mix.txt" "$DURATION" 8 400 2
    wait "$TCP_LOAD" || true
    sleep 2 # two more RSS samples after the load
    drops=$(($(udp_rcvbuf_errors) - drops_before))
    alive=yes
    kill -0 "$SERVER_PID" 2>/dev/null || { alive=no; STATUS=1; }
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
    stop_pid "$SERVER_PID"
    stop_pid "$SAMPLER"

    say "== phase 1: soak, ${DURATION}s, cache max_entries $MAX_ENTRIES, upstream NSD"
    say "UDP mix: $(tr -s ' \n' ' ' <"$OUT/soak-udp.dnsperf")"
    say "TCP:     $(tr -s ' \n' ' ' <"$OUT/soak-tcp.dnsperf")"
    verdict=$(rss_verdict "$OUT/soak.rss.csv" "$DURATION") || { STATUS=1; verdict="$verdict -- KEEPS GROWING"; }
    say "memory:  $verdict; VmHWM $((hwm / 1024)) MB; server alive after the run: $alive"
    say "RSS every 5 s (MB): $(awk -F, 'NR > 1 && ($1 % 5) == 0 { printf "%.0f ", $2 / 1024 }' "$OUT/soak.rss.csv")"
    say "kernel UDP receive-buffer drops (all sockets of the namespace): $drops"
    check_lost soak-udp
    check_lost soak-tcp
    stop_pid "$NSD_PID"
fi

# ------------------------------------------------------------ phase 2: flood
if ((FLOOD > 0)); then
    log "phase 2: unique-name flood for ${FLOOD}s against an upstream that answers after 1 s"
    start_bg "$OUT/slow-upstream.log" "$LOAD_CPU" python3 "$REPO/bench/slow_upstream.py" "$SLOW_IP" "$SLOW_PORT" 1
    SLOW_PID=$BG_PID
    sleep 0.5
    start_server flood "$SLOW_IP:$SLOW_PORT"
    drops_before=$(udp_rcvbuf_errors)
    sample "$SERVER_PID" "$OUT/flood.rss.csv" &
    SAMPLER=$!
    STARTED+=("$SAMPLER")
    HOLDER=
    if [[ -z ${SOAK_NO_TCP_HOLDER:-} ]]; then
        start_bg "$OUT/tcp-holder.log" "$LOAD_CPU" python3 "$REPO/bench/tcp_holder.py" \
            "$SERVER_IP" "$SERVER_PORT" $((MAX_TCP * 4)) "$FLOOD"
        HOLDER=$BG_PID
    else
        echo "tcp holder: not run" >"$OUT/tcp-holder.log"
    fi
    # A normal client at 500 queries a second, to see what the flood costs it.
    dnsperf_run bystander udp "$QUERIES/bystander.txt" "$FLOOD" 1 20 2 500 &
    BYSTANDER=$!
    STARTED+=("$BYSTANDER")
    dnsperf_run flood udp "$QUERIES/flood.txt" "$FLOOD" 8 4000 3
    wait "$BYSTANDER" || true
    [[ -z $HOLDER ]] || wait "$HOLDER" || true
    sleep 2
    drops=$(($(udp_rcvbuf_errors) - drops_before))
    alive=yes
    kill -0 "$SERVER_PID" 2>/dev/null || { alive=no; STATUS=1; }
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
    stop_pid "$SERVER_PID"
    stop_pid "$SAMPLER"
    stop_pid "$SLOW_PID"
    say "== phase 2: flood of unique names, ${FLOOD}s, upstream delay 1 s, in-flight bound 2048, max_tcp_connections $MAX_TCP"
    say "UDP flood: $(tr -s ' \n' ' ' <"$OUT/flood.dnsperf")"
    say "bystander (docker.io A, 500/s): $(tr -s ' \n' ' ' <"$OUT/bystander.dnsperf")"
    say "upstream: $(tail -1 "$OUT/slow-upstream.log")"
    say "TCP: $(tail -1 "$OUT/tcp-holder.log")"
    verdict=$(rss_verdict "$OUT/flood.rss.csv" "$FLOOD") || verdict="$verdict (grew in the second half)"
    say "memory: $verdict; VmHWM $((hwm / 1024)) MB; server alive after the run: $alive"
    say "RSS every 2 s (MB): $(awk -F, 'NR > 1 && ($1 % 2) == 0 { printf "%.0f ", $2 / 1024 }' "$OUT/flood.rss.csv")"
    say "kernel UDP receive-buffer drops (all sockets of the namespace): $drops"
    check_lost flood
    check_lost bystander
fi
say "results in $OUT"
exit "$STATUS"
