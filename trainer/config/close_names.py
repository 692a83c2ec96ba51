"""Did you mean ...?: the nearest accepted names to a mistyped option, choice or key (difflib).

The config checks append it to their one-line errors themselves; the command line's parser uses it for
unknown flags and argparse choices.

Example::

    did_you_mean("--modle", ["--model", "--out", "--seed"])           # '; did you mean --model?'
    did_you_mean("obsrvation", ["bce", "observation"], quote=True)  # "; did you mean 'observation'?"
"""

from __future__ import annotations

import difflib
from typing import Iterable, List

CUTOFF = 0.6
"""difflib's similarity ratio a name must reach to be suggested (its default)."""


def close_matches(word: str, names: Iterable[str], n: int = 2) -> List[str]:
    """The up to ``n`` names nearest to ``word`` (difflib), best first.

    Args:
        word: what was typed.
        names: what is accepted.
        n: how many to return at most.

    Returns:
        The close names; empty when none is close.
    """
    return difflib.get_close_matches(word, list(dict.fromkeys(names)), n=n, cutoff=CUTOFF)


def did_you_mean(word: object, names: Iterable[object], quote: bool = False) -> str:
    """``"; did you mean X?"`` (or ``"X or Y"``) to append to an error line, ``""`` when nothing is close.

    Args:
        word: what was typed (anything but a string has no close names).
        names: what is accepted.
        quote: write the names as ``'name'`` (choices) rather than bare (flags).

    Returns:
        The suffix, starting with ``"; "``, or ``""``.
    """
    if not isinstance(word, str):
        return ""
    found = close_matches(word, [str(n) for n in names])
    if not found:
        return ""
    return "; did you mean " + " or ".join(repr(f) if quote else f for f in found) + "?"


__all__ = ["close_matches", "did_you_mean"]
