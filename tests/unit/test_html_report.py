"""The HTML report from a stored document: what a person sees, and `bisector report` rendering it
again with no probe started."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("matplotlib")

from bisector.reports.document import load_document  # noqa: E402
from bisector.reports.html import render_html, write_repair_index, write_report  # noqa: E402
from bisector.reports.html_view import headline  # noqa: E402
from bisector.reports.plots import fit_slope  # noqa: E402


def samples(leak_objects: float, heap_per_call: float, n: int = 24) -> list[dict]:
    phases = ["warmup"] * 4 + ["repeat"] * 12 + ["novel"] * 5 + ["within"] * (n - 21)
    return [
        {
            "phase": p,
            "dims": {"B": 1 + i % 4},
            "rss": 3e8 + 1000 * i,
            "heap": 5e7 + heap_per_call * i,
            "objects": 100 + leak_objects * i,
        }
        for i, p in enumerate(phases)
    ]


def sample_doc() -> dict:
    stage = {
        "verdict": "leak",
        "growth_bytes_per_call": 2.1e6,
        "growth_bytes_per_new_shape": 0.0,
        "objects_per_call": 0.0,
        "floor_bytes_per_call": 2048.0,
        "noise_bytes": 0.0,
        "baseline_bytes_per_call": 0.0,
        "decided_by": "heap",
        "growth_metric": "heap",
        "reasons": ["heap +2.1 MB/call (grows, 100% of passes up)"],
        "samples": samples(0, 2.1e6),
        "control_samples": samples(0, 0),
        "owners": {
            "repeat": {
                "groups": {"model": 0, "libraries": 0, "toolchain": 300, "other": 0},
                "native": 2_100_000,
                "sites": {"toolchain": [{"where": "torch/fx/graph.py:12", "bytes": 300}]},
            }
        },
    }
    clean = dict(stage, verdict="clean", growth_bytes_per_call=0.0, samples=samples(0, 0), reasons=[])
    return {
        "spec": "native_leak.py:Net",
        "inputs": "x=B,16",
        "dims": {"B": [1, 16]},
        "verdict": "leak",
        "report_kind": "fix",
        "stages": {"eager": stage, "inference": clean},
        "bands": {"rss": 5e6, "gpu": 2e8},
        "probes": 9,
        "wall_s": 12.5,
        "tree": [
            {"path": "", "type": "m.Net", "children": ["stem"]},
            {"path": "stem", "type": "torch.nn.Sequential", "children": ["stem.0", "stem.1"]},
            {"path": "stem.0", "type": "torch.nn.Linear", "children": []},
            {"path": "stem.1", "type": "m.NativeScratch", "children": []},
        ],
        "search": {
            "eager": {"tested": [{"regions": ["stem"], "kind": "leak"}, {"regions": ["stem.0"], "kind": "clean"}]}
        },
        "culprits": [
            {
                "region": "stem.1",
                "stage": "eager",
                "kind": "leak",
                "type": "NativeScratch",
                "growth_bytes_per_call": 2.1e6,
                "objects_per_call": 0.0,
                "own_code": True,
                "hint": "native memory not freed",
                "floor_bytes_per_call": 2048.0,
            }
        ],
        "culprit_curves": {"eager:stem.1": {"samples": samples(0, 2.1e6), "control_samples": samples(0, 0)}},
        "fixes": [
            {
                "fixer": "python-leaks",
                "summary": "free the buffer",
                "region": "stem.1",
                "stage": "eager",
                "kept": False,
                "reason": "dropped: still +2.1 MB/call",
                "judged_on": "bytes/call",
                "before_bytes_per_call": 2.1e6,
                "after_bytes_per_call": 2.0e6,
                "after_kind": "leak",
            }
        ],
        "fix_curves": [{"after": {"samples": samples(0, 2.0e6), "control_samples": []}}],
        "patches": [
            {"path": "m.py", "summary": "free it", "diff": "--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-keep(x)\n+free(x)\n"}
        ],
        "onnx_detail": {"eager:stem.1": {"histogram": {"nodes": 3, "ops": {"Gemm": 2, "Relu": 1}}}},
    }


def test_page_shows_every_stage_chart_the_culprit_fixes_patch_and_owners(tmp_path) -> None:
    page = write_report(sample_doc(), tmp_path / "r")
    text = page.read_text()
    assert re.findall(r'<img class="chart stage-chart"[^>]*data-file="charts/stage-(\w+).png"', text) == [
        "eager",
        "inference",
    ]
    for name in ("stage-eager", "stage-inference", "culprit-eager-stem.1", "fix-0"):
        png = (tmp_path / "r" / "charts" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "stem.1 NativeScratch — leak (eager) ← culprit" in text
    assert "stem.0 <span class='muted'>Linear · clean (eager)</span>" in text
    assert "✗ dropped" in text and "dropped: still +2.1 MB/call" in text
    assert "<span class='del'>-keep(x)</span>" in text and "<span class='add'>+free(x)</span>" in text
    assert "torch/fx/graph.py:12" in text and "Exported graph: 3 nodes" in text
    assert "LEAK" in text and "stem.1 leak in eager: +2.1 MB/call" in text
    # Offline: the only sources are data: URIs, and the page forbids anything else.
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    assert "default-src 'none'" in text
    assert json.loads((tmp_path / "r" / "report.json").read_text())["spec"] == "native_leak.py:Net"


def test_text_from_the_model_is_escaped() -> None:
    doc = sample_doc()
    doc["spec"] = "<script>alert(1)</script>.py:Net"
    doc["culprits"][0]["hint"] = "<img src=x onerror=alert(1)>"
    text = render_html(doc, {})
    assert "<script>alert(1)" not in text and "<img src=x" not in text


def test_headline_says_what_leaks_or_that_nothing_does() -> None:
    doc = sample_doc()
    assert headline(doc) == "stem.1 leak in eager: +2.1 MB/call"
    doc["culprits"] = []
    for s in doc["stages"].values():
        s["verdict"] = "clean"
    assert headline(doc) == "no stage grows above its detection floor"


def test_fit_slope() -> None:
    assert fit_slope([0, 1, 2, 3], [1, 3, 5, 7]) == (2.0, 1.0)
    assert fit_slope([1], [1]) is None and fit_slope([2, 2], [1, 3]) is None


def test_report_command_renders_without_starting_a_probe(tmp_path, monkeypatch, capsys) -> None:
    from bisector import cli
    from bisector.probe import pool
    from bisector.reports.document import save_document

    run = tmp_path / ".bisector" / "runs" / "native_leak-Net-abc"
    save_document(sample_doc(), run)

    def no_probe(*a, **k):
        raise AssertionError("bisector report started a probe")

    monkeypatch.setattr(pool.ProbePool, "__init__", no_probe)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", str(tmp_path / ".bisector")])
    assert exit_.value.code == 0
    assert f"report: {run / 'index.html'}" in capsys.readouterr().err
    assert "stem.1 NativeScratch — leak (eager) ← culprit" in (run / "index.html").read_text()


def test_report_command_bad_input_is_one_line_exit_2(tmp_path, capsys) -> None:
    from bisector import cli

    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text("{not json")
    for target in (tmp_path / "missing", tmp_path / "empty", tmp_path / "bad"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["report", str(target)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err


def test_repair_index_links_each_models_report(tmp_path) -> None:
    from bisector import cli

    out = tmp_path / "repair"
    write_report(sample_doc(), out / "native_leak-Net")
    summary = {
        "models": [
            {
                "name": "native_leak-Net",
                "spec": "native_leak.py:Net",
                "status": "unfixed",
                "verdict": "leak",
                "culprits": [{"region": "stem.1", "stage": "eager", "kind": "leak"}],
                "kept": [],
            },
            {
                "name": "clean-Net",
                "spec": "clean.py:Net",
                "status": "clean",
                "verdict": "clean",
                "culprits": [],
                "kept": [],
            },
        ],
        "counts": {"unfixed": 1, "clean": 1},
    }
    page = write_repair_index(summary, out)
    text = page.read_text()
    assert '<a href="native_leak-Net/index.html">native_leak.py:Net</a>' in text
    assert "clean.py:Net" in text and 'href="clean-Net' not in text  # no report, no link
    assert "stem.1 (eager leak)" in text
    # `bisector report` on the repair folder renders every model and the index again.
    (out / "native_leak-Net" / "index.html").unlink()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", str(out)])
    assert exit_.value.code == 0 and (out / "native_leak-Net" / "index.html").is_file()
    assert load_document(out / "native_leak-Net")["spec"] == "native_leak.py:Net"


# -- issue 19, item 8: what a hand-edited summary.json or report.json may hold --------------------


def test_report_keeps_names_from_json_inside_out_and_links_relative(tmp_path) -> None:
    from bisector.reports.document import save_document
    from bisector.reports.html import rerender

    stored, out, outside = tmp_path / "stored", tmp_path / "out", tmp_path / "outside"
    save_document(sample_doc(), outside)  # a model "named" with an absolute path
    evil = "javascript:alert(1)//"
    save_document(sample_doc(), stored / evil)
    save_document(sample_doc(), stored / "native_leak-Net")
    summary = {"models": [{"name": str(outside), "spec": "a.py:Net"}, {"name": evil, "spec": "b.py:Net"}]}
    summary["models"].append({"name": "native_leak-Net", "spec": "native_leak.py:Net"})
    (stored / "summary.json").write_text(json.dumps(summary))
    pages = rerender(stored, out)
    assert all(p.resolve().is_relative_to(out.resolve()) for p in pages), pages
    assert not (outside / "index.html").exists()
    index = (out / "index.html").read_text()
    hrefs = re.findall(r"""href=["']([^"']*)""", index)
    assert hrefs == ["native_leak-Net/index.html"]
    assert "javascript:" not in index.replace("b.py:Net", "")


def test_the_page_allows_its_own_style_and_script_by_hash_not_unsafe_inline(tmp_path) -> None:
    import base64
    import hashlib

    doc = sample_doc()
    doc["stages"]["../../escape"] = dict(doc["stages"]["eager"])  # a stage key from a hand-edited document
    page = write_report(doc, tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["charts", "index.html", "report.json"]
    assert all(p.parent == tmp_path / "r" / "charts" for p in (tmp_path / "r" / "charts").rglob("*"))
    text = page.read_text()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text).group(1)
    assert "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert " style=" not in text  # a style attribute would need 'unsafe-inline'

    def allowed(tag: str, directive: str) -> bool:
        body = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S).group(1)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        return f"'sha256-{digest}'" in re.search(rf"{directive} ([^;]*)", csp).group(1)

    assert allowed("style", "style-src") and allowed("script", "script-src")


