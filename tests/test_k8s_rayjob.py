"""k8s/rayjob.yaml is a RayJob that KubeRay accepts, and it runs this project's default study.

Offline: no cluster, no network, no running Ray. Three checkers, each guarded by broken copies of
the manifest that it must reject:
- schema_errors: the RayJob CRD's schema (tests/data/kuberay/, see its README), as the API server
  and `kubectl apply` check it;
- kuberay_errors: the checks KubeRay's operator makes in code before it creates anything
  (ValidateRayJobMetadata, ValidateRayJobSpec, ValidateRayClusterSpec in
  ray-operator/controllers/ray/utils/validation.go), re-done in Python;
- project_errors: this project's own rules (Ray version, study, storage, GPUs, dependencies).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from packaging.requirements import Requirement

import analysis.__main__ as analysis_cli
import sweep.__main__ as sweep_cli
from sweep import storage
from sweep.config import load_study

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "k8s" / "rayjob.yaml"
KUBERAY_DATA = REPO / "tests" / "data" / "kuberay"
SCHEMA = KUBERAY_DATA / "rayjob-v1.schema.json"

MAX_RAYJOB_NAME = 47  # utils.MaxRayJobNameLength: the RayCluster's 53 less a 6-character suffix
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
RAY_START_RESOURCES = ("num-cpus", "num-gpus", "memory", "resources")
SHELL_OPERATORS = {"&&", "||", ";", "&", "|", ";;", "(", ")", "<", ">", ">>"}
GPU = "nvidia.com/gpu"
IMAGE = re.compile(
    r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-(?P<python>py3\d+)(?P<flavour>-cpu|-gpu)?"
)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA.read_text())


# ---- checker 1: the CRD's schema ---------------------------------------------------------------
def schema_errors(doc: dict, schema: dict) -> list[str]:
    """What the RayJob CRD's OpenAPI schema says is wrong with ``doc`` (empty when valid)."""
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(doc)]


# ---- checker 2: KubeRay's own checks ------------------------------------------------------------
def kuberay_errors(doc: dict) -> list[str]:
    """What KubeRay's operator (v1.7.0) would reject in ``doc`` before creating anything."""
    spec = doc.get("spec", {})
    errors = metadata_errors(doc.get("metadata", {}))
    errors += job_errors(spec)
    cluster = spec.get("rayClusterSpec")
    if cluster is not None:
        errors += cluster_errors(cluster)
        if spec.get("submissionMode") == "SidecarMode":
            policy = head_pod(cluster).get("restartPolicy", "Never")
            if policy != "Never":
                errors.append("restartPolicy for head Pod should be Never or unset in SidecarMode")
    return errors


def metadata_errors(metadata: dict) -> list[str]:
    name = metadata.get("name", "")
    errors = []
    if len(name) > MAX_RAYJOB_NAME:
        errors.append(f"RayJob name should be no more than {MAX_RAYJOB_NAME} characters")
    if not DNS_1035_LABEL.fullmatch(name):
        errors.append(f"RayJob name should be a valid DNS1035 label: {name!r}")
    return errors


def job_errors(spec: dict) -> list[str]:
    """ValidateRayJobSpec, less the RayClusterSpec part."""
    errors = []
    shutdown = spec.get("shutdownAfterJobFinishes", False)
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    mode = spec.get("submissionMode", "K8sJobMode")
    backoff = spec.get("backoffLimit")
    selector = spec.get("clusterSelector") or {}
    if spec.get("suspend") and not shutdown:
        errors.append("a RayJob with shutdownAfterJobFinishes false cannot be suspended")
    if ttl < 0:
        errors.append("ttlSecondsAfterFinished must be a non-negative integer")
    if ttl > 0 and not shutdown:
        errors.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes")
    # KubeRay itself rejects neither; with both, it uses the selected cluster and ignores
    # rayClusterSpec without a word. Both is a mistake here, so this asks for exactly one.
    if (spec.get("rayClusterSpec") is None) == (not selector):
        errors.append("exactly one of rayClusterSpec or clusterSelector must be set")
    if selector:
        if not selector.get("ray.io/cluster"):
            errors.append("cluster name in clusterSelector should not be empty")
        if mode == "SidecarMode":
            errors.append("clusterSelector is not supported in SidecarMode")
        if backoff is not None and backoff > 0:
            errors.append("backoffLimit is incompatible with clusterSelector mode")
    if mode == "InteractiveMode" and backoff is not None and backoff > 0:
        errors.append("backoffLimit is incompatible with InteractiveMode")
    if mode == "SidecarMode" and ("submitterPodTemplate" in spec or "submitterConfig" in spec):
        errors.append("SidecarMode supports neither submitterPodTemplate nor submitterConfig")
    errors += runtime_env_errors(spec.get("runtimeEnvYAML", ""))
    for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if spec.get(field) is not None and spec[field] <= 0:
            errors.append(f"{field} must be a positive integer")
    if backoff is not None and backoff < 0:
        errors.append("backoffLimit must be a positive integer")
    # Not KubeRay's: without an entrypoint only InteractiveMode has anything to run.
    if mode != "InteractiveMode" and not spec.get("entrypoint", "").strip():
        errors.append(f"entrypoint must not be empty in {mode}")
    return errors


