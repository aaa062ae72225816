"""The Helm chart (ops/helm/agentia), checked without a cluster.

The real helm binary lints and renders the chart with each value set in ops/helm/agentia/ci;
the rendered manifests are parsed and checked for what a cluster would only show at run time:
probes, the edge's drain (preStop + grace period), the KEDA trigger on the inbound streams
that sessions/keys.py names, the HPA, PDBs, resources sized from docs/benchmarks.md, non-root
security contexts, the ServiceMonitor/PodMonitor wiring, and every AGENTIA_* variable against
the settings classes that read it. Without helm the tests skip (CI: they fail).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentia.settings import ApiSettings, WorkerSettings, from_env
from agentia.settings_edge import EdgeSettings
from sessions.keys import GROUP, Keys
from voice.settings import VoiceSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "ops" / "helm" / "agentia"
VALUE_SETS = sorted((CHART / "ci").glob("*.yaml"))
KUBE = "1.30.0"  # a `go install`ed helm defaults to v1.20, below the chart's kubeVersion
SETTINGS: dict[str, tuple[type, ...]] = {  # the settings classes each process kind reads
    "edge": (EdgeSettings,), "api": (ApiSettings, VoiceSettings),  # voice route: control/api.py
    "worker": (WorkerSettings,), "voice": (VoiceSettings,)}
NOT_SETTINGS = {"AGENTIA_NOFILE"}  # read by ops/entrypoint.sh, not by agentia/settings.py

Doc = dict[str, Any]


def find_helm() -> str | None:
    found = shutil.which("helm")
    home = Path.home() / "go" / "bin" / "helm"
    return found or (str(home) if os.access(home, os.X_OK) else None)


@pytest.fixture(scope="module")
def helm() -> str:
    path = find_helm()
    if path is None:
        why = ("helm is not on PATH nor in ~/go/bin (./dev test builds it with "
               "`go install helm.sh/helm/v3/cmd/helm@v3.22.0`)")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def template(helm: str, *args: str) -> list[Doc]:
    res = run_helm(helm, "template", "t", str(CHART), "--namespace", "agentia",
                   "--kube-version", KUBE, *args)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def template_error(helm: str, *args: str) -> str:
    res = run_helm(helm, "template", "t", str(CHART), "--kube-version", KUBE, *args)
    assert res.returncode != 0, "rendering should have failed"
    return res.stderr


def merge(base: Doc, over: Doc) -> Doc:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def values(path: Path) -> Doc:
    return merge(yaml.safe_load((CHART / "values.yaml").read_text()),
                 yaml.safe_load(path.read_text()))


@pytest.fixture(scope="module")
def rendered(helm: str) -> dict[str, list[Doc]]:
    return {p.name: template(helm, "-f", str(p)) for p in VALUE_SETS}


def cases(rendered: dict[str, list[Doc]]) -> Iterator[tuple[Doc, list[Doc]]]:
    for p in VALUE_SETS:
        yield values(p), rendered[p.name]


def kinds(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, component: str) -> Doc:
    found = [d for d in kinds(docs, kind)
             if d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    assert len(found) == 1, f"{len(found)} {kind} for {component}"
    return found[0]


def container(dep: Doc, name: str) -> Doc:
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env(c: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in c.get("env", [])}


def mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[:-2]) * factor
    raise AssertionError(f"unexpected memory quantity {quantity!r}")


# --- helm itself ---

def test_value_sets_exist() -> None:
    assert {"default-values.yaml", "minimal-values.yaml", "production-values.yaml",
            "cluster-values.yaml"} <= {p.name for p in VALUE_SETS}


@pytest.mark.parametrize("path", VALUE_SETS, ids=lambda p: p.name)
def test_lint(helm: str, path: Path) -> None:
    res = run_helm(helm, "lint", str(CHART), "--strict", "--kube-version", KUBE, "-f", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 chart(s) failed" in res.stdout


def test_required_values_fail_with_a_message(helm: str) -> None:
    assert "redis.host is required" in template_error(helm)
    assert "auth.existingSecret" in template_error(helm, "--set", "redis.host=r")
    err = template_error(helm, "--set", "redis.host=r,auth.existingSecret=a,voice.enabled=true",
                         "--set", "worker.keda.enabled=false")
    assert "livekit.url" in err


def test_schema_rejects_typos_and_bad_values(helm: str) -> None:
    base = ["-f", str(CHART / "ci" / "default-values.yaml")]
    assert "procesess" in template_error(helm, *base, "--set", "edge.procesess=3")
    assert "/edge/processes" in template_error(helm, *base, "--set", "edge.processes=0")
    assert "/config/shards" in template_error(helm, *base, "--set", "config.shards=0")
    assert "/worker/agent" in template_error(helm, *base, "--set", "worker.agent=nocolon")


# --- probes, drain, processes ---

def test_probes(rendered: dict[str, list[Doc]]) -> None:
    for v, docs in cases(rendered):
        edge = container(one(docs, "Deployment", "edge"), "edge")
        assert edge["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ws"}
        assert edge["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "internal"}
        assert {"name": "ws", "containerPort": v["edge"]["port"], "protocol": "TCP"} \
            in edge["ports"]
        assert {"name": "internal", "containerPort": v["edge"]["internalPort"],
                "protocol": "TCP"} in edge["ports"]
        assert env(edge)["AGENTIA_INTERNAL_PORT"]["value"] == str(v["edge"]["internalPort"])
        worker = container(one(docs, "Deployment", "worker"), "worker")
        assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "internal"}
        assert "readinessProbe" not in worker  # /readyz is for alerts (docs/operations.md)
        assert {"name": "internal", "containerPort": v["worker"]["internalPort"],
                "protocol": "TCP"} in worker["ports"]
        assert env(worker)["AGENTIA_WORKER_INTERNAL_PORT"]["value"] \
            == str(v["worker"]["internalPort"])
        api = container(one(docs, "Deployment", "api"), "api")
        assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert api["readinessProbe"]["httpGet"] == {"path": v["api"]["readinessPath"],
                                                    "port": "http"}


def test_edge_drain_fits_the_grace_period(rendered: dict[str, list[Doc]]) -> None:
    for v, docs in cases(rendered):
        spec = one(docs, "Deployment", "edge")["spec"]["template"]["spec"]
        edge = container(one(docs, "Deployment", "edge"), "edge")
        sleep = edge["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep == ["sleep", str(v["edge"]["preStopSleepSeconds"])]
        drain = float(env(edge)["AGENTIA_DRAIN_S"]["value"])
        assert drain == v["edge"]["drainSeconds"]
        # preStop sleep, the drain, 2 s listener close, the supervisor's 5 s kill margin
        assert spec["terminationGracePeriodSeconds"] >= int(sleep[1]) + drain + 7


def test_a_grace_period_shorter_than_the_drain_is_refused(helm: str) -> None:
    err = template_error(helm, "-f", str(CHART / "ci" / "default-values.yaml"),
                         "--set", "edge.terminationGracePeriodSeconds=12")
    assert "drain would be cut" in err


def test_edge_processes_fd_limit_and_sized_resources(rendered: dict[str, list[Doc]]) -> None:
    for v, docs in cases(rendered):
        e = v["edge"]
        edge = container(one(docs, "Deployment", "edge"), "edge")
        args = edge["args"]
        assert args[:2] == ["agentia", "gateway"]
        assert args[args.index("--processes") + 1] == str(e["processes"])
        assert args[args.index("--host") + 1] == "0.0.0.0"
        assert env(edge)["AGENTIA_NOFILE"]["value"] == str(e["nofile"])
        assert env(edge)["AGENTIA_TRANSPORT"]["value"] == e["transport"]
        res = edge["resources"]
        if e["resources"]:
            assert res == e["resources"]
            continue
        # docs/benchmarks.md: 15 KiB RSS per idle connection, nofile - 1000 per process
        conns = e["processes"] * (e["nofile"] - 1000)
        assert mib(res["requests"]["memory"]) >= conns * 15 / 1024
        assert mib(res["limits"]["memory"]) > mib(res["requests"]["memory"])
        assert res["requests"]["cpu"] == f"{500 * e['processes']}m"


def test_default_edge_pod_size(helm: str) -> None:
    """2 processes x 19,000 connections: 24 + 2 x (52 + 19,000 x 20 KiB) MiB."""
    docs = template(helm, "-f", str(CHART / "ci" / "default-values.yaml"))
    res = container(one(docs, "Deployment", "edge"), "edge")["resources"]
    assert res == {"requests": {"cpu": "1000m", "memory": "870Mi"},
                   "limits": {"memory": "1305Mi"}}


def test_every_container_has_resources(rendered: dict[str, list[Doc]]) -> None:
    for _, docs in cases(rendered):
        for dep in kinds(docs, "Deployment"):
            for c in dep["spec"]["template"]["spec"]["containers"]:
                where = f"{dep['metadata']['name']}/{c['name']}"
                assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
                assert "memory" in c["resources"]["limits"], where


# --- settings ---

def test_env_names_are_real_settings(rendered: dict[str, list[Doc]]) -> None:
    for _, docs in cases(rendered):
        for dep in kinds(docs, "Deployment"):
            component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
            fields = {f"AGENTIA_{n.upper()}" for cls in SETTINGS[component]
                      for n in cls.__dataclass_fields__}
            main = dep["spec"]["template"]["spec"]["containers"][0]
            unknown = {n for n in env(main) if n.startswith("AGENTIA_")} - fields - NOT_SETTINGS
            assert not unknown, f"{component}: {unknown} are not settings of that process"


def test_rendered_env_passes_settings_validation(rendered: dict[str, list[Doc]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The literal values the chart renders are accepted by each process's settings."""
    for _, docs in cases(rendered):
        for dep in kinds(docs, "Deployment"):
            component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
            if component == "voice":
                continue  # VoiceSettings checks the phrase file of the image's source tree
            with monkeypatch.context() as m:
                for name, e in env(dep["spec"]["template"]["spec"]["containers"][0]).items():
                    if name.startswith("AGENTIA_") and name not in NOT_SETTINGS:
                        # a Secret's value: a secret of 32 bytes passes, as it must
                        m.setenv(name, e.get("value", "a-32-byte-value-from-a-k8s-secret"))
                from_env(SETTINGS[component][0])