def test_units_counts_and_tree_agree_across_stages(tmp_path) -> None:
    """Issue 25: export growth reads /export (never /call), a run reused from cache says so, and a
    region that leaks in eager and export shows both in the module tree."""
    doc = sample_doc()
    doc["probes"], doc["reused_probes"] = 0, 6
    from bisector.judge.signals import Signal

    said = Signal("heap", "repeat", "grows", 189_000.0, 0.0, 0.0, 1.0, 12).describe("export")
    assert said.startswith("heap +189.0 KB/export")
    export = dict(doc["stages"]["eager"], growth_bytes_per_call=189_000.0, reasons=[said])
    doc["stages"] = {"eager": doc["stages"]["eager"], "export": export}
    both = dict(doc["culprits"][0], stage="export", growth_bytes_per_call=189_000.0)
    doc["culprits"] = [both, doc["culprits"][0]]
    doc["search"]["export"] = {"tested": [{"regions": ["stem.0"], "kind": "clean"}]}
    text = write_report(doc, tmp_path / "r").read_text()
    assert "reused 6 probes, 12.5 s" in text and " 0 probes" not in text
    assert "stem.1 in export: +189.0 KB/export" in headline(doc).replace("leak ", "")
    assert "stem.1 NativeScratch — leak (export), leak (eager) ← culprit" in text
    assert "Linear · clean (eager), clean (export)" in text
    assert "/call" not in re.sub(r"(?s)<h2 id=.stage-eager.*?<h2 ", "", text.split("id='tree'")[0])


