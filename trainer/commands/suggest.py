"""The command line's help formatter (each option's default shown) and the launcher-says-errors variable.

``denoisrec torchrun`` sets :data:`LAUNCHER_SAYS` for its ranks; the "did you mean" of a mistyped name is
:mod:`denoisrec.trainer.config.close_names`.

Example::

    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds")  # --help: "timed rounds (default: 3)"
"""

from __future__ import annotations

import argparse
from typing import Optional

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


__all__ = ["LAUNCHER_SAYS", "HelpFormatter"]