def test_redis_url_and_password(rendered: dict[str, list[Doc]]) -> None:
    # imported here: the redis+cluster scheme is recent, a failure should stay in this test
    from sessions.bus import is_cluster_url

    for v, docs in cases(rendered):
        for dep in kinds(docs, "Deployment"):
            names = [e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]]
            url = env(dep["spec"]["template"]["spec"]["containers"][0])["AGENTIA_REDIS_URL"]
            r = v["redis"]
            scheme = ("rediss" if r["tls"] else "redis") + ("+cluster" if r["cluster"] else "")
            assert url["value"].startswith(f"{scheme}://")
            assert is_cluster_url(url["value"]) == r["cluster"]  # what sessions/bus.py reads
            hosts = url["value"].rpartition("@")[2] if "@" in url["value"] else \
                url["value"].partition("://")[2]
            if r["cluster"]:
                assert hosts.split(",") == (r["clusterNodes"] or [f"{r['host']}:{r['port']}"])
            else:
                assert hosts == f"{r['host']}:{r['port']}/{r['db']}"
            if v["redis"]["auth"]["existingSecret"]:
                assert "$(REDIS_PASSWORD)@" in url["value"]
                # Kubernetes expands $(VAR) only from variables defined earlier in the list
                assert names.index("REDIS_PASSWORD") < names.index("AGENTIA_REDIS_URL")
            else:
                assert "REDIS_PASSWORD" not in names and "$(" not in url["value"]