def test_charts_keep_every_point_on_the_chart_and_state_the_texts_figure() -> None:
    from bisector.reports.html import stated_growth
    from bisector.reports.plots import _limits, control_series, repeat_line, spike_indices

    ys = [0.0, 10.0, 20.0, 30.0, 40.0, 5000.0, 60.0, 70.0, 80.0]
    assert spike_indices(ys) == [5]
    assert spike_indices([10.0 * i for i in range(12)]) == []  # a steady leak has no spikes
    phases = ["warmup", "warmup"] + ["repeat"] * 7
    # Warm-up readings and the spike are left out of the scale (and drawn on its edge instead).
    assert _limits(list(range(9)), [-9e9, -9e9, *ys[2:]], phases) == (20.0, 80.0)
    control = [{"phase": "repeat", "rss": float(i)} for i in range(8)]
    assert control_series(control, "rss", 4)[0] == [0, 1, 2, 3, 4]  # ends where the model's line ends
    stage = {"verdict": "leak", "growth_bytes_per_call": 189_000.0, "growth_metric": "heap", "objects_per_call": 1.0}
    said = stated_growth(stage)
    assert said == {"heap": 189_000.0, "objects": 1.0}
    slope, _, label = repeat_line([(x, 246_800.0 * x) for x in range(6)], said["heap"], True, "export")
    assert slope == 189_000.0 and label.startswith("growth +189.0 KB/export")


def test_a_growth_under_the_floor_is_shown_with_its_interval() -> None:
    doc = sample_doc()
    doc["stages"]["inference"] = dict(
        doc["stages"]["inference"], growth_bytes_per_call=1536.0, error_bytes_per_call=410.0
    )
    text = render_html(doc, {})
    assert "+1.5 KB ± 410 B (under the 2.0 KB floor) (heap)" in text
