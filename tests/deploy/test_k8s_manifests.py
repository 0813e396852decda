"""deploy/k8s: the overlays render, validate against the Kubernetes schemas, and match the services.

Each overlay is rendered in Python (tests/deploy/kustomize.py; compared with `kubectl kustomize`
where kubectl is installed) and every object is validated, strictly, with `kubernetes-validate`
(schemas shipped in the package, no network). Then the manifests are checked against the code:
each container's environment is read by the service's own settings (`Settings.from_env`, every
variable recorded as it is looked up) and yields the container ports and probes; Services select
the workloads the addresses point at; the NetworkPolicies allow exactly the calls the services'
settings name; every pod is locked down; and the key Secrets rendered by deploy/k8s/key_secrets.py
load, mounted the way the pods mount them, with each service's own key ring.
"""

from __future__ import annotations

import base64
import importlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import kubernetes_validate
import pytest
import yaml

import services.common.settings as settings_module
from services.common.auth import SERVICES, KeyRing
from services.common.settings import cluster_nodes
from tests.deploy.kustomize import Manifest, pod_spec, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production", "cluster")
STANDALONE = ("dev", "production")
# The oldest Kubernetes the manifests target (gRPC probes are GA since 1.27) and the newest
# whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
COMPONENTS = ("user", "message", "notification", "frontend", "web")
GRPC_COMPONENTS = ("user", "message", "notification", "frontend")
STORES = ("user", "message", "notification")
PUBLIC_NAMESPACE = "ingress-nginx"
MONITORING_NAMESPACE = "monitoring"
PEER_ADDR_SUFFIX = "_SERVICE_ADDR"
URL_TARGETS = {"USER_SERVICE_URL": ("user", "http"), "REDIS_URL": ("valkey", "redis")}


# -- rendering ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


_RENDERED: dict[str, list[Manifest]] = {}


def rendered(overlay: str) -> list[Manifest]:
    if overlay not in _RENDERED:
        _RENDERED[overlay] = render(K8S / "overlays" / overlay)
    return _RENDERED[overlay]


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def workloads(objects: list[Manifest]) -> list[Manifest]:
    return [o for o in objects if pod_spec(o) is not None]


def component_of(workload: Manifest) -> str:
    name: str = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    return name


def by_component(objects: list[Manifest]) -> dict[str, Manifest]:
    return {component_of(w): w for w in workloads(objects)}


def container(workload: Manifest) -> Manifest:
    containers = pod_spec(workload)["containers"]  # type: ignore[index]
    assert len(containers) == 1, workload["metadata"]["name"]
    found: Manifest = containers[0]
    return found


def test_renderer_matches_kubectl_kustomize(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the Python renderer alone is checked)")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(result.stdout)}
    ours = {(o["kind"], o["metadata"]["name"]): o for o in rendered(overlay)}
    assert sorted(ours) == sorted(theirs)
    assert [key for key in ours if ours[key] != theirs[key]] == []


def test_every_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    objects = rendered(overlay)
    assert len(objects) > 30
    for version in KUBERNETES_VERSIONS:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = f"{obj['kind']}/{obj['metadata']['name']}"
                pytest.fail(f"{overlay}: {name} is invalid for Kubernetes {version}: {exc}")


