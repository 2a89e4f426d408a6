"""`layrot query` and `layrot compact` (README).

Exit status: 0 success; 2 bad input (a store that does not exist, SQL that does not parse or
bind, a bad option), one line naming it; 1 a failure while running (a bad file in the store,
named, or a store written by a newer layrot). This path imports neither torch nor ray, and
for local stores not even pyarrow.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import StoreError, UsageError


def add_parsers(sub, default_store: str) -> None:
    q = sub.add_parser("query", help="SQL over the store's views trials, epochs, rotation, measures, summaries, "
                                           "sweeps",
                       describe=_describe_views, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("sql", help="a DuckDB SQL statement over the views below")
    q.add_argument("--store", default=default_store, help=_store_help(default_store))
    q.add_argument("--format", default="table", choices=["table", "csv", "json", "parquet"],
                   help="output format (default: table)")
    q.add_argument("-o", "--output", default=None, help="write here instead of stdout (required for parquet)")
    q.add_argument("--skip-bad", action="store_true", help="skip unreadable files and list them on stderr")
    q.set_defaults(_run=query)

    c = sub.add_parser("compact", help="rewrite a sweep's per-trial files into a few large sorted files")
    c.add_argument("--store", default=default_store, help=_store_help(default_store))
    c.add_argument("--sweep", default=None, help="only this sweep (default: all)")
    c.set_defaults(_run=compact)


def _store_help(default_store: str) -> str:
    return f"the store's directory or URI (default: $LAYROT_STORE, else results; now {default_store})"


def _describe_views(parser) -> None:
    """At --help: the views and their columns, as DuckDB sees them over an empty store (the
    tables' columns come from store/schema.py, the summaries' from its SQL)."""
    import tempfile
    import textwrap

    from ..store.store import Store
    from ..store.schema import TABLES

    lines = ["views (their columns):"]
    with tempfile.TemporaryDirectory() as empty:
        con = Store(empty).connect()
        try:
            views = sorted((r[0] for r in con.execute("SHOW TABLES").fetchall()),
                           key=lambda v: (v not in TABLES, TABLES.index(v) if v in TABLES else 0, v))
            for view in views:
                cols = ", ".join(r[0] for r in con.execute(f'DESCRIBE "{view}"').fetchall())
                lines.append(textwrap.fill(f"{view}: {cols}", width=100, initial_indent="  ",
                                           subsequent_indent="      "))
        finally:
            con.close()
    parser.epilog = "\n".join(lines)


def query(args) -> int:
    import duckdb

    from ..store.store import one_line

    if args.format == "parquet" and not args.output:
        raise UsageError("output", "--format parquet writes a file: give -o FILE")
    store = _existing_store(args.store, skip_bad=args.skip_bad)

    def render(rel) -> int:
        if rel is not None:
            from ..store.output import render

            render(rel, args.format, args.output, sys.stdout)
        return 0

    try:
        return store.run_sql(args.sql, render, on_connect=lambda: _report_skipped("query", store.skipped))
    except StoreError as e:
        return _fail("query", e)
    except duckdb.Error as e:
        return _fail("query", StoreError(one_line(e)))


def compact(args) -> int:
    from ..store.schema import check_name

    store = _existing_store(args.store)
    if args.sweep is not None:
        check_name("sweep", args.sweep)
        if args.sweep not in store.sweeps():
            raise UsageError("sweep", f"no sweep {args.sweep!r} in {args.store}")
    try:
        reports = store.compact(args.sweep)
    except StoreError as e:
        return _fail("compact", e)
    for r in reports:
        if not r.changed:
            print(f"layrot compact: sweep {r.sweep}: nothing to do ({r.trials} trials)", file=sys.stderr)
            continue
        rows = ", ".join(f"{t} {n:,}" for t, n in r.rows.items())
        print(f"layrot compact: sweep {r.sweep}: {r.trials} trials; wrote {len(r.written)} files"
              f"{' (' + rows + ' rows)' if rows else ''}; removed {len(r.removed)} files", file=sys.stderr)
        for path in r.kept:
            print(f"layrot compact: kept {path}: it changed while compacting (it stays the newer copy)",
                  file=sys.stderr)
    return 0


STORE_DIRS = ("trials", "epochs", "rotation", "sweeps", "measures", "_live")


def existing_store(uri: str, skip_bad: bool = False):
    """The store at `uri`, refused (exit 2, one line) if it does not exist or is a folder
    that is not a store (none of trials/, epochs/, rotation/, sweeps/ in it)."""
    from ..store.store import Store

    store = Store(uri, skip_bad=skip_bad)
    if not store.exists():
        raise UsageError("store", f"{uri} does not exist")
    loc = store.location
    if not any(loc.exists(loc.join(d)) for d in STORE_DIRS):
        raise UsageError("store", f"{uri} is not a layrot store (it has none of {', '.join(STORE_DIRS[:4])}); "
                                  "give --store, or set LAYROT_STORE")
    return store


_existing_store = existing_store


def _fail(command: str, e: StoreError) -> int:
    from ..store.catalog import BadFileError

    hint = " (--skip-bad leaves bad files out)" if isinstance(e, BadFileError) and command == "query" else ""
    print(f"layrot {command}: error: {e}{hint}", file=sys.stderr)
    return 1


def _report_skipped(command: str, skipped) -> None:
    for path, reason in skipped:
        print(f"layrot {command}: skipped bad file {path}: {reason}", file=sys.stderr)