# --- autoscaling ---

def test_keda_scales_workers_on_the_backlog_of_every_inbound_stream(
        rendered: dict[str, list[Doc]]) -> None:
    for v, docs in cases(rendered):
        w = v["worker"]
        dep = one(docs, "Deployment", "worker")
        if not w["keda"]["enabled"]:
            assert not kinds(docs, "ScaledObject") and dep["spec"]["replicas"] == w["replicas"]
            continue
        assert "replicas" not in dep["spec"], "KEDA owns the worker count"
        spec = one(docs, "ScaledObject", "worker")["spec"]
        assert spec["scaleTargetRef"]["name"] == dep["metadata"]["name"]
        assert spec["minReplicaCount"] == w["keda"]["minReplicaCount"]
        shards = v["config"]["shards"]
        keys = Keys(v["config"]["redisPrefix"], shards)
        assert w["keda"]["streams"] == [keys.inbound(k) for k in range(shards)], (
            "the value set's worker.keda.streams no longer match sessions/keys.py: print them "
            "again (docs/deploy.md)")
        triggers = spec["triggers"]
        target = str(w["keda"]["targetPerWorker"])
        lag = [t for t in triggers if "lagCount" in t["metadata"]]
        pending = [t for t in triggers if "pendingEntriesCount" in t["metadata"]]
        assert len(lag) + len(pending) == len(triggers)
        for kind in (lag, pending):  # one trigger of each kind per inbound stream
            assert [t["metadata"]["stream"] for t in kind] == w["keda"]["streams"]
        kind = "redis-cluster-streams" if v["redis"]["cluster"] else "redis-streams"
        for t in triggers:
            md = t["metadata"]
            assert t["type"] == kind
            assert md["consumerGroup"] == GROUP
            assert md.get("lagCount", md.get("pendingEntriesCount")) == target
            assert all(isinstance(x, str) for x in md.values()), "trigger metadata: strings"
            assert ("addresses" if v["redis"]["cluster"] else "address") in md
            assert md["enableTLS"] == str(v["redis"]["tls"]).lower()
        mod = spec["advanced"]["scalingModifiers"]
        assert sorted(mod["formula"].split(" + ")) == sorted(t["name"] for t in triggers)
        assert (mod["target"], mod["metricType"]) == (target, "AverageValue")
        if v["redis"]["auth"]["existingSecret"]:
            auth = one(docs, "TriggerAuthentication", "worker")
            assert all(t["authenticationRef"]["name"] == auth["metadata"]["name"]
                       for t in triggers)
            ref = auth["spec"]["secretTargetRef"][0]
            assert (ref["parameter"], ref["name"]) == ("password",
                                                       v["redis"]["auth"]["existingSecret"])


def test_keda_stream_list_is_checked_against_shards_and_prefix(helm: str) -> None:
    base = ["-f", str(CHART / "ci" / "minimal-values.yaml"), "--set", "worker.keda.enabled=true"]
    assert "worker.keda.streams is required" in template_error(helm, *base)
    err = template_error(helm, *base, "--set-json", 'worker.keda.streams=["agentia:{a}:in"]')
    assert "has 1 names but config.shards is 8" in err
    names = [f"other:{{s{k}}}:in" for k in range(8)]
    err = template_error(helm, *base, "--set-json", f"worker.keda.streams={json.dumps(names)}")
    assert 'is not under config.redisPrefix "agentia"' in err
    names = [f"agentia:{{s{k}}}:in" for k in range(8)]
    docs = template(helm, *base, "--set-json", f"worker.keda.streams={json.dumps(names)}")
    triggers = one(docs, "ScaledObject", "worker")["spec"]["triggers"]
    assert [t["metadata"]["stream"] for t in triggers] == [n for n in names for _ in (0, 1)]


