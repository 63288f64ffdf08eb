"""Reports a person looks at and bundles they attach upstream, as a user gets them from the CLI:
the HTML report opened in headless Chromium, and each bundle's repro.py run with bisector not
importable. One find run per sample, shared by the tests of this module; eager and the
TorchScript exporter only, the fast stages."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES, run_cli

pytestmark = pytest.mark.probe

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def list_append_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("list_append")
    r = run_cli(
        "find",
        f"{SAMPLES / 'list_append.py'}:Net",
        "-i",
        "x=B,32",
        "-s",
        "eager",
        "--run-dir",
        str(base / "run"),
        "--report",
        str(base / "report"),
        "--bundle",
        str(base / "bundle"),
    )
    assert r.returncode == 1, r.stderr
    return {"base": base, "stdout": r.stdout, "stderr": r.stderr}


def run_repro(bundle: Path, *args: str) -> list[tuple[int, float, float | None, int]]:
    """Run repro.py as a user would after unzipping, in a child where bisector cannot be imported
    (isolated mode, the checkout off sys.path, the package name blocked), and parse its counters."""
    code = (
        "import sys, runpy\n"
        "sys.modules['bisector'] = None\n"  # an editable install would otherwise still resolve it
        f"sys.path = [p for p in sys.path if not p.startswith({str(ROOT)!r}) or 'site-packages' in p]\n"
        f"sys.argv = ['repro.py', *{list(args)!r}]\n"
        "runpy.run_path('repro.py', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=bundle, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = []
    for line in done.stdout.splitlines():
        m = re.match(r"^\s*(\d+)\s+([-\d.]+ [KMG]?B)\s+([-\d.]+ [KMG]?B|-)\s+(\d+)\s*$", line)
        if m:
            rows.append(
                (
                    int(m.group(1)),
                    _bytes(m.group(2)),
                    None if m.group(3) == "-" else _bytes(m.group(3)),
                    int(m.group(4)),
                )
            )
    assert len(rows) >= 3, done.stdout
    return rows


def _bytes(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


def second_half_rates(rows: list[tuple[int, float, float | None, int]]) -> tuple[float | None, float]:
    """(heap bytes per call, objects per call) over the second half: warm-up costs are behind."""
    mid, last = rows[len(rows) // 2], rows[-1]
    n = last[0] - mid[0]
    heap = None if mid[2] is None or last[2] is None else (last[2] - mid[2]) / n
    return heap, (last[3] - mid[3]) / n


def assert_no_bisector_import(bundle: Path) -> None:
    import ast

    tree = ast.parse((bundle / "repro.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "bisector" not in names and "fixers" not in names


# -- the HTML report --------------------------------------------------------------------------------------


def test_find_writes_the_report_and_the_bundle_and_says_where(list_append_run) -> None:
    base = list_append_run["base"]
    page = base / "report" / "index.html"
    assert f"report: {page}" in list_append_run["stderr"]
    assert f"bundle: {base / 'bundle' / 'eager-blocks.1' / 'repro.py'}" in list_append_run["stderr"]
    text = page.read_text()
    # Self-contained: no reference to anything outside the file.
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    assert (base / "report" / "charts" / "stage-eager.png").stat().st_size > 10_000
    assert (base / "report" / "charts" / "culprit-eager-blocks.1.png").is_file()
    assert "blocks.1 Recorder — leak (eager) ← culprit" in text
    doc = json.loads((base / "report" / "report.json").read_text())
    assert doc["culprits"][0]["region"] == "blocks.1" and doc["culprit_curves"]["eager:blocks.1"]["samples"]


def test_report_renders_in_headless_chromium(list_append_run, tmp_path) -> None:
    exe = chromium()
    if exe is None:
        pytest.skip(
            "Debian's chromium is not installed and could not be (.ci/run installs it with apt-get where it can)"
        )
    page = list_append_run["base"] / "report" / "index.html"
    shot = tmp_path / "report.png"
    common = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    taken = subprocess.run(
        [*common, "--window-size=1200,1400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    if os.environ.get("BISECTOR_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["BISECTOR_SCREENSHOT_DIR"]) / "report.png")
    # The page logs nothing when every chart decodes; any console line is an error or a CSP block.
    console = [line for line in taken.stderr.splitlines() + dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None, dom.stdout[:500]
    assert 'data-broken="0"' in body.group(1)
    stages = re.findall(r"class=\"card [^\"]*stage\" data-stage=\"(\w+)\"", dom.stdout) or re.findall(
        r"data-stage=\"(\w+)\"", dom.stdout
    )
    charts = re.findall(r'<img class="chart stage-chart"', dom.stdout)
    assert stages == ["eager"] and len(charts) == len(stages)

    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1400)
    small = img.resize((120, 140))
    pixels = list(small.getdata())
    assert sum(1 for p in pixels if p != (255, 255, 255)) > len(pixels) * 0.05, "the screenshot is blank"
    # The verdict badge is red at the top of the page: the leak is the first thing a person sees.
    top = img.crop((0, 0, 600, 200))
    assert sum(1 for r, g, b in top.getdata() if r > 170 and g < 80 and b < 80) > 500


def test_report_command_renders_again_from_the_run_directory(list_append_run, tmp_path) -> None:
    run_dir = list_append_run["base"] / "run"
    r = run_cli("report", str(run_dir), "--out", str(tmp_path / "again"))
    assert r.returncode == 0, r.stderr
    assert f"report: {tmp_path / 'again' / 'index.html'}" in r.stderr
    text = (tmp_path / "again" / "index.html").read_text()
    assert "blocks.1 Recorder — leak (eager) ← culprit" in text and "stage-chart" in text
    bad = run_cli("report", str(tmp_path / "nothing-here"))
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


# -- repro bundles ---------------------------------------------------------------------------------------


def test_list_append_bundle_repro_shows_objects_growing(list_append_run) -> None:
    bundle = list_append_run["base"] / "bundle" / "eager-blocks.1"
    for name in (
        "repro.py",
        "bundle.json",
        "inputs.npz",
        "inputs.json",
        "curves.json",
        "curves.png",
        "env.txt",
        "ISSUE.md",
    ):
        assert (bundle / name).is_file(), name
    assert_no_bisector_import(bundle)
    env = (bundle / "env.txt").read_text()
    assert "bisector " in env and "onnxruntime" in env and "ort_providers" in env and "PyTorch version" in env
    issue = (bundle / "ISSUE.md").read_text()
    # The model's own leak: for the team's tracker, not torch's (no upstream template).
    assert "python repro.py" in issue and "Environment" in issue and "own issue tracker" in issue
    assert "Describe the bug" not in issue and "github.com/pytorch" not in issue
    # Meant for a public issue: paths relative to the project, no folder of this machine (issue 19).
    assert json.loads((bundle / "bundle.json").read_text())["original_path"] == "sample_models/list_append.py"
    for f in bundle.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".md", ".py"):
            assert str(SAMPLES.parent) not in f.read_text(), f
    heap, objects = second_half_rates(run_repro(bundle, "--calls", "60", "--every", "10"))
    assert objects >= 0.9  # one tensor kept per call


def test_scripted_export_bundle_repro_grows_per_export(tmp_path) -> None:
    r = run_cli(
        "find",
        f"{SAMPLES / 'symbolic_leak.py'}:Net",
        "-i",
        "x=B,32",
        "-s",
        "export",
        "--exporter",
        "torchscript",
        "--run-dir",
        str(tmp_path / "run"),
        "--bundle",
        str(tmp_path / "bundle"),
        "--json",
    )
    assert r.returncode == 1, r.stderr
    data = json.loads(r.stdout)
    bundle = tmp_path / "bundle" / "export-blocks.0.act"
    assert data["bundles"] == [str(bundle)]
    # The exported region and its op histogram, in the bundle and in the JSON.
    assert (bundle / "model.onnx").is_file()
    hist = data["onnx_detail"]["export:blocks.0.act"]["histogram"]
    assert hist["nodes"] == 3 and hist["ops"] == {"Constant": 1, "Gelu": 1, "Mul": 1}
    _, objects = second_half_rates(run_repro(bundle, "--calls", "12", "--every", "3"))
    assert objects >= 1.5  # the symbolic keeps a tensor and a graph value per export


def test_clean_model_bundle_repro_is_flat(tmp_path) -> None:
    r = run_cli(
        "measure",
        f"{SAMPLES / 'clean_cnn.py'}:Net",
        "-i",
        "x=B,3,H,W",
        "--dim",
        "B=1:4",
        "--dim",
        "H=8:32",
        "--dim",
        "W=8:32",
        "-s",
        "eager",
        "--bundle",
        str(tmp_path / "bundle"),
    )
    # Also the default run's test that a clean model's measure exits 0 and says so.
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: clean" in r.stdout
    bundle = tmp_path / "bundle" / "eager-root"
    heap, objects = second_half_rates(run_repro(bundle, "--calls", "60", "--every", "10"))
    assert abs(objects) < 0.2 and heap is not None and abs(heap) < 2048


def test_a_crashed_probe_keeps_its_folder_under_the_run_directory_and_the_error_says_where(tmp_path) -> None:
    r = run_cli(
        "find",
        f"{ROOT / 'tests' / 'fixtures' / 'crashers.py'}:Segfault",
        "-i",
        "x=B,4",
        "-s",
        "eager",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert r.returncode == 4, r.stderr
    m = re.search(r"killed by SIGSEGV \(probe folder kept: (\S+)\)", r.stdout)
    assert m is not None, r.stdout
    kept = Path(m.group(1))
    assert kept.is_relative_to(tmp_path / "run")
    assert json.loads((kept / "request.json").read_text())["stage"] == "eager"
    assert (kept / "stderr.txt").is_file()


def test_repair_writes_an_index_and_a_bundle_whose_repro_shows_the_native_leak(tmp_path) -> None:
    manifest = tmp_path / "models.toml"
    # In the manifest's project: repair refuses a model file outside it (no patch could name it).
    shutil.copyfile(SAMPLES / "native_leak.py", tmp_path / "native_leak.py")
    manifest.write_text('stages = ["eager"]\n[[models]]\nspec = "native_leak.py:Net"\ninputs = ["x=B,16"]\n')
    r = run_cli(
        "repair", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--report", str(tmp_path / "report")
    )
    assert r.returncode == 1, r.stderr  # no fixer frees ctypes memory: unfixed
    assert f"report: {tmp_path / 'report' / 'index.html'}" in r.stderr
    index = (tmp_path / "report" / "index.html").read_text()
    name = re.search(r'<a href="([^"/]+)/index.html">', index).group(1)
    assert "unfixed" in index and (tmp_path / "report" / name / "index.html").is_file()
    bundle = tmp_path / "out" / "bundles" / name / "eager-stem.1"
    assert (bundle / "repro.py").is_file() and (bundle / "ISSUE.md").is_file()
    assert_no_bisector_import(bundle)
    heap, _ = second_half_rates(run_repro(bundle, "--calls", "20", "--every", "5"))
    assert heap is not None and heap > 1e6  # native_leak mallocs 2 MB per call through ctypes


def test_a_bundle_replaces_only_a_bundle_bisector_wrote(list_append_run, tmp_path) -> None:
    """Issue 19, item 1: a --bundle folder that holds a user's folder of the same name keeps it."""
    base = list_append_run["base"]
    args = ("find", f"{SAMPLES / 'list_append.py'}:Net", "-i", "x=B,32", "-s", "eager", "--run-dir", str(base / "run"))
    mine = tmp_path / "bundles" / "eager-blocks.1"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's own notes\n")
    r = run_cli(*args, "--bundle", str(tmp_path / "bundles"))
    assert r.returncode == 2 and "holds files bisector did not write" in r.stderr, r.stderr
    assert (mine / "notes.txt").read_text() == "the user's own notes\n"
    again = run_cli(*args, "--bundle", str(base / "bundle"))  # the fixture's bundle: bisector's to replace
    assert again.returncode == 1, again.stderr
    assert (base / "bundle" / "eager-blocks.1" / "repro.py").is_file()
