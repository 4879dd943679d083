"""cluster.yaml against Ray's own launcher schema, and deploy/kuberay/rayjob.yaml's structure.

The launcher schema (``ray/autoscaler/ray-schema.json``) ships with the installed ray; the same
file is what ``ray up`` validates against, so a config that passes here is one ``ray up``
accepts (cloud-side values such as the AMI id are checked by AWS, not here).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster.yaml"
RAYJOB = ROOT / "deploy" / "kuberay" / "rayjob.yaml"

# vCPUs and GPUs of the instance types the config may use (AWS spec sheets). A node type's
# declared resources must not promise more than its instance has.
INSTANCE_SPECS = {
    "m6i.2xlarge": (8, 0),
    "m6i.4xlarge": (16, 0),
    "m6i.8xlarge": (32, 0),
    "p5.48xlarge": (192, 8),
    "p4d.24xlarge": (96, 8),
    "g6.xlarge": (4, 1),
    "g6.12xlarge": (48, 4),
    "g5.xlarge": (4, 1),
    "g5.12xlarge": (48, 4),
}


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load(RAYJOB.read_text())


def test_cluster_yaml_matches_rays_launcher_schema(cluster):
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(cluster, schema)


def test_cluster_yaml_passes_rays_own_validation_after_defaults(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(cluster)
    # prepare_config merges the AWS provider defaults the way `ray up` does.
    validate_config(prepare_config(json.loads(json.dumps(cluster))))


def test_every_node_type_declares_cpu_and_gpu(cluster):
    node_types = cluster["available_node_types"]
    assert cluster["head_node_type"] in node_types
    for name, node in node_types.items():
        resources = node["resources"]
        assert {"CPU", "GPU"} <= set(resources), f"{name}: declare CPU and GPU explicitly"
        cpus, gpus = INSTANCE_SPECS[node["node_config"]["InstanceType"]]
        assert resources["CPU"] <= cpus, f"{name}: more CPU than the instance has"
        assert resources["GPU"] == gpus, f"{name}: GPU count differs from the instance's"


def test_head_is_cpu_only_and_workers_autoscale_within_bounds(cluster):
    node_types = cluster["available_node_types"]
    head = node_types[cluster["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    workers = {n: t for n, t in node_types.items() if n != cluster["head_node_type"]}
    for name, node in workers.items():
        assert 0 <= node["min_workers"] <= node["max_workers"] <= cluster["max_workers"], name


def test_gpu_worker_types_for_synthesis_training_and_precompute(cluster):
    types = {t["node_config"]["InstanceType"]: t for t in cluster["available_node_types"].values()}
    # Synthesis / training: an 8-GPU H100 node; precompute: single-GPU L4 or A10G nodes.
    assert types["p5.48xlarge"]["resources"]["GPU"] == 8
    assert any(it in types for it in ("g6.xlarge", "g5.xlarge"))


def test_s3_access_is_an_instance_profile_not_keys(cluster):
    for name, node in cluster["available_node_types"].items():
        arn = node["node_config"]["IamInstanceProfile"]["Arn"]
        assert arn.startswith("arn:aws:iam::") and ":instance-profile/" in arn, name
    text = CLUSTER.read_text()
    for secret in ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", "AKIA"):
        assert secret not in text


def test_setup_installs_the_project_with_the_gpu_extra(cluster):
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "\ngpu = [" in pyproject, "the gpu extra the cluster installs must exist"
    mounts = cluster["file_mounts"]
    assert "." in mounts.values(), "the checkout must be synced to the nodes"
    target = next(k for k, v in mounts.items() if v == ".")
    installs = [c for c in cluster["setup_commands"] if "pip install" in c and "-e" in c]
    assert installs, "setup_commands must install the project"
    words = shlex.split(installs[0].replace("$HOME", "~"))
    spec = next(w for w in words if "[" in w)
    assert spec.split("[")[0] == target and "gpu" in spec.split("[")[1].rstrip("]").split(",")
    # The local virtualenv and run outputs must not be synced (tens of GB).
    assert ".gitignore" in cluster.get("rsync_filter", [])
    assert ".venv/" in (ROOT / ".gitignore").read_text()


def test_head_starts_the_dashboard_for_job_submission(cluster):
    start = " ".join(cluster["head_start_ray_commands"])
    assert "--head" in start and "--dashboard-host=0.0.0.0" in start


def test_rayjob_structure(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    entry = shlex.split(spec["entrypoint"])
    assert entry[0] == "python" and entry[1].startswith("/app/jobs/")
    script = ROOT / "jobs" / Path(entry[1]).name
    assert script.is_file(), f"entrypoint names a missing job script: {script.name}"
    config = entry[entry.index("--config") + 1]
    assert config.startswith("/app/configs/prod_")
    assert spec["shutdownAfterJobFinishes"] is True
    yaml.safe_load(spec["runtimeEnvYAML"])

    cluster_spec = spec["rayClusterSpec"]
    assert cluster_spec["rayVersion"] == ray.__version__
    head = cluster_spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["template"]["spec"]["containers"][0]["image"]

    groups = {g["groupName"]: g for g in cluster_spec["workerGroupSpecs"]}
    gpu_groups = [g for g in groups.values() if int(g["rayStartParams"].get("num-gpus", "0")) > 0]
    assert gpu_groups, "at least one GPU worker group"
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
        container = g["template"]["spec"]["containers"][0]
        limits = container["resources"]["limits"]
        # Ray's declared GPUs must match what Kubernetes gives the pod.
        assert int(limits.get("nvidia.com/gpu", "0")) == int(g["rayStartParams"].get("num-gpus", "0"))
        assert int(g["rayStartParams"]["num-cpus"]) <= int(limits["cpu"])
        assert g["template"]["spec"]["serviceAccountName"], "S3 access via the service account"
