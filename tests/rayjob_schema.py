"""The fields of a KubeRay ``ray.io/v1`` RayJob, for checking k8s/rayjob.yaml offline.

kubernetes-validate bundles only core Kubernetes schemas, so a RayJob passes it unchecked
(a misspelt field would be silently dropped by the API server's structural pruning, or be
rejected only at apply time). This is an allow-list transcribed from the KubeRay v1 Go types
(the CRD's openAPIV3Schema is generated from them):

- ray-project/kuberay ray-operator/apis/ray/v1/rayjob_types.go (commit 0057210e):
  RayJob, RayJobSpec, SubmitterConfig, DeletionStrategy, DeletionPolicy.
- ray-project/kuberay ray-operator/apis/ray/v1/raycluster_types.go (commit 3275ee09):
  RayClusterSpec, HeadGroupSpec, WorkerGroupSpec, ScaleStrategy, GcsFaultToleranceOptions,
  RedisCredential, AutoscalerOptions.

Required fields are those whose json tag has no ``omitempty`` and no ``+optional`` marker.
Fields of Kubernetes core types (PodTemplateSpec, Service, ResourceRequirements, ...) are
left to kubernetes-validate: the tests wrap the pod templates in a PodTemplate for that.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

# Leaf kinds
INT, STR, BOOL, NUMBER = "int", "str", "bool", "number"
STR_MAP = "map[string]string"
POD_TEMPLATE = "corev1.PodTemplateSpec"   # checked by kubernetes-validate, not here
K8S_OBJECT = "core Kubernetes type"       # idem (Service, ResourceRequirements, ...)


@dataclass(frozen=True)
class Struct:
    fields: dict[str, Any]
    required: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ListOf:
    item: Any


Spec = Union[str, Struct, ListOf]

_DELETION_POLICY = Struct({"policy": STR}, frozenset({"policy"}))
_REDIS_CREDENTIAL = Struct({"valueFrom": K8S_OBJECT, "value": STR})

WORKER_GROUP_SPEC = Struct(
    {
        "suspend": BOOL,
        "groupName": STR,
        "replicas": INT,
        "minReplicas": INT,
        "maxReplicas": INT,
        "idleTimeoutSeconds": INT,
        "rayStartParams": STR_MAP,
        "template": POD_TEMPLATE,
        "scaleStrategy": Struct({"workersToDelete": ListOf(STR)}),
        "numOfHosts": INT,
    },
    frozenset({"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"}),
)

HEAD_GROUP_SPEC = Struct(
    {
        "template": POD_TEMPLATE,
        "headService": K8S_OBJECT,
        "enableIngress": BOOL,
        "rayStartParams": STR_MAP,
        "serviceType": STR,
    },
    frozenset({"template", "rayStartParams"}),
)

RAY_CLUSTER_SPEC = Struct(
    {
        "suspend": BOOL,
        "managedBy": STR,
        "autoscalerOptions": Struct({
            "resources": K8S_OBJECT, "image": STR, "imagePullPolicy": STR,
            "securityContext": K8S_OBJECT, "idleTimeoutSeconds": INT, "upscalingMode": STR,
            "env": ListOf(K8S_OBJECT), "envFrom": ListOf(K8S_OBJECT),
            "volumeMounts": ListOf(K8S_OBJECT),
        }),
        "headServiceAnnotations": STR_MAP,
        "enableInTreeAutoscaling": BOOL,
        "gcsFaultToleranceOptions": Struct(
            {"redisUsername": _REDIS_CREDENTIAL, "redisPassword": _REDIS_CREDENTIAL,
             "externalStorageNamespace": STR, "redisAddress": STR},
            frozenset({"redisAddress"}),
        ),
        "headGroupSpec": HEAD_GROUP_SPEC,
        "rayVersion": STR,
        "workerGroupSpecs": ListOf(WORKER_GROUP_SPEC),
    },
    frozenset({"headGroupSpec"}),
)

RAY_JOB_SPEC = Struct({
    "activeDeadlineSeconds": INT,
    "backoffLimit": INT,
    "rayClusterSpec": RAY_CLUSTER_SPEC,
    "submitterPodTemplate": POD_TEMPLATE,
    "metadata": STR_MAP,
    "clusterSelector": STR_MAP,
    "submitterConfig": Struct({"backoffLimit": INT}),
    "managedBy": STR,
    "deletionStrategy": Struct({"onSuccess": _DELETION_POLICY, "onFailure": _DELETION_POLICY},
                               frozenset({"onSuccess", "onFailure"})),
    "entrypoint": STR,
    "runtimeEnvYAML": STR,
    "jobId": STR,
    "submissionMode": STR,
    "entrypointResources": STR,
    "entrypointNumCpus": NUMBER,
    "entrypointNumGpus": NUMBER,
    "ttlSecondsAfterFinished": INT,
    "shutdownAfterJobFinishes": BOOL,
    "suspend": BOOL,
    "schedule": STR,
})

RAY_JOB = Struct(
    {"apiVersion": STR, "kind": STR, "metadata": K8S_OBJECT, "spec": RAY_JOB_SPEC},
    frozenset({"apiVersion", "kind", "spec"}),
)

_LEAF_TYPES = {
    INT: (int,), STR: (str,), BOOL: (bool,), NUMBER: (int, float),
    STR_MAP: (dict,), POD_TEMPLATE: (dict,), K8S_OBJECT: (dict,),
}


def problems(value: Any, spec: Spec = RAY_JOB, path: str = "") -> list[str]:
    """Every field of ``value`` outside ``spec`` or of the wrong type, as dotted paths."""
    if isinstance(spec, Struct):
        return _struct_problems(value, spec, path)
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in problems(item, spec.item, f"{path}[{i}]")]
    return _leaf_problems(value, spec, path)


def _struct_problems(value: Any, spec: Struct, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping, got {type(value).__name__}"]
    found = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key not in spec.fields:
            found.append(f"{where}: not a field of the ray.io/v1 type here")
        else:
            found += problems(item, spec.fields[key], where)
    found += [f"{path}.{key}: required field missing" for key in sorted(spec.required - set(value))]
    return found


def _leaf_problems(value: Any, kind: str, path: str) -> list[str]:
    # bool is an int in Python; YAML `true` where an integer belongs is still wrong
    wrong_bool = isinstance(value, bool) and kind in (INT, NUMBER)
    if wrong_bool or not isinstance(value, _LEAF_TYPES[kind]):
        return [f"{path}: expected {kind}, got {type(value).__name__} {value!r}"]
    if kind == STR_MAP:
        return [f"{path}.{k}: expected a string value, got {type(v).__name__} {v!r}"
                for k, v in value.items() if not isinstance(v, str)]
    return []


def pod_templates(rayjob: dict) -> dict[str, dict]:
    """Every pod template in a RayJob, by a name that says where it is."""
    cluster = rayjob["spec"].get("rayClusterSpec", {})
    found = {"head": cluster["headGroupSpec"]["template"]} if cluster else {}
    for group in cluster.get("workerGroupSpecs", []):
        found[f"worker group {group['groupName']}"] = group["template"]
    if "submitterPodTemplate" in rayjob["spec"]:
        found["submitter"] = rayjob["spec"]["submitterPodTemplate"]
    return found
