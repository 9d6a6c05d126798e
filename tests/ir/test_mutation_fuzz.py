"""Property: randomly mutated IR texts produce only the project's own parse/type errors, each located;
and a mutant the checker accepts also emits and runs with outputs of the declared types.

The mutants come from sr_ir.testing.ir_mutation (also used by benchmarks/fuzz_ir.py): blind text
edits, and edits aimed at attribute values (0, -1, huge), list lengths, dims (`N // 0`), dtypes,
parameter names (`@forward`, `@fc1` beside `@fc1.bias`, `@a-b`) and extra attributes, with the
declared types made to agree half of the time so that the checks beyond types are reached."""
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sr_ir
from sr_ir.errors import ParseError, TypeCheckError
from sr_ir.testing.ir_mutation import SEED_TEXTS, mutate, run_as_declared

# 500 mutants of each seed program: ~1,000 in all
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _accept_or_locate(text: str) -> "sr_ir.Program | None":
    """The program, or None after checking that the error is located and one line."""
    try:
        return sr_ir.parse(text, "fuzz.sr")
    except (ParseError, TypeCheckError) as e:
        assert e.loc is not None, f"error without a location: {e!r}"
        assert e.loc.file == "fuzz.sr" and e.loc.line >= 1 and e.loc.col >= 1, str(e)
        assert "\n" not in str(e), "errors are one line"
        return None


@pytest.mark.parametrize("seed", sorted(SEED_TEXTS))
@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_mutants_fail_cleanly_or_run_as_declared(seed: str, rng: random.Random) -> None:
    text = mutate(SEED_TEXTS[seed], rng)
    p = _accept_or_locate(text)
    if p is None:
        return
    # a mutant that is still a valid program round-trips like any program, and runs
    assert sr_ir.parse(p.to_text()).to_text() == p.to_text()
    run_as_declared(p)


@pytest.mark.parametrize("seed", sorted(SEED_TEXTS))
def test_the_seeds_run_and_mutants_of_them_are_accepted(seed: str) -> None:
    """The property above is not vacuous: the seeds run as declared, and some mutants are accepted."""
    assert run_as_declared(sr_ir.parse(SEED_TEXTS[seed]))
    rng = random.Random(0)
    accepted = [t for t in (mutate(SEED_TEXTS[seed], rng, retype=1.0) for _ in range(400))
                if t != SEED_TEXTS[seed] and _accept_or_locate(t) is not None]
    assert len(accepted) >= 5