def test_every_object_is_in_the_overlays_namespace(overlay: str) -> None:
    objects = rendered(overlay)
    namespaces = of_kind(objects, "Namespace")
    assert len(namespaces) == 1
    namespace = namespaces[0]["metadata"]["name"]
    assert namespaces[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "missive"


# -- environment and ports against the services' settings ------------------------------------


@dataclass(frozen=True)
class Service:
    """One component: its settings class, and the attribute holding its HTTP port."""

    name: str
    settings: Any
    http_port_attr: str | None

    def grpc_service_name(self) -> str:
        name: str = importlib.import_module(f"services.{self.name}.grpc.app").SERVICE_NAME
        return name


def service(name: str) -> Service:
    settings = importlib.import_module(f"services.{name}.settings").Settings
    http = {"frontend": None, "web": "port"}.get(name, "rest_port")
    return Service(name, settings, http)


def container_env(
    objects: list[Manifest], workload: Manifest, secrets: list[Manifest]
) -> dict[str, str]:
    """The container's environment as the kubelet builds it (envFrom, then env), with the
    Secrets key_secrets.py renders."""
    spec = container(workload)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        assert set(source) == {"configMapRef"}, source
        env.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = find(objects, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = _secret_files(secrets, ref["name"])[ref["key"]].decode()
    return env


@pytest.fixture
def record_reads(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, Mapping[str, str]], set[str]]:
    """``read(Settings, env)``: build the settings from ``env``, return the names found in it.

    Every reader in services.common.settings looks variables up through ``_raw``; a name counts
    as read only when it was looked up in a mapping that holds it, so a variable a service
    filters out (FrontendService and the web inbox drop REDIS_URL) does not count."""
    original = settings_module._raw
    seen: set[str] = set()

    def recording(environ: Mapping[str, str], name: str) -> str | None:
        if name in environ:
            seen.add(name)
        return original(environ, name)

    monkeypatch.setattr(settings_module, "_raw", recording)

    def read(settings_cls: Any, env: Mapping[str, str]) -> set[str]:
        seen.clear()
        settings_cls.from_env(env)
        return set(seen)

    return read


def test_every_env_var_is_read_by_the_service(
    overlay: str, record_reads: Any, secrets: list[Manifest]
) -> None:
    objects = rendered(overlay)
    components = by_component(objects)
    for name in COMPONENTS:
        env = container_env(objects, components[name], secrets)
        unread = set(env) - record_reads(service(name).settings, env)
        assert not unread, f"{overlay}: {name} does not read {sorted(unread)}"


def test_ports_and_probes_match_the_settings(overlay: str, secrets: list[Manifest]) -> None:
    objects = rendered(overlay)
    components = by_component(objects)
    for name in COMPONENTS:
        svc = service(name)
        spec = container(components[name])
        settings = svc.settings.from_env(container_env(objects, components[name], secrets))
        expected: dict[str, int] = {}
        if svc.http_port_attr:
            expected["http"] = getattr(settings, svc.http_port_attr)
        if name in GRPC_COMPONENTS:
            expected["grpc"] = settings.grpc_port
        ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
        assert ports == expected, name
        assert spec["command"] == ["python", "-m", f"services.{name}"]
        assert settings.host == "0.0.0.0", f"{name} must listen on every interface in a pod"
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = spec[kind]
            if name in GRPC_COMPONENTS:
                assert probe["grpc"] == {
                    "port": settings.grpc_port,
                    "service": svc.grpc_service_name(),
                }, f"{name} {kind}"
            else:
                assert probe["httpGet"] == {"path": "/health", "port": expected["http"]}
        if name in GRPC_COMPONENTS:
            assert str(settings.keys_dir) == "/keys"


def test_images_follow_the_documented_names(overlay: str) -> None:
    for name, workload in by_component(rendered(overlay)).items():
        image = container(workload)["image"]
        if name == "valkey":
            assert image.startswith("valkey/valkey:")
            continue
        repository, _, tag = image.rpartition(":")
        assert repository.rpartition("/")[2] == f"missive-{name}", image
        assert tag, f"{image}: an overlay must pin the tag"


# -- Services, addresses and Valkey -----------------------------------------------------------


def selected(objects: list[Manifest], selector: Mapping[str, str]) -> list[Manifest]:
    return [
        w
        for w in workloads(objects)
        if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
    ]


def service_target(objects: list[Manifest], host: str, port: int) -> tuple[Manifest, str]:
    """The workload behind ``host:port`` (a Service of the namespace) and the port's name."""
    svc = find(objects, "Service", host)
    targets = selected(objects, svc["spec"]["selector"])
    assert len(targets) == 1, f"Service {host} selects {len(targets)} workloads"
    matching = [p for p in svc["spec"]["ports"] if p["port"] == port]
    assert len(matching) == 1, f"Service {host} has no port {port}"
    target_port = matching[0]["targetPort"]
    names = {p["name"]: p["containerPort"] for p in container(targets[0])["ports"]}
    assert target_port in names and names[target_port] == port, (host, port)
    return targets[0], target_port


def test_every_service_selects_one_workload_by_a_named_port(overlay: str) -> None:
    objects = rendered(overlay)
    for svc in of_kind(objects, "Service"):
        for port in svc["spec"]["ports"]:
            service_target(objects, svc["metadata"]["name"], port["port"])
        if svc["metadata"]["name"].endswith("-grpc") or svc["metadata"]["name"] == "valkey":
            assert svc["spec"]["clusterIP"] == "None", "gRPC and Valkey Services are headless"


def test_addresses_name_the_peer_they_are_for(overlay: str, secrets: list[Manifest]) -> None:
    """USER_SERVICE_ADDR reaches the user pods' gRPC port, USER_SERVICE_URL their HTTP port,
    REDIS_URL the Valkey StatefulSet; gRPC addresses of the services use DNS balancing."""
    objects = rendered(overlay)
    components = by_component(objects)
    for name in COMPONENTS:
        env = container_env(objects, components[name], secrets)
        for variable, value in env.items():
            if variable.endswith(PEER_ADDR_SUFFIX):
                peer = variable.removesuffix(PEER_ADDR_SUFFIX).lower()
                target = value.removeprefix("dns:///")
                if name != "web":  # the web inbox's SDK takes host:port
                    assert value.startswith("dns:///"), f"{name}: {variable}={value}"
                host, _, port = target.rpartition(":")
                workload, port_name = service_target(objects, host, int(port))
                assert (component_of(workload), port_name) == (peer, "grpc"), variable
            elif variable == "REDIS_URL" and value.startswith("redis+cluster://"):
                for node, node_port in cluster_nodes(variable, value).nodes:
                    pod, _, governing = node.partition(".")
                    workload, port_name = service_target(objects, governing, node_port)
                    assert (component_of(workload), port_name) == ("valkey", "redis"), node
                    ordinal = int(pod.removeprefix(f"{workload['metadata']['name']}-"))
                    assert workload["spec"]["serviceName"] == governing
                    assert 0 <= ordinal < workload["spec"]["replicas"], node
            elif variable in ("USER_SERVICE_URL", "REDIS_URL"):
                url = urlsplit(value)
                assert url.hostname and url.port, value
                workload, port_name = service_target(objects, url.hostname, url.port)
                expected = URL_TARGETS[variable]
                assert (component_of(workload), port_name) == expected, variable


@pytest.mark.parametrize("overlay", STANDALONE)
def test_valkey_is_standalone_persistent_and_never_evicts(overlay: str) -> None:
    valkey = find(rendered(overlay), "StatefulSet", "valkey")
    assert valkey["spec"]["replicas"] == 1
    args = container(valkey)["args"]
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert args[0] == "valkey-server"
    assert options["--appendonly"] == "yes" and options["--dir"] == "/data"
    assert options["--maxmemory-policy"] == "noeviction"
    mounts = {m["name"]: m["mountPath"] for m in container(valkey)["volumeMounts"]}
    assert mounts == {"data": "/data"}
    claims = [c["metadata"]["name"] for c in valkey["spec"]["volumeClaimTemplates"]]
    assert claims == ["data"]
    limit = _bytes(container(valkey)["resources"]["limits"]["memory"])
    assert _bytes(options["--maxmemory"]) < limit, "maxmemory must leave room under the limit"


def test_production_valkey_has_the_password_the_services_use(secrets: list[Manifest]) -> None:
    objects = rendered("production")
    valkey = find(objects, "StatefulSet", "valkey")
    args = container(valkey)["args"]
    assert args[args.index("--requirepass") + 1] == "$(VALKEY_PASSWORD)"
    env = container_env(objects, valkey, secrets)
    password = env["VALKEY_PASSWORD"]
    assert len(password) >= 32 and env["REDISCLI_AUTH"] == password  # the readiness probe's
    for name in STORES:
        url = urlsplit(container_env(objects, by_component(objects)[name], secrets)["REDIS_URL"])
        assert url.password is not None and unquote(url.password) == password, name
    dev = rendered("dev")
    assert "--requirepass" not in container(find(dev, "StatefulSet", "valkey"))["args"]


def test_cluster_valkey_is_three_masters_with_replicas_persistent_and_never_evicts(
    secrets: list[Manifest],
) -> None:
    objects = rendered("cluster")
    valkey = find(objects, "StatefulSet", "valkey")
    spec = container(valkey)
    assert valkey["spec"]["replicas"] == 6 and valkey["spec"]["podManagementPolicy"] == "Parallel"
    assert "args" not in spec
    script = spec["command"][2]
    for option in (
        "--cluster-enabled yes",
        "--appendonly yes",
        "--dir /data",
        "--maxmemory-policy noeviction",
        '--requirepass "$VALKEY_PASSWORD"',
        '--masterauth "$VALKEY_PASSWORD"',
        "--cluster-preferred-endpoint-type hostname",
        "--cluster-replicas 1",
    ):
        assert option in script, option
    assert {p["name"]: p["containerPort"] for p in spec["ports"]} == {
        "redis": 6379,
        "cluster-bus": 16379,
    }
    maxmemory = script.split("--maxmemory ", 1)[1].split()[0]
    assert _bytes(maxmemory) < _bytes(spec["resources"]["limits"]["memory"])
    assert f"cluster_size={valkey['spec']['replicas']} " in script
    env = container_env(objects, valkey, secrets)
    for name in STORES:
        value = container_env(objects, by_component(objects)[name], secrets)["REDIS_URL"]
        seeds = cluster_nodes("REDIS_URL", value)
        assert seeds.password == env["VALKEY_PASSWORD"], name
        assert len(seeds.nodes) == valkey["spec"]["replicas"], name


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "kb": 2**10, "mb": 2**20, "gb": 2**30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


# -- lock-down, disruption budgets, autoscaling ----------------------------------------------


def test_every_pod_is_locked_down(overlay: str) -> None:
    for workload in workloads(rendered(overlay)):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec is not None
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for item in spec["containers"]:
            context = item["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert "privileged" not in context, name
            resources = item["resources"]
            for bound in ("requests", "limits"):
                assert set(resources[bound]) == {"cpu", "memory"}, f"{name} {bound}"
            # Every writable path is a volume (the root filesystem is read-only).
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for mount in item.get("volumeMounts", []):
                if mount["name"] in volumes and not mount.get("readOnly"):
                    assert "emptyDir" in volumes[mount["name"]], f"{name}: {mount}"


def test_every_deployment_has_a_disruption_budget_and_an_autoscaler(overlay: str) -> None:
    objects = rendered(overlay)
    deployments = {d["metadata"]["name"] for d in of_kind(objects, "Deployment")}
    assert deployments == set(COMPONENTS)
    for deployment in of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"], f"{name}: the autoscaler owns replicas"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        [spread] = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread["labelSelector"]["matchLabels"].items() <= labels.items(), name
        budgets = [
            b
            for b in of_kind(objects, "PodDisruptionBudget")
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(budgets) == 1, name
        assert budgets[0]["spec"] == {**budgets[0]["spec"], "maxUnavailable": 1}
        scaler = find(objects, "HorizontalPodAutoscaler", name)
        assert scaler["apiVersion"] == "autoscaling/v2"
        assert scaler["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert 1 <= scaler["spec"]["minReplicas"] <= scaler["spec"]["maxReplicas"]
        [metric] = scaler["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu", name
        assert "cpu" in container(deployment)["resources"]["requests"], name
    for budget in of_kind(objects, "PodDisruptionBudget"):
        assert selected(objects, budget["spec"]["selector"]["matchLabels"]), budget["metadata"]


# -- NetworkPolicies ---------------------------------------------------------------------------

Edge = tuple[str, str, int]  # (from, to, TCP port); `from` is a component or "ns:<namespace>"


def called_peers(
    objects: list[Manifest], secrets: list[Manifest], name: str, record_reads: Any
) -> set[tuple[str, str]]:
    """(peer, port name) pairs ``name`` calls, from the variables its settings read: each
    *_SERVICE_ADDR is a gRPC call to that peer, USER_SERVICE_URL a REST call to UserService,
    a Redis DB setting (or FrontendService's fan-out through REDIS_URL) the use of Valkey."""
    workload = by_component(objects)[name]
    env = container_env(objects, workload, secrets)
    calls = {
        (variable.removesuffix(PEER_ADDR_SUFFIX).lower(), "grpc")
        for variable in record_reads(service(name).settings, env)
        if variable.endswith(PEER_ADDR_SUFFIX)
    }
    if "USER_SERVICE_URL" in record_reads(service(name).settings, env):
        calls.add(("user", "http"))
    settings = service(name).settings.from_env(env)
    if hasattr(settings, "redis_db") or getattr(settings, "fanout", False):
        calls.add(("valkey", "redis"))
    return calls


def expected_edges(
    objects: list[Manifest], secrets: list[Manifest], record_reads: Any
) -> set[Edge]:
    """The calls the services make, plus the ingress controller and the metrics scraper."""
    ports = {
        name: {p["name"]: p["containerPort"] for p in container(workload)["ports"]}
        for name, workload in by_component(objects).items()
    }
    edges = {
        (name, peer, ports[peer][port_name])
        for name in COMPONENTS
        for peer, port_name in called_peers(objects, secrets, name, record_reads)
    }
    valkey = container(find(objects, "StatefulSet", "valkey"))
    if "--cluster-enabled yes" in " ".join(valkey.get("command", [])):
        # Replication, gossip and failover between the cluster's nodes.
        edges |= {("valkey", "valkey", port["containerPort"]) for port in valkey["ports"]}
    for name in COMPONENTS:  # public: REST ports, the web inbox, FrontendService's live streams
        public = ports[name]["http"] if "http" in ports[name] else ports[name]["grpc"]
        edges.add((f"ns:{PUBLIC_NAMESPACE}", name, public))
        if name in STORES:  # scraped for /metrics
            edges.add((f"ns:{MONITORING_NAMESPACE}", name, ports[name]["http"]))
    return edges


def _peers(objects: list[Manifest], peer: Manifest) -> list[str]:
    if "namespaceSelector" in peer:
        assert set(peer) == {"namespaceSelector"}, peer
        return [f"ns:{peer['namespaceSelector']['matchLabels']['kubernetes.io/metadata.name']}"]
    assert set(peer) == {"podSelector"}, peer
    found = [component_of(w) for w in selected(objects, peer["podSelector"]["matchLabels"])]
    assert found, f"{peer} selects no pod"
    return found


def _rule_edges(objects: list[Manifest], own: str, rule: Manifest, incoming: bool) -> set[Edge]:
    edges: set[Edge] = set()
    for peer in rule["from" if incoming else "to"]:
        for other in _peers(objects, peer):
            for port in rule["ports"]:
                assert port["protocol"] == "TCP", rule
                edges.add((other, own, port["port"]) if incoming else (own, other, port["port"]))
    return edges


def policy_edges(objects: list[Manifest]) -> tuple[set[Edge], set[Edge]]:
    """(ingress-allowed, egress-allowed) edges of the component policies."""
    ingress: set[Edge] = set()
    egress: set[Edge] = set()
    for policy in of_kind(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if not selector:
            continue  # default-deny and allow-dns, checked on their own
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"], policy["metadata"]
        [own] = [component_of(w) for w in selected(objects, selector)]
        for rule in policy["spec"].get("ingress", []):
            ingress |= _rule_edges(objects, own, rule, incoming=True)
        for rule in policy["spec"].get("egress", []):
            egress |= _rule_edges(objects, own, rule, incoming=False)
    return ingress, egress


def test_network_policies_allow_exactly_the_documented_calls(
    overlay: str, record_reads: Any, secrets: list[Manifest]
) -> None:
    objects = rendered(overlay)
    expected = expected_edges(objects, secrets, record_reads)
    ingress, egress = policy_edges(objects)
    internal = {edge for edge in expected if not edge[0].startswith("ns:")}
    assert ingress == expected
    assert egress == internal
    # Spot checks of the documented graph, so that the derivation itself cannot drift.
    assert ("message", "user", 9797) in internal and ("notification", "frontend", 3030) in internal
    # FrontendService reaches Valkey for its replicas' fan-out; the web inbox never does.
    assert ("frontend", "valkey", 6379) in internal and ("web", "valkey", 6379) not in internal
    assert not any(target == "web" for source, target, _ in internal)


def test_everything_else_is_denied_except_dns(overlay: str) -> None:
    objects = rendered(overlay)
    deny = find(objects, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = find(objects, "NetworkPolicy", "allow-dns")["spec"]
    assert dns["podSelector"] == {} and dns["policyTypes"] == ["Egress"]
    [rule] = dns["egress"]
    assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}
    covered = {
        component_of(w)
        for policy in of_kind(objects, "NetworkPolicy")
        if policy["spec"]["podSelector"]
        for w in selected(objects, policy["spec"]["podSelector"]["matchLabels"])
    }
    assert covered == {*COMPONENTS, "valkey"}


# -- key Secrets ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_secrets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Manifest]]:
    keys_dir = tmp_path_factory.mktemp("keys")
    result = subprocess.run(
        [sys.executable, str(K8S / "key_secrets.py"), "--keys-dir", str(keys_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return keys_dir, list(yaml.safe_load_all(result.stdout))


@pytest.fixture(scope="module")
def secrets(key_secrets: tuple[Path, list[Manifest]]) -> list[Manifest]:
    return key_secrets[1]


def _secret_files(secrets: list[Manifest], name: str) -> dict[str, bytes]:
    secret = find(secrets, "Secret", name)
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def mounted_keys(workload: Manifest, secrets: list[Manifest], root: Path) -> Path:
    """Lay out KEYS_DIR as the kubelet would from the pod's projected Secret volumes."""
    spec = pod_spec(workload)
    assert spec is not None
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container(workload)["volumeMounts"]:
        if not mount["mountPath"].startswith("/keys/"):
            continue
        assert mount["readOnly"] is True
        volume = volumes[mount["name"]]["projected"]
        assert volume["defaultMode"] == 0o440
        directory = root / mount["mountPath"].removeprefix("/keys/")
        directory.mkdir(parents=True)
        for source in volume["sources"]:
            assert set(source["secret"]) == {"name"}, "whole Secrets, no items"
            for key, value in _secret_files(secrets, source["secret"]["name"]).items():
                assert not (directory / key).exists(), f"two Secrets project {key}"
                (directory / key).write_bytes(value)
    return root


def test_key_secrets_validate_and_cover_every_reference(
    key_secrets: tuple[Path, list[Manifest]],
) -> None:
    _, secrets = key_secrets
    for secret in secrets:
        kubernetes_validate.validate(secret, KUBERNETES_VERSIONS[-1], strict=True)
    produced = {s["metadata"]["name"] for s in secrets}
    for overlay in OVERLAYS:
        for workload in workloads(rendered(overlay)):
            spec = pod_spec(workload)
            assert spec is not None
            for volume in spec.get("volumes", []):
                for source in volume.get("projected", {}).get("sources", []):
                    assert source["secret"]["name"] in produced
            for item in container(workload).get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in _secret_files(secrets, ref["name"])


def test_each_service_loads_its_keys_as_mounted_and_holds_only_its_own(
    key_secrets: tuple[Path, list[Manifest]], tmp_path: Path
) -> None:
    keys_dir, secrets = key_secrets
    components = by_component(rendered("production"))
    for name in SERVICES:
        root = mounted_keys(components[name], secrets, tmp_path / name)
        keys = KeyRing.load(root, name, sign_user_tokens=name == "user")
        assert keys.own_service == name
        private = {p.relative_to(root).as_posix() for p in root.rglob("*.key")}
        signing = {f"user-token/{p.name}" for p in (keys_dir / "user-token").glob("*.key")}
        assert private == {f"service/{name}.key", *(signing if name == "user" else ())}
        assert (root / "service" / "admin.pub").exists(), "operators' calls are verified"
    assert "admin.key" not in str(secrets), "the operators' key stays out of the cluster"
    web = pod_spec(components["web"])
    assert web is not None
    assert all(set(v) == {"name", "emptyDir"} for v in web["volumes"]), "the web inbox has no keys"