def runtime_env_errors(text: str) -> list[str]:
    """KubeRay unmarshals runtimeEnvYAML into a map: it must be YAML, and a mapping (or empty)."""
    try:
        runtime_env = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"runtimeEnvYAML is not valid YAML: {exc}"]
    if runtime_env is not None and not isinstance(runtime_env, dict):
        return [f"runtimeEnvYAML must be a mapping, not {type(runtime_env).__name__}"]
    return []


def cluster_errors(cluster: dict) -> list[str]:
    """ValidateRayClusterSpec, the parts that apply to a cluster without GCS fault tolerance."""
    head = cluster.get("headGroupSpec", {})
    errors = group_errors("Head", head)
    if not head_pod(cluster).get("containers"):
        errors.append("headGroupSpec should have at least one container")
    autoscaling = cluster.get("enableInTreeAutoscaling", False)
    options = cluster.get("autoscalerOptions") or {}
    v2_env = head_env(cluster).get("RAY_enable_autoscaler_v2")
    v2 = options.get("version") == "v2" or (autoscaling and v2_env in ("1", "true"))
    if not autoscaling and v2_env in ("1", "true"):
        errors.append("RAY_enable_autoscaler_v2 is set but enableInTreeAutoscaling is false")
    if options.get("idleTimeoutSeconds", 0) < 0:
        errors.append("autoscalerOptions.idleTimeoutSeconds must be non-negative")
    for group in cluster.get("workerGroupSpecs", []):
        name = group.get("groupName")
        errors += group_errors(name, group)
        if not group.get("template", {}).get("spec", {}).get("containers"):
            errors.append(f"worker group {name} should have at least one container")
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling and (low is None or high is None):
            errors.append(f"worker group {name} must set minReplicas and maxReplicas")
        if any(n is not None and n < 0 for n in (low, high)):
            errors.append(f"worker group {name} has negative minReplicas or maxReplicas")
        if low is not None and high is not None and low > high:
            errors.append(f"worker group {name} has minReplicas {low} > maxReplicas {high}")
        if group.get("idleTimeoutSeconds") is not None and not v2:
            errors.append(f"worker group {name}: idleTimeoutSeconds needs autoscaler v2")
        if autoscaling and group.get("suspend"):
            errors.append(f"worker group {name} cannot be suspended with autoscaling")
    return errors


def group_errors(name: str, group: dict) -> list[str]:
    params = group.get("rayStartParams") or {}
    errors = []
    if any(params.get(key) for key in RAY_START_RESOURCES) and group.get("resources"):
        errors.append(f"{name} group: resources in both rayStartParams and resources")
    if "labels" in params:
        errors.append(f"{name} group: rayStartParams['labels'] is not supported")
    return errors


def head_pod(cluster: dict) -> dict:
    return cluster.get("headGroupSpec", {}).get("template", {}).get("spec", {})


def head_env(cluster: dict) -> dict:
    containers = head_pod(cluster).get("containers") or [{}]
    return {e["name"]: e.get("value") for e in containers[0].get("env", []) if "name" in e}


