"""The order pytest-xdist hands the test files out in (tests/conftest.py): the slowest files it names exist, and
they come first, then the other files by kind, unit tests last."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tests.conftest import SLOWEST, _rank

ROOT = Path(__file__).resolve().parents[2]


def test_every_file_named_slowest_exists() -> None:
    missing = [path for path in SLOWEST if not (ROOT / path).is_file()]
    assert not missing


def test_the_slowest_come_first_then_the_others_by_kind_unit_tests_last() -> None:
    def item(path: str) -> SimpleNamespace:
        return SimpleNamespace(nodeid=f"{path}::test_x")

    names = [
        "tests/unit/test_models.py",
        "tests/template/test_operations.py",
        "tests/integration/test_budgets.py",
        "tests/e2e/test_edits_e2e.py",
        SLOWEST[1],
        "tests/package/x.py",
        SLOWEST[0],
    ]
    ordered = sorted(names, key=lambda path: _rank(item(path)))  # type: ignore[arg-type]
    assert ordered == [
        SLOWEST[0],
        SLOWEST[1],
        "tests/e2e/test_edits_e2e.py",
        "tests/package/x.py",
        "tests/integration/test_budgets.py",
        "tests/template/test_operations.py",
        "tests/unit/test_models.py",
    ]
