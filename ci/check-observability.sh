#!/usr/bin/env bash
# ci/check-observability.sh BIN: checks the alerts and the dashboard of accel-dns, offline and then
# against a live accel-dns (BIN) scraped by a real Prometheus.
#
#   1. promtool check rules, promtool test rules (deploy/prometheus/tests/);
#   2. python3 ci/observability.py check: the PrometheusRule matches the rules file, every alert
#      has its annotations and runbook section, the dashboard's shape, the PodMonitor's port;
#   3. live, on loopback only: a tiny DNS responder as the upstream (after a closed port, so that
#      upstream errors are counted), accel-dns on ephemeral ports with a record, a health-checked
#      record whose port is closed, and a watched zone; a few hundred queries with dig (records,
#      forwarded names, a watched unmapped name); Debian's prometheus scraping it every second and
#      loading the rules; once it has the samples, `observability.py live` evaluates every rule
#      and every dashboard query through the HTTP API: each must parse and name only metrics that
#      were scraped.
# For CI on Debian bookworm as root: installs prometheus, python3-yaml and dig when missing.
# Ends with "observability-checks: passed" or exits non-zero.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${1:?usage: ci/check-observability.sh ACCEL_DNS_BINARY}
[[ -x "$BIN" ]] || { echo "check-observability: $BIN is not an executable file" >&2; exit 2; }
PYTHON=${PYTHON:-python3}
export PYTHONDONTWRITEBYTECODE=1

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
[[ -x /usr/bin/prometheus ]] || missing+=(prometheus)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
"$PYTHON" -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
if ((${#missing[@]})); then
    echo "installing from Debian: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-observability.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }
# wait_for DESCRIPTION SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds or the
# deadline passes.
wait_for() {
    local what=$1 seconds=$2 deadline
    shift 2
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "check-observability: timed out after ${seconds}s waiting for $what" >&2
            return 1
        fi
        sleep 0.2
    done
}
# A free loopback TCP port (bound and released: the only race is with another process on this
# machine picking the same ephemeral port in the next second).
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

step "promtool check rules"
# The PrometheusRule is not a rules file (apiVersion, spec): its spec is checked equal to this
# source by observability.py check below.
promtool check rules deploy/prometheus/accel-dns.rules.yml

step "promtool test rules"
promtool test rules deploy/prometheus/tests/*.test.yml

step "observability.py check"
"$PYTHON" ci/observability.py check

step "live: upstream, accel-dns, load, prometheus"
"$PYTHON" ci/observability.py upstream >"$WORK/upstream.port" 2>"$WORK/upstream.log" &
pids+=($!)
wait_for "the upstream's port" 10 test -s "$WORK/upstream.port"
upstream_port=$(cat "$WORK/upstream.port")
closed_port=$(free_port)

cat >"$WORK/accel-dns.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]
[upstream]
# A closed port first: its errors are counted (accel_dns_upstream_errors_total), then the responder.
servers = ["127.0.0.1:$closed_port", "127.0.0.1:$upstream_port"]
timeout = "2s"
[admin]
listen = "127.0.0.1:0"
[log]
format = "json"
[records]
watch = ["registry.test"]

[[record]]
name = "mapped.registry.test"
a = ["203.0.113.10"]

[[record]]
name = "*.cdn.registry.test"
a = ["203.0.113.11"]

[[record]]
name = "checked.registry.test"
a = ["127.0.0.1"]
health_check = { port = $closed_port, interval = "200ms", timeout = "100ms", fall = 1, rise = 1 }
EOF
"$BIN" check --config "$WORK/accel-dns.toml"
"$BIN" serve --config "$WORK/accel-dns.toml" 2>"$WORK/accel-dns.log" &
pids+=($!)
wait_for "accel-dns to serve" 20 grep -q '"accel-dns serving"' "$WORK/accel-dns.log" ||
    { cat "$WORK/accel-dns.log" >&2; exit 1; }
serving=$(grep '"accel-dns serving"' "$WORK/accel-dns.log" | head -n 1)
dns_port=$(sed -E 's/.*"dns":"\[127\.0\.0\.1:([0-9]+)\]".*/\1/' <<<"$serving")
admin=$(sed -E 's/.*"admin":"Some\((127\.0\.0\.1:[0-9]+)\)".*/\1/' <<<"$serving")
[[ "$dns_port" =~ ^[0-9]+$ && "$admin" =~ ^127\.0\.0\.1:[0-9]+$ ]] ||
    { echo "check-observability: cannot read the bound addresses from: $serving" >&2; exit 1; }
echo "accel-dns: dns 127.0.0.1:$dns_port, admin $admin; upstream 127.0.0.1:$upstream_port"
wait_for "/readyz" 10 curl -fsS "http://$admin/readyz"
wait_for "the probe to step checked.registry.test aside" 20 \
    sh -c "curl -fsS 'http://$admin/metrics' | grep -q '^accel_dns_record_up{record=\"checked.registry.test\"} 0'"

# 400 queries in one dig process (batch file): records, a wildcard, the stepped-aside record,
# forwarded names, AAAA, and an unmapped name under the watched zone.
for i in $(seq 1 50); do
    printf '%s\n' \
        "mapped.registry.test A" \
        "blob$i.cdn.registry.test A" \
        "checked.registry.test A" \
        "mapped.registry.test AAAA" \
        "name$i.example.test A" \
        "example.test A" \
        "unmapped.registry.test A" \
        "auth$((i % 5)).registry.test A"
done >"$WORK/queries"
queries=$(wc -l <"$WORK/queries")
dig @127.0.0.1 -p "$dns_port" +tries=1 +time=3 +noall +answer -f "$WORK/queries" >"$WORK/dig.out"
grep -q '203.0.113.10' "$WORK/dig.out" || { echo "no record answer from accel-dns" >&2; exit 1; }
grep -q '192.0.2.1' "$WORK/dig.out" || { echo "no forwarded answer through accel-dns" >&2; exit 1; }

prom_port=$(free_port)
prom="http://127.0.0.1:$prom_port"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/prometheus/accel-dns.rules.yml
scrape_configs:
  - job_name: accel-dns
    static_configs:
      - targets: ["$admin"]
EOF
/usr/bin/prometheus --config.file "$WORK/prometheus.yml" --storage.tsdb.path "$WORK/tsdb" \
    --web.listen-address "127.0.0.1:$prom_port" >"$WORK/prometheus.log" 2>&1 &
pids+=($!)
wait_for "prometheus to be ready" 60 curl -fsS "$prom/-/ready" ||
    { cat "$WORK/prometheus.log" >&2; exit 1; }
# Every query of the load in the scraped data, then two more scrapes so that rate() has samples.
has_all_queries() {
    curl -fsS --get "$prom/api/v1/query" --data-urlencode "query=sum(accel_dns_queries_total) >= $queries" |
        grep -q '"result":\[{'
}
wait_for "prometheus to scrape the load" 60 has_all_queries ||
    { tail -n 20 "$WORK/prometheus.log" >&2; exit 1; }
scrapes() {
    curl -fsS --get "$prom/api/v1/query" --data-urlencode 'query=count_over_time(up{job="accel-dns"}[1m]) >= 3' |
        grep -q '"result":\[{'
}
wait_for "three scrapes" 30 scrapes
# The rules loaded without errors.
curl -fsS "$prom/api/v1/rules" | "$PYTHON" -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
bad = [r["name"] for g in groups for r in g["rules"] if r.get("health") == "err"]
rules = sum(len(g["rules"]) for g in groups)
print(f"prometheus loaded {rules} rules")
sys.exit(f"rules in error: {bad}" if bad or not rules else 0)'

step "observability.py live"
"$PYTHON" ci/observability.py live "$prom"

echo "observability-checks: passed"
