"""The blind text edit both fuzzers (IR texts and rule files) start from: grammar-unaware damage
that a parser must survive, with the fragments of each language supplied by its fuzzer."""
from __future__ import annotations

import random
from collections.abc import Sequence


def blind_edit(text: str, rng: random.Random, fragments: Sequence[str]) -> str:
    """Delete, insert or replace a few characters (inserting one of `fragments`), or duplicate, drop or
    swap whole lines."""
    kind = rng.choice(["delete", "insert", "replace", "dup_line", "drop_line", "swap_lines"])
    if kind in ("delete", "insert", "replace"):
        i = rng.randrange(len(text))
        j = min(len(text), i + rng.randint(1, 6))
        if kind == "delete":
            return text[:i] + text[j:]
        return text[:i] + rng.choice(fragments) + text[i if kind == "insert" else j:]
    lines = text.splitlines(keepends=True)
    if len(lines) < 2:
        return text
    a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
    if kind == "dup_line":
        lines.insert(b, lines[a])
    elif kind == "drop_line":
        del lines[a]
    else:
        lines[a], lines[b] = lines[b], lines[a]
    return "".join(lines)
