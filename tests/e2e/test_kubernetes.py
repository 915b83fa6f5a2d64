"""deploy/kubernetes/: valid Kubernetes objects (kubernetes-validate, offline schemas) that fit dbguardian.

The PrometheusRule carries config/prometheus/dbguardian.rules.yml's groups; after changing the rules,
regenerate it with:

    python - <<'PY'
    import yaml; from pathlib import Path
    doc = yaml.safe_load(Path("deploy/kubernetes/prometheusrule.yaml").read_text())
    doc["spec"]["groups"] = yaml.safe_load(Path("config/prometheus/dbguardian.rules.yml").read_text())["groups"]
    ...  (write it back with its two comment lines)
    PY
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dbguardian.policy import load_policy
from dbguardian.storage.s3.config import S3StorageConfig

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
CRDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def documents() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{path.name}:{document['kind']}"] = document
    return found


def by_kind(kind: str) -> dict[str, Any]:
    [document] = [doc for doc in documents().values() if doc["kind"] == kind]
    return document


@pytest.mark.parametrize("name", sorted(documents()))
def test_every_object_is_valid_for_kubernetes(name: str) -> None:
    document = documents()[name]
    if document["kind"] in CRDS:
        assert document["apiVersion"] == "monitoring.coreos.com/v1" and document["spec"]
        return
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_policy_in_the_configmap_fits_the_pod(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(by_kind("ConfigMap")["data"]["policy.yaml"])
    policy = load_policy(policy_file)
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["policy"]["configMap"]["name"] == by_kind("ConfigMap")["metadata"]["name"]
    assert mounts["state"] == str(policy.state_dir)
    secret_keys = set(by_kind("Secret")["stringData"])
    secret_dir = Path(mounts["secrets"])
    files = [target.password_file for target in policy.targets.values()]
    for storage in policy.storage.values():
        if isinstance(storage, S3StorageConfig):
            files += [storage.access_key_id_file, storage.secret_access_key_file]
    for file in files:
        assert file is not None and file.parent == secret_dir and file.name in secret_keys, file
    # Probes on the daemon's endpoints, on the port the policy listens on.
    port = container["ports"][0]["containerPort"]
    assert policy.metrics.listen.endswith(f":{port}")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] > policy.shutdown_grace.total_seconds()
    deployment = by_kind("Deployment")["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
    assert container["securityContext"]["readOnlyRootFilesystem"] and mounts["tmp"] == "/tmp"
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile USER)


def test_the_validation_can_fail() -> None:
    """kubernetes-validate with strict=True refuses a misspelt field: the checks above mean something."""
    broken = yaml.safe_load((K8S / "deployment.yaml").read_text())
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/healthz", "port": 9863}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_cronjob_never_overlaps_and_runs_a_backup_of_a_configured_target(tmp_path: Path) -> None:
    cron = by_kind("CronJob")["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["successfulJobsHistoryLimit"] >= 1 and cron["failedJobsHistoryLimit"] >= 1
    assert cron["jobTemplate"]["spec"]["backoffLimit"] <= 2
    [container] = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(by_kind("ConfigMap")["data"]["policy.yaml"])
    policy = load_policy(policy_file)
    command = args.index("backup")
    assert args[command + 1] in policy.targets and args[args.index("--tier") + 1] in policy.targets["app"].schedules


def test_the_prometheus_rule_carries_the_rules_file() -> None:
    rules = yaml.safe_load((ROOT / "config" / "prometheus" / "dbguardian.rules.yml").read_text())
    assert by_kind("PrometheusRule")["spec"]["groups"] == rules["groups"]
    selector = by_kind("ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= by_kind("Service")["metadata"]["labels"].items()
    assert by_kind("ServiceMonitor")["spec"]["endpoints"][0]["port"] == by_kind("Service")["spec"]["ports"][0]["name"]


def test_the_kustomize_base_and_overlay_name_real_files_and_a_valid_policy(tmp_path: Path) -> None:
    """Without kustomize here: every resource and patch the kustomizations name exists, the base holds every
    object but the example Secret and the CronJob (the alternative to the Deployment), and the overlay's
    policy loads."""
    base = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    named = set(base["resources"])
    assert all((K8S / name).is_file() for name in named)
    assert named == {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml",
                                                                "cronjob.yaml", "podmonitor.yaml"}  # fmt: skip
    overlay_dir = K8S / "overlays" / "example"
    overlay = yaml.safe_load((overlay_dir / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../.."]
    [image] = overlay["images"]
    [container] = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"].split(":")[0] == image["name"]
    patch = yaml.safe_load((overlay_dir / overlay["patches"][0]["path"]).read_text())
    assert patch["kind"] == "ConfigMap" and patch["metadata"]["name"] == by_kind("ConfigMap")["metadata"]["name"]
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(patch["data"]["policy.yaml"])
    assert set(load_policy(policy_file).targets) == {"orders"}
