#!/usr/bin/env bash
# The real job, end to end: a real registry client (skopeo) pulls docker.io/library/e2e:latest
# through accel-dns, and the registry access logs say who served it.
#
#   bash ci/e2e-pull.sh PATH/TO/accel-dns [--only a,b,...] [--keep]
#
# The script re-executes itself in a private network namespace (loopback only) and a private mount
# namespace in which /etc/resolv.conf says `nameserver 127.0.0.1`, where accel-dns listens on port
# 53. Nothing reaches the network. Inside it starts:
#   - two (three) Debian docker-registry instances serving TLS on 443 with a test CA: the
#     "accelerator" 127.0.0.11, the "origin" 127.0.0.12, a second accelerator 127.0.0.14, each with
#     its own storage and access log, each holding the same small image;
#   - dnsmasq on 127.0.0.53 as the "real resolver": registry-1.docker.io -> the origin,
#     accel.e2e.test -> the accelerator;
#   - accel-dns with one configuration per scenario, upstream = dnsmasq;
#   - for scenario c, broken edges (ci/e2e/edge.py) at 127.0.0.13 (TCP up, TLS fails) and
#     127.0.0.15 (TLS up, /v2/ answers 503).
# Scenarios (each prints PASS/FAIL with the measured time; the exit status is 1 if any failed):
#   a  a record sends the pull to the accelerator, never the origin
#   b  a tls+path health check: the accelerator stops -> pulls go to the origin within
#      fall x interval + 1 s; it starts again -> pulls come back
#   c  broken edges: tls+path probes step aside; a TCP-only probe stays up (and pulls fail)
#   d  a health-checked CNAME record fails open the same way
#   e  the config file rewritten in place: pulls follow within 2 s
#   f  the registries redirect blob GETs to production.cloudflare.docker.com, as Docker Hub does: a
#      record for registry-1.docker.io alone sends the blob bytes to the origin; a
#      `registry = "docker-hub"` bundle record (a build without bundles: a record per name) maps
#      every part of the pull
#   g  the bundle with exclude = ["registry-1.docker.io"]: the API goes to the origin, and
#      GET /unmapped lists the name (skipped in a build without bundles)
# Everything started is stopped by PID on exit; every wait is a poll with a deadline.
set -euo pipefail

usage() {
    sed -n '4p' "$0" | sed 's/^#  *//' >&2
    exit 2
}

ALL="a,b,c,d,e,f,g"
ONLY="$ALL"
KEEP=0
BIN=""
while (($# > 0)); do
    case "$1" in
    --only)
        (($# >= 2)) || usage
        ONLY="$2"
        shift 2
        ;;
    --only=*)
        ONLY="${1#--only=}"
        shift
        ;;
    --keep)
        KEEP=1
        shift
        ;;
    -h | --help) usage ;;
    -*) usage ;;
    *)
        [[ -z "$BIN" ]] || usage
        BIN="$1"
        shift
        ;;
    esac
done
[[ -n "$BIN" ]] || usage
[[ -x "$BIN" ]] || {
    echo "e2e-pull: $BIN is not an executable" >&2
    exit 2
}
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
HERE="$(cd "$(dirname "$0")" && pwd)"

if [[ "${ACCEL_E2E_INNER:-}" != 1 ]]; then
    for tool in unshare ip docker-registry skopeo dnsmasq openssl curl python3; do
        command -v "$tool" >/dev/null || {
            echo "e2e-pull: $tool is missing (apt-get install docker-registry skopeo dnsmasq-base openssl curl python3 iproute2 util-linux)" >&2
            exit 2
        }
    done
    [[ "$(id -u)" == 0 ]] || {
        echo "e2e-pull: needs root (network and mount namespaces, port 53 and 443)" >&2
        exit 2
    }
    args=("$BIN" --only "$ONLY")
    ((KEEP == 0)) || args+=(--keep)
    exec unshare --net --mount --fork env ACCEL_E2E_INNER=1 bash "$0" "${args[@]}"