# ---- checker 3: this project's rules ------------------------------------------------------------
def project_errors(doc: dict) -> list[str]:
    """Where ``doc`` would not run this project's default study, on GPUs, into S3."""
    spec = doc["spec"]
    cluster = spec.get("rayClusterSpec", {})
    errors = []
    if (doc.get("apiVersion"), doc.get("kind")) != ("ray.io/v1", "RayJob"):
        errors.append(f"not a ray.io/v1 RayJob: {doc.get('apiVersion')} {doc.get('kind')}")
    if not (spec.get("shutdownAfterJobFinishes") and spec.get("ttlSecondsAfterFinished", 0) > 0):
        errors.append("the cluster must go when the job ends (shutdown and a TTL)")
    errors += version_errors(cluster)
    errors += gpu_errors(cluster)
    errors += entrypoint_errors(spec.get("entrypoint", ""))
    errors += dependency_errors(yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {})
    errors += credential_errors(doc)
    return errors


def pods(cluster: dict) -> list[tuple[str, dict]]:
    """(group name, pod spec) of the head and of every worker group."""
    groups = [("head", cluster.get("headGroupSpec", {}))]
    groups += [(g.get("groupName"), g) for g in cluster.get("workerGroupSpecs", [])]
    return [(name, g.get("template", {}).get("spec", {})) for name, g in groups]


def version_errors(cluster: dict) -> list[str]:
    """Every node runs the Ray of this project's environment, on one Python."""
    errors = []
    if cluster.get("rayVersion") != ray.__version__:
        errors.append(f"rayVersion {cluster.get('rayVersion')!r} is not ray {ray.__version__}")
    pythons = set()
    for name, pod in pods(cluster):
        for container in pod.get("containers", []):
            match = IMAGE.fullmatch(container.get("image", ""))
            if match is None or match["ray"] != ray.__version__:
                errors.append(
                    f"{name}: image {container.get('image')} is not Ray {ray.__version__}"
                )
            else:
                pythons.add(match["python"])
    if len(pythons) > 1:
        errors.append(f"the images mix Python versions: {sorted(pythons)}")
    return errors


def gpu_errors(cluster: dict) -> list[str]:
    """A worker group asks Kubernetes for GPUs, tells Ray as many, and runs a CUDA image."""
    gpu_groups = 0
    errors = []
    for group in cluster.get("workerGroupSpecs", []):
        container = group["template"]["spec"]["containers"][0]
        limit = container.get("resources", {}).get("limits", {}).get(GPU, 0)
        if not limit:
            continue
        gpu_groups += 1
        told = (group.get("rayStartParams") or {}).get("num-gpus")
        if told != str(limit):
            errors.append(f"{group['groupName']}: num-gpus {told!r} but {limit} {GPU}")
        if not container["image"].endswith("-gpu"):
            errors.append(f"{group['groupName']}: {container['image']} has no CUDA")
    if not gpu_groups:
        errors.append(f"no worker group has a {GPU} limit")
    return errors


