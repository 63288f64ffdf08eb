"""Hints agree with what was measured (issue 19, item 8e): a forward that runs out of memory is not
told to check --input, and growth the owners table puts on a Python line is not called native."""

from __future__ import annotations

from pathlib import Path

from bisector.find.localise import hint_for
from bisector.model.figures import Figures
from tests.conftest import run_cli


def _owners(model: float, native: float) -> dict:
    sites = {"model": [{"where": "net.py:14", "bytes": model}]} if model else {}
    return {"repeat": {"groups": {"model": model, "toolchain": 0.0}, "native": native, "sites": sites}}


def test_growth_a_python_line_owns_is_not_hinted_as_native() -> None:
    # A background thread appending bytearrays: no tensor, no object the collector counts.
    figures = Figures(objects_per_call=0.0, top_types={}, owners=_owners(model=1_000_000, native=2_000))
    hint = hint_for("eager", "leak", True, figures, "Net")
    assert "net.py:14" in hint and "native" not in hint
    assert "net.py:14" in hint_for("export", "leak", True, figures, "Net")


def test_growth_no_python_line_explains_is_still_native() -> None:
    for figures in (
        Figures(objects_per_call=0.0, top_types={}, owners=_owners(model=1_000, native=2_000_000)),
        Figures(objects_per_call=0.0, top_types={}),  # not traced: nothing says otherwise
    ):
        assert hint_for("eager", "leak", True, figures, "Net").startswith("native memory")


def test_a_forward_that_runs_out_of_memory_is_told_so_not_to_check_inputs(tmp_path: Path) -> None:
    (tmp_path / "big.py").write_text(
        "from torch import nn\n\n\nclass Big(nn.Module):\n    def forward(self, x):\n"
        "        self.kept = bytearray(2**62)  # 4 EB: no machine has it\n        return x\n"
    )
    r = run_cli("measure", "big.py:Big", "--input", "x=B,8", "--stage", "eager", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    line = r.stderr.splitlines()[0]
    assert "MemoryError" in line and "ran out of memory" in line and "--mem-cap" in line, line
    assert "check that --input" not in line