def test_edge_hpa(rendered: dict[str, list[Doc]]) -> None:
    for v, docs in cases(rendered):
        a = v["edge"]["autoscaling"]
        dep = one(docs, "Deployment", "edge")
        hpas = [h for h in kinds(docs, "HorizontalPodAutoscaler")
                if h["metadata"]["labels"]["app.kubernetes.io/component"] == "edge"]
        if not a["enabled"]:
            assert not hpas and dep["spec"]["replicas"] == v["edge"]["replicas"]
            continue
        assert "replicas" not in dep["spec"], "the HPA owns the edge count"
        spec = hpas[0]["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": dep["metadata"]["name"]}
        metrics = {m.get("resource", m.get("pods", {})).get("name")
                   or m["pods"]["metric"]["name"]: m for m in spec["metrics"]}
        assert metrics["cpu"]["resource"]["target"]["averageUtilization"] == \
            a["targetCPUUtilizationPercentage"]
        if a["targetConnectionsPerPod"]:
            target = metrics["agentia_connections"]["pods"]["target"]
            assert target == {"type": "AverageValue",
                              "averageValue": str(a["targetConnectionsPerPod"])}
        assert spec["behavior"]["scaleDown"]["policies"] == [
            {"type": "Pods", "value": 1, "periodSeconds": 300}]


def test_pdbs_select_their_pods(rendered: dict[str, list[Doc]]) -> None:
    for v, docs in cases(rendered):
        pdbs = kinds(docs, "PodDisruptionBudget")
        for dep in kinds(docs, "Deployment"):
            component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
            mine = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items()
                    <= dep["spec"]["template"]["metadata"]["labels"].items()]
            assert len(mine) == (1 if v[component]["pdb"]["enabled"] else 0), component
            if mine:
                assert mine[0]["spec"]["maxUnavailable"] == v[component]["pdb"]["maxUnavailable"]


def test_edges_spread_over_nodes(rendered: dict[str, list[Doc]]) -> None:
    for v, docs in cases(rendered):
        pod = one(docs, "Deployment", "edge")["spec"]["template"]
        spread = [c for c in pod["spec"].get("topologySpreadConstraints", [])
                  if c["topologyKey"] == "kubernetes.io/hostname"]
        assert len(spread) == (1 if v["edge"]["spreadAcrossNodes"] else 0)
        for c in spread:
            assert c["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
            assert c["whenUnsatisfiable"] == "ScheduleAnyway"


# --- security ---

def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for d in docs:
        if d["kind"] == "Deployment":
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d["metadata"]["name"], d["spec"]


def test_pods_run_as_non_root_with_a_read_only_root(rendered: dict[str, list[Doc]]) -> None:
    for _, docs in cases(rendered):
        for name, spec in pod_specs(docs):
            psc = spec["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, name
            assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            for c in spec["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
                assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
                assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])


def test_secrets_come_from_secret_refs(rendered: dict[str, list[Doc]]) -> None:
    secret_envs = {"AGENTIA_JWT_SECRET", "AGENTIA_JWT_PUBLIC_KEY", "REDIS_PASSWORD",
                   "OPENAI_API_KEY", "AGENTIA_LIVEKIT_API_KEY", "AGENTIA_LIVEKIT_API_SECRET"}
    for _, docs in cases(rendered):
        for name, spec in pod_specs(docs):
            for c in spec["containers"]:
                for n, e in env(c).items():
                    if n in secret_envs:
                        assert "secretKeyRef" in e["valueFrom"], (name, n)


# --- services and monitoring ---

def test_services_and_monitors_point_at_real_ports(rendered: dict[str, list[Doc]]) -> None:
    for v, docs in cases(rendered):
        deps = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d
                for d in kinds(docs, "Deployment")}
        services: dict[str, list[Doc]] = {}
        for svc in kinds(docs, "Service"):
            component = svc["metadata"]["labels"]["app.kubernetes.io/component"]
            pod = deps[component]["spec"]["template"]
            assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
            names = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
            assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names
            services.setdefault(component, []).append(svc)
        monitors = kinds(docs, "ServiceMonitor")
        if not v["monitoring"]["serviceMonitor"]["enabled"]:
            assert not monitors and not kinds(docs, "PodMonitor")
            continue
        assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} \
            == {"edge", "api"}
        for m in monitors:
            selected = [s for s in services[m["metadata"]["labels"]["app.kubernetes.io/component"]]
                        if m["spec"]["selector"]["matchLabels"].items()
                        <= s["metadata"]["labels"].items()]
            assert len(selected) == 1, "one Service per ServiceMonitor"
            svc = selected[0]
            assert svc["metadata"]["labels"][m["spec"]["jobLabel"]] == "agentia"
            ep = m["spec"]["endpoints"][0]
            assert ep["path"] == "/metrics"
            assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]}
            assert m["metadata"]["labels"].items() \
                >= v["monitoring"]["serviceMonitor"]["labels"].items()
        if v["worker"]["metrics"]["enabled"]:
            pm = one(docs, "PodMonitor", "worker")
            pod_labels = deps["worker"]["spec"]["template"]["metadata"]["labels"]
            assert pod_labels[pm["spec"]["jobLabel"]] == "agentia"
            assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
            sidecar = container(deps["worker"], "metrics")
            assert pm["spec"]["podMetricsEndpoints"][0]["port"] in \
                {p["name"] for p in sidecar["ports"]}
            mounts = {m["name"]: m["mountPath"] for m in container(deps["worker"], "worker")
                      ["volumeMounts"]}
            assert env(container(deps["worker"], "worker"))["PROMETHEUS_MULTIPROC_DIR"][
                "value"] == mounts["metrics"]