def ray_job_commands(entrypoint: str) -> list[list[str]] | str:
    """The commands Ray runs for ``entrypoint``, or why it would not get them whole.

    KubeRay's submitter runs ``ray job submit ... -- ENTRYPOINT ; fi`` in a shell; `ray job
    submit` quotes its arguments back together (shlex.join), and Ray runs that in a shell.
    """
    if "\n" in entrypoint:
        return "the entrypoint spans lines: the submitter's shell would split it"
    lexer = shlex.shlex(entrypoint, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    if SHELL_OPERATORS & set(words):
        return "a shell operator outside quotes: the submitter's shell would act on it"
    if words[:2] in (["bash", "-c"], ["sh", "-c"]) and len(words) == 3:
        lexer = shlex.shlex(words[2], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    commands: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            commands.append([])
        elif word in SHELL_OPERATORS:
            return f"{word!r} in the job's command: only '&&' between commands here"
        else:
            commands[-1].append(word)
    return commands


def parse_cli(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | str:
    """The project's own CLI parser applied to ``argv``, or its complaint."""
    complaint = io.StringIO()
    try:
        with contextlib.redirect_stderr(complaint):
            return parser.parse_args(argv)
    except SystemExit:
        return complaint.getvalue().strip().splitlines()[-1]


def entrypoint_errors(entrypoint: str) -> list[str]:
    """The job runs the default study on the cluster into S3, using GPUs, then its report."""
    commands = ray_job_commands(entrypoint)
    if isinstance(commands, str):
        return [commands]
    runs = [c for c in commands if c[:4] == ["python", "-m", "sweep", "run"]]
    reports = [c for c in commands if c[:4] == ["python", "-m", "analysis", "report"]]
    if len(runs) != 1 or len(reports) != 1 or commands.index(runs[0]) > commands.index(reports[0]):
        return [f"want `sweep run`, then `analysis report`: {commands}"]
    run = parse_cli(sweep_cli.build_parser(), runs[0][3:])
    report = parse_cli(analysis_cli.build_parser(), reports[0][3:])
    if isinstance(run, str) or isinstance(report, str):
        return [f"the CLI rejects the entrypoint: {run if isinstance(run, str) else report}"]
    errors = []
    if run.study != "sweep/configs/default.yaml":
        errors.append(f"runs {run.study}, not the default study")
    if run.address != "auto":
        errors.append(f"--address {run.address}: the driver must join the job's cluster")
    if not (run.storage or "").startswith("s3://"):
        errors.append(f"--storage {run.storage}: the results must go to S3")
        return errors
    study = load_study(REPO / run.study, run.overrides)
    if study.resources.gpus_per_trial <= 0:
        errors.append("the study's trials ask for no GPU: the GPU workers would idle")
    if report.results != storage.join(run.storage, study.name):
        errors.append(f"the report reads {report.results}, not the study's results")
    return errors


def dependency_errors(runtime_env: dict) -> list[str]:
    """The runtime environment brings the project (working_dir) and pyproject's dependencies."""
    errors = []
    if not re.match(r"(s3|gs|https)://", str(runtime_env.get("working_dir", ""))):
        errors.append("working_dir must be a remote URI: the submitter pod has no checkout")
    pip = runtime_env.get("pip") or []
    pip = pip.get("packages", []) if isinstance(pip, dict) else pip
    installed = {Requirement(line).name: Requirement(line) for line in pip}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for line in pyproject["project"]["dependencies"]:
        wanted = Requirement(line)
        if wanted.name == "ray":
            continue  # in the image, at rayVersion
        if wanted.name not in installed:
            errors.append(f"runtimeEnvYAML pip lacks {wanted.name}")
        elif wanted.name != "torch" and installed[wanted.name].specifier != wanted.specifier:
            errors.append(f"pip has {installed[wanted.name]}, pyproject.toml {wanted}")
    torch_pin = re.search(r"^TORCH_VERSION \?= (\S+)$", (REPO / "Makefile").read_text(), re.M)
    if "torch" in installed and str(installed["torch"].specifier) != f"=={torch_pin[1]}":
        errors.append(f"pip has {installed['torch']}, the Makefile torch=={torch_pin[1]}")
    return errors


def credential_errors(doc: dict) -> list[str]:
    """Credentials come from a Secret (or the service account), never from this file."""
    errors = []
    for name, pod in pods(doc["spec"].get("rayClusterSpec", {})):
        for container in pod.get("containers", []):
            for env in container.get("env", []):
                secret_like = re.search(r"KEY|SECRET|TOKEN|PASSWORD", env["name"])
                if secret_like and "secretKeyRef" not in env.get("valueFrom", {}):
                    errors.append(f"{name}: {env['name']} is not read from a Secret")
    return errors


# ---- the manifest as it is -------------------------------------------------------------------
def test_manifest_is_one_rayjob_document() -> None:
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    assert len(documents) == 1
    assert (documents[0]["apiVersion"], documents[0]["kind"]) == ("ray.io/v1", "RayJob")


def test_matches_the_rayjob_crd_schema(manifest: dict, schema: dict) -> None:
    assert schema_errors(manifest, schema) == []


def test_passes_kuberays_own_checks(manifest: dict) -> None:
    assert kuberay_errors(manifest) == []


def test_runs_the_default_study_on_gpus_into_s3(manifest: dict) -> None:
    assert project_errors(manifest) == []


def test_no_credentials_inside() -> None:
    text = MANIFEST.read_text()
    assert re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text) is None
    assert re.search(r"(?<!\d)\d{12}(?!\d)", text) is None  # an AWS account id
    assert "PRIVATE KEY-----" not in text


# ---- broken copies: each must be rejected, by the checker named -------------------------------
Mutation = Callable[[dict], None]


def spec(doc: dict) -> dict:
    return doc["spec"]


def cluster(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"]


def gpu_group(doc: dict) -> dict:
    return cluster(doc)["workerGroupSpecs"][0]


def head_container(doc: dict) -> dict:
    return cluster(doc)["headGroupSpec"]["template"]["spec"]["containers"][0]


def set_entrypoint(old: str, new: str) -> Mutation:
    def mutate(doc: dict) -> None:
        assert old in spec(doc)["entrypoint"]
        spec(doc)["entrypoint"] = spec(doc)["entrypoint"].replace(old, new)

    return mutate


def set_runtime_env(change: Callable[[dict], None]) -> Mutation:
    def mutate(doc: dict) -> None:
        runtime_env = yaml.safe_load(spec(doc)["runtimeEnvYAML"])
        change(runtime_env)
        spec(doc)["runtimeEnvYAML"] = yaml.safe_dump(runtime_env)

    return mutate


SCHEMA_BREAKS: dict[str, Mutation] = {
    "misspelt field": lambda d: spec(d).update(shutdownAfterJobFinish=True),
    "misspelt field in the pod": lambda d: head_container(d).update(imagePullPolicyy="Always"),
    "ttl as a string": lambda d: spec(d).update(ttlSecondsAfterFinished="300"),
    "rayStartParams value not a string": lambda d: gpu_group(d)["rayStartParams"].update(
        {"num-gpus": 1}
    ),
    "worker group without template": lambda d: gpu_group(d).pop("template"),
    "container without name": lambda d: head_container(d).pop("name"),
    "GPU limit not a quantity": lambda d: head_container(d)["resources"]["limits"].update(
        {GPU: [1]}
    ),
    "entrypoint as a list": lambda d: spec(d).update(entrypoint=["python", "-m", "sweep"]),
    "env var without name": lambda d: head_container(d)["env"].append({"value": "1"}),
}

KUBERAY_BREAKS: dict[str, tuple[Mutation, str]] = {
    "name too long": (lambda d: d["metadata"].update(name="m" * 48), "no more than 47"),
    "name not DNS-1035": (lambda d: d["metadata"].update(name="mlp_sweep"), "DNS1035"),
    "name starts with a digit": (lambda d: d["metadata"].update(name="1-sweep"), "DNS1035"),
    "ttl without shutdown": (
        lambda d: spec(d).update(shutdownAfterJobFinishes=False),
        "needs shutdownAfterJobFinishes",
    ),
    "negative ttl": (lambda d: spec(d).update(ttlSecondsAfterFinished=-1), "non-negative"),
    "suspend without shutdown": (
        lambda d: spec(d).update(suspend=True, shutdownAfterJobFinishes=False),
        "cannot be suspended",
    ),
    "neither cluster spec nor selector": (
        lambda d: spec(d).pop("rayClusterSpec"),
        "exactly one of rayClusterSpec",
    ),
    "both cluster spec and selector": (
        lambda d: spec(d).update(clusterSelector={"ray.io/cluster": "shared"}),
        "exactly one of rayClusterSpec",
    ),
    "selector without cluster name": (
        lambda d: (spec(d).pop("rayClusterSpec"), spec(d).update(clusterSelector={"a": "b"})),
        "cluster name in clusterSelector",
    ),
    "selector with retries": (
        lambda d: (
            spec(d).pop("rayClusterSpec"),
            spec(d).update(clusterSelector={"ray.io/cluster": "c"}, backoffLimit=2),
        ),
        "incompatible with clusterSelector",
    ),
    "interactive with retries": (
        lambda d: spec(d).update(submissionMode="InteractiveMode", backoffLimit=1),
        "incompatible with InteractiveMode",
    ),
    "sidecar with submitter template": (
        lambda d: spec(d).update(submissionMode="SidecarMode", submitterConfig={}),
        "SidecarMode supports neither",
    ),
    "sidecar with restarting head": (
        lambda d: (
            spec(d).update(submissionMode="SidecarMode"),
            cluster(d)["headGroupSpec"]["template"]["spec"].update(restartPolicy="Always"),
        ),
        "restartPolicy for head Pod",
    ),
    "runtimeEnvYAML not YAML": (
        lambda d: spec(d).update(runtimeEnvYAML="pip: [torch\nenv_vars: {"),
        "not valid YAML",
    ),
    "runtimeEnvYAML a list": (
        lambda d: spec(d).update(runtimeEnvYAML="- pip\n- env_vars\n"),
        "must be a mapping",
    ),
    "zero deadline": (lambda d: spec(d).update(activeDeadlineSeconds=0), "positive integer"),
    "negative backoff": (lambda d: spec(d).update(backoffLimit=-1), "backoffLimit must be"),
    "empty entrypoint": (lambda d: spec(d).update(entrypoint="  "), "entrypoint must not be"),
    "head without containers": (
        lambda d: cluster(d)["headGroupSpec"]["template"]["spec"].update(containers=[]),
        "headGroupSpec should have at least one container",
    ),
    "worker without containers": (
        lambda d: gpu_group(d)["template"]["spec"].update(containers=[]),
        "worker group gpu should have at least one container",
    ),
    "fixed size without max": (
        lambda d: (cluster(d).pop("enableInTreeAutoscaling"), gpu_group(d).pop("maxReplicas")),
        "must set minReplicas and maxReplicas",
    ),
    "min above max": (lambda d: gpu_group(d).update(minReplicas=5), "> maxReplicas"),
    "negative replicas": (lambda d: gpu_group(d).update(minReplicas=-1), "negative minReplicas"),
    "resources twice": (
        lambda d: gpu_group(d).update(resources={"GPU": "1"}),
        "in both rayStartParams and resources",
    ),
    "labels in rayStartParams": (
        lambda d: gpu_group(d)["rayStartParams"].update(labels="a=b"),
        "rayStartParams['labels']",
    ),
    "idle timeout without autoscaler v2": (
        lambda d: gpu_group(d).update(idleTimeoutSeconds=60),
        "needs autoscaler v2",
    ),
    "autoscaler v2 env without autoscaling": (
        lambda d: (
            cluster(d).update(enableInTreeAutoscaling=False),
            head_container(d)["env"].append({"name": "RAY_enable_autoscaler_v2", "value": "1"}),
        ),
        "enableInTreeAutoscaling is false",
    ),
    "negative autoscaler idle timeout": (
        lambda d: cluster(d)["autoscalerOptions"].update(idleTimeoutSeconds=-5),
        "idleTimeoutSeconds must be non-negative",
    ),
    "suspended group with autoscaling": (
        lambda d: gpu_group(d).update(suspend=True),
        "cannot be suspended with autoscaling",
    ),
}

PROJECT_BREAKS: dict[str, tuple[Mutation, str]] = {
    "another kind": (lambda d: d.update(kind="RayCluster"), "not a ray.io/v1 RayJob"),
    "cluster kept after the job": (
        lambda d: spec(d).update(ttlSecondsAfterFinished=0),
        "the cluster must go",
    ),
    "another Ray version": (lambda d: cluster(d).update(rayVersion="2.9.3"), "rayVersion"),
    "another Ray in the workers": (
        lambda d: gpu_group(d)["template"]["spec"]["containers"][0].update(
            image="rayproject/ray:2.9.3-py311-gpu"
        ),
        "is not Ray",
    ),
    "mixed Pythons": (
        lambda d: head_container(d).update(image=f"rayproject/ray:{ray.__version__}-py312-cpu"),
        "mix Python versions",
    ),
    "no GPU limit": (
        lambda d: [
            c["resources"]["limits"].pop(GPU)
            for c in gpu_group(d)["template"]["spec"]["containers"]
        ],
        f"no worker group has a {GPU}",
    ),
    "Ray told another GPU count": (
        lambda d: gpu_group(d)["rayStartParams"].update({"num-gpus": "2"}),
        "num-gpus '2'",
    ),
    "CPU image on GPU workers": (
        lambda d: gpu_group(d)["template"]["spec"]["containers"][0].update(
            image=f"rayproject/ray:{ray.__version__}-py311-cpu"
        ),
        "has no CUDA",
    ),
    "another study": (
        set_entrypoint("configs/default.yaml", "configs/asha.yaml"),
        "not the default study",
    ),
    "local storage": (set_entrypoint("s3://BUCKET/mlp-sweep ", "/tmp/results "), "go to S3"),
    "private local Ray": (set_entrypoint("--address auto", ""), "--address None"),
    "trials on CPUs": (
        set_entrypoint("--set resources.gpus_per_trial=0.25", ""),
        "ask for no GPU",
    ),
    "report of another directory": (
        set_entrypoint("digits-optimizers", "other"),
        "the report reads",
    ),
    "a flag the CLI lacks": (set_entrypoint("--exist-ok", "--resume"), "CLI rejects"),
    "no report": (
        set_entrypoint("&& python -m analysis report", "&& python -m analysis summary"),
        "then `analysis report`",
    ),
    "&& outside the quotes": (
        lambda d: spec(d).update(entrypoint=shlex.split(spec(d)["entrypoint"])[2]),
        "shell operator outside quotes",
    ),
    "entrypoint on two lines": (set_entrypoint(" && ", "\n&& "), "spans lines"),
    "local working_dir": (
        set_runtime_env(lambda env: env.update(working_dir=".")),
        "working_dir must be a remote URI",
    ),
    "a dependency missing": (
        set_runtime_env(lambda env: env["pip"].remove("scipy>=1.10")),
        "pip lacks scipy",
    ),
    "a dependency at another range": (
        set_runtime_env(lambda env: env["pip"].__setitem__(1, "pandas<2")),
        "pyproject.toml pandas>=2.0",
    ),
    "torch not the Makefile's": (
        set_runtime_env(lambda env: env.update(pip=["torch>=2.2", *env["pip"][1:]])),
        "the Makefile torch==",
    ),
    "a key written in the file": (
        lambda d: head_container(d)["env"].append(
            {"name": "AWS_SECRET_ACCESS_KEY", "value": "not-a-real-key"}
        ),
        "is not read from a Secret",
    ),
}


def broken(manifest: dict, mutate: Mutation) -> dict:
    doc = copy.deepcopy(manifest)
    mutate(doc)
    return doc


@pytest.mark.parametrize("name", sorted(SCHEMA_BREAKS))
def test_schema_rejects_a_broken_copy(manifest: dict, schema: dict, name: str) -> None:
    assert schema_errors(broken(manifest, SCHEMA_BREAKS[name]), schema), name


@pytest.mark.parametrize("name", sorted(KUBERAY_BREAKS))
def test_kuberay_checks_reject_a_broken_copy(manifest: dict, name: str) -> None:
    mutate, expected = KUBERAY_BREAKS[name]
    errors = kuberay_errors(broken(manifest, mutate))
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize("name", sorted(PROJECT_BREAKS))
def test_project_checks_reject_a_broken_copy(manifest: dict, name: str) -> None:
    mutate, expected = PROJECT_BREAKS[name]
    errors = project_errors(broken(manifest, mutate))
    assert any(expected in error for error in errors), errors


# ---- the schema file and its converter --------------------------------------------------------
def kuberay_version(schema: dict) -> str:
    return re.search(r"kuberay v(\d+\.\d+\.\d+)", schema["$comment"])[1]


def test_readme_installs_the_kuberay_the_schema_comes_from(schema: dict) -> None:
    readme = (REPO / "README.md").read_text()
    assert f"kuberay/kuberay-operator --version {kuberay_version(schema)}" in readme


def load_converter():
    spec_ = importlib.util.spec_from_file_location("convert_crd", KUBERAY_DATA / "convert_crd.py")
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module


def test_converter_turns_kubernetes_dialect_into_json_schema() -> None:
    openapi = {
        "type": "object",
        "required": ["port"],
        "properties": {
            "port": {"x-kubernetes-int-or-string": True},
            "when": {"type": "string", "format": "date-time", "nullable": True},
            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "extra": {
                "type": "object",
                "properties": {"a": {"type": "integer"}},
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
        "x-kubernetes-validations": [{"rule": "self.port > 0"}],
    }
    assert load_converter().convert(openapi) == {
        "type": "object",
        "required": ["port"],
        "properties": {
            "port": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "when": {"type": ["string", "null"], "format": "date-time"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "extra": {"type": "object", "properties": {"a": {"type": "integer"}}},
        },
        "additionalProperties": False,
    }
