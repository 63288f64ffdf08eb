"""bounded-warning-registry's edit, run: every warning is still issued, and the module's registry
stops growing with messages that name the input."""

from __future__ import annotations

import types
import warnings

import torch
from bisector.fixers.warning_registry import FIXER, KEEP_NAME


def _module(source: str) -> types.ModuleType:
    m = types.ModuleType("warn_user_model")
    exec(compile(source, "warn_user_model.py", "exec"), m.__dict__)
    return m


def test_the_edited_model_still_warns_and_its_registry_stays_bounded() -> None:
    example = FIXER.examples[0]
    (candidate,) = FIXER.propose(example.target)
    before = _module(candidate.edits[0].before)
    after = _module(candidate.edits[0].after)
    with warnings.catch_warnings(record=True):
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for t in range(1, 40):
            before.Pad().forward(torch.zeros(1, t))
            after.Pad().forward(torch.zeros(1, t))
    assert len(before.__dict__["__warningregistry__"]) > 30  # one entry per distinct length
    assert len(after.__dict__["__warningregistry__"]) <= getattr(after, KEEP_NAME) + 1
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        after.Pad().forward(torch.zeros(1, 5))
    assert [str(w.message) for w in seen] == ["length 5 is padded"]
