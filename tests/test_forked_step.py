"""store/forked.py: a start-up step run in a forked child leaves its imports there and reports its errors."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from convhub.server.store.forked import ForkedStepFailed, run_forked

UNLOADED = "tabnanny"  # a standard module nothing in the test process imports


def test_the_step_runs_and_its_imports_stay_in_the_child(tmp_path: Path) -> None:
    assert UNLOADED not in sys.modules
    marker = tmp_path / "ran"

    def step() -> None:
        __import__(UNLOADED)
        marker.write_text(str(UNLOADED in sys.modules))

    run_forked(step)
    assert marker.read_text() == "True"
    assert UNLOADED not in sys.modules


def test_an_error_in_the_child_is_raised_in_the_parent_as_itself() -> None:
    def step() -> None:
        raise OperationalError("UPGRADE", {}, Exception("lock timeout"))

    with pytest.raises(OperationalError, match="lock timeout"):
        run_forked(step)


def test_an_error_that_cannot_be_pickled_comes_back_as_its_text() -> None:
    class Unpicklable(Exception):
        def __init__(self) -> None:
            super().__init__("cannot travel")
            self.lock = threading.Lock()

    def step() -> None:
        raise Unpicklable()

    with pytest.raises(ForkedStepFailed, match="Unpicklable: cannot travel"):
        run_forked(step)
