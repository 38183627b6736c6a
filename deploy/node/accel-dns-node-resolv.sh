#!/bin/sh
# accel-dns-node-resolv.sh: keeps a node's resolv.conf pointed at accel-dns while, and only
# while, accel-dns is ready.
#
#   accel-dns-node-resolv.sh [--address ADDR] [--ready-url URL] [--interval SECONDS]
#                            [--resolv-conf PATH] [--once]
#
# Every interval: when GET ready-url answers 200, `accel-dns-node-setup.sh install` (a no-op when
# resolv.conf is already right, and a repair when DHCP rewrote it); otherwise `uninstall`, so a
# node never waits on a proxy that is gone. On SIGTERM or SIGINT: uninstall, then exit 0.
#
# It is the container command of the optional DaemonSet deploy/kubernetes/node-resolv (busybox,
# hostNetwork, the host's /etc mounted at /host/etc); accel-dns-node-setup.sh must sit beside it.
# POSIX sh; needs wget and timeout (busybox's or GNU's).

set -eu

PROG=accel-dns-node-resolv
HERE=$(cd "$(dirname "$0")" && pwd)
SETUP="$HERE/accel-dns-node-setup.sh"
ADDRESS=169.254.20.53
READY_URL=http://127.0.0.1:9553/readyz
INTERVAL=10
RESOLV_CONF=/host/etc/resolv.conf
ONCE=0

while [ $# -gt 0 ]; do
    case "$1" in
        --address) ADDRESS=${2:?--address needs a value}; shift 2 ;;
        --ready-url) READY_URL=${2:?--ready-url needs a value}; shift 2 ;;
        --interval) INTERVAL=${2:?--interval needs a value}; shift 2 ;;
        --resolv-conf) RESOLV_CONF=${2:?--resolv-conf needs a value}; shift 2 ;;
        --once) ONCE=1; shift ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "$PROG: unknown argument $1" >&2; exit 2 ;;
    esac
done

[ -f "$SETUP" ] || { echo "$PROG: $SETUP is missing" >&2; exit 1; }

setup() {
    sh "$SETUP" "$@" --resolv-conf "$RESOLV_CONF" --quiet
}

# `timeout`, not wget's own -T: Debian's busybox wget crashes on -T.
ready() {
    timeout 3 wget -q -O /dev/null "$READY_URL" 2>/dev/null
}

stop() {
    trap - TERM INT
    if setup uninstall; then
        echo "$PROG: stopping: $RESOLV_CONF restored"
    fi
    exit 0
}
trap stop TERM INT

state=unknown
while :; do
    if ready; then
        if setup install --address "$ADDRESS"; then
            [ "$state" = up ] || echo "$PROG: accel-dns is ready: $RESOLV_CONF asks $ADDRESS first"
            state=up
        else
            echo "$PROG: install failed; will retry" >&2
            state=unknown
        fi
    else
        if setup uninstall; then
            [ "$state" = down ] || echo "$PROG: accel-dns is not ready at $READY_URL: $RESOLV_CONF uses its own nameservers"
            state=down
        else
            echo "$PROG: uninstall failed; will retry" >&2
            state=unknown
        fi
    fi
    [ "$ONCE" = 0 ] || exit 0
    # In the background so that a signal is handled at once, not after the sleep.
    sleep "$INTERVAL" &
    wait $! || true
done
