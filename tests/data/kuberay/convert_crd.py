"""Turn one version of a Kubernetes CRD's OpenAPI v3 schema into a JSON Schema file.

    python tests/data/kuberay/convert_crd.py CRD.yaml v1 --source "kuberay v1.7.0 (commit ...)"

(README.md next to this file has the full recipe.)

A CRD's ``openAPIV3Schema`` is JSON Schema already, apart from a few Kubernetes dialect keys:

- ``nullable: true`` becomes a ``"null"`` member of ``type``;
- ``x-kubernetes-int-or-string: true`` becomes ``anyOf: [integer, string]`` (unless already
  there);
- ``x-kubernetes-list-type: set`` becomes ``uniqueItems: true``;
- an object that lists its ``properties`` and neither has ``additionalProperties`` nor
  ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``: the API server
  drops unknown fields there, and kubectl's default ``--validate=strict`` rejects them, so a
  misspelt field is an error rather than silently lost;
- every other ``x-kubernetes-*`` key is dropped. Not checked, then: CEL rules
  (``x-kubernetes-validations``), the uniqueness of list-map keys (``x-kubernetes-list-map-keys``)
  and ObjectMeta (``metadata`` is a bare object in every CRD; the API server checks it).

``format`` (int32, int64, date-time) is kept; jsonschema ignores it unless given a FormatChecker.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

DIALECT = "https://json-schema.org/draft/2020-12/schema"
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def convert(node: Any) -> Any:
    """The JSON Schema for one OpenAPI v3 schema node (recursively; the input is not changed)."""
    if isinstance(node, list):
        return [convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions", "$defs"):
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key == "nullable" or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = convert(value)
    if node.get("nullable") is True and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-int-or-string") is True and "anyOf" not in out:
        out["anyOf"] = INT_OR_STRING
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    closed = (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    )
    if closed:
        out["additionalProperties"] = False
    return out


def crd_version_schema(crd: dict, version: str) -> dict:
    """The ``openAPIV3Schema`` of one served version of a CRD."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return entry["schema"]["openAPIV3Schema"]
    names = ", ".join(entry["name"] for entry in crd["spec"]["versions"])
    raise SystemExit(f"error: {crd['metadata']['name']} has no version {version!r} ({names})")


def json_schema(crd: dict, version: str, source: str) -> dict:
    """A standalone JSON Schema document for ``version`` of ``crd``."""
    names = crd["spec"]["names"]
    header = {
        "$schema": DIALECT,
        "$comment": (
            f"{crd['spec']['group']}/{version} {names['kind']}: openAPIV3Schema of "
            f"{crd['metadata']['name']} from {source}, converted by "
            "tests/data/kuberay/convert_crd.py"
        ),
        "title": f"{names['kind']} ({crd['spec']['group']}/{version})",
    }
    return {**header, **convert(crd_version_schema(crd, version))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("crd", type=Path, help="the CRD YAML (e.g. ray.io_rayjobs.yaml)")
    parser.add_argument("version", help="the CRD version to take, e.g. v1")
    parser.add_argument("--source", required=True, help="where the CRD came from (recorded)")
    args = parser.parse_args(argv)
    crd = yaml.safe_load(args.crd.read_text())
    json.dump(json_schema(crd, args.version, args.source), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
