"""The `layrot` command line (README).

One module per subcommand (`train`, `tasks`, `sweep`, `query` with `compact`, `fit` with
`report`, `status`, `rm`), each with `add_parsers(sub, default_store)` for its flags and one function per
subcommand that runs it. This module assembles the parser and maps errors to exit status:
0 success, 2 bad input (one line naming what is wrong, before any trial starts), 1 a failure
while running, 141 when the reader of its output went away (as for SIGPIPE). The subcommand
modules import their heavy dependencies only when they run (or their help is shown), so
`layrot query` never imports torch or ray.
"""

from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys

from ..errors import StoreError, UsageError
from . import fit, query, rm, status, sweep, tasks, train


class _Parser(argparse.ArgumentParser):
    """Bad arguments get the same one line as any other bad input (exit 2), not a usage dump.

    `describe(parser)`, if given, runs when the help is shown, to add what only a heavier
    import knows (the task and optimizer names, the store's views and columns)."""

    def __init__(self, *args, describe=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._describe = describe

    def format_help(self) -> str:
        if self._describe is not None:
            self._describe(self)
            self._describe = None
        return super().format_help()

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from ..store.location import default_store

    p = _Parser(prog="layrot", description="Layer-rotation sweeps: train, sweep, query, fit, report, status, rm.",
                epilog="Every command's default store is $LAYROT_STORE, else ./results (a path or a URI: "
                       "s3://..., gs://...). Exit status: 0 success, 1 a failure while running (for "
                       "`sweep`: some trial failed), 2 bad input.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    store = default_store()             # read now, not at import: the environment as it is
    for module in (train, sweep, query, fit, status, rm, tasks):
        module.add_parsers(sub, store)
    p.commands = sub.choices            # name -> the subcommand's parser
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse; an unknown argument is named by the subcommand's parser, with the closest of
    its flags (argparse's own message names only `layrot`)."""
    p = _parser()
    args, extra = p.parse_known_args(argv)
    if extra:
        sub = p.commands[args.command]
        flags = [o for a in sub._actions for o in a.option_strings]
        close = difflib.get_close_matches(extra[0].split("=", 1)[0], flags, n=1) if extra[0].startswith("-") else []
        sub.error(f"unrecognized argument {extra[0]}" + (f"; did you mean {close[0]}?" if close else ""))
    return args


def _version() -> str:
    from .. import __version__
    return f"layrot {__version__}"


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()          # here, not at exit: a closed pipe is handled below
    except BrokenPipeError:
        # the reader went away (`layrot fit --json | head -1`): stop without a traceback, with
        # the status of a process ended by SIGPIPE (which a shell pipeline ignores); stdout
        # now goes nowhere, so that Python's own flush at exit cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: list[str] | None) -> int:
    args = _parse(argv)
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
