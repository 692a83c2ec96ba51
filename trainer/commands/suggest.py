"""Did you mean ...?: the nearest accepted names for a mistyped option, choice or key.

Example:
>>> did_you_mean("--modle", ["--model", "--out", "--seed"])
'; did you mean --model?'
>>> did_you_mean("obsrvation", ["bce", "observation"], quote=True)
"; did you mean 'observation'?"
>>> with_suggestion("--denoiser 'obsrvation': unknown denoiser; expected one of bce, tce, observation")
"--denoiser 'obsrvation': unknown denoiser; expected one of bce, tce, observation; did you mean 'observation'?"
"""

from __future__ import annotations

import argparse
import difflib
import re
from typing import Iterable, List, Optional

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


def did_you_mean(word: str, names: Iterable[str], quote: bool = False) -> str:
    """``"; did you mean X?"`` (or ``"X or Y"``) to append to an error line, ``""`` when nothing is close.

    Args:
        word: what was typed.
        names: what is accepted.
        quote: write the names as ``'name'`` (choices) rather than bare (flags).

    Returns:
        The suffix, starting with ``"; "``, or ``""``.
    """
    found = close_matches(word, names)
    if not found:
        return ""
    return "; did you mean " + " or ".join(repr(f) if quote else f for f in found) + "?"


# "<where> 'value'... expected one of a, b, c" or "... expected one of ['a', 'b']" (the trainer's own lines)
_ONE_OF = re.compile(r"'(?P<value>[^']*)'.*expected one of (?P<choices>.+?)(?: \(or unset\))?$")


def with_suggestion(line: str) -> str:
    """``line`` with a "did you mean" appended when it refuses a quoted value and lists the accepted ones
    (``... 'x': ... expected one of a, b, c``), unchanged otherwise.

    Args:
        line: a one-line error message.

    Returns:
        The line, perhaps with ``"; did you mean 'a'?"`` at its end.
    """
    m = _ONE_OF.search(line)
    if m is None or "did you mean" in line:
        return line
    raw = m.group("choices").strip().strip("[]()")
    choices = [c.strip().strip("'\"") for c in raw.split(",") if c.strip()]
    return line + did_you_mean(m.group("value"), choices, quote=True)


__all__ = ["close_matches", "did_you_mean", "with_suggestion"]


LAUNCHER_SAYS = "DENOISREC_LAUNCHER_SAYS_ERRORS"
"""Set to ``1`` by ``denoisrec torchrun``: the ranks leave their one-line errors in torchelastic's error files
only, and the launcher prints each distinct line once (a rank killed before it printed loses nothing)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written; an option's default appended to its help (``(default: 8192)``, ``(default:
    none)`` when unset) unless the help already says it or the option is a flag or required.
    """

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        if not action.option_strings or action.nargs == 0 or action.required or "default" in text:
            return text
        if action.default in (None, [], argparse.SUPPRESS):
            return text + " (default: none)"
        return text + " (default: %(default)s)"
