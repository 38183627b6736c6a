#!/bin/sh
# accel-dns-node-setup.sh: install accel-dns on a node and point the node's resolver at it.
#
#   accel-dns-node-setup.sh install   [--address ADDR] [--resolv-conf PATH] [--backup PATH]
#                                     [--binary FILE] [--config FILE] [--unit FILE] [--root DIR] [--quiet]
#   accel-dns-node-setup.sh uninstall [--resolv-conf PATH] [--backup PATH] [--purge] [--root DIR] [--quiet]
#
# install
#   1. copies the optional --binary to /usr/local/bin/accel-dns, --config to
#      /etc/accel-dns/accel-dns.toml (checked with `accel-dns check` first when the binary is
#      there) and --unit to /etc/systemd/system/accel-dns.service, then enables and (re)starts
#      the unit when systemd runs and something changed;
#   2. rewrites resolv.conf so that `nameserver ADDR` is the first nameserver line, every
#      existing nameserver (the VPC resolver) stays after it as the fallback, and
#      `options timeout:1 attempts:2` makes a dead proxy cost one second, not five. Other
#      options are kept, except `rotate`, which would send every other query past the proxy.
#      The original file is saved to the backup path first.
#   Running install again changes nothing. If something else (DHCP, NetworkManager) rewrote
#   resolv.conf since, install applies itself to the new file and makes that the backup.
#
# uninstall (alias: undo)
#   restores resolv.conf byte for byte from the backup and removes the backup; with --purge it
#   also stops and disables the unit and removes the unit, binary and config. Running it when
#   nothing is installed is not an error.
#
# The file is rewritten in place (same inode), so a bind-mounted /etc/resolv.conf (containers,
# tests under `unshare -m`) works. A symlinked resolv.conf (systemd-resolved, resolvconf) is
# refused: configure the manager that owns it instead (see deploy/README.md).
#
# POSIX sh: runs under dash, bash and busybox sh (the optional node-resolv DaemonSet uses busybox).

set -eu

PROG=accel-dns-node-setup
MARKER_PREFIX="# accel-dns-node-setup:"
PROXY_OPTIONS="options timeout:1 attempts:2"

usage() {
    cat <<EOF
usage: $0 install   [--address ADDR] [--resolv-conf PATH] [--backup PATH]
                    [--binary FILE] [--config FILE] [--unit FILE] [--root DIR] [--quiet]
       $0 uninstall [--resolv-conf PATH] [--backup PATH] [--purge] [--root DIR] [--quiet]

  --address ADDR      address of accel-dns (default 127.0.0.1; on Kubernetes nodes the
                      link-local 169.254.20.53; in VPC mode the load balancer's address)
  --resolv-conf PATH  resolver file to rewrite (default /etc/resolv.conf)
  --backup PATH       where the original is kept for uninstall (default PATH.accel-dns-orig)
  --binary FILE       install FILE as /usr/local/bin/accel-dns
  --config FILE       install FILE as /etc/accel-dns/accel-dns.toml (validated first)
  --unit FILE         install FILE as /etc/systemd/system/accel-dns.service and start it
  --purge             uninstall: also remove the unit, binary and config
  --root DIR          install files under DIR instead of / (image builds, tests; no systemctl)
  --quiet             print only warnings and errors
EOF
}

say() { [ "$QUIET" = 1 ] || printf '%s: %s\n' "$PROG" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- arguments
[ $# -ge 1 ] || { usage >&2; exit 2; }
case "$1" in
    install) ACTION=install ;;
    uninstall | undo) ACTION=uninstall ;;
    -h | --help | help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac
shift

ADDRESS=127.0.0.1
RESOLV_CONF=
BACKUP=
BINARY=
CONFIG=
UNIT=
ROOT=
PURGE=0
QUIET=0

need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then
        printf '%s: error: %s needs a value\n' "$PROG" "$1" >&2
        exit 2
    fi
}
while [ $# -gt 0 ]; do
    case "$1" in
        --address) need_value "$@"; ADDRESS=$2; shift 2 ;;
        --resolv-conf) need_value "$@"; RESOLV_CONF=$2; shift 2 ;;
        --backup) need_value "$@"; BACKUP=$2; shift 2 ;;
        --binary) need_value "$@"; BINARY=$2; shift 2 ;;
        --config) need_value "$@"; CONFIG=$2; shift 2 ;;
        --unit) need_value "$@"; UNIT=$2; shift 2 ;;
        --root) need_value "$@"; ROOT=${2%/}; shift 2 ;;
        --purge) PURGE=1; shift ;;
        --quiet) QUIET=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) printf '%s: error: unknown argument %s\n' "$PROG" "$1" >&2; usage >&2; exit 2 ;;
    esac
