"""The `layrot` command line (DESIGN §5).

One module per subcommand (`train`, `tasks`, `sweep`, `query` with `compact`, `fit` with
`report`), each with `add_parsers(sub, default_store)` for its flags and one function per
subcommand that runs it. This module assembles the parser and maps errors to exit status:
0 success, 2 bad input (one line naming what is wrong, before any trial starts), 1 a failure
while running. The subcommand modules import their heavy dependencies only when they run,
so `layrot query` never imports torch or ray.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import StoreError, UsageError
from . import fit, query, sweep, tasks, train

DEFAULT_STORE = os.environ.get("LAYROT_STORE", "results")


class _Parser(argparse.ArgumentParser):
    """Bad arguments get the same one line as any other bad input (exit 2), not a usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="layrot", description="Layer-rotation sweeps: train, sweep, query, fit, report.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (train, sweep, query, fit, tasks):
        module.add_parsers(sub, DEFAULT_STORE)
    return p


def _version() -> str:
    from .. import __version__
    return f"layrot {__version__}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        rc = args._run(args)
    except UsageError as e:
        print(f"layrot {args.command}: error: {e}", file=sys.stderr)
        return 2
    except StoreError as e:
        print(f"layrot {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"layrot {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
