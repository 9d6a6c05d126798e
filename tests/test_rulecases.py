"""Rule test cases written without Python (tests/rulecases/README.md): every `<case>.sr` under
tests/rulecases is minimized and compared with its `<case>.expected.sr`, and the minimized program is
checked against the original in float64. `SR_IR_UPDATE_RULECASES=1` rewrites the expected files."""
from __future__ import annotations

from pathlib import Path

import pytest

from sr_ir.testing.rulecases import check_case, find_cases

ROOT = Path(__file__).resolve().parent / "rulecases"
REPO = ROOT.parent.parent
CASES = find_cases(ROOT)


def test_cases_were_found():
    assert len(CASES) >= 15, f"expected the rule cases under {ROOT}"


@pytest.mark.parametrize("case", CASES, ids=[str(c.relative_to(ROOT)) for c in CASES])
def test_rulecase(case: Path):
    check_case(case, display=str(case.relative_to(REPO)))
