"""The repair engine's decisions against fake measurements: keep, drop, combine, non-equivalent."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from bisector.fixers.base import Candidate, Example, FixTarget, SourceEdit

from bisector.find.localise import Culprit
from bisector.fix.candidates import merge_probe
from bisector.fix.decide import decide
from bisector.fix.engine import FixEngine
from bisector.fix.sources import shadow_copy, user_sources
from bisector.judge.search import Outcome
from bisector.lab.timings import Stopwatch
from bisector.model.spec import ModelSpec

CULPRIT = Culprit(
    region="blocks.1",
    stage="eager",
    kind="leak",
    own_code=True,
    type="Recorder",
    figures={"objects_per_call": 10.0, "growth_bytes_per_call": 40_000.0, "exact": True},
    chain=(),
    hint="",
)


def leaking(objects: float) -> Outcome:
    if objects <= 0:
        return Outcome("clean", {"objects_per_call": 0.0, "exact": True})
    return Outcome("leak", {"objects_per_call": objects, "growth_bytes_per_call": 4000.0 * objects, "exact": True})


class FakeFixer:
    """Candidates whose effect is a factor on the leak (0 = clean), and equivalence per name."""

    name = "fake"
    description = "fake"
    stages = ("eager",)
    kinds = ("leak",)
    examples: tuple[Example, ...] = ()

    def __init__(
        self, factors: dict[str, float], size: dict[str, int] | None = None, changes: tuple[str, ...] = ()
    ) -> None:
        self.factors = factors
        self.size = size or {}
        self.changes = changes

    def propose(self, target: FixTarget) -> list[Candidate]:
        return [
            Candidate(
                self.name,
                n,
                probe={"session_options": {n: True}},
                size=self.size.get(n, 1),
                changes_outputs=n in self.changes,
            )
            for n in self.factors
        ]


class FakeLab:
    """The four questions FixEngine asks of a lab (derive, stage, regions, outputs_against), answered
    from the fixer's factors: no probe runs. A derived lab is one candidate's configuration."""

    def __init__(
        self, fixer: FakeFixer, differ=(), broken=(), whole_stays=(), flaky=(), names=(), measured=None, source=False
    ):
        self.fixer, self.differ, self.broken, self.whole_stays, self.flaky = fixer, differ, broken, whole_stays, flaky
        self.names, self.source = names, source
        self.measured = measured if measured is not None else []
        # A candidate's probe options are its names; source=True: candidates that edit only the
        # source, so their control is find's (the region is then measured first).
        probe = () if source else names
        self.model, self.plan = None, SimpleNamespace(use_hook=False)
        self.options = SimpleNamespace(seed=0, probe=probe, profiles={})
        self.run, self.jobs, self.probes = Path("/nonexistent/run"), 2, 0
        self.timings = Stopwatch()

    def derive(self, model=None, overrides=None) -> FakeLab:
        names = tuple(sorted((overrides or {}).get("session_options", {})))
        return type(self)(
            self.fixer, self.differ, self.broken, self.whole_stays, self.flaky, names, self.measured, self.source
        )

    def _factor(self) -> float:
        factor = 1.0
        for n in self.names:
            factor *= self.fixer.factors[n]
        return factor

    def stage(self, stage, seed=None):
        if any(n in self.broken for n in self.names):
            failure = SimpleNamespace(message="export failed: no ONNX function for aten::foo")
            return SimpleNamespace(kind="failed", verdict=None, failure=failure)
        if seed is not None:  # the confirmation with another seed
            whole = leaking(4.0) if any(n in self.flaky for n in self.names) else leaking(0.0)
        else:
            self.measured.append(self.names)
            whole = leaking(10.0) if any(n in self.whole_stays for n in self.names) else leaking(10.0 * self._factor())
        return SimpleNamespace(kind=whole.kind, verdict=True, curve=True, outcome=lambda: whole)

    def regions(self, stage, regions, root):
        self.measured.append(("region",) + self.names)
        return leaking(10.0 * self._factor())

    def outputs_against(self, other, stage, mode, rtol, atol, label="", queued=None):
        if queued is not None:  # the real lab calls it once the outputs' probe is queued
            queued()
        bad = set(other.names) & set(self.differ)
        return {
            "equivalent": not bad,
            "max_abs_diff": 0.5 if bad else 0.0,
            "max_rel_diff": 0.1 if bad else 0.0,
            "why": "output 0 differs by up to 0.5" if bad else "",
        }


class FakeRepairer(FixEngine):
    """The real FixEngine on a FakeLab; only the fixers' target is made up (it reads the user's files)."""

    def __init__(
        self, fixer: FakeFixer, differ=(), broken=(), whole_stays=(), allow=False, flaky=(), source=False, lab=FakeLab
    ):
        lab = lab(fixer, differ, broken, whole_stays, flaky, source=source)
        before = SimpleNamespace(kind="leak", verdict=True, curve=True, outcome=lambda: leaking(10.0))
        report = SimpleNamespace(culprits=[CULPRIT], measure=SimpleNamespace(stages={"eager": before}))
        super().__init__(lab, report, allow_output_changes=allow, fixers=[fixer])
        self.measured = lab.measured

    def target(self, c):
        return FixTarget(c.stage, c.kind, region=c.region)

    def run(self):
        return list(super().run().evaluations)


def by_name(results):
    return {r.summary: r for r in results}


def test_keeps_what_flattens_and_drops_what_does_not() -> None:
    results = FakeRepairer(FakeFixer({"fix": 0.0, "noop": 1.0, "most": 0.05})).run()
    r = by_name(results)
    assert r["fix"].kept and r["fix"].reason.startswith("kept")
    assert r["most"].kept  # growth down by 95%: kept though not clean
    assert not r["noop"].kept and "not flat enough" in r["noop"].reason
    assert [x.summary for x in results[:2]] == ["fix", "most"]  # ranked by memory saved


def test_the_report_says_where_each_candidates_time_went() -> None:
    fixer = FakeFixer({"fix": 0.0, "noop": 1.0})
    report = FixEngine.run(FakeRepairer(fixer))
    spans = {(s.phase, s.label) for s in report.timings.spans}
    # Both candidates are built and measured; only the one that flattens is compared and confirmed.
    assert ("build", "fake blocks.1 eager") in spans and ("measure", "fake blocks.1 eager") in spans
    phases = [s.phase for s in report.timings.spans]
    assert phases.count("measure") == 2 and phases.count("equivalence") == 1 and phases.count("confirm") == 1
    assert list(report.timings.totals()) == ["build", "measure", "equivalence", "confirm"]  # in the order they run


def test_a_source_edit_whose_region_stays_is_dropped_before_the_whole_model_is_measured() -> None:
    fixer = FakeFixer({"fix": 0.0, "noop": 1.0})
    rep = FakeRepairer(fixer, source=True)
    early = by_name(rep.run())
    late = by_name(FakeRepairer(fixer).run())  # the same candidates as probe options: no shortcut
    assert ("region", "noop") in rep.measured and ("noop",) not in rep.measured  # whole model never run
    assert ("fix",) in rep.measured  # a flat region goes on to the whole model, as before
    for name in ("fix", "noop"):
        assert (early[name].kept, early[name].reason) == (late[name].kept, late[name].reason)
    assert early["noop"].after == late["noop"].after and early["noop"].after_model == {}


def test_ties_in_savings_go_to_the_smaller_change() -> None:
    results = FakeRepairer(FakeFixer({"big": 0.0, "small": 0.0}, size={"big": 5, "small": 1})).run()
    assert [x.summary for x in results] == ["small", "big"]


def test_outputs_that_differ_are_never_kept() -> None:
    r = by_name(FakeRepairer(FakeFixer({"fix": 0.0}), differ=("fix",)).run())
    assert not r["fix"].kept
    assert "outputs differ" in r["fix"].reason and r["fix"].max_abs_diff == 0.5


def test_padding_needs_the_users_opt_in() -> None:
    fixer = FakeFixer({"pad": 0.0}, changes=("pad",))
    r = by_name(FakeRepairer(fixer, differ=("pad",)).run())
    assert not r["pad"].kept and "--allow-output-changes" in r["pad"].reason
    r = by_name(FakeRepairer(fixer, differ=("pad",), allow=True).run())
    assert r["pad"].kept and "changes outputs, allowed" in r["pad"].reason


def test_combines_candidates_when_none_suffices_alone() -> None:
    rep = FakeRepairer(FakeFixer({"a": 0.3, "b": 0.2, "c": 1.0, "d": 0.5}))
    results = rep.run()
    kept = [x for x in results if x.kept]
    assert [k.summary for k in kept] == ["b; and a"]
    assert ("a", "b") in rep.measured and ("b", "c") in rep.measured  # the best, with every other
    assert ("c", "d") not in rep.measured  # two that did not help enough are not paired


def test_flat_region_but_whole_model_still_growing_is_dropped() -> None:
    r = by_name(FakeRepairer(FakeFixer({"fix": 0.0}), whole_stays=("fix",)).run())
    assert not r["fix"].kept and "whole model still grows" in r["fix"].reason


def test_a_candidate_that_breaks_the_model_is_dropped_with_why() -> None:
    r = by_name(FakeRepairer(FakeFixer({"fix": 0.0, "broken": 0.0}), broken=("broken",)).run())
    assert r["fix"].kept
    assert not r["broken"].kept and "aten::foo" in r["broken"].reason


def test_decide_uses_bytes_when_objects_did_not_decide() -> None:
    native = Culprit(
        "stem.1",
        "eager",
        "leak",
        True,
        "",
        {"growth_bytes_per_call": 2e6, "objects_per_call": 0.0, "exact": False},
        (),
        "",
    )
    after = Outcome("leak", {"growth_bytes_per_call": 1.5e5, "exact": False})
    d = decide(native, after, after, native.figures, False, False, lambda: {"equivalent": True})
    assert d["kept"] and "2.0 MB/call -> +150.0 KB/call" in d["reason"]


def test_decide_states_export_growth_per_export_and_does_not_call_a_growing_region_flat() -> None:
    """Issue 25: "dropped: the region is flat (+16.9 KB/call -> +185 B/call (leak))" for an export
    culprit: the unit is /export, and a region still growing is not called flat."""
    export = Culprit("head", "export", "leak", True, "", {"growth_bytes_per_call": 16_900.0, "exact": False}, (), "")
    region = Outcome("leak", {"growth_bytes_per_call": 185.0, "exact": False})
    whole = Outcome("leak", {"growth_bytes_per_call": 16_000.0, "exact": False})
    d = decide(export, region, whole, export.figures, False, False, lambda: {"equivalent": True})
    assert not d["kept"] and "/call" not in d["reason"] and "flat" not in d["reason"]
    assert "+16.9 KB/export -> +185 B/export, leak after the fix" in d["reason"], d["reason"]


def test_merge_probe_merges_dicts_and_passes() -> None:
    assert merge_probe(
        {"session_options": {"a": 1}, "post_export": ["onnxsim"]}, {"session_options": {"b": 2}, "post_export": ["x"]}
    ) == {"session_options": {"a": 1, "b": 2}, "post_export": ["onnxsim", "x"]}


def test_a_fix_that_does_not_hold_with_another_seed_is_dropped() -> None:
    r = by_name(FakeRepairer(FakeFixer({"fix": 0.0, "lucky": 0.0}), flaky=("lucky",)).run())
    assert r["fix"].kept
    assert not r["lucky"].kept and "not with another seed" in r["lucky"].reason


def test_the_other_seed_is_measured_beside_the_outputs_check_unless_outputs_change_by_design() -> None:
    confirming: list[tuple[str, ...]] = []
    overlapped: dict[tuple[str, ...], bool] = {}
    in_queue: list[tuple[str, ...]] = []
    behind: dict[tuple[str, ...], bool] = {}

    class Overlapping(FakeLab):
        def stage(self, stage, seed=None):
            if seed is not None:
                # The confirmation's probes queue behind the outputs' probe, not ahead of it.
                behind[self.names] = self.names in in_queue
                confirming.append(self.names)
            return super().stage(stage, seed)

        def outputs_against(self, other, stage, mode, rtol, atol, label="", queued=None):
            in_queue.append(other.names)
            if queued is not None:
                queued()
            # Answers once the candidate's confirmation has started: were they run one after the
            # other, this would wait its full second and say False.
            deadline = time.monotonic() + 1.0
            while other.names not in confirming and time.monotonic() < deadline:
                time.sleep(0.01)
            overlapped[other.names] = other.names in confirming
            return super().outputs_against(other, stage, mode, rtol, atol, label)

    fixer = FakeFixer({"fix": 0.0, "differs": 0.0, "pad": 0.0}, changes=("pad",))
    r = by_name(FakeRepairer(fixer, differ=("differs", "pad"), lab=Overlapping).run())
    assert r["fix"].kept and overlapped[("fix",)] and behind[("fix",)]
    # Outputs that then differ: measured for nothing, but ended before the evaluation was.
    assert not r["differs"].kept and overlapped[("differs",)] and ("differs",) in confirming
    # A fix expected to change outputs (not allowed) is not measured again on spec.
    assert not r["pad"].kept and not overlapped[("pad",)] and ("pad",) not in confirming


def test_pairs_are_tried_when_the_best_single_fix_is_not_clean() -> None:
    rep = FakeRepairer(FakeFixer({"most": 0.05, "other": 0.5}))
    results = rep.run()
    assert by_name(results)["most"].kept  # 95% down: kept, but not clean
    assert ("most", "other") in rep.measured


def test_a_region_named_beyond_its_children_is_judged_on_its_own_share() -> None:
    """blocks.0 leaks 3 objects per call alone: 1 of its own, 2 through a child. With its own code
    fixed it still shows the child's 2: kept; with nothing fixed (3): dropped."""
    figures = {"objects_per_call": 1.0, "region_objects_per_call": 3.0, "beyond_children": True, "exact": True}
    own = Culprit("blocks.0", "eager", "leak", True, "", figures, (), "")
    whole_before = {"objects_per_call": 3.0, "exact": True}
    fixed = Outcome("leak", {"objects_per_call": 2.0, "exact": True})
    d = decide(own, fixed, fixed, whole_before, False, False, lambda: {"equivalent": True})
    assert d["kept"], d["reason"]
    same = Outcome("leak", {"objects_per_call": 3.0, "exact": True})
    assert not decide(own, same, same, whole_before, False, False, lambda: {"equivalent": True})["kept"]