fi

# ---------------------------------------------------------------- inside the namespaces

SCRIPT_START=$(date +%s%3N)
now_ms() { date +%s%3N; }
# secs MS: milliseconds as seconds (three decimals).
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
say() { printf '[%6s] %s\n' "$(secs $(($(now_ms) - SCRIPT_START)))" "$*"; }

WORK="$(mktemp -d /tmp/accel-e2e.XXXXXX)"
CERTS="$WORK/certs"
declare -A PIDS=()

# stop NAME: SIGTERM to the process started as NAME, then wait up to 5 s (SIGKILL after).
stop() {
    local name="$1" pid="${PIDS[$1]:-}" i
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PIDS[$name]"
}

cleanup() {
    local name
    for name in "${!PIDS[@]}"; do
        stop "$name"
    done
    if ((KEEP == 1)); then
        echo "e2e-pull: work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    say "setup failed: $*"
    exit 1
}

# wait_until DEADLINE_MS DESCRIPTION COMMAND...: poll COMMAND every 50 ms until it succeeds.
wait_until() {
    local deadline=$(($(now_ms) + $1)) what="$2"
    shift 2
    while ! "$@" 2>/dev/null; do
        (($(now_ms) < deadline)) || {
            say "timed out waiting for $what"
            return 1
        }
        sleep 0.05
    done
}

ip link set lo up
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:2\n' >"$WORK/resolv.conf"
mount --bind "$WORK/resolv.conf" /etc/resolv.conf
# No name of the test may come from /etc/hosts.
printf '127.0.0.1 localhost\n::1 localhost\n' >"$WORK/hosts"
mount --bind "$WORK/hosts" /etc/hosts

# ---------------------------------------------------------------- certificates

mkdir -p "$CERTS" "$WORK/pki"
(
    cd "$WORK/pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.crt -days 2 -subj "/CN=accel-dns e2e test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout server.key -out server.csr -subj "/CN=registry-1.docker.io" 2>/dev/null
    cat >server.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:registry-1.docker.io,DNS:docker.io,DNS:*.docker.io,DNS:*.docker.com,DNS:production.cloudflare.docker.com,DNS:accel.e2e.test,IP:127.0.0.11,IP:127.0.0.12,IP:127.0.0.13,IP:127.0.0.14,IP:127.0.0.15
EOF
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out server.crt -days 2 -extfile server.ext 2>/dev/null
) || die "openssl"
cp "$WORK/pki/ca.crt" "$CERTS/ca.crt"
CA="$WORK/pki/ca.crt"
SRV_CRT="$WORK/pki/server.crt"
SRV_KEY="$WORK/pki/server.key"

# skopeo: no system policy, registries.conf or credentials count.
printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$WORK/policy.json"
: >"$WORK/registries.conf"
export CONTAINERS_REGISTRIES_CONF="$WORK/registries.conf"
export HOME="$WORK/home"
mkdir -p "$HOME"

# ---------------------------------------------------------------- registries

declare -A REG_ADDR=([accel]=127.0.0.11 [origin]=127.0.0.12 [accel2]=127.0.0.14)

# tcp_open ADDR [PORT]: a TCP connect succeeds.
tcp_open() { timeout 1 bash -c ">/dev/tcp/$1/${2:-443}"; }
https_v2_ok() { curl -sf -o /dev/null --max-time 2 --cacert "$CA" "https://$1/v2/"; }

# Registry mode: "plain" (the registry serves the blobs), or "cdn": as Docker Hub does, blob GETs
# get a 307 to the CDN name production.cloudflare.docker.com (port 8443 here, the registry holds
# 443 on the same address), served from the registry's storage by ci/e2e/edge.py on ADDR:8443.
REG_MODE=plain
CDN_NAME=production.cloudflare.docker.com

