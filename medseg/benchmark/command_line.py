"""What every benchmark's command line does with its result: print the report, or the one-line error."""

from __future__ import annotations

import sys
from collections.abc import Callable

from medseg.errors import MedsegError


def print_report(make_report: Callable[[], str]) -> int:
    """Print ``make_report()`` and return 0; on a ``MedsegError`` print it as one line on stderr and
    return 1, so a bad input never ends in a traceback."""
    try:
        print(make_report())
    except MedsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
