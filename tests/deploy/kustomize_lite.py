"""Renders a Kustomize directory the way `kubectl kustomize` does, for the subset of Kustomize that
deploy/kubernetes uses: Debian 12 ships no kustomize (its kubectl is 1.20), and the manifests must
be checked on a bare Debian 12 machine. Anything outside the subset is an error, never ignored:

  resources            files and directories (a directory is rendered as a kustomization)
  configMapGenerator   name + files (key = file name, or KEY=PATH), and behavior create (the
                       default) or replace (a ConfigMap of that name from the resources); with
  secretGenerator      the same, made into an Opaque Secret (values base64, as `data`)
  generatorOptions     disableNameSuffixHash: true only (no hash suffix to reproduce)
  images               name + newName and/or newTag, on containers' and initContainers' images
  patches              path: a strategic-merge patch naming its target by kind and metadata.name

Strategic merge follows Kubernetes' merge keys for the lists that have one here (containers and
initContainers, volumes and env by name, ports by containerPort, volumeMounts by mountPath), in
kustomize's order (the patch's items first, then the base's others); other lists are replaced,
maps merged recursively, as the API server's strategic merge does. Where a real kustomize is
installed, tests/deploy/test_kubernetes.py also compares this output with it (Secrets' values
decoded: kustomize wraps their base64 lines).
"""
import base64
import copy
import os

import yaml

KNOWN_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "secretGenerator",
              "generatorOptions", "images", "patches"}
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "ports": "containerPort", "volumeMounts": "mountPath"}


class KustomizeError(Exception):
    pass


def _load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _kustomization(directory):
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path) as f:
                k = yaml.safe_load(f) or {}
            unknown = set(k) - KNOWN_KEYS
            if unknown:
                raise KustomizeError(f"{path}: fields this renderer does not implement: {sorted(unknown)}")
            return k
    raise KustomizeError(f"{directory}: no kustomization.yaml")


def _generated(directory, spec, options, kind):
    """A ConfigMap or Secret of configMapGenerator or secretGenerator, and its behavior."""
    if set(spec) - {"name", "files", "behavior"}:
        raise KustomizeError(f"{kind} generator {spec.get('name')}: only name, files and behavior are "
                             "implemented")
    behavior = spec.get("behavior", "create")
    if behavior not in ("create", "replace"):
        raise KustomizeError(f"{kind} generator {spec['name']}: behavior {behavior} is not implemented")
    if options.get("disableNameSuffixHash") is not True:
        raise KustomizeError(f"{kind} generators need generatorOptions.disableNameSuffixHash: true")
    data = {}
    for entry in spec.get("files", []):
        key, _, rel = entry.partition("=") if "=" in entry else (os.path.basename(entry), "", entry)
        real = os.path.realpath(os.path.join(directory, rel))
        if not real.startswith(os.path.realpath(directory) + os.sep):
            raise KustomizeError(f"{entry}: kustomize refuses files outside the kustomization's directory")
        with open(real, "rb") as f:
            content = f.read()
        data[key] = content.decode() if kind == "ConfigMap" else base64.b64encode(content).decode()
    doc = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}, "data": data}
    if kind == "Secret":
        doc["type"] = "Opaque"
    return doc, behavior


def _add_generated(docs, doc, behavior):
    same = [i for i, d in enumerate(docs)
            if d["kind"] == doc["kind"] and d["metadata"]["name"] == doc["metadata"]["name"]]
    if behavior == "create" and same:
        raise KustomizeError(f"{doc['kind']} {doc['metadata']['name']} exists already: behavior replace?")
    if behavior == "replace":
        if len(same) != 1:
            raise KustomizeError(f"{doc['kind']} {doc['metadata']['name']}: nothing to replace")
        docs[same[0]] = doc
    else:
        docs.append(doc)


def _merge(base, patch, key=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        # As kustomize (kyaml) orders them: the patch's items in its order, each merged with the
        # base's item of the same key, then the base's other items in theirs.
        mk = MERGE_KEYS[key]
        patched = {item.get(mk) for item in patch}
        out = []
        for item in patch:
            match = [b for b in base if b.get(mk) == item.get(mk)]
            out.append(_merge(match[0], item) if match else copy.deepcopy(item))
        return out + [copy.deepcopy(b) for b in base if b.get(mk) not in patched]
    return copy.deepcopy(patch)


def _set_images(doc, images):
    spec = doc.get("spec", {}).get("template", {}).get("spec", doc.get("spec", {}))
    for group in ("containers", "initContainers"):
        for c in spec.get(group, []) if isinstance(spec, dict) else []:
            name, _, tag = c.get("image", "").partition(":")
            for img in images:
                if set(img) - {"name", "newName", "newTag"}:
                    raise KustomizeError(f"images: only name, newName and newTag are implemented: {img}")
                if img["name"] == name:
                    new_tag = str(img["newTag"]) if "newTag" in img else tag
                    c["image"] = img.get("newName", name) + (":" + new_tag if new_tag else "")


def render(directory):
    """The resources of the kustomization in `directory`, as a list of dicts."""
    k = _kustomization(directory)
    docs = []
    for res in k.get("resources", []):
        path = os.path.join(directory, res)
        docs.extend(render(path) if os.path.isdir(path) else _load_all(path))
    options = k.get("generatorOptions", {})
    if set(options) - {"disableNameSuffixHash"}:
        raise KustomizeError(f"generatorOptions: only disableNameSuffixHash is implemented: {options}")
    for field, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for spec in k.get(field, []):
            _add_generated(docs, *_generated(directory, spec, options, kind))
    for p in k.get("patches", []):
        if set(p) != {"path"}:
            raise KustomizeError(f"patches: only `path` (a strategic-merge patch) is implemented: {p}")
        for patch in _load_all(os.path.join(directory, p["path"])):
            target = [i for i, d in enumerate(docs) if d["kind"] == patch["kind"]
                      and d["metadata"]["name"] == patch["metadata"]["name"]]
            if len(target) != 1:
                raise KustomizeError(f"{p['path']}: patch matches {len(target)} resources, not one")
            docs[target[0]] = _merge(docs[target[0]], patch)
    if "images" in k:
        for d in docs:
            _set_images(d, k["images"])
    return docs