# start_registry NAME: docker-registry on REG_ADDR[NAME]:443, access log = its stdout; in "cdn"
# mode also its CDN on REG_ADDR[NAME]:8443.
start_registry() {
    local name="$1" addr="${REG_ADDR[$1]}" dir="$WORK/reg-$1" redirect=""
    mkdir -p "$dir/data"
    if [[ "$REG_MODE" == cdn ]]; then
        redirect="middleware:
  storage:
    - name: redirect
      options:
        baseurl: https://$CDN_NAME:8443/"
    fi
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
$redirect
http:
  addr: $addr:443
  secret: e2e-$name
  tls:
    certificate: $SRV_CRT
    key: $SRV_KEY
EOF
    docker-registry serve "$dir/config.yml" >>"$dir/access.log" 2>>"$dir/registry.log" &
    PIDS["reg-$name"]=$!
    wait_until 10000 "registry $name on $addr:443" https_v2_ok "$addr" ||
        die "registry $name did not start: $(tail -5 "$dir/registry.log")"
    if [[ "$REG_MODE" == cdn ]]; then
        python3 "$HERE/e2e/edge.py" files "$addr" 8443 "$SRV_CRT" "$SRV_KEY" "$dir/data" \
            2>>"$dir/cdn.log" &
        PIDS["cdn-$name"]=$!
        wait_until 5000 "CDN $name on $addr:8443" tcp_open "$addr" 8443 || die "CDN $name"
    fi
}
stop_registry() {
    stop "reg-$1"
    stop "cdn-$1"
}

# registry_mode plain|cdn: restart the accelerator and the origin in that mode (the storage stays).
registry_mode() {
    [[ "$REG_MODE" != "$1" ]] || return 0
    stop_registry accel
    stop_registry origin
    REG_MODE="$1"
    start_registry accel
    start_registry origin
}

# served NAME: the manifest and blob GETs in NAME's access log (the probes' /v2/ GETs do not count).
served() {
    local n
    n=$(grep -cE '"GET /v2/[^ ]+/(manifests|blobs)/' "$WORK/reg-$1/access.log" 2>/dev/null) || true
    echo "${n:-0}"
}

# served_cdn NAME: the blob bytes NAME's CDN sent (200 answers to GETs of stored blob data).
served_cdn() {
    local n
    n=$(grep -cE '"GET /docker/registry/v2/blobs/[^ ]+ HTTP/1.1" 200' "$WORK/reg-$1/cdn.log" 2>/dev/null) || true
    echo "${n:-0}"
}

# site ACCEL ORIGIN ACCEL2: which one of three counts moved ("-" none, "mixed" more than one).
site() {
    local moved=() label
    (($1 == 0)) || moved+=(accel)
    (($2 == 0)) || moved+=(origin)
    (($3 == 0)) || moved+=(accel2)
    case ${#moved[@]} in
    0) label=- ;;
    1) label="${moved[0]}" ;;
    *) label=mixed ;;
    esac
    echo "$label"
}

say "building and pushing the test image"
python3 "$HERE/e2e/make_oci.py" "$WORK/image" latest
for r in accel origin accel2; do
    start_registry "$r"
    skopeo copy --quiet --policy "$WORK/policy.json" --dest-cert-dir "$CERTS" --dest-no-creds \
        "oci:$WORK/image:latest" "docker://${REG_ADDR[$r]}/library/e2e:latest" \
        >>"$WORK/push.log" 2>&1 || die "push to $r: $(tail -3 "$WORK/push.log")"
done

# ---------------------------------------------------------------- the real resolver

dnsmasq --keep-in-foreground --no-resolv --no-hosts \
    --listen-address=127.0.0.53 --bind-interfaces --port=53 --user=root --pid-file= \
    --local-ttl=0 --log-facility="$WORK/dnsmasq.log" \
    --address=/registry-1.docker.io/127.0.0.12 \
    --address=/$CDN_NAME/127.0.0.12 \
    --address=/accel.e2e.test/127.0.0.11 \
    --address=/accel2.e2e.test/127.0.0.14 \
    2>>"$WORK/dnsmasq.log" &
