"""api.repair checks its options itself (the CLI's repair is a thin caller of it)."""

from __future__ import annotations

import pytest

from bisector import api
from bisector.common.errors import UserError


def test_the_api_checks_repairs_options_as_the_cli_does() -> None:
    with pytest.raises(UserError, match="--models-at-once must be 1 or more"):
        api.repair(models_at_once=0)
    with pytest.raises(UserError, match="--executor dask: expected local or ray"):
        api.repair(executor="dask")
    with pytest.raises(UserError, match="use it with --executor ray"):
        api.repair(address="auto")
