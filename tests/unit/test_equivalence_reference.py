"""The original's outputs kept once per run for every fix candidate's equivalence probe
(probe/reference_outputs.py, lab/references.py): a later candidate reads them instead of exporting
the original again, a candidate that leaves the export alone runs the original's file, and a store
made for other weights is never trusted. In-process: run_equivalence on model files."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from bisector.lab.references import References
from bisector.model.schedule import PROFILES, build_schedule
from bisector.model.spec import ModelSpec, build_input_plan
from bisector.probe import reference_outputs
from bisector.probe.equivalence import run_equivalence
from bisector.probe.loading import build_model, load_namespace
from bisector.probe.types import EquivalenceRequest, ProbeKind, ProbeOptions, ProbeRequest

NET = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 3)

    def forward(self, x):
        return torch.tanh(self.proj(x)){tail}
"""
# The torchscript exporter: the same code path as the default one here, in a fraction of the time.
ORIGINAL = ProbeOptions(exporter="torchscript")
RUNTIME_ONLY = ProbeOptions(exporter="torchscript", session_options={"enable_mem_pattern": False})
OTHER_RUNTIME = ProbeOptions(exporter="torchscript", session_options={"enable_cpu_mem_arena": False})
OTHER_EXPORT = ProbeOptions(exporter="torchscript", export_kwargs={"do_constant_folding": False})


def _compare(
    folder: Path, candidate: ProbeOptions, reference: str, *, edit: str = "", seed: int = 0, original: str = ""
) -> dict:
    a = folder / "a.py"
    a.write_text(original or NET.format(tail=""))
    spec = ModelSpec(str(a), "Net")
    other_spec = spec
    if edit:
        (folder / "b.py").write_text(NET.format(tail=edit))
        other_spec = ModelSpec(str(folder / "b.py"), "Net")
    plan = build_input_plan(["x=B,T,6"], ["B=1:3", "T=2:9"])
    schedule = build_schedule(plan.dims, PROFILES["inference"])
    other = EquivalenceRequest(other_spec, candidate, "onnx", 1e-4, 1e-5, reference=reference)
    req = ProbeRequest(spec, plan, None, schedule, ORIGINAL, kind=ProbeKind.EQUIVALENCE, equivalence=other)
    namespace = load_namespace(spec)
    torch.manual_seed(schedule.seed + seed)
    model = build_model(spec, namespace).eval()
    work = folder / f"work-{time.perf_counter_ns()}"
    work.mkdir()
    return run_equivalence(req, model, namespace, "cpu", work)


def test_the_first_candidate_stores_the_reference_and_the_next_reads_it(tmp_path: Path) -> None:
    store = str(tmp_path / "references" / "r.npz")
    first = _compare(tmp_path, RUNTIME_ONLY, store)
    second = _compare(tmp_path, OTHER_RUNTIME, store)
    assert first["equivalent"] and second["equivalent"]
    assert first["mode"] == second["mode"] == "onnx"
    # The first exported the original once and ran the candidate's session on that same file.
    assert (first["reference"], first["exports"]) == ("stored", 1)
    # The second read the original's outputs and exported only its own graph.
    assert (second["reference"], second["exports"]) == ("read", 1)


def test_a_candidate_that_changes_the_export_exports_its_own_graph(tmp_path: Path) -> None:
    got = _compare(tmp_path, OTHER_EXPORT, "")
    assert got["equivalent"] and (got["reference"], got["exports"]) == ("made", 2)


def test_a_changed_output_is_found_against_a_read_reference(tmp_path: Path) -> None:
    store = str(tmp_path / "r.npz")
    assert _compare(tmp_path, RUNTIME_ONLY, store)["reference"] == "stored"
    got = _compare(tmp_path, ORIGINAL, store, edit=" + 0.5")
    assert got["reference"] == "read" and not got["equivalent"], got
    assert 0.49 < got["max_abs_diff"] < 0.51


def test_a_reference_kept_for_other_weights_is_made_again(tmp_path: Path) -> None:
    store = str(tmp_path / "r.npz")
    _compare(tmp_path, RUNTIME_ONLY, store, seed=1)  # the original's weights drawn from another seed
    got = _compare(tmp_path, RUNTIME_ONLY, store)
    # Read, its outputs would differ from the candidate's (the same model, other weights).
    assert got["reference"] == "stored" and got["equivalent"], got


def test_outputs_over_the_limit_are_not_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(reference_outputs, "STORE_LIMIT", 16)
    store = tmp_path / "r.npz"
    got = _compare(tmp_path, RUNTIME_ONLY, str(store))
    assert got["equivalent"] and got["reference"] == "made" and not store.exists()


def test_an_original_that_does_not_export_is_kept_as_its_eager_outputs(tmp_path: Path) -> None:
    refuses = NET.format(tail="").replace(
        "        return torch.tanh",
        "        if torch.onnx.is_in_onnx_export():\n            raise RuntimeError('no')\n        return torch.tanh",
    )
    store = str(tmp_path / "r.npz")
    first = _compare(tmp_path, ORIGINAL, store, original=refuses, edit=" * 1.0")
    second = _compare(tmp_path, ORIGINAL, store, original=refuses, edit=" + 0.0")
    assert first["mode"] == second["mode"] == "onnx-vs-eager"
    assert first["equivalent"] and second["equivalent"]
    assert (first["reference"], first["exports"]) == ("stored", 1)
    assert (second["reference"], second["exports"]) == ("read", 1)


def test_later_probes_of_a_reference_wait_for_the_first_and_others_do_not(tmp_path: Path) -> None:
    refs = References(tmp_path)
    spans: dict[str, tuple[float, float]] = {}

    def probe(name: str, path: str) -> str:
        def run() -> str:
            began = time.perf_counter()
            time.sleep(0.3)
            spans[name] = (began, time.perf_counter())
            return name

        return refs.first(path, run)

    one = refs.path({"model": "a"}, "src")
    other = refs.path({"model": "b"}, "src")
    assert one != other and one.startswith(str(tmp_path / "references"))
    threads = [
        threading.Thread(target=probe, args=(n, p))
        for n, p in (("first", one), ("second", one), ("third", one), ("elsewhere", other))
    ]
    for t in threads:
        t.start()
        time.sleep(0.02)  # started in this order
    for t in threads:
        t.join()
    assert spans["second"][0] >= spans["first"][1] and spans["third"][0] >= spans["first"][1]
    # After the first, the rest of its reference run side by side; another reference never waited.
    assert spans["third"][0] < spans["second"][1]
    assert spans["elsewhere"][0] < spans["first"][1]
    assert References(None).path({"model": "a"}, "src") == ""