PIDS[dnsmasq]=$!
dnsmasq_up() { [[ "$(dig +short +time=1 +tries=1 @127.0.0.53 registry-1.docker.io A)" == 127.0.0.12 ]]; }
if command -v dig >/dev/null; then
    wait_until 5000 "dnsmasq" dnsmasq_up || die "dnsmasq: $(tail -5 "$WORK/dnsmasq.log")"
else
    wait_until 5000 "dnsmasq" kill -0 "${PIDS[dnsmasq]}" || die "dnsmasq"
fi

# ---------------------------------------------------------------- accel-dns

ADMIN=127.0.0.1:9553
CONF="$WORK/accel-dns.toml"

# write_config RECORDS_TOML: the whole config file in one write (a reload sees all or nothing).
write_config() {
    local body
    body="$(
        cat <<EOF
[server]
listen = ["127.0.0.1:53"]

[upstream]
servers = ["127.0.0.53:53"]
timeout = "2s"

[admin]
listen = "$ADMIN"

[log]
level = "info"

[records]
ttl = 1

$1
EOF
    )"
    printf '%s\n' "$body" >"$CONF"
}

readyz() { curl -sf -o /dev/null --max-time 1 "http://$ADMIN/readyz"; }

start_accel() {
    "$BIN" serve --config "$CONF" >>"$WORK/accel-dns.log" 2>&1 &
    PIDS[accel-dns]=$!
    wait_until 10000 "accel-dns /readyz" readyz || die "accel-dns: $(tail -5 "$WORK/accel-dns.log")"
}
stop_accel() { stop accel-dns; }

metric() { curl -sf --max-time 1 "http://$ADMIN/metrics" | grep -F "$1" || true; }
record_up_is() { metric "accel_dns_record_up{record=\"$1\"}" | grep -qE " $2\$"; }

# ---------------------------------------------------------------- the client

PULLS=0
SERVED=""   # accel, origin, accel2, mixed, or "failed"
API_SITE="" # who answered the registry API (manifests, blob GETs), CDN_SITE: who sent blob bytes
CDN_SITE=""
PULL_MS=0

# pull: one `skopeo copy` of docker.io/library/e2e:latest; sets SERVED from the access logs.
pull() {
    local before_a before_o before_2 before_ca before_co da dor d2 ca co t0 rc=0
    before_a=$(served accel)
    before_o=$(served origin)
    before_2=$(served accel2)
    before_ca=$(served_cdn accel)
    before_co=$(served_cdn origin)
    PULLS=$((PULLS + 1))
    t0=$(now_ms)
    timeout 20 skopeo copy --quiet --policy "$WORK/policy.json" --src-cert-dir "$CERTS" \
        --src-no-creds "docker://docker.io/library/e2e:latest" "dir:$WORK/pull-$PULLS" \
        >>"$WORK/pulls.log" 2>&1 || rc=$?
    PULL_MS=$(($(now_ms) - t0))
    rm -rf "$WORK/pull-$PULLS"
    da=$(($(served accel) - before_a))
    dor=$(($(served origin) - before_o))
    d2=$(($(served accel2) - before_2))
    ca=$(($(served_cdn accel) - before_ca))
    co=$(($(served_cdn origin) - before_co))
    API_SITE=$(site "$da" "$dor" "$d2")
    CDN_SITE=$(site "$ca" "$co" 0)
    if ((rc != 0)); then
        SERVED=failed
    else
        SERVED=$(site $((da + ca)) $((dor + co)) "$d2")
        [[ "$SERVED" != - ]] || SERVED=mixed
    fi
    printf 'pull %d: %s in %d ms (accel +%d, origin +%d, accel2 +%d; CDN accel +%d, origin +%d)\n' \
        "$PULLS" "$SERVED" "$PULL_MS" "$da" "$dor" "$d2" "$ca" "$co" >>"$WORK/pulls.log"
}

