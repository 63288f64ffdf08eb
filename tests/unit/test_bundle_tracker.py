"""ISSUE.md is written for the tracker that owns the growth (bundle.issue_text): torch's or ONNX
Runtime's template only when the toolchain keeps it; the team's own tracker for the model's code."""

from __future__ import annotations

from bisector.reports.issue import issue_text
from bisector.reports.targets import BundleTarget

SITE = "Tensor allocated at torch/onnx/_internal/torchscript_exporter/utils.py:972, held by no Python container"
TOOLCHAIN_FIGURES = {
    "growth_bytes_per_call": 32_000.0,
    "objects_per_call": 2.0,
    "reasons": [
        f"torch.onnx.export keeps 2 objects (~31.2 KB) per export of this model: {SITE}; not your model's code"
    ],
    "owners": {
        "repeat": {
            "sites": {"toolchain": [{"where": "torch/onnx/_internal/torchscript_exporter/utils.py:684", "bytes": 272}]},
            "objects": {"per_call": {"toolchain": 2.0}, "sites": {"toolchain": [{"where": SITE, "objects": 2.0}]}},
            "native_sites": [{"where": "libtorch_cpu.so torch::jit::Module::clone", "bytes": 31_000}],
        }
    },
}


def test_a_toolchain_leak_gets_torchs_template_with_torchs_site_and_native_stack() -> None:
    text = issue_text("scripted.py:make", BundleTarget("export", "", "toolchain-leak", TOOLCHAIN_FIGURES), {}, "env\n")
    assert "github.com/pytorch/pytorch/issues" in text and "Describe the bug" in text
    assert "utils.py:972" in text and "libtorch_cpu.so torch::jit::Module::clone" in text


def test_runtime_owned_growth_gets_onnxruntimes_template() -> None:
    target = BundleTarget("inference", "", "shape-growth", {"own_code": False})
    assert "github.com/microsoft/onnxruntime/issues" in issue_text("m.py:Net", target, {}, "env\n")


def test_the_models_own_leak_is_for_the_teams_tracker() -> None:
    figures = {
        "growth_bytes_per_call": 4096.0,
        "own_code": True,
        "hint": "forward keeps tensors alive: clear or bound it",
        "owners": {"repeat": {"sites": {"model": [{"where": "net.py:41", "bytes": 4096}]}}},
    }
    text = issue_text("net.py:Net", BundleTarget("eager", "blocks.1", "leak", figures), {}, "env\n")
    assert "own issue tracker" in text and "net.py:41" in text and "clear or bound it" in text
    assert "github.com" not in text and "Describe the bug" not in text and "Versions" not in text
