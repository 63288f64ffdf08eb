"""The versioned JSON contract: every report bisector writes as JSON carries the same stamp.

``stamp`` puts ``schema_version``, ``report_kind``, ``bisector_version`` and the installed
versions of torch, onnx and onnxruntime at the head of a report, so a consumer can tell which
contract and which toolchain produced it. The schema (``bisector schema`` prints it) lives in
``bisector/schemas/report.schema.json``.

Compatibility rule: fields may be added freely (the schema allows unknown keys); a field renamed
or removed, or a meaning changed, bumps SCHEMA_VERSION.

The versions come from installed distributions' metadata, never from importing torch: stamping
costs microseconds, and works in the parent process, which never imports torch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import metadata, resources
from typing import Any

from bisector import __version__

SCHEMA_VERSION = 1
SCHEMA_PACKAGE = "bisector"
SCHEMA_FILE = "schemas/report.schema.json"
# The kinds of report: what --json prints for each command, and the stored report document.
REPORT_KINDS = ("measure", "find", "fix", "repair")
# onnxruntime ships under several distribution names that all install the `onnxruntime` module.
_RUNTIME_DISTRIBUTIONS = (
    "onnxruntime-gpu",
    "onnxruntime",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-training",
    "onnxruntime-qnn",
    "onnxruntime-rocm",
)


def _version_of(distribution: str) -> str | None:

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def toolchain_versions() -> dict[str, str | None]:
    """torch, onnx and onnxruntime as installed (None when absent), and which distribution
    provides onnxruntime (onnxruntime, onnxruntime-gpu, ...)."""
    out: dict[str, str | None] = {
        "torch": _version_of("torch"),
        "onnx": _version_of("onnx"),
        "onnxruntime": None,
        "onnxruntime_distribution": None,
    }
    for dist in _RUNTIME_DISTRIBUTIONS:
        version = _version_of(dist)
        if version is not None:
            out["onnxruntime"], out["onnxruntime_distribution"] = version, dist
            break
    return out


def stamp(data: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The report with the contract's stamp first. The stamp wins over keys of the same name in
    data (the stored document already names bisector's version: the same value)."""

    if kind not in REPORT_KINDS:
        raise ValueError(f"unknown report kind {kind!r}; expected one of {', '.join(REPORT_KINDS)}")
    head: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "report_kind": kind,
        "bisector_version": __version__,
        "versions": dict(toolchain_versions()),
    }
    return {**head, **{k: v for k, v in data.items() if k not in head}}


def schema_text() -> str:
    """The JSON Schema of every report, as shipped in the package."""

    return resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def schema() -> dict[str, Any]:
    return json.loads(schema_text())