def _memo_curve(stops_after: int | None) -> list[dict]:
    """A schedule of 4 repeated shapes then 8 new ones (12 distinct), the memo gaining 3 objects
    and 2 MB per distinct shape until it holds stops_after of them (None: it never stops)."""
    samples, seen = [], []
    shapes = [8, 16, 24, 32] * 3 + [40 + 8 * i for i in range(8)]
    for i, t in enumerate(shapes):
        if t not in seen:
            seen.append(t)
        held = len(seen) if stops_after is None else min(len(seen), stops_after)
        phase = "repeat" if i < 12 else "novel"
        samples.append({"phase": phase, "dims": {"t": t}, "objects": 1000.0 + 3 * held, "rss": 1e8 + 2e6 * len(seen)})
    return samples


def test_a_bounded_memo_is_judged_past_its_bound() -> None:
    """A cache bounded to N entries still grows over its first N new shapes, then stops: averaged
    over the whole range it looks barely flatter (+2.0 MB -> +1.6 MB per new shape, the entries
    growing with the shapes), and without its bound it is dropped; judged past the bound (the
    objects it holds stop growing) it is kept. One that keeps growing past its bound, or whose
    bound the schedule never reaches, is still dropped."""
    figures = {"growth_bytes_per_new_shape": 2e6, "objects_per_new_shape": 3.0, "exact": False, "growth_metric": "rss"}
    memo = Culprit("layer1.0", "eager", "shape-growth", True, "", figures, (), "")

    def after(samples):
        return Outcome(
            "shape-growth",
            {"growth_bytes_per_new_shape": 1.6e6, "objects_per_new_shape": 1.2, "exact": False, "samples": samples},
        )

    def judge(o, bound):
        return decide(memo, o, o, figures, False, False, lambda: {"equivalent": True}, bound)

    bounded = after(_memo_curve(stops_after=8))
    no_bound = judge(bounded, None)
    assert not no_bound["kept"] and "not flat enough: +2.0 MB/new shape -> +1.6 MB/new shape" in no_bound["reason"]
    kept = judge(bounded, 8)
    assert kept["kept"], kept["reason"]
    assert (
        "bounded at 8: +0.0 objects/new shape past the first 8 new shapes, was +3.0 objects/new shape" in kept["reason"]
    )
    assert not judge(after(_memo_curve(stops_after=None)), 8)["kept"]  # still growing past the bound
    assert not judge(bounded, 20)["kept"]  # the schedule never gets past the bound: the whole range decides


