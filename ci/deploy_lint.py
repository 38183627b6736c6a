#!/usr/bin/env python3
"""Offline checks of the deployment files that no off-the-shelf linter makes; run by ci/check-deploy.sh.

    deploy_lint.py render-plain DIR             print the resources a kustomization lists (fallback
                                                when no kustomize is installed): every file must exist
    deploy_lint.py standalone                   print the YAML files under deploy/kubernetes that no
                                                kustomization lists (examples), except *-patch.yaml
    deploy_lint.py policy FILE...               the deployment contract (STYLE.md, issue 5) on rendered
                                                manifests: security context, probes, ConfigMap mounted
                                                as a directory, ports that match the config, ...
    deploy_lint.py configs OUTDIR [LABEL=]FILE...
                                                validate every accel-dns config (ConfigMap key
                                                accel-dns.toml in the manifests, or a .toml file)
                                                against the README configuration reference and write each to OUTDIR
    deploy_lint.py init-args FILE               print the node DaemonSet's init container's
                                                accel-dns arguments, one a line
    deploy_lint.py smoke BINARY CONFIG          serve CONFIG and ask it for its records (run it in
                                                `unshare -m -n`: only loopback, nothing leaves)

Needs Python 3.11 (tomllib) and PyYAML. Exit status 1 with one line per problem on failure.
"""

from __future__ import annotations

