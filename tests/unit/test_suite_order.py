"""The order pytest-xdist hands the test files out in (tests/conftest.py): the files it names first exist, once
each, and come first in their order, then the other files by kind, unit tests last."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tests.conftest import FIRST, _rank

ROOT = Path(__file__).resolve().parents[2]


def test_every_file_named_first_exists_once() -> None:
    missing = [path for path in FIRST if not (ROOT / path).is_file()]
    assert not missing
    assert len(set(FIRST)) == len(FIRST)


def test_the_first_come_first_then_the_others_by_kind_unit_tests_last() -> None:
    def item(path: str) -> SimpleNamespace:
        return SimpleNamespace(nodeid=f"{path}::test_x")

    names = [
        "tests/unit/test_models.py",
        "tests/template/test_operations.py",
        "tests/integration/test_budgets.py",
        "tests/e2e/test_first_hour_e2e.py",
        FIRST[1],
        "tests/package/x.py",
        FIRST[0],
    ]
    ordered = sorted(names, key=lambda path: _rank(item(path)))  # type: ignore[arg-type]
    assert ordered == [
        FIRST[0],
        FIRST[1],
        "tests/e2e/test_first_hour_e2e.py",
        "tests/package/x.py",
        "tests/integration/test_budgets.py",
        "tests/template/test_operations.py",
        "tests/unit/test_models.py",
    ]