def test_a_bounded_tensor_is_judged_on_bytes_when_objects_never_grew() -> None:
    """One tensor gaining a row per call: objects flat, bytes growing. Trimmed to N rows, bytes stop
    after N calls; judged on bytes past the bound."""
    figures = {"growth_bytes_per_call": 1024.0, "objects_per_call": 0.0, "exact": False, "growth_metric": "rss"}
    bank = Culprit("head", "eager", "leak", True, "", figures, (), "")
    samples = [{"phase": "repeat", "dims": {"n": 4}, "rss": 1e8 + 1024.0 * min(i, 8)} for i in range(1, 25)]
    o = Outcome("leak", {"growth_bytes_per_call": 400.0, "exact": False, "samples": samples})
    d = decide(bank, o, o, figures, False, False, lambda: {"equivalent": True}, 8)
    assert d["kept"] and "bounded at 8: 0 B/call past the first 8 calls" in d["reason"], d["reason"]
    assert not decide(bank, o, o, figures, False, False, lambda: {"equivalent": True})["kept"]


def test_a_windows_latin_1_model_is_read_and_copied_as_python_reads_it(tmp_path: Path) -> None:
    """A BOM-less latin-1 file with CRLF endings: fixers get its text, and the shadow copy a probe
    imports holds the edit in the file's own encoding and endings (issue 19, item 6)."""
    model = tmp_path / "net.py"
    model.write_bytes("# -*- coding: latin-1 -*-\r\nNAME = 'café'\r\nKEPT = []\r\nKEPT.append(1)\r\n".encode("latin-1"))
    (text,) = user_sources(ModelSpec(str(model), "Net")).values()
    assert text == "# -*- coding: latin-1 -*-\nNAME = 'café'\nKEPT = []\nKEPT.append(1)\n"
    edit = SourceEdit(str(model), text, text.replace("KEPT.append(1)\n", "KEPT.clear()\n"), "s")
    copy = shadow_copy(ModelSpec(str(model), "Net"), [edit], tmp_path / "shadow")
    assert Path(copy.path).read_bytes() == model.read_bytes().replace(b"KEPT.append(1)", b"KEPT.clear()")


def test_only_the_culprits_asked_for_are_repaired() -> None:
    """`repair` over a project fixes only what its policy fails on (pipeline.failing): growth torch
    keeps, or bounded growth within the budget, is reported, not patched."""
    toolchain = replace(CULPRIT, kind="toolchain-leak")

    def run(only: list | None) -> list:
        fixer = FakeFixer({"fix": 0.0})
        fixer.kinds = ("toolchain-leak",)
        r = FakeRepairer(fixer)
        r.report.culprits[:] = [toolchain]
        r.only = None if only is None else {(c.region, c.stage, c.kind) for c in only}
        return r.run()

    assert run(only=[]) == []
    assert [e.summary for e in run(only=None)] == ["fix"]
    assert [e.summary for e in run(only=[toolchain])] == ["fix"]