import ipaddress
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "kubernetes"
CONFIG_KEY = "accel-dns.toml"
CONFIG_DIR = "/etc/accel-dns"
CONFIG_ARGS = ["serve", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"]

# Every image under deploy/ is this repository: the deployment pulls nothing but accel-dns
# (the init container, the node-resolv loop and the lookup example run its subcommands).
ACCEL_DNS_IMAGE = "registry.example.com/accel-dns"
ACCEL_DNS_BINARY = "/usr/local/bin/accel-dns"


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def exit(self) -> None:
        for item in self.items:
            print(item)
        sys.exit(1 if self.items else 0)


def load_docs(path: Path) -> list[dict]:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------- kustomizations
def kustomization_entries(directory: Path) -> tuple[list[Path], list[Path]]:
    """The (resources, patches) a kustomization.yaml names, as paths."""
    data = yaml.safe_load((directory / "kustomization.yaml").read_text()) or {}
    resources = [directory / r for r in data.get("resources", [])]
    patches = []
    for p in data.get("patches", []) + data.get("patchesStrategicMerge", []):
        path = p.get("path") if isinstance(p, dict) else p
        if path:
            patches.append(directory / path)
    return resources, patches


def render_plain(directory: Path, problems: Problems) -> list[str]:
    out: list[str] = []
    resources, patches = kustomization_entries(directory)
    if patches:
        problems.add(rel(directory), "uses patches: a real kustomize is needed to render it")
    for resource in resources:
        if resource.is_dir():
            if not (resource / "kustomization.yaml").is_file():
                problems.add(rel(directory), f"resource {rel(resource)} is a directory without kustomization.yaml")
                continue
            out += render_plain(resource, problems)
        elif resource.is_file():
            out.append(resource.read_text())
        else:
            problems.add(rel(directory), f"resource {rel(resource)} does not exist")
    return out


def cmd_render_plain(args: list[str]) -> None:
    problems = Problems()
    docs = render_plain(Path(args[0]), problems)
    if problems.items:
        problems.exit()
    print("\n---\n".join(d.strip("\n") for d in docs))


def cmd_standalone(_: list[str]) -> None:
    listed: set[Path] = set()
    for kustomization in K8S_DIR.rglob("kustomization.yaml"):
        resources, patches = kustomization_entries(kustomization.parent)
        listed.update(p.resolve() for p in resources + patches)
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path.name.endswith("-patch.yaml"):
            continue
        if path.resolve() not in listed:
            print(rel(path))


# ----------------------------------------------------------------- accel-dns configs (README "Configuration reference")
DURATION = re.compile(r"^\s*(\d+(\.\d+)?\s*(ns|us|ms|s|sec|m|min|h|hr|d|days?)\s*)+$")
DOMAIN_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")

SCHEMA = {
    "server": {"listen": list, "allow": list, "tcp_idle_timeout": "duration", "max_tcp_connections": int},
    "upstream": {"servers": list, "timeout": "duration"},
    "cache": {
        "max_entries": int,
        "min_ttl": "duration",
        "max_ttl": "duration",
        "negative_max_ttl": "duration",
        "serve_stale": "duration",
    },
    "admin": {"listen": str},
    "log": {"level": str, "format": str, "queries": bool},
    "records": {"ttl": int, "hosts_files": list, "watch": list},
}
RECORD_KEYS = {
    "name": str,
    "registry": str,
    "exclude": list,
    "a": list,
    "aaaa": list,
    "cname": str,
    "ttl": int,
    "health_check": dict,
    "clients": list,
}
HEALTH_KEYS = {
    "port": int,
    "interval": "duration",
    "timeout": "duration",
    "fall": int,
    "rise": int,
    "tls": (bool, str),
    "ca_file": str,
    "path": str,
}
# The built-in registry bundles (README "Configuration reference", `registry`): the same data file the binary embeds.
REGISTRIES_FILE = Path(__file__).resolve().parent.parent / "src" / "registries.toml"


def registry_bundles() -> dict[str, list[dict]]:
    """Bundle id -> its [[bundle.name]] entries (name, sni, ...)."""
    with REGISTRIES_FILE.open("rb") as f:
        data = tomllib.load(f)
    return {bundle["id"]: bundle["name"] for bundle in data.get("bundle", [])}


def record_names(record: dict, bundles: dict[str, list[dict]]) -> list[tuple[str, str]]:
    """(name, a concrete name to ask for it) of a record, a registry record expanded minus exclude."""
    if "registry" in record:
        exclude = {str(e).rstrip(".").lower() for e in record.get("exclude", [])}
        return [
            (n["name"], n.get("sni", n["name"]))
            for n in bundles.get(record["registry"], [])
            if n["name"] not in exclude
        ]
    name = record["name"]
    return [(name, name.replace("*", "registry-1", 1))]


def parse_socket_addr(text: str) -> tuple[ipaddress._BaseAddress, int] | None:
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([0-9.]+):(\d+)", text)
    if not m:
        return None
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not 0 < int(port) < 65536:
        return None
    return ip, int(port)


def valid_domain(name: str, wildcard: bool) -> bool:
    labels = name.rstrip(".").split(".")
    if wildcard and labels[0] == "*":
        labels = labels[1:]
    return bool(labels) and len(name.rstrip(".")) <= 253 and all(DOMAIN_LABEL.match(label) for label in labels)


def check_type(where: str, key: str, value, expected, problems: Problems) -> bool:
    if expected == "duration":
        if not (isinstance(value, str) and DURATION.match(value)):
            problems.add(where, f"{key} = {value!r} is not a duration such as \"2s\"")
            return False
        return True
    if (expected is int and isinstance(value, bool)) or not isinstance(value, expected):
        problems.add(where, f"{key} has the wrong type ({type(value).__name__})")
        return False
    return True


def validate_config(where: str, text: str, problems: Problems) -> dict | None:
    """Mirrors the validation of the README "Configuration reference"; `accel-dns check` (when CI has the binary) is the authority."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problems.add(where, f"not valid TOML: {e}")
        return None
    for section, value in config.items():
        if section == "record":
            continue
        if section not in SCHEMA:
            problems.add(where, f"unknown section [{section}]")
            continue
        for key, item in value.items():
            if key not in SCHEMA[section]:
                problems.add(where, f"unknown key {section}.{key}")
            else:
                check_type(where, f"{section}.{key}", item, SCHEMA[section][key], problems)

    server = config.get("server", {})
    listen = server.get("listen", ["127.0.0.1:5353"])
    parsed_listen = []
    for addr in listen:
        parsed = parse_socket_addr(addr) if isinstance(addr, str) else None
        if parsed is None:
            problems.add(where, f"server.listen {addr!r} is not an IP:PORT")
        else:
            parsed_listen.append(parsed)
    for net in server.get("allow", []):
        try:
            ipaddress.ip_network(net)
        except ValueError:
            problems.add(where, f"server.allow {net!r} is not a network")
    for net in server.get("allow", []):
        if str(net) in ("0.0.0.0/0", "::/0"):
            problems.add(where, "server.allow lets the whole internet in: never an open resolver")

    servers = config.get("upstream", {}).get("servers", ["system"])
    if not servers:
        problems.add(where, "upstream.servers is empty")
    for server_spec in servers:
        if server_spec == "system":
            continue
        parsed = parse_socket_addr(server_spec) if ":" in server_spec and not _is_bare_v6(server_spec) else None
        if parsed is None:
            try:
                parsed = (ipaddress.ip_address(server_spec), 53)
            except ValueError:
                problems.add(where, f"upstream {server_spec!r} is not \"system\", IP or IP:PORT")
                continue
        for ip, port in parsed_listen:
            if port == parsed[1] and (ip == parsed[0] or (ip.is_unspecified and parsed[0].is_loopback)):
                problems.add(where, f"upstream {server_spec} is an address this server listens on")

    admin = config.get("admin", {}).get("listen", "127.0.0.1:9553")
    if admin and parse_socket_addr(admin) is None:
        problems.add(where, f"admin.listen {admin!r} is not an IP:PORT")
    if config.get("log", {}).get("format", "text") not in ("text", "json"):
        problems.add(where, "log.format is neither text nor json")

    records = config.get("record", [])
    if not isinstance(records, list):
        problems.add(where, "record must be an array of tables ([[record]])")
        records = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    bundles = registry_bundles()
    for i, record in enumerate(records, 1):
        rwhere = f"{where} [[record]] #{i}"
        for key, item in record.items():
            if key not in RECORD_KEYS:
                problems.add(rwhere, f"unknown key {key}")
            else:
                check_type(rwhere, key, item, RECORD_KEYS[key], problems)
        name = record.get("name")
        registry = record.get("registry")
        if (name is None) == (registry is None):
            problems.add(rwhere, "needs exactly one of name and registry")
            continue
        if registry is not None:
            if registry not in bundles:
                problems.add(rwhere, f"unknown registry {registry!r} (known: {', '.join(bundles)})")
                continue
            known = {n["name"] for n in bundles[registry]}
            for excluded in record.get("exclude", []):
                if str(excluded).rstrip(".").lower() not in known:
                    problems.add(rwhere, f"exclude {excluded!r} is not a name of registry {registry}")
            if isinstance(record.get("health_check", {}).get("tls"), str):
                problems.add(rwhere, "health_check tls = NAME on a registry record (write tls = true)")
        elif "exclude" in record:
            problems.add(rwhere, "exclude without registry")
        if name is not None and (not isinstance(name, str) or not valid_domain(name, wildcard=True) or "*" in name.lstrip("*")):
            problems.add(rwhere, f"name {name!r} is not a domain name or a leading *. wildcard")
            continue
        addresses = record.get("a", []) + record.get("aaaa", [])
        for family, key in ((4, "a"), (6, "aaaa")):
            for addr in record.get(key, []):
                try:
                    if ipaddress.ip_address(addr).version != family:
                        raise ValueError
                except ValueError:
                    problems.add(rwhere, f"{key} {addr!r} is not an IPv{family} address")
        cname = record.get("cname")
        if cname is not None and addresses:
            problems.add(rwhere, "has both cname and addresses")
        if cname is None and not addresses:
            problems.add(rwhere, "has neither cname nor an address")
        if cname is not None and not valid_domain(cname, wildcard=False):
            problems.add(rwhere, f"cname {cname!r} is not a domain name")
        health = record.get("health_check")
        if health is not None:
            if "ca_file" in health and health.get("tls") in (None, False):
                problems.add(rwhere, "health_check ca_file without tls")
            if "path" in health and not str(health["path"]).startswith("/"):
                problems.add(rwhere, f"health_check path {health['path']!r} is not an absolute path")
            for key, item in health.items():
                if key not in HEALTH_KEYS:
                    problems.add(rwhere, f"unknown health_check key {key}")
                else:
                    check_type(rwhere, f"health_check.{key}", item, HEALTH_KEYS[key], problems)
            if "port" not in health:
                problems.add(rwhere, "health_check without port")
        clients = record.get("clients") or []
        for net in clients:
            try:
                ipaddress.ip_network(net)
            except ValueError:
                problems.add(rwhere, f"clients {net!r} is not a network")
        if name is not None:
            key = (name.rstrip(".").lower(), tuple(sorted(clients)))
            if key in seen:
                problems.add(rwhere, f"{name} appears twice with the same clients")
            seen.add(key)
    # A bundle's name yields to an explicit record of the same clients; two
    # bundles giving one name to the same clients is an error.
    from_bundles: set[tuple[str, tuple[str, ...]]] = set()
    for i, record in enumerate(records, 1):
        if record.get("registry") not in bundles or "name" in record:
            continue
        clients = tuple(sorted(record.get("clients") or []))
        for bundle_name, _ in record_names(record, bundles):
            key = (bundle_name, clients)
            if key in seen:
                continue
            if key in from_bundles:
                problems.add(f"{where} [[record]] #{i}", f"{bundle_name} comes from two registry records with the same clients")
            from_bundles.add(key)
    return config


def _is_bare_v6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def configs_in(docs: list[dict]) -> list[tuple[dict, str]]:
    return [
        (doc, doc["data"][CONFIG_KEY])
        for doc in docs
        if doc.get("kind") == "ConfigMap" and CONFIG_KEY in (doc.get("data") or {})
    ]


def cmd_configs(args: list[str]) -> None:
    problems = Problems()
    outdir = Path(args[0])
    outdir.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    for arg in args[1:]:
        # LABEL=PATH names a rendered file by what it was rendered from.
        label, _, name = arg.rpartition("=")
        path = Path(name)
        label = label or rel(path)
        if path.suffix == ".toml":
            stem = f"{path.resolve().parent.name}-{path.stem}"
            items = [(label, path.read_text(), stem)]
        else:
            items = [
                (
                    f"{label} ConfigMap {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}",
                    text,
                    f"{doc['metadata'].get('namespace', 'default')}-{doc['metadata']['name']}",
                )
                for doc, text in configs_in(load_docs(path))
            ]
        for where, text, stem in items:
            validate_config(where, text, problems)
            if stem in written:
                continue
            written.add(stem)
            (outdir / f"{stem}.toml").write_text(text)
            print(f"{outdir / (stem + '.toml')}\t{where}")
    if problems.items:
        problems.exit()


# ----------------------------------------------------------------- manifests
def pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") in ("Deployment", "DaemonSet", "StatefulSet"):
        return doc["spec"]["template"]["spec"]
    if doc.get("kind") == "Pod":
        return doc["spec"]
    return None


def port_by_name(container: dict, name: str) -> dict | None:
    return next((p for p in container.get("ports", []) if p.get("name") == name), None)


def check_accel_dns_container(where: str, sidecar: bool, spec: dict, c: dict, config: dict | None, problems: Problems) -> None:
    pod_sc = spec.get("securityContext", {})
    sc = c.get("securityContext", {})
    if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
        problems.add(where, "accel-dns must set runAsNonRoot: true")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) != 65532:
        problems.add(where, "accel-dns must run as user 65532 (distroless nonroot)")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.add(where, "accel-dns must set readOnlyRootFilesystem: true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.add(where, "accel-dns must set allowPrivilegeEscalation: false")
    caps = sc.get("capabilities", {})
    if caps.get("drop") != ["ALL"]:
        problems.add(where, "accel-dns must drop ALL capabilities")
    if caps.get("add") != ["NET_BIND_SERVICE"]:
        problems.add(where, "accel-dns must add exactly NET_BIND_SERVICE (the binary's file capability needs it)")
    if not c.get("resources", {}).get("limits", {}).get("memory"):
        problems.add(where, "accel-dns needs a memory limit")
    if c.get("args") != CONFIG_ARGS:
        problems.add(where, f"accel-dns args must be {CONFIG_ARGS}")

    # The config: a ConfigMap volume mounted as the directory, never a subPath.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = [m for m in c.get("volumeMounts", []) if m["name"] in volumes and "configMap" in volumes[m["name"]]]
    config_mounts = [m for m in mounts if m.get("mountPath") == CONFIG_DIR]
    if not config_mounts:
        problems.add(where, f"no ConfigMap mounted at {CONFIG_DIR}")
    for m in mounts:
        if "subPath" in m or "subPathExpr" in m:
            problems.add(where, f"ConfigMap volume {m['name']} mounted with subPath: it would never see updates")
    for m in config_mounts:
        if volumes[m["name"]]["configMap"].get("items"):
            problems.add(where, f"ConfigMap volume {m['name']} selects items: mount the whole ConfigMap")

    probes = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in probes.items():
        if probe == "readinessProbe" and sidecar:
            continue  # a sidecar's readiness would take the CoreDNS pod out of the kube-dns Service
        http = c.get(probe, {}).get("httpGet")
        if not http or http.get("path") != path:
            problems.add(where, f"{probe} must be an httpGet of {path}")
            continue
        port = http.get("port")
        named = port_by_name(c, port) if isinstance(port, str) else {"containerPort": port}
        if named is None:
            problems.add(where, f"{probe} port {port!r} is not a port of the container")
        elif config is not None:
            admin = config.get("admin", {}).get("listen", "127.0.0.1:9553")
            parsed = parse_socket_addr(admin) if admin else None
            if parsed is None:
                problems.add(where, "probes need the admin endpoint, but [admin] listen is off")
            else:
                ip, admin_port = parsed
                if admin_port != named["containerPort"]:
                    problems.add(where, f"{probe} port {named['containerPort']} is not admin.listen's {admin_port}")
                if ip.is_loopback and not http.get("host"):
                    problems.add(where, "admin.listen is loopback but the kubelet probes the pod IP")

    if config is not None:
        # Every listen port is declared over UDP and TCP.
        declared = {(p["containerPort"], p.get("protocol", "TCP")) for p in c.get("ports", [])}
        for addr in config.get("server", {}).get("listen", ["127.0.0.1:5353"]):
            parsed = parse_socket_addr(addr)
            if parsed and not {(parsed[1], "UDP"), (parsed[1], "TCP")} <= declared:
                problems.add(where, f"listen port {parsed[1]} is not declared as a container port over UDP and TCP")


def cmd_policy(args: list[str]) -> None:
    problems = Problems()
    node_addresses: set[str] = set()
    address_users: list[tuple[str, str]] = []
    for arg in args:
        path = Path(arg)
        docs = load_docs(path)
        configmaps = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs if d.get("kind") == "ConfigMap"}
        workloads = [d for d in docs if pod_spec(d) is not None]
        for doc in workloads:
            kind, meta = doc["kind"], doc["metadata"]
            where = f"{rel(path)} {kind} {meta.get('namespace', '')}/{meta['name']}"
            spec = pod_spec(doc)
            namespace = meta.get("namespace")
            check_images(where, meta["name"], spec, problems)
            for volume in spec.get("volumes", []):
                # Ours only: a workload we patch (CoreDNS) has ConfigMaps of its own.
                if "configMap" in volume and volume["configMap"]["name"].startswith("accel-dns") and (namespace, volume["configMap"]["name"]) not in configmaps:
                    problems.add(where, f"volume {volume['name']} names ConfigMap {volume['configMap']['name']}, which this build does not contain")
            config = None
            for container in spec.get("containers", []):
                if container["name"] != "accel-dns":
                    continue
                for volume in spec.get("volumes", []):
                    cm = configmaps.get((namespace, volume.get("configMap", {}).get("name")))
                    if cm and CONFIG_KEY in cm.get("data", {}):
                        config = validate_config(where + " (its config)", cm["data"][CONFIG_KEY], problems)
                sidecar = meta["name"] != "accel-dns"
                check_accel_dns_container(f"{where} container accel-dns", sidecar, spec, container, config, problems)
                if config is not None and kind == "DaemonSet":
                    for addr in config.get("server", {}).get("listen", []):
                        parsed = parse_socket_addr(addr)
                        if parsed and parsed[0].is_link_local:
                            node_addresses.add(str(parsed[0]))
            # Who else names the node-local address: the node-resolv loop, dnsPolicy None pods.
            for c in spec.get("containers", []):
                cmd = c.get("command", []) + c.get("args", [])
                for i, arg in enumerate(cmd[:-1]):
                    if arg == "--address":
                        address_users.append((f"{where} container {c['name']} --address", cmd[i + 1]))
            if spec.get("dnsPolicy") == "None":
                for ns in spec.get("dnsConfig", {}).get("nameservers", []):
                    if ipaddress.ip_address(ns).is_link_local:
                        address_users.append((f"{where} dnsConfig nameserver", ns))
                if len(spec.get("dnsConfig", {}).get("nameservers", [])) < 2:
                    problems.add(where, "dnsPolicy None with one nameserver: keep a fallback resolver second")

            if kind == "DaemonSet":
                if spec.get("priorityClassName") != "system-node-critical":
                    problems.add(where, "a node DaemonSet needs priorityClassName system-node-critical")
                strategy = doc["spec"].get("updateStrategy", {})
                if strategy.get("type") != "RollingUpdate" or "maxUnavailable" not in strategy.get("rollingUpdate", {}):
                    problems.add(where, "needs a RollingUpdate strategy with maxUnavailable")
                if spec.get("hostNetwork") is not True or spec.get("dnsPolicy") != "Default":
                    problems.add(where, "a node DaemonSet needs hostNetwork: true and dnsPolicy: Default")
                if config is not None:
                    check_link_local(where, spec, config, problems)
                for c in spec.get("containers", []):
                    if c["name"] == "accel-dns":
                        names = {p.get("name") for p in c.get("ports", [])}
                        if not {"dns", "dns-tcp", "metrics"} <= names:
                            problems.add(where, "accel-dns needs the named ports dns, dns-tcp and metrics")
            if kind == "Deployment" and meta["name"] == "accel-dns":
                if doc["spec"].get("replicas", 1) < 2:
                    problems.add(where, "VPC mode needs at least 2 replicas")
                if not spec.get("affinity", {}).get("podAntiAffinity"):
                    problems.add(where, "VPC mode needs pod anti-affinity")
                pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget" and d["metadata"].get("namespace") == namespace]
                labels = doc["spec"]["template"]["metadata"]["labels"]
                if not any(_selects(p["spec"]["selector"], labels) for p in pdbs):
                    problems.add(where, "no PodDisruptionBudget selects its pods")
                services = [d for d in docs if d.get("kind") == "Service" and d["metadata"].get("namespace") == namespace and _selects({"matchLabels": d["spec"].get("selector", {})}, labels)]
                if not services:
                    problems.add(where, "no Service selects its pods")
                for svc in services:
                    check_vpc_service(f"{rel(path)} Service {namespace}/{svc['metadata']['name']}", svc, spec, problems)
    # The files as written too (what a plain `kubectl apply -f` would pull), and the
    # kustomizations' `images:` overrides.
    for path in sorted((ROOT / "deploy").rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found = re.match(r"^\s*(?:-\s+)?image:\s*[\"']?([^\s\"'#]+)", line)
            if found and image_repository(found.group(1)) != ACCEL_DNS_IMAGE:
                problems.add(f"{rel(path)}:{number}", f"image {found.group(1)}: every image under deploy/ must be {ACCEL_DNS_IMAGE}")
        if path.name == "kustomization.yaml":
            for entry in (yaml.safe_load(path.read_text()) or {}).get("images", []):
                if entry.get("name") != ACCEL_DNS_IMAGE or "newName" in entry and image_repository(entry["newName"]) != ACCEL_DNS_IMAGE:
                    problems.add(rel(path), f"images: {entry}: only {ACCEL_DNS_IMAGE} belongs here")
    if len(node_addresses) > 1:
        problems.add("node mode", f"DaemonSets listen on different node-local addresses {sorted(node_addresses)}")
    for where, addr in address_users:
        if node_addresses and addr not in node_addresses:
            problems.add(where, f"{addr} is not the node-local address accel-dns listens on {sorted(node_addresses)}")
    problems.exit()


def _selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def check_link_local(where: str, spec: dict, config: dict, problems: Problems) -> None:
    """The address accel-dns listens on must be the one the init container adds to the node."""
    added = set()
    for c in spec.get("initContainers", []):
        cmd = c.get("command", []) + c.get("args", [])
        if cmd[:3] == [ACCEL_DNS_BINARY, "node-address", "add"] and len(cmd) > 3:
            added.add(cmd[3])
    for addr in config.get("server", {}).get("listen", []):
        parsed = parse_socket_addr(addr)
        if parsed and parsed[0].is_link_local and str(parsed[0]) not in added:
            problems.add(where, f"listens on {parsed[0]}, but no init container runs `accel-dns node-address add {parsed[0]}`")


def image_repository(image: str) -> str:
    repository = image.rsplit("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    return repository


def check_images(where: str, workload: str, spec: dict, problems: Problems) -> None:
    """Every container and init container runs the accel-dns image (the CoreDNS we patch keeps its own)."""
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        if workload == "coredns" and c.get("name") == "coredns":
            continue
        image = c.get("image", "")
        if image_repository(image) != ACCEL_DNS_IMAGE:
            problems.add(where, f"container {c.get('name')} runs {image!r}: every image under deploy/ must be {ACCEL_DNS_IMAGE}")


def check_vpc_service(where: str, svc: dict, spec: dict, problems: Problems) -> None:
    if svc["spec"].get("type") != "LoadBalancer":
        problems.add(where, "VPC mode needs a Service of type LoadBalancer")
    annotations = svc["metadata"].get("annotations", {})
    if annotations.get("service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type") != "intranet":
        problems.add(where, "the load balancer must be intranet (alibaba-cloud-loadbalancer-address-type: intranet)")
    if svc["spec"].get("externalTrafficPolicy") != "Local":
        problems.add(where, "externalTrafficPolicy must be Local: allow and views match the client's address")
    protocols = {(p["port"], p.get("protocol", "TCP")) for p in svc["spec"].get("ports", [])}
    if not {(53, "UDP"), (53, "TCP")} <= protocols:
        problems.add(where, "needs port 53 over both UDP and TCP")
    container_ports = {p.get("name"): p for c in spec.get("containers", []) for p in c.get("ports", [])}
    for p in svc["spec"].get("ports", []):
        target = p.get("targetPort")
        if isinstance(target, str) and target not in container_ports:
            problems.add(where, f"targetPort {target} is not a named container port")
        elif isinstance(target, str) and container_ports[target].get("protocol", "TCP") != p.get("protocol", "TCP"):
            problems.add(where, f"port {p.get('name')} and its targetPort differ in protocol")


# ----------------------------------------------------------------- serve smoke test (with the binary)
def dns_query(server: tuple[str, int], name: str, tcp: bool = False, timeout: float = 2.0, source: str | None = None) -> tuple[int, list[str]]:
    """One A query; returns (rcode, IPv4 answers). Only for this server on loopback or link-local."""
    import random
    import socket
    import struct

    qid = random.randrange(65536)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        if source:
            sock.bind((source, 0))
        if tcp:
            sock.connect(server)
            sock.sendall(struct.pack("!H", len(packet)) + packet)
            length = struct.unpack("!H", _recv_exact(sock, 2))[0]
            reply = _recv_exact(sock, length)
        else:
            sock.sendto(packet, server)
            reply = sock.recv(65535)
    rid, flags, qd, an = struct.unpack("!HHHH", reply[:8])
    if rid != qid:
        raise ValueError("reply ID does not match")
    pos = 12
    for _ in range(qd):
        pos = _skip_name(reply, pos) + 4
    answers = []
    for _ in range(an):
        pos = _skip_name(reply, pos)
        rtype, _class, _ttl, rdlen = struct.unpack("!HHIH", reply[pos : pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            answers.append(".".join(str(b) for b in reply[pos : pos + 4]))
        pos += rdlen
    return flags & 0xF, answers


def _recv_exact(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _skip_name(msg: bytes, pos: int) -> int:
    while True:
        length = msg[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += length + 1


def cmd_smoke(args: list[str]) -> None:
    """Runs BIN serve CONFIG and asks it for its own records. Meant to run inside `unshare -m -n`:
    a private network namespace with only loopback, so no query can leave the machine."""
    import os
    import signal
    import subprocess
    import time
    import urllib.request

    binary, config_path = args
    config = tomllib.loads(Path(config_path).read_text())
    bundles = registry_bundles()
    problems = Problems()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    listen = [parse_socket_addr(a) for a in config.get("server", {}).get("listen", ["127.0.0.1:5353"])]
    for ip, _ in listen:
        if ip.is_link_local:
            subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"], check=True)
    admin = config.get("admin", {}).get("listen", "127.0.0.1:9553")
    admin_ip, admin_port = parse_socket_addr(admin)
    admin_host = "127.0.0.1" if admin_ip.is_unspecified else str(admin_ip)

    proc = subprocess.Popen([binary, "serve", "--config", config_path], stderr=open(os.devnull, "w"))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://{admin_host}:{admin_port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                problems.add(config_path, f"serve exited with {proc.returncode} before /readyz answered")
                problems.exit()
            if time.monotonic() > deadline:
                problems.add(config_path, "/readyz did not answer 200 within 15 s")
                problems.exit()
            time.sleep(0.1)
        # A client inside `allow`, and one outside it (TEST-NET-1, in no shipped allow list).
        allow = [ipaddress.ip_network(n) for n in config.get("server", {}).get("allow", [])] or [ipaddress.ip_network("127.0.0.0/8")]
        inside = "127.0.0.1" if any(ipaddress.ip_address("127.0.0.1") in n for n in allow) else None
        if inside is None:
            net = next(n for n in allow if n.version == 4)
            inside = str(next(net.hosts()))
            subprocess.run(["ip", "addr", "add", f"{inside}/32", "dev", "lo"], check=True)
        outside = "192.0.2.1"
        subprocess.run(["ip", "addr", "add", f"{outside}/32", "dev", "lo"], check=True)
        added = {inside, outside}
        asked = 0
        # An explicit record beats a bundle's record of the same name and clients (README "Configuration reference", `registry`).
        explicit = {
            (r["name"].lower().rstrip("."), tuple(sorted(r.get("clients", []))))
            for r in config.get("record", [])
            if "name" in r
        }
        for ip, port in listen:
            for record in config.get("record", []):
                if not record.get("a"):
                    continue
                source = inside
                if record.get("clients"):
                    # A view: ask from the first address of its first network.
                    source = str(next(ipaddress.ip_network(record["clients"][0]).hosts()))
                    if source not in added:
                        subprocess.run(["ip", "addr", "add", f"{source}/32", "dev", "lo"], check=True)
                        added.add(source)
                host = source if ip.is_unspecified else str(ip)
                for configured, name in record_names(record, bundles):
                    if "registry" in record and (configured.lower(), tuple(sorted(record.get("clients", [])))) in explicit:
                        continue
                    for tcp in (False, True):
                        rcode, answers = dns_query((host, port), name, tcp=tcp, source=source)
                        asked += 1
                        if rcode != 0 or sorted(answers) != sorted(record["a"]):
                            problems.add(config_path, f"{name} over {'TCP' if tcp else 'UDP'} at {host}:{port} from {source}: rcode {rcode}, answers {answers}, expected {record['a']}")
            rcode, _ = dns_query((outside if ip.is_unspecified else str(ip), port), "docker.io", source=outside)
            if rcode != 5:
                problems.add(config_path, f"a client outside allow ({outside}) got rcode {rcode}, not REFUSED")
        print(f"{config_path}: ready; {asked} record queries answered as configured; outsiders refused")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=10)
            if status != 0:
                problems.add(config_path, f"exit status {status} after SIGTERM (expected 0)")
        except subprocess.TimeoutExpired:
            proc.kill()
            problems.add(config_path, "did not stop within 10 s of SIGTERM")
    problems.exit()


def cmd_init_args(args: list[str]) -> None:
    """Prints the accel-dns arguments of the node DaemonSet's init container that adds the address."""
    for doc in load_docs(Path(args[0])):
        if doc.get("kind") != "DaemonSet":
            continue
        for c in doc["spec"]["template"]["spec"].get("initContainers", []):
            cmd = c.get("command", []) + c.get("args", [])
            if cmd[:3] == [ACCEL_DNS_BINARY, "node-address", "add"]:
                print("\n".join(cmd[1:]))
                return
    sys.exit("no init container running accel-dns node-address add")


COMMANDS = {
    "init-args": cmd_init_args,
    "smoke": cmd_smoke,
    "render-plain": cmd_render_plain,
    "standalone": cmd_standalone,
    "policy": cmd_policy,
    "configs": cmd_configs,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])
