"""A small kustomize renderer for the tests: the subset deploy/kubernetes/ uses, and nothing more.

Supported: ``resources`` (files, and directories holding a kustomization), ``namespace``,
``images`` (``newName``/``newTag``), and ``patches`` given as a strategic-merge file (``path``)
or as an inline JSON patch with a ``target`` (kind and name). Anything else in a kustomization
raises, so a manifest change that needs more is noticed instead of rendered wrongly. When
``kubectl`` is on the machine, tests/deploy/test_kubernetes.py checks this renderer's output
against ``kubectl kustomize``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
# Kinds that live outside namespaces (kustomize's `namespace:` leaves them alone).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# The merge key of each list strategic merge merges item by item (every list here keys on `name`).
NAMED_LISTS = {"containers", "initContainers", "env", "volumes", "volumeMounts", "ports"}


def load_documents(path: Path) -> list[Obj]:
    """Every non-empty YAML document of a file."""
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def render(directory: Path) -> list[Obj]:
    """The objects the kustomization in ``directory`` produces, in resource order."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kust) - SUPPORTED_KEYS
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml: unsupported keys {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in kust.get("resources", []):
        target = directory / entry
        objects.extend(render(target) if target.is_dir() else load_documents(target))
    for patch in kust.get("patches", []):
        _apply_patch(directory, patch, objects)
    for image in kust.get("images", []):
        _set_image(objects, image)
    if "namespace" in kust:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = kust["namespace"]
    return objects


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    """The one object of ``kind`` named ``name``."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} objects of kind {kind} named {name}")
    return found[0]


def _apply_patch(directory: Path, patch: Obj, objects: list[Obj]) -> None:
    if "path" in patch:
        for doc in load_documents(directory / patch["path"]):
            target = find(objects, doc["kind"], doc["metadata"]["name"])
            merged = strategic_merge(target, doc)
            target.clear()
            target.update(merged)
        return
    spec = patch["target"]
    target = find(objects, spec["kind"], spec["name"])
    for op in yaml.safe_load(patch["patch"]):
        _json_patch(target, op)


def strategic_merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """Strategic merge as kustomize does it for these manifests: maps merge, named lists merge
    item by item (new items first, as kustomize orders them), other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if key in NAMED_LISTS and isinstance(base, list) and isinstance(patch, list):
        merged = [copy.deepcopy(p) for p in patch if not any(b.get("name") == p.get("name") for b in base)]
        for item in base:
            match = next((p for p in patch if p.get("name") == item.get("name")), None)
            merged.append(strategic_merge(item, match) if match is not None else copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _json_patch(target: Obj, op: Obj) -> None:
    """RFC 6902 ``replace`` and ``add`` (the operations the overlays use)."""
    if op["op"] not in ("replace", "add"):
        raise ValueError(f"unsupported JSON patch op {op['op']!r}")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    node: Any = target
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        if op["op"] == "add":
            node.insert(len(node) if last == "-" else int(last), op["value"])
        else:
            node[int(last)] = op["value"]
    else:
        if op["op"] == "replace" and last not in node:
            raise KeyError(f"JSON patch replace: {op['path']} does not exist")
        node[last] = op["value"]


def _set_image(objects: list[Obj], image: Obj) -> None:
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
