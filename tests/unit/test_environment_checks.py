"""The BISECTOR_* variables checked up front are the option table's (issue 23, item 1)."""

from __future__ import annotations

import pytest

from bisector.common.errors import UserError
from bisector.options.environment import CHECKS, check_environment
from bisector.options.table import OPTIONS


def test_every_variable_with_a_check_or_choices_is_checked() -> None:
    want = {o.env for o in OPTIONS.values() if o.env and (o.env_check or o.choices)}
    assert set(CHECKS) == want
    # Paths are checked where they are used, with their flags.
    assert not {"BISECTOR_RUN_DIR", "BISECTOR_CONFIG"} & set(CHECKS)


@pytest.mark.parametrize(
    ("name", "text", "flag"),
    [
        ("BISECTOR_STAGE", "eager compile", "--stage"),
        ("BISECTOR_EXPORTER", "onnxscript", "--exporter"),
        ("BISECTOR_SEED", "-1", "--seed"),
        ("BISECTOR_JOBS", "0", "--jobs"),
        ("BISECTOR_CAPTURE_CAP", "lots", "capture_cap"),
    ],
)
def test_a_bad_variable_names_the_flag_it_stands_for(name: str, text: str, flag: str) -> None:
    with pytest.raises(UserError, match=f"^{name}=.*: {flag} "):
        check_environment({name: text})


def test_good_variables_pass() -> None:
    check_environment({"BISECTOR_STAGE": "eager export", "BISECTOR_FRESH": "yes", "BISECTOR_MEM_CAP": "8GB"})