done

case "$ADDRESS" in
    *[!0-9a-fA-F.:]* | '') die "--address must be an IPv4 or IPv6 address, got '$ADDRESS'" ;;
esac

[ -n "$RESOLV_CONF" ] || RESOLV_CONF="$ROOT/etc/resolv.conf"
[ -n "$BACKUP" ] || BACKUP="$RESOLV_CONF.accel-dns-orig"
BIN_PATH="$ROOT/usr/local/bin/accel-dns"
CONFIG_PATH="$ROOT/etc/accel-dns/accel-dns.toml"
UNIT_PATH="$ROOT/etc/systemd/system/accel-dns.service"

TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/$PROG.XXXXXX")
trap 'rm -rf "$TMP_DIR"' EXIT
trap 'exit 1' HUP INT TERM

# ---------------------------------------------------------------- helpers

# systemd is usable: a real root, systemctl present and systemd running as PID 1.
have_systemd() {
    [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]
}

# copy_if_changed SRC DEST MODE: prints "changed" when DEST was (re)written.
copy_if_changed() {
    [ -f "$1" ] || die "$1: no such file"
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        return 0
    fi
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.$PROG.new"
    chmod "$3" "$2.$PROG.new"
    mv -f "$2.$PROG.new" "$2"
    say "installed $2"
    echo changed
}

has_marker() {
    grep -q "^$MARKER_PREFIX" "$1"
}

# Writes the accel-dns version of resolv.conf $1 to stdout. It is a pure function of $1's
# content, and applying it to its own output gives the same output (install is idempotent).
rewrite_resolv_conf() {
    awk -v addr="$ADDRESS" -v marker_prefix="$MARKER_PREFIX" -v proxy_options="$PROXY_OPTIONS" '
        BEGIN {
            print marker_prefix " nameserver " addr " added first; undo: accel-dns-node-setup.sh uninstall"
            previous = ""
            inserted = 0
            others = 0
        }
        # our marker from an earlier install; remember its address to drop that line too
        index($0, marker_prefix) == 1 {
            if (match($0, /nameserver [^ ]+/)) previous = substr($0, RSTART + 11, RLENGTH - 11)
            next
        }
        $1 == "nameserver" && ($2 == addr || ($2 == previous && previous != "")) { next }
        $1 == "options" {
            kept = "options"; dropped = 0
            for (i = 2; i <= NF; i++) {
                if ($i ~ /^(timeout|attempts):/ || $i == "rotate") {
                    if ($i == "rotate") print "rotate" > "/dev/stderr"
                    dropped = 1
                    continue
                }
                kept = kept " " $i
            }
            if (!dropped) print
            else if (kept != "options") print kept
            next
        }
        $1 == "nameserver" {
            if (!inserted) { print "nameserver " addr; inserted = 1 }
            others++
        }
        { print }
        END {
            print proxy_options
            if (!inserted) exit 3
            if (others >= 3) exit 4
        }
    ' "$1"
}