# --- safe defaults (issue 10): secret length, internal port, origins ---

def test_chart_refuses_a_short_or_public_jwt_secret(helm: str) -> None:
    base = ["-f", str(CHART / "ci" / "default-values.yaml"), "--set", "auth.existingSecret="]
    for bad in ("x" * 31, "agentia-dev-secret-change-me-in-production"):
        err = template_error(helm, *base, "--set", f"auth.jwtSecret={bad}")
        assert "auth.jwtSecret must be at least 32 bytes and not the public default" in err
    docs = template(helm, *base, "--set", "auth.jwtSecret=" + "x" * 32)
    assert kinds(docs, "Secret")


def test_edge_internal_port_service_and_monitor(helm: str,
                                                rendered: dict[str, list[Doc]]) -> None:
    for v, docs in cases(rendered):
        internal = [s for s in kinds(docs, "Service")
                    if s["metadata"]["name"].endswith("-edge-internal")]
        assert len(internal) == 1
        svc = internal[0]
        assert svc["spec"]["type"] == "ClusterIP"
        assert svc["spec"]["ports"] == [{"name": "internal", "port": v["edge"]["internalPort"],
                                         "targetPort": "internal", "protocol": "TCP"}]
        public = [s for s in kinds(docs, "Service") if s["metadata"]["name"].endswith("-edge")]
        assert [p["port"] for s in public for p in s["spec"]["ports"]] == [v["edge"]["port"]]
        if v["monitoring"]["serviceMonitor"]["enabled"]:
            assert one(docs, "ServiceMonitor", "edge")["spec"]["endpoints"][0]["port"] \
                == "internal"
        tests = [d for d in kinds(docs, "Pod") if d["metadata"]["name"].endswith("test-readyz")]
        for pod in tests:
            assert (f"{svc['metadata']['name']}:{v['edge']['internalPort']}/readyz"
                    in " ".join(pod["spec"]["containers"][0]["args"]))
    err = template_error(helm, "-f", str(CHART / "ci" / "default-values.yaml"),
                         "--set", "edge.internalPort=8765")
    assert "edge.internalPort must differ from edge.port" in err


def test_allowed_origins_and_no_dev_mode(helm: str, rendered: dict[str, list[Doc]]) -> None:
    for v, docs in cases(rendered):
        for dep in kinds(docs, "Deployment"):
            for c in dep["spec"]["template"]["spec"]["containers"]:
                assert "AGENTIA_DEV" not in env(c)
        for component in ("edge", "api"):
            main = container(one(docs, "Deployment", component), component)
            assert env(main)["AGENTIA_ALLOWED_ORIGINS"]["value"] \
                == ",".join(v["auth"]["allowedOrigins"])
    base = ["-f", str(CHART / "ci" / "default-values.yaml")]
    assert "/auth/allowedOrigins" in template_error(
        helm, *base, "--set", "auth.allowedOrigins={chat.example.com}")


# --- per-user limits and Redis memory (docs/operations.md, "Redis memory") ---

def test_user_limits_and_new_session_ttl_reach_the_processes(
        rendered: dict[str, list[Doc]]) -> None:
    for v, docs in cases(rendered):
        edge = env(container(one(docs, "Deployment", "edge"), "edge"))
        limits = v["edge"]["userLimits"]
        for var, key in (("AGENTIA_MAX_CONNECTIONS_PER_USER_TOTAL", "connections"),
                         ("AGENTIA_MAX_SESSIONS_PER_HOUR", "sessionsPerHour"),
                         ("AGENTIA_MAX_SESSIONS_PER_USER", "sessions")):
            assert edge[var]["value"] == str(limits[key])
        for dep in kinds(docs, "Deployment"):
            for c in dep["spec"]["template"]["spec"]["containers"]:
                if c["name"] in ("edge", "api", "worker", "voice"):
                    assert env(c)["AGENTIA_NEW_SESSION_TTL_S"]["value"] == str(
                        v["config"]["newSessionTtlSeconds"])


def test_redis_memory_alert(rendered: dict[str, list[Doc]]) -> None:
    seen = False
    for v, docs in cases(rendered):
        a = v["monitoring"]["redisMemoryAlert"]
        rules = kinds(docs, "PrometheusRule")
        if not a["enabled"]:
            assert rules == []
            continue
        seen = True
        (rule,) = rules
        assert rule["metadata"]["labels"].items() >= a["labels"].items()
        by_name = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
        high = by_name["AgentiaRedisMemoryHigh"]
        assert f"> {a['threshold']}" in high["expr"] and high["for"] == a["for"]
        assert "redis_memory_used_bytes{" + a["selector"] + "}" in high["expr"]
        assert "redis_memory_max_bytes" in by_name["AgentiaRedisNoMaxmemory"]["expr"]
    assert seen, "one ci value set must enable monitoring.redisMemoryAlert"


