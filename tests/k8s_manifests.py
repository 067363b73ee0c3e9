"""Reading k8s/*.yaml and the Dockerfile for the offline checks in test_k8s.py.

What a pod would see is rebuilt here without a cluster: the pod specs of every workload
object, each container's command line, its ``$(VAR)`` references resolved the way the
kubelet resolves them, and the image's paths and the pod's volume mounts mapped onto this
checkout and a temporary folder, so the same command line can be run locally.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rayjob_schema import pod_templates

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
DOCKERFILE = REPO / "Dockerfile"
SWEEP_PREFIX = ["python", "-m", "sweep"]
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")   # the kubelet's $(VAR) syntax


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_objects(paths: list[Path] | None = None) -> list[dict]:
    return [doc for path in (paths or manifest_files())
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def object_id(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def pod_specs(obj: dict) -> dict[str, dict]:
    """Pod specs of a workload object by a descriptive name ({} for non-workloads)."""
    if obj["kind"] == "RayJob":
        return {f"{object_id(obj)} {where}": tpl["spec"] for where, tpl in pod_templates(obj).items()}
    template = obj.get("spec", {}).get("template")
    return {object_id(obj): template["spec"]} if template else {}


def all_pod_specs(objects: list[dict]) -> dict[str, dict]:
    return {name: spec for obj in objects for name, spec in pod_specs(obj).items()}


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def literal_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def defined_env(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def var_refs(text: str) -> set[str]:
    return set(VAR_REF.findall(text))


def substitute(text: str, values: dict[str, str]) -> str:
    """$(VAR) -> value, as the kubelet does for command, args and env values."""
    return VAR_REF.sub(lambda m: values.get(m.group(1), m.group(0)), text)


@dataclass
class CommandLine:
    """One command line a container (or the image, or a RayJob) runs."""
    where: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)    # mountPath -> volume name
    container: dict | None = None
    pod_spec: dict | None = None

    def is_sweep(self) -> bool:
        return self.argv[:3] == SWEEP_PREFIX

    def sweep_args(self) -> list[str]:
        return self.argv[3:]

    def overrides(self) -> dict[str, str]:
        """The ``key=value`` config overrides on a sweep command line."""
        return dict(a.split("=", 1) for a in self.sweep_args() if "=" in a and not a.startswith("-"))

    def option(self, name: str) -> str | None:
        args = self.sweep_args()
        return args[args.index(name) + 1] if name in args else None


def container_commands(objects: list[dict]) -> list[CommandLine]:
    """The command line of every container that sets one, plus each RayJob entrypoint."""
    found = []
    for obj in objects:
        for pod_name, spec in pod_specs(obj).items():
            for c in containers(spec):
                argv = c.get("command", []) + c.get("args", [])
                if argv:
                    found.append(CommandLine(f"{pod_name} container {c['name']}", argv, literal_env(c),
                                             _mounts(c), c, spec))
        if obj["kind"] == "RayJob":
            found.append(_rayjob_entrypoint(obj))
    return found


def _rayjob_entrypoint(rayjob: dict) -> CommandLine:
    # `ray job submit` runs the entrypoint with a shell on the head pod: split it like one.
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    container = head["containers"][0]
    return CommandLine(f"{object_id(rayjob)} entrypoint (on the head)", shlex.split(rayjob["spec"]["entrypoint"]),
                       literal_env(container), _mounts(container), container, head)


def _mounts(container: dict) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


def volume_of(pod_spec: dict, name: str) -> dict:
    return next(v for v in pod_spec.get("volumes", []) if v["name"] == name)


# --- Dockerfile ------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]]   # (INSTRUCTION, rest of the line)

    def last(self, instruction: str) -> str | None:
        values = self.all(instruction)
        return values[-1] if values else None

    def all(self, instruction: str) -> list[str]:
        return [rest for ins, rest in self.instructions if ins == instruction]


def dockerfile_stages(text: str | None = None) -> list[Stage]:
    """The build stages of the Dockerfile, each with its instructions (continuations joined)."""
    text = DOCKERFILE.read_text() if text is None else text
    logical = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    stages: list[Stage] = []
    for line in filter(None, (l.strip() for l in logical.splitlines())):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            words = rest.split()
            stages.append(Stage(words[0], words[2] if len(words) > 2 and words[1].upper() == "AS" else None, []))
        elif stages:
            stages[-1].instructions.append((instruction, rest))
    return stages


def exec_form(rest: str) -> list[str]:
    """CMD/ENTRYPOINT argument: JSON exec form, else the shell form as /bin/sh -c would split it."""
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def dockerfile_command() -> CommandLine:
    final = dockerfile_stages()[-1]
    argv = exec_form(final.last("ENTRYPOINT") or "[]") + exec_form(final.last("CMD") or "[]")
    return CommandLine("Dockerfile CMD", argv, dockerfile_env(final))


def dockerfile_env(stage: Stage) -> dict[str, str]:
    env = {}
    for rest in stage.all("ENV"):
        env.update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
    return env


def workdir() -> str:
    return dockerfile_stages()[-1].last("WORKDIR")
