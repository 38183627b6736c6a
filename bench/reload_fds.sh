#!/usr/bin/env bash
# Issue 11, item 2: open file descriptors and threads of accel-dns before and
# after RELOADS SIGHUPs GAP seconds apart, with an upstream that never answers
# (a bound UDP socket that nobody reads), so that every reload lands while a
# forwarding-loop probe is waiting. Before the fix each reload left the old
# upstream pool behind (16 sockets); after it, the count returns to one
# snapshot's level. Runs in a private network namespace (root), like soak.sh.
#
#   bash bench/reload_fds.sh [BIN] [RELOADS] [GAP]     # defaults: target/release/accel-dns 30 0.3
#
# Everything started is stopped by PID; every wait has a deadline.
set -euo pipefail
BIN=${1:-target/release/accel-dns}
RELOADS=${2:-30}
GAP=${3:-0.3}
BIN=$(realpath "$BIN")
if [[ -z ${RELOAD_FDS_IN_NETNS:-} ]]; then
    exec unshare --net -- env RELOAD_FDS_IN_NETNS=1 bash "${BASH_SOURCE[0]}" "$BIN" "$RELOADS" "$GAP"
fi
ip link set lo up
command -v dig >/dev/null || { echo "reload_fds.sh: dig is not installed" >&2; exit 2; }
DIR=$(mktemp -d /tmp/accel-dns-reload-fds.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

python3 -c 'import socket, signal
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.3", 5300)); signal.pause()' &
PIDS+=($!)
cat >"$DIR/accel-dns.toml" <<CONF
[server]
listen = ["127.0.0.20:5300"]
[upstream]
servers = ["127.0.0.3:5300"]
timeout = "5s"
[admin]
listen = ""
[[record]]
name = "docker.io"
a = ["203.0.113.10"]
CONF
"$BIN" serve --config "$DIR/accel-dns.toml" 2>"$DIR/server.log" &
PID=$!
PIDS+=("$PID")
deadline=$((SECONDS + 20))
until dig +short +time=1 +tries=1 @127.0.0.20 -p 5300 docker.io 2>/dev/null | grep -q 203.0.113.10; do
    ((SECONDS < deadline)) || { cat "$DIR/server.log" >&2; echo "accel-dns did not come up" >&2; exit 1; }
    sleep 0.1
done
sleep 1 # the first loop probe has gone out and waits
fds() { find "/proc/$PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$PID/status"; }
before_fds=$(fds)
before_threads=$(threads)
for _ in $(seq "$RELOADS"); do
    kill -HUP "$PID"
    sleep "$GAP"
done
sleep 2
after_fds=$(fds)
after_threads=$(threads)
reloaded=$(grep -c "configuration reloaded" "$DIR/server.log" || true)
alive=yes
kill -0 "$PID" 2>/dev/null || alive=no
echo "binary: $BIN"
echo "reloads: $RELOADS SIGHUPs ${GAP}s apart, $reloaded reloads logged; upstream never answers (timeout 5s)"
echo "open fds: $before_fds before -> $after_fds after; threads: $before_threads -> $after_threads; alive: $alive"
rm -rf "$DIR"
