"""ProbeOptions.export_in_child: each export in a forked child (probe/export.py in_child); what
the export keeps stays in the child, and its error comes back as the same WorkloadError."""

from __future__ import annotations

import pytest

from bisector.probe.export import in_child
from bisector.probe.loading import WorkloadError
from bisector.probe.types import ProbeOptions

KEPT: list[bytes] = []


def leaky_export() -> None:
    KEPT.append(b"x" * 100_000)  # what an exporter keeps on every export


def test_what_the_export_keeps_stays_in_the_child() -> None:
    for _ in range(3):
        in_child(leaky_export)
    assert KEPT == []
    leaky_export()
    assert len(KEPT) == 1
    KEPT.clear()


def test_the_childs_error_is_the_exports_error() -> None:
    def fails() -> None:
        raise WorkloadError("export", "exporting the model failed: ValueError: no", "tb")

    with pytest.raises(WorkloadError, match="exporting the model failed: ValueError: no"):
        in_child(fails)

    def crashes() -> None:
        raise RuntimeError("boom")

    with pytest.raises(WorkloadError, match="export in a child process failed: RuntimeError: boom"):
        in_child(crashes)


def test_the_option_keeps_other_probes_cache_keys() -> None:
    assert "export_in_child" not in ProbeOptions().to_json()
    opts = ProbeOptions().with_overrides({"export_in_child": "pytorch/pytorch#82532"})
    assert ProbeOptions.from_json(opts.to_json()).export_in_child == "pytorch/pytorch#82532"