# Writes resolv.conf $1 without the lines an install added (marker, our nameserver line, our
# options line) to stdout: the fallback when the backup was lost.
strip_ours() {
    previous=$(sed -n "s/^$MARKER_PREFIX nameserver \([^ ]*\) .*/\1/p" "$1" | head -n 1)
    awk -v marker_prefix="$MARKER_PREFIX" -v addr="$previous" -v proxy_options="$PROXY_OPTIONS" '
        index($0, marker_prefix) == 1 { next }
        $1 == "nameserver" && $2 == addr { next }
        $0 == proxy_options { next }
        { print }
    ' "$1"
}

# Replaces the content of $2 with $1 without replacing the file itself (keeps the inode, so a
# bind mount, a hostPath mount and the file's mode and owner stay as they were).
write_in_place() {
    cat "$1" >"$2"
}

# ---------------------------------------------------------------- resolv.conf
install_resolv_conf() {
    [ -e "$RESOLV_CONF" ] || die "$RESOLV_CONF does not exist"
    if [ -L "$RESOLV_CONF" ]; then
        die "$RESOLV_CONF is a symlink (managed by systemd-resolved or resolvconf): configure that manager to use $ADDRESS first instead, see deploy/README.md"
    fi
    [ -f "$RESOLV_CONF" ] || die "$RESOLV_CONF is not a regular file"

    new="$TMP_DIR/resolv.conf.new"
    status=0
    rewrite_resolv_conf "$RESOLV_CONF" >"$new" 2>"$TMP_DIR/awk.err" || status=$?
    case "$status" in
        0) ;;
        3) die "$RESOLV_CONF has no nameserver line: refusing, the VPC resolver must stay in it as the fallback (and accel-dns's \"system\" upstream reads it)" ;;
        4) warn "$RESOLV_CONF now has more than 3 nameservers: glibc uses only the first 3" ;;
        *) die "could not rewrite $RESOLV_CONF (awk exit $status)" ;;
    esac
    if grep -q '^rotate$' "$TMP_DIR/awk.err" 2>/dev/null; then
        warn "dropped 'options rotate' from $RESOLV_CONF: it would send every other query past accel-dns"
    fi

    if cmp -s "$new" "$RESOLV_CONF"; then
        say "$RESOLV_CONF already uses $ADDRESS first: unchanged"
        return 0
    fi

    if has_marker "$RESOLV_CONF"; then
        if [ ! -f "$BACKUP" ]; then
            # Installed before, backup lost: the best original we can get is the file without our lines.
            mkdir -p "$(dirname "$BACKUP")"
            strip_ours "$RESOLV_CONF" >"$BACKUP"
            warn "no backup at $BACKUP: saved $RESOLV_CONF without the accel-dns lines as the original"
        fi
        # else the backup holds the original of the file we manage: keep it
    else
        if [ -f "$BACKUP" ]; then
            say "$RESOLV_CONF was rewritten by something else since the last install: saving the new original"
        fi
        mkdir -p "$(dirname "$BACKUP")"
        cp -p "$RESOLV_CONF" "$BACKUP.$PROG.new"
        mv -f "$BACKUP.$PROG.new" "$BACKUP"
        say "saved the original $RESOLV_CONF to $BACKUP"
    fi
    write_in_place "$new" "$RESOLV_CONF"
    say "$RESOLV_CONF now asks $ADDRESS first and keeps the other nameservers as the fallback"
}

uninstall_resolv_conf() {
    if [ -L "$RESOLV_CONF" ]; then
        die "$RESOLV_CONF is a symlink: this script never changed it"
    fi
    if [ -f "$BACKUP" ]; then
        if [ -f "$RESOLV_CONF" ] && ! has_marker "$RESOLV_CONF"; then
            warn "$RESOLV_CONF was rewritten by something else since install: leaving it, removing the stale backup $BACKUP"
        elif [ -f "$RESOLV_CONF" ] && cmp -s "$BACKUP" "$RESOLV_CONF"; then
            :
        else
            write_in_place "$BACKUP" "$RESOLV_CONF"
            say "restored $RESOLV_CONF from $BACKUP"
        fi
        rm -f "$BACKUP"
        return 0
    fi
    if [ -f "$RESOLV_CONF" ] && has_marker "$RESOLV_CONF"; then
        # The backup is gone: take our lines out, leave everything else.
        strip_ours "$RESOLV_CONF" >"$TMP_DIR/resolv.conf.new"
        write_in_place "$TMP_DIR/resolv.conf.new" "$RESOLV_CONF"
        warn "no backup at $BACKUP: removed the accel-dns lines from $RESOLV_CONF instead"
        return 0
    fi
    say "$RESOLV_CONF does not use accel-dns: nothing to undo"
}