def test_redis_memory_values_are_checked(helm: str) -> None:
    base = ("redis.host=r,auth.existingSecret=a,worker.keda.enabled=false")
    err = template_error(helm, "--set", base + ",redis.maxmemoryPolicy=allkeys-lru")
    assert "maxmemoryPolicy" in err
    err = template_error(helm, "--set", base + ",edge.userLimits.sessions=-1")
    assert "sessions" in err
    err = template_error(helm, "--set", base + ",monitoring.redisMemoryAlert.threshold=2")
    assert "threshold" in err


def test_voice_limits_reach_the_route_and_the_worker(rendered: dict[str, list[Doc]]) -> None:
    """The call limits reach both voice processes, and the control plane's voice route gets
    the edges' session limits (a call's new session counts against them too)."""
    seen = 0
    for v, docs in cases(rendered):
        if not v["voice"]["enabled"]:
            continue
        seen += 1
        api = env(one(docs, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0])
        voice = env(one(docs, "Deployment", "voice")["spec"]["template"]["spec"]["containers"][0])
        vv = v["voice"]
        for e in (api, voice):
            assert e["AGENTIA_VOICE_MAX_CALLS_PER_USER"]["value"] == str(vv["maxCallsPerUser"])
            assert e["AGENTIA_VOICE_JOIN_TIMEOUT_S"]["value"] == str(vv["joinTimeoutSeconds"])
        limits = v["edge"]["userLimits"]
        assert api["AGENTIA_MAX_SESSIONS_PER_HOUR"]["value"] == str(limits["sessionsPerHour"])
        assert api["AGENTIA_MAX_SESSIONS_PER_USER"]["value"] == str(limits["sessions"])
    assert seen, "no value set in ops/helm/agentia/ci enables voice"


# --- several agents (docs/agents.md) ---

def _agents_values(prefix: str = "agentia", shards: int = 8) -> Doc:
    keys = Keys(prefix, shards)
    return {"worker": {"agents": [
        {"name": "demo", "agent": "sessions.demo:demo_agent", "description": 'the "demo"',
         "privateTools": ["calculate"], "keda": {
             "maxReplicaCount": 10,
             "streams": [keys.inbound(k, "demo") for k in range(shards)]},
         "mcp": [{"name": "notes", "command": "python", "args": ["-m", "x"],
                  "env": {"A": "1", "B": "two words"}},
                 {"name": "web", "url": "http://127.0.0.1:9000/mcp",
                  "headers": {"Authorization": "Bearer x"}}]},
        {"name": "triage", "agent": "sessions.demo:triage_agent", "concurrency": 64,
         "keda": {"streams": [keys.inbound(k, "triage") for k in range(shards)]}}]}}


