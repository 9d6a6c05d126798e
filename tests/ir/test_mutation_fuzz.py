"""Property: randomly mutated IR texts produce only the project's own parse/type errors, each located."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sr_ir
from sr_ir.errors import ParseError, TypeCheckError

from .test_text import TEXT

LINES = TEXT.splitlines(keepends=True)
FRAGMENTS = ["%", "@", "(", ")", "[", "]", ",", ":", "=", "{", "}", "N", "0", "-1", "1e-5", "f32", "i64",
             "linear", "add", "none", "true", '"', "\n", " ", "*", "//", "%h", "@fc.weight", "return", "graph",
             "param", "buffer", "999999999999", "f16[", "#", "\\"]


@st.composite
def mutated(draw):
    text = TEXT
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "dup_line", "drop_line", "swap_lines"]))
        if kind in ("delete", "insert", "replace"):
            i = draw(st.integers(0, len(text) - 1))
            j = min(len(text), i + draw(st.integers(1, 6)))
            frag = draw(st.sampled_from(FRAGMENTS))
            if kind == "delete":
                text = text[:i] + text[j:]
            elif kind == "insert":
                text = text[:i] + frag + text[i:]
            else:
                text = text[:i] + frag + text[j:]
        else:
            lines = text.splitlines(keepends=True)
            if len(lines) < 2:
                continue
            a = draw(st.integers(0, len(lines) - 1))
            b = draw(st.integers(0, len(lines) - 1))
            if kind == "dup_line":
                lines.insert(b, lines[a])
            elif kind == "drop_line":
                del lines[a]
            else:
                lines[a], lines[b] = lines[b], lines[a]
            text = "".join(lines)
    return text


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(mutated())
def test_mutants_fail_cleanly_with_a_location(text):
    try:
        p = sr_ir.parse(text, "fuzz.sr")
    except (ParseError, TypeCheckError) as e:
        assert e.loc is not None, f"error without a location: {e!r}"
        assert e.loc.file == "fuzz.sr" and e.loc.line >= 1 and e.loc.col >= 1, str(e)
        assert "\n" not in e.message, "errors are one line"
    else:
        # A mutant that is still a valid program must round-trip like any program.
        assert sr_ir.parse(p.to_text()).to_text() == p.to_text()