# ---------------------------------------------------------------- files and service
install_files() {
    changed=
    if [ -n "$BINARY" ]; then
        changed="$changed$(copy_if_changed "$BINARY" "$BIN_PATH" 0755)"
    fi
    if [ -n "$CONFIG" ]; then
        [ -f "$CONFIG" ] || die "$CONFIG: no such file"
        if [ -x "$BIN_PATH" ]; then
            "$BIN_PATH" check --config "$CONFIG" >&2 || die "$CONFIG does not pass 'accel-dns check': nothing changed in resolv.conf"
        else
            warn "no binary at $BIN_PATH yet: $CONFIG installed without 'accel-dns check'"
        fi
        # A config change is picked up live by the running server: no restart for it.
        copy_if_changed "$CONFIG" "$CONFIG_PATH" 0644 >/dev/null
    fi
    if [ -n "$UNIT" ]; then
        changed="$changed$(copy_if_changed "$UNIT" "$UNIT_PATH" 0644)"
    fi

    [ -f "$UNIT_PATH" ] || return 0
    if ! have_systemd; then
        [ -n "$ROOT" ] || warn "systemd is not running here: start accel-dns yourself before relying on it"
        return 0
    fi
    if [ -n "$changed" ]; then
        systemctl daemon-reload
        systemctl enable accel-dns.service >/dev/null 2>&1
        systemctl restart accel-dns.service
        say "accel-dns.service enabled and (re)started"
    elif ! systemctl is-active --quiet accel-dns.service; then
        systemctl enable accel-dns.service >/dev/null 2>&1
        systemctl start accel-dns.service
        say "accel-dns.service started"
    fi
}

uninstall_files() {
    if have_systemd && [ -f "$UNIT_PATH" ]; then
        systemctl disable --now accel-dns.service >/dev/null 2>&1 || true
    fi
    for f in "$UNIT_PATH" "$BIN_PATH" "$CONFIG_PATH"; do
        if [ -e "$f" ]; then
            rm -f "$f"
            say "removed $f"
        fi
    done
    rmdir "$(dirname "$CONFIG_PATH")" 2>/dev/null || true
    if have_systemd; then systemctl daemon-reload; fi
}

# A link-local address only works if this host has it. A warning, not an error: on a Kubernetes
# node the DaemonSet's init container adds it, and may run after this script. (Loopback always
# exists; any other address, such as VPC mode's load balancer, is somewhere else.)
check_address_is_local() {
    case "$ADDRESS" in 169.254.* | [fF][eE]80:*) ;; *) return 0 ;; esac
    [ -z "$ROOT" ] || return 0
    command -v ip >/dev/null 2>&1 || return 0
    if ! ip addr show 2>/dev/null | grep -q "inet6\{0,1\} $ADDRESS/"; then
        warn "$ADDRESS is not assigned to any interface on this host: add it (e.g. on a dummy interface, see deploy/README.md) or queries will fall back to the next nameserver after 1 s"
    fi
}

case "$ACTION" in
    install)
        install_files
        check_address_is_local
        install_resolv_conf
        ;;
    uninstall)
        # Restore the resolver first: the node must never point at a proxy that is gone.
        uninstall_resolv_conf
        if [ "$PURGE" = 1 ]; then uninstall_files; fi
        ;;
esac