# pull_until WANT DEADLINE_MS: pull again and again until one is served by WANT. Sets WAITED_MS
# (from the call to the end of that pull) and STARTED_MS (from the call to the start of that pull).
WAITED_MS=0
STARTED_MS=0
pull_until() {
    local want="$1" t0 deadline start
    t0=$(now_ms)
    deadline=$((t0 + $2))
    while :; do
        start=$(now_ms)
        pull
        if [[ "$SERVED" == "$want" ]]; then
            WAITED_MS=$(($(now_ms) - t0))
            STARTED_MS=$((start - t0))
            return 0
        fi
        (($(now_ms) < deadline)) || return 1
        sleep 0.1
    done
}

# ---------------------------------------------------------------- scenarios

FAILED=()
pass() { say "PASS $*"; }
fail() {
    say "FAIL $*"
    FAILED+=("$1")
}

HC_TLS="health_check = { port = 443, tls = true, ca_file = \"$CA\", path = \"/v2/\", interval = \"1s\", timeout = \"1s\", fall = 2, rise = 1 }"
FAILOVER_BOUND_MS=3000 # fall x interval + 1 s

scenario_a() {
    registry_mode plain
    write_config "[[record]]
name = \"registry-1.docker.io\"
a = [\"127.0.0.11\"]"
    start_accel
    local i ok=1 o0 times=()
    o0=$(served origin)
    for i in 1 2 3; do
        pull
        times+=("$(secs "$PULL_MS") s")
        [[ "$SERVED" == accel ]] || ok=0
    done
    stop_accel
    if ((ok == 1)) && (($(served origin) == o0)); then
        pass "a: 3 pulls through the accelerator, none at the origin (pulls: ${times[*]})"
    else
        fail a "pulls not all from the accelerator (last: $SERVED; see $WORK/pulls.log)"
    fi
}

# failover RECORD_TOML LETTER: the accelerator registry stops -> pulls reach the origin within the
# bound; it starts again -> they come back.
failover() {
    local record="$1" letter="$2" what="$3" down_ms back_ms
    registry_mode plain
    write_config "$record"
    start_accel
    pull
    if [[ "$SERVED" != accel ]]; then
        fail "$letter" "$what: the first pull was not from the accelerator ($SERVED)"
        stop_accel
        return
    fi
    stop_registry accel
    if ! pull_until origin 15000; then
        fail "$letter" "$what: no pull reached the origin within 15 s after the stop (last: $SERVED)"
        start_registry accel
        stop_accel
        return
    fi
    down_ms=$WAITED_MS
    local t_start ready_ms
    t_start=$(now_ms)
    start_registry accel
    ready_ms=$(($(now_ms) - t_start))
    if ! pull_until accel 15000; then
        fail "$letter" "$what: pulls did not come back to the accelerator within 15 s (last: $SERVED)"
        stop_accel
        return
    fi
    back_ms=$(($(now_ms) - t_start))
    stop_accel
    if ((down_ms <= FAILOVER_BOUND_MS)); then
        pass "$letter: $what: accelerator stopped -> first origin pull done after $(secs "$down_ms") s (bound $(secs "$FAILOVER_BOUND_MS") s); started again -> its /v2/ answers after $(secs "$ready_ms") s, first accelerator pull done $(secs "$back_ms") s after the start"
    else
        fail "$letter" "$what: failover took $(secs "$down_ms") s (bound $(secs "$FAILOVER_BOUND_MS") s)"
    fi
}

scenario_b() {
    failover "[[record]]
name = \"registry-1.docker.io\"
a = [\"127.0.0.11\"]
$HC_TLS" b "A record, tls+path probe"
}

scenario_c() {
    registry_mode plain
    local edge
    python3 "$HERE/e2e/edge.py" close 127.0.0.13 443 2>>"$WORK/edge.log" &
    PIDS[edge-close]=$!
    python3 "$HERE/e2e/edge.py" http503 127.0.0.15 443 "$SRV_CRT" "$SRV_KEY" 2>>"$WORK/edge.log" &
    PIDS[edge-503]=$!
    wait_until 5000 "edge 127.0.0.13" tcp_open 127.0.0.13 || die "edge close"
    wait_until 5000 "edge 127.0.0.15" tcp_open 127.0.0.15 || die "edge 503"

    for edge in "127.0.0.13 TCP up, TLS fails" "127.0.0.15 TLS up, /v2/ 503"; do
        write_config "[[record]]
name = \"registry-1.docker.io\"
a = [\"${edge%% *}\"]
$HC_TLS"
        start_accel
        if pull_until origin 15000 && ((WAITED_MS <= FAILOVER_BOUND_MS)); then
            pass "c: edge ${edge}, tls+path probe: the record stepped aside, first origin pull done $(secs "$WAITED_MS") s after start (bound $(secs "$FAILOVER_BOUND_MS") s)"
        else
            fail c "edge ${edge}, tls+path probe: no origin pull within the bound (last: $SERVED after $(secs "$WAITED_MS") s)"
        fi
        stop_accel
    done

    # A TCP-only probe sees the layer-4 edge up: the record stays, every pull in the window fails.
    write_config "[[record]]
name = \"registry-1.docker.io\"
a = [\"127.0.0.13\"]
health_check = { port = 443, interval = \"1s\", timeout = \"1s\", fall = 2, rise = 1 }"
    start_accel
    local t_end bad=0 n=0 up
    t_end=$(($(now_ms) + FAILOVER_BOUND_MS + 1000))
    while (($(now_ms) < t_end)); do
        pull
        n=$((n + 1))
        [[ "$SERVED" == failed ]] || bad=1
        record_up_is registry-1.docker.io 1 || bad=1
    done
    up="$(metric 'accel_dns_record_up{record="registry-1.docker.io"}')"
    stop_accel
    if ((bad == 0)); then
        pass "c: edge 127.0.0.13, TCP-only probe: the record stays up for $(secs $((FAILOVER_BOUND_MS + 1000))) s ($up) and all $n pulls fail"
    else
        fail c "TCP-only probe: the record left or a pull succeeded ($up, last pull $SERVED)"
    fi
    stop edge-close
    stop edge-503
}

scenario_d() {
    failover "[[record]]
name = \"registry-1.docker.io\"
cname = \"accel.e2e.test\"
$HC_TLS" d "CNAME record -> accel.e2e.test, tls+path probe"
}

scenario_e() {
    registry_mode plain
    local record11 record14
    record11="[[record]]
name = \"registry-1.docker.io\"
a = [\"127.0.0.11\"]"
    record14="${record11/127.0.0.11/127.0.0.14}"
    write_config "$record11"
    start_accel
    pull
    if [[ "$SERVED" != accel ]]; then
        fail e "the first pull was not from the accelerator ($SERVED)"
        stop_accel
        return
    fi
    write_config "$record14" # in place: the same inode, truncated and written
    if pull_until accel2 10000 && ((STARTED_MS <= 2000)); then
        pass "e: config rewritten in place -> a pull starting $(secs "$STARTED_MS") s after the write went to 127.0.0.14 (done at $(secs "$WAITED_MS") s; bound: started within 2 s)"
    else
        fail e "pulls did not follow the rewrite within 2 s (last: $SERVED, started $(secs "$STARTED_MS") s after)"
    fi
    stop_accel
}

has_bundles() { "$BIN" registries >/dev/null 2>&1; }

REC_API='[[record]]
name = "registry-1.docker.io"
a = ["127.0.0.11"]'
REC_CDN="[[record]]
name = \"$CDN_NAME\"
a = [\"127.0.0.11\"]"
REC_HUB='[[record]]
registry = "docker-hub"
a = ["127.0.0.11"]'

# f: blobs come from a CDN name, as on Docker Hub. A record for the API name alone sends the blob
# bytes to the origin; a bundle record (or, in a build without bundles, a record per name) sends
# every part of the pull to the accelerator.
scenario_f() {
    registry_mode cdn
    local one_api one_cdn how
    write_config "$REC_API"
    start_accel
    pull
    one_api=$API_SITE
    one_cdn=$CDN_SITE
    stop_accel
    if has_bundles; then
        how='registry = "docker-hub"'
        write_config "$REC_HUB"
    else
        how="a record per name (this build has no bundles: the bundle part is not tested)"
        write_config "$REC_API

$REC_CDN"
    fi
    start_accel
    pull
    stop_accel
    if [[ "$one_api" == accel && "$one_cdn" == origin && "$SERVED" == accel ]]; then
        pass "f: blobs on $CDN_NAME: a record for registry-1.docker.io alone -> API accel, blob bytes origin; $how -> all from the accelerator ($(secs "$PULL_MS") s)"
    else
        fail f "registry-1.docker.io alone: API $one_api, CDN $one_cdn (want accel, origin); $how: $SERVED (API $API_SITE, CDN $CDN_SITE)"
    fi
}

# g: the bundle minus registry-1.docker.io: the API goes to the origin, the CDN still to the
# accelerator, and GET /unmapped names the name that was left out.
scenario_g() {
    has_bundles || {
        say "SKIP g: this build has no registry bundles (accel-dns registries fails)"
        return
    }
    registry_mode cdn
    write_config "$REC_HUB
exclude = [\"registry-1.docker.io\"]"
    start_accel
    pull
    local unmapped code
    unmapped="$(curl -s --max-time 2 -w '\n%{http_code}' "http://$ADMIN/unmapped" || true)"
    code="${unmapped##*$'\n'}"
    stop_accel
    if [[ "$API_SITE" != origin || "$CDN_SITE" != accel ]]; then
        fail g "exclude = [\"registry-1.docker.io\"]: API $API_SITE, CDN $CDN_SITE (want origin, accel)"
    elif [[ "$code" == 404 ]]; then
        pass "g: exclude = [\"registry-1.docker.io\"]: API origin, blob bytes accel ($(secs "$PULL_MS") s); SKIP of its /unmapped part: this build has no GET /unmapped"
    elif grep -qE '"name": *"registry-1\.docker\.io"' <<<"$unmapped"; then
        pass "g: exclude = [\"registry-1.docker.io\"]: API origin, blob bytes accel ($(secs "$PULL_MS") s), and /unmapped lists registry-1.docker.io"
    else
        fail g "exclude: /unmapped ($code) does not list registry-1.docker.io: $(head -c 300 <<<"$unmapped")"
    fi
}

IFS=, read -r -a WANT <<<"$ONLY"
for s in "${WANT[@]}"; do
    case ",$ALL," in
    *",$s,"*) ;;
    *)
        echo "e2e-pull: unknown scenario '$s' (known: $ALL)" >&2
        exit 2
        ;;
    esac
done
for s in "${WANT[@]}"; do
    say "scenario $s"
    "scenario_$s"
done

say "done: ${#WANT[@]} scenarios, $PULLS pulls, $(secs $(($(now_ms) - SCRIPT_START))) s"
if ((${#FAILED[@]} > 0)); then
    say "FAILED: ${FAILED[*]}"
    for f in pulls.log accel-dns.log dnsmasq.log edge.log reg-accel/registry.log; do
        [[ -s "$WORK/$f" ]] || continue
        echo "---- last lines of $f"
        tail -n 15 "$WORK/$f"
    done
    ((KEEP == 1)) || echo "(--keep keeps every log, in a directory under /tmp)"
    exit 1
fi
