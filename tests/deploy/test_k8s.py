"""deploy/k8s: the manifests are valid against the Kubernetes API schemas (offline) and fit
together (labels, ports, probes, drain timing)."""

from __future__ import annotations

import copy

import pytest

from tests.deploy.conftest import yaml

EXPECTED_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


@pytest.fixture(scope="module")
def k8s_dir(root):
    return root / "deploy" / "k8s"


@pytest.fixture(scope="module")
def manifests(k8s_dir) -> dict[str, dict]:
    """The kustomization's resources by kind (one of each)."""
    kustomization = yaml.safe_load((k8s_dir / "kustomization.yaml").read_text())
    by_kind: dict[str, dict] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((k8s_dir / name).read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), name
            assert doc["kind"] not in by_kind, f"two {doc['kind']} manifests"
            by_kind[doc["kind"]] = doc
    return by_kind


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container["env"]}


def test_every_manifest_is_listed_and_valid_yaml(k8s_dir, manifests):
    assert set(manifests) == EXPECTED_KINDS
    for path in k8s_dir.glob("*.yaml"):
        assert list(yaml.safe_load_all(path.read_text())), path


# The oldest and the newest Kubernetes release whose schemas kubernetes-validate ships.
SCHEMA_VERSIONS = ("1.25.0", "latest")


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_manifests_are_valid_against_the_kubernetes_schemas(manifests, version):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (the dev extra)")
    version = kv.latest_version() if version == "latest" else version
    for doc in manifests.values():
        # strict: a misspelt or misplaced field is an error, not silently dropped by the API
        kv.validate(doc, version, strict=True)


def test_the_schema_check_catches_what_parsing_misses(manifests):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (the dev extra)")
    version = kv.latest_version()
    typo = copy.deepcopy(manifests["Deployment"])
    typo["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # not livenessProbe
    wrong_type = copy.deepcopy(manifests["Service"])
    wrong_type["spec"]["ports"][0]["port"] = "eighty"
    missing = copy.deepcopy(manifests["HorizontalPodAutoscaler"])
    del missing["spec"]["maxReplicas"]
    for doc in (typo, wrong_type, missing):
        with pytest.raises(kv.ValidationError):
            kv.validate(doc, version, strict=True)


def test_deployment_probes_resources_and_drain(manifests, settings_fields):
    deployment = manifests["Deployment"]
    assert deployment["apiVersion"] == "apps/v1"
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    container = _container(deployment)
    env = _env(container)
    assert set(env) <= settings_fields, set(env) - settings_fields
    (port,) = container["ports"]
    assert str(port["containerPort"]) == env["FCN_PORT"]["value"]
    assert env["FCN_HOST"]["value"] == "0.0.0.0"
    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("livenessProbe", "readinessProbe")
    }
    assert probes == {
        "livenessProbe": ("/healthz", port["name"]),
        "readinessProbe": ("/readyz", port["name"]),
    }
    for side in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][side]), side
    # preStop keeps the pod serving while endpoints update; then the service drains its own
    # requests; the kubelet's grace period must cover both or SIGKILL cuts requests off.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and int(pre_stop[1]) > 0
    drain = float(env["FCN_SHUTDOWN_GRACE_S"]["value"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_models_come_from_a_volume_filled_by_an_init_container(manifests):
    spec = manifests["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"] for v in spec["volumes"]}
    container = _container(manifests["Deployment"])
    models_dir = _env(container)["FCN_MODELS_DIR"]["value"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[models_dir]["name"] in volumes and mounts[models_dir]["readOnly"] is True
    (init,) = spec["initContainers"]
    assert {m["name"] for m in init["volumeMounts"]} == {mounts[models_dir]["name"]}
    for c in (*spec["initContainers"], *spec["containers"]):
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, m


def test_service_routes_to_the_pods_named_port(manifests):
    service, deployment = manifests["Service"], manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    names = {p["name"] for p in _container(deployment)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_hpa_scales_the_deployment_on_a_metric_the_service_exports(manifests, root):
    hpa, deployment = manifests["HorizontalPodAutoscaler"], manifests["Deployment"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pods_metrics = [
        m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"
    ]
    assert pods_metrics, "scale on the service's own load, not only CPU"
    metrics_source = (root / "service" / "http" / "metrics.py").read_text()
    adapter = yaml.safe_load(
        (root / "deploy" / "k8s" / "prometheus-adapter-rules.yaml").read_text()
    )
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    for name in pods_metrics:
        assert f'"{name}"' in metrics_source, f"{name} is not a metric of service/http/metrics.py"
        assert name in served, f"prometheus-adapter does not serve {name}"
    # CPU utilisation needs CPU requests on the container
    assert _container(deployment)["resources"]["requests"]["cpu"]


def test_pdb_leaves_room_for_a_drain(manifests):
    pdb, deployment, hpa = (
        manifests["PodDisruptionBudget"],
        manifests["Deployment"],
        manifests["HorizontalPodAutoscaler"],
    )
    assert pdb["apiVersion"] == "policy/v1"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # at least one pod may be evicted at the smallest size, or node drains block forever
    assert pdb["spec"]["minAvailable"] < min(
        deployment["spec"]["replicas"], hpa["spec"]["minReplicas"]
    )
