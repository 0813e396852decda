"""The subset of kustomize that deploy/k8s uses, in Python: enough to render its overlays.

Supported in a kustomization.yaml: ``resources`` (YAML files or directories holding a
kustomization), ``namespace``, ``images`` (``name`` with ``newName`` / ``newTag``) and
``patches`` given by ``path`` (strategic-merge patches, several documents per file allowed,
matched to their resource by kind and name). Anything else is refused, so a manifest change
that needs more of kustomize fails here loudly instead of rendering wrong. The test compares
this renderer with ``kubectl kustomize`` where kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "images", "patches"},
)
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"})
# Strategic merge: lists merged item by item on this key (every other list is replaced).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}


class KustomizeError(Exception):
    """A kustomization this renderer does not understand, or a patch that matches nothing."""


def load_documents(path: Path) -> list[Manifest]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in documents:
        if not isinstance(doc, dict) or "kind" not in doc:
            raise KustomizeError(f"{path}: not a Kubernetes object: {doc!r:.80}")
    return documents


def render(directory: Path) -> list[Manifest]:
    """The objects ``kustomize build directory`` would produce (order aside)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    objects: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        objects.extend(render(target) if target.is_dir() else load_documents(target))
    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise KustomizeError(f"{directory}: only `patches: - path: FILE` is supported")
        for patch in load_documents(directory / patch_entry["path"]):
            _apply_patch(objects, patch, directory / patch_entry["path"])
    for image in kustomization.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    _set_namespace(objects, kustomization.get("namespace"))
    return objects


def _set_namespace(objects: list[Manifest], namespace: str | None) -> None:
    if not namespace:
        return
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            obj.setdefault("metadata", {})["namespace"] = namespace


def _apply_patch(objects: list[Manifest], patch: Manifest, source: Path) -> None:
    name = patch["metadata"]["name"]
    matches = [o for o in objects if o["kind"] == patch["kind"] and o["metadata"]["name"] == name]
    if len(matches) != 1:
        raise KustomizeError(f"{source}: {patch['kind']}/{name} matches {len(matches)} objects")
    merged = strategic_merge(matches[0], patch)
    matches[0].clear()
    matches[0].update(merged)


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """``patch`` merged into ``base``: maps recursively, keyed lists item by item, else replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        merged_list = copy.deepcopy(base)
        for item in patch:
            found = [i for i, existing in enumerate(merged_list) if existing[key] == item[key]]
            if found:
                merged_list[found[0]] = strategic_merge(merged_list[found[0]], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def pod_spec(obj: Manifest) -> Manifest | None:
    """The pod template's spec of a workload, None for other kinds."""
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        spec: Manifest = obj["spec"]["template"]["spec"]
        return spec
    return None


def _set_image(obj: Manifest, image: Manifest) -> None:
    spec = pod_spec(obj)
    if spec is None:
        return
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        name, tag = container["image"], ""
        if ":" in name.rpartition("/")[2]:
            name, _, tag = name.rpartition(":")
        if name != image["name"]:
            continue
        container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}".rstrip(":")