def test_two_agents_get_a_worker_and_a_scaler_each(helm: str, tmp_path: Path) -> None:
    from sessions.registry import parse_toml

    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump(_agents_values()))
    docs = template(helm, "-f", str(CHART / "ci" / "default-values.yaml"), "-f", str(path))
    workers = [d for d in kinds(docs, "Deployment")
               if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]
    assert [d["metadata"]["labels"]["agentia.io/agent"] for d in workers] == ["demo", "triage"]
    [cm] = [d for d in kinds(docs, "ConfigMap") if d["metadata"]["name"].endswith("-agents")]
    specs = parse_toml(cm["data"]["agents.toml"], "the chart's agents.toml")
    assert [(s.name, s.agent_ref) for s in specs] == [
        ("demo", "sessions.demo:demo_agent"), ("triage", "sessions.demo:triage_agent")]
    assert specs[0].description == 'the "demo"' and specs[0].private_tools == {"calculate"}
    assert specs[0].mcp[0]["env"] == {"A": "1", "B": "two words"}
    assert specs[0].mcp[1]["headers"] == {"Authorization": "Bearer x"}
    keys = Keys("agentia", 8)
    scalers = kinds(docs, "ScaledObject")
    for dep, name, concurrency in zip(workers, ("demo", "triage"), ("1000", "64"), strict=True):
        c = container(dep, "worker")
        assert c["args"] == ["agentia", "worker", "--agents", "/etc/agentia/agents/agents.toml",
                             "--only", name, "--concurrency", concurrency]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["agents"] == "/etc/agentia/agents"
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert volumes["agents"]["configMap"]["name"] == cm["metadata"]["name"]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert pod_labels["agentia.io/agent"] == name
        [so] = [s for s in scalers
                if s["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]]
        streams = [t["metadata"]["stream"] for t in so["spec"]["triggers"]]
        assert streams == [keys.inbound(k, name) for k in range(8) for _ in (0, 1)]
        assert so["spec"]["maxReplicaCount"] == (10 if name == "demo" else 50)
    # one PodMonitor still scrapes every worker pod
    [pm] = kinds(docs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    pdbs = [p for p in kinds(docs, "PodDisruptionBudget")
            if p["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]
    assert len(pdbs) == 2


def test_agent_streams_are_checked_per_agent(helm: str, tmp_path: Path) -> None:
    v = _agents_values()
    v["worker"]["agents"][1]["keda"]["streams"] = v["worker"]["agents"][0]["keda"]["streams"]
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump(v))
    err = template_error(helm, "-f", str(CHART / "ci" / "default-values.yaml"), "-f", str(path))
    assert 'worker.agents[1].keda.streams: "agentia:{in.demo.0.' in err
    assert 'is not an inbound stream of agent "triage"' in err
    del v["worker"]["agents"][1]["keda"]
    path.write_text(yaml.safe_dump(v))
    err = template_error(helm, "-f", str(CHART / "ci" / "default-values.yaml"), "-f", str(path))
    assert "worker.agents[1].keda.streams is required" in err
    assert 'k.inbound(i, "triage")' in err
    v["worker"]["agents"][1]["name"] = "Triage"
    path.write_text(yaml.safe_dump(v))
    err = template_error(helm, "-f", str(CHART / "ci" / "default-values.yaml"), "-f", str(path))
    assert "/worker/agents/1/name" in err


# --- Dapr sidecars (docs/dapr.md) ---

DAPR_ON = {"dapr": {"enabled": True, "events": {"topic": "agentia.events"},
                    "inbound": {"topic": "agentia.in", "appTokenSecret": "agentia-dapr"},
                    "memory": {"enabled": True}, "components": {"create": True}}}


def _dapr(helm: str, tmp_path: Path, over: Doc, *more: Doc) -> list[Doc]:
    args = ["-f", str(CHART / "ci" / "production-values.yaml")]
    for n, doc in enumerate((over, *more)):
        path = tmp_path / f"dapr-{n}.yaml"
        path.write_text(yaml.safe_dump(doc))
        args += ["-f", str(path)]
    return template(helm, *args)


def _annotations(dep: Doc) -> dict[str, str]:
    return dict(dep["spec"]["template"]["metadata"].get("annotations") or {})


def test_dapr_is_off_by_default(rendered: dict[str, list[Doc]]) -> None:
    for _, docs in cases(rendered):
        assert not kinds(docs, "Component")
        for dep in kinds(docs, "Deployment"):
            assert not any(k.startswith("dapr.io/") for k in _annotations(dep))
            for c in dep["spec"]["template"]["spec"]["containers"]:
                assert not [n for n in env(c) if "DAPR" in n], dep["metadata"]["name"]


def test_dapr_sidecars_env_and_components(helm: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from agentia.settings_outbox import DaprPublishSettings

    docs = _dapr(helm, tmp_path, DAPR_ON)
    api, worker = one(docs, "Deployment", "api"), one(docs, "Deployment", "worker")
    pub, edge = one(docs, "Deployment", "dapr-publish"), one(docs, "Deployment", "edge")
    a = _annotations(api)
    assert a["dapr.io/enabled"] == "true" and a["dapr.io/app-id"] == "t-agentia-api"
    assert a["dapr.io/app-port"] == str(container(api, "api")["ports"][0]["containerPort"])
    assert a["dapr.io/app-token-secret"] == "agentia-dapr"
    assert "dapr.io/app-port" not in _annotations(worker)  # nothing is delivered to them
    assert _annotations(worker)["dapr.io/app-id"] == "t-agentia-worker"
    assert _annotations(pub)["dapr.io/app-id"] == "t-agentia-publisher"
    assert not any(k.startswith("dapr.io/") for k in _annotations(edge))  # no sidecar
    api_env, worker_env = env(container(api, "api")), env(container(worker, "worker"))
    assert api_env["AGENTIA_DAPR_TOPIC_IN"]["value"] == "agentia.in"
    assert api_env["AGENTIA_DAPR_APP_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "agentia-dapr", "key": "token"}  # the key dapr.io/app-token-secret reads
    assert worker_env["AGENTIA_MEMORY"]["value"] == "dapr"
    assert worker_env["AGENTIA_DAPR_STATESTORE"]["value"] == "agentia-state"
    assert container(pub, "dapr-publish")["args"] == ["agentia", "dapr-publish"]
    for dep in (api, worker, pub, edge):  # every process that appends queues the events
        e = env(dep["spec"]["template"]["spec"]["containers"][0])
        assert e["AGENTIA_DAPR_TOPIC_EVENTS"]["value"] == "agentia.events", dep["metadata"]
        assert e["AGENTIA_DAPR_PUBSUB"]["value"] == "agentia-pubsub"
    # the rendered values are real settings, and each process accepts them
    kinds_of = {**SETTINGS, "dapr-publish": (DaprPublishSettings,)}
    for dep in (api, worker, pub, edge):
        component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        main = dep["spec"]["template"]["spec"]["containers"][0]
        fields = {f"AGENTIA_{f.name.upper()}" for cls in kinds_of[component]
                  for f in dataclasses.fields(cls)}
        assert {n for n in env(main) if n.startswith("AGENTIA_")} - fields - NOT_SETTINGS \
            == set(), component
        with monkeypatch.context() as m:
            for name, e in env(main).items():
                if name.startswith("AGENTIA_") and name not in NOT_SETTINGS:
                    m.setenv(name, str(e.get("value", "a-32-byte-value-from-a-k8s-secret")))
            from_env(kinds_of[component][0])
    comps = {c["metadata"]["name"]: c for c in kinds(docs, "Component")}
    assert {n: c["spec"]["type"] for n, c in comps.items()} == {
        "agentia-pubsub": "pubsub.redis", "agentia-state": "state.redis"}
    for c in comps.values():
        meta = {m["name"]: m for m in c["spec"]["metadata"]}
        assert meta["redisHost"]["value"] == "agentia-redis-master.redis.svc.cluster.local:6379"
        assert meta["redisPassword"]["secretKeyRef"] == {"name": "agentia-redis",
                                                         "key": "redis-password"}
        assert meta["enableTLS"]["value"] == "true"
        assert sorted(c["scopes"]) == ["t-agentia-api", "t-agentia-publisher",
                                       "t-agentia-worker"]


def test_dapr_app_ids_per_agent_and_refusals(helm: str, tmp_path: Path) -> None:
    docs = _dapr(helm, tmp_path, DAPR_ON, _agents_values(prefix="agentia", shards=16))
    workers = [d for d in kinds(docs, "Deployment")
               if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]
    ids = [_annotations(d)["dapr.io/app-id"] for d in workers]
    assert ids == ["t-agentia-worker-demo", "t-agentia-worker-triage"]
    for c in kinds(docs, "Component"):
        assert set(ids) <= set(c["scopes"])
    # /dapr/messages posts into any session: no topic into sessions without the token
    no_token = {"dapr": {"enabled": True, "inbound": {"topic": "agentia.in"}}}
    path = tmp_path / "no-token.yaml"
    path.write_text(yaml.safe_dump(no_token))
    err = template_error(helm, "-f", str(CHART / "ci" / "default-values.yaml"), "-f", str(path))
    assert "dapr.inbound.appTokenSecret" in err
    path.write_text(yaml.safe_dump({"dapr": {"enabled": True, "pubsub": "bad name/x"}}))
    err = template_error(helm, "-f", str(CHART / "ci" / "default-values.yaml"), "-f", str(path))
    assert "pubsub" in err


# --- LiveKit's SIP service (docs/voice.md, Telephony) ---

SIP_ON = {"sip": {"enabled": True, "redis": {"address": "livekit-redis.livekit.svc:6379"},
                  "port": 5070, "rtpPorts": {"start": 12000, "end": 12999}}}


def test_sip_is_off_by_default(rendered: dict[str, list[Doc]]) -> None:
    for _, docs in cases(rendered):
        assert not [d for d in kinds(docs, "Deployment")
                    if d["metadata"]["labels"]["app.kubernetes.io/component"] == "sip"]


def test_sip_deployment_beside_livekit(helm: str, tmp_path: Path) -> None:
    """The SIP Deployment gets the LiveKit URL and key pair (the same Secret as voice), the
    LiveKit server's Redis, its SIP and RTP ports, and a readiness probe on its health port."""
    docs = _dapr(helm, tmp_path, SIP_ON)
    dep = one(docs, "Deployment", "sip")
    spec = dep["spec"]["template"]["spec"]
    c = container(dep, "sip")
    assert c["image"] == "livekit/sip:v1.8.0" and spec["hostNetwork"] is True
    e = env(c)
    voice = env(container(one(docs, "Deployment", "voice"), "voice"))
    assert e["LIVEKIT_WS_URL"]["value"] == voice["AGENTIA_LIVEKIT_URL"]["value"]
    for ours, theirs in (("LIVEKIT_API_KEY", "AGENTIA_LIVEKIT_API_KEY"),
                         ("LIVEKIT_API_SECRET", "AGENTIA_LIVEKIT_API_SECRET")):
        assert e[ours]["valueFrom"] == voice[theirs]["valueFrom"]
    config = yaml.safe_load(e["SIP_CONFIG_BODY"]["value"])
    assert config["redis"] == {"address": "livekit-redis.livekit.svc:6379"}
    assert (config["sip_port"], config["rtp_port"]) == (5070, "12000-12999")
    ports = {(p["containerPort"], p["protocol"]) for p in c["ports"]}
    assert {(5070, "UDP"), (5070, "TCP"), (config["health_port"], "TCP")} <= ports
    assert c["readinessProbe"]["httpGet"]["port"] == "health"
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_sip_needs_voice_and_livekits_redis(helm: str, tmp_path: Path) -> None:
    base = ["-f", str(CHART / "ci" / "production-values.yaml")]
    assert "sip.redis.address is required" in template_error(
        helm, *base, "--set", "sip.enabled=true")
    assert "sip.enabled needs voice.enabled" in template_error(
        helm, *base, "--set", "sip.enabled=true,voice.enabled=false,sip.redis.address=r:6379")
    assert "/sip/redis/address" in template_error(
        helm, *base, "--set", "sip.enabled=true,sip.redis.address=no-port")
