"""Powers the exact evaluators cannot finish (a mutated rule's `x ^ 10^20`) are a SemanticsError, which
`sr-ir prove` reports as `error` for the rule, instead of arithmetic on numbers of 10^20 digits."""
import time
from fractions import Fraction

import pytest

from sr_ir.prover.algebra import MAX_EXPONENT, Exact, Sym
from sr_ir.prover.axioms import Theory
from sr_ir.prover.semantics import SemanticsError


@pytest.mark.parametrize("alg", [Exact("standin"), Sym(Theory(), None)], ids=["exact", "sym"])
def test_huge_exponent_is_refused_quickly(alg):
    t0 = time.perf_counter()
    with pytest.raises(SemanticsError, match="too large for exact arithmetic"):
        alg.binop("^", 3, 10**20)
    assert time.perf_counter() - t0 < 1.0


def test_exponents_up_to_the_limit_still_compute():
    assert Exact("standin").binop("^", Fraction(1, 2), MAX_EXPONENT) == Fraction(1, 2**MAX_EXPONENT)
    assert Exact("standin").binop("^", Fraction(2), 2) == 4


def test_a_real_power_beyond_any_float_is_a_semantics_error():
    """`x ^ rsqrt(...)` in a mutated norm: 3.7 ^ 1e300 overflows a float (an OverflowError escaped)."""
    with pytest.raises(SemanticsError, match="overflows a float"):
        Exact("standin").binop("^", Fraction(37, 10), 1e300)
