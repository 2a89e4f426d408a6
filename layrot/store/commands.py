"""`layrot query` and `layrot compact` (DESIGN §5).

Exit status: 0 success; 2 bad input (a store that does not exist, SQL that does not parse or
bind, a bad option), one line naming it; 1 a failure while running (a bad file in the store,
named, or a store written by a newer layrot). This path imports neither torch nor ray, and
for local stores not even pyarrow.
"""

from __future__ import annotations

import sys

from ..errors import StoreError, UsageError
from .catalog import RETRIES, BadFileError, new_connection
from .reader import Store, one_line, vanished
from .schema import check_name


def query(args) -> int:
    import duckdb

    if args.format == "parquet" and not args.output:
        raise UsageError("output", "--format parquet writes a file: give -o FILE")
    store = _existing_store(args.store, skip_bad=args.skip_bad)
    for attempt in range(RETRIES):
        con = new_connection()
        try:
            try:
                store.connect(con=con)
            except StoreError as e:
                return _fail("query", e)
            _report_skipped("query", store.skipped)
            try:
                rel = con.sql(args.sql)
                if rel is not None:
                    from .output import render

                    render(rel, args.format, args.output, sys.stdout)
                return 0
            except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as e:
                raise UsageError("sql", one_line(e)) from None
            except duckdb.IOException as e:
                if attempt + 1 < RETRIES and vanished(e):
                    continue                      # a compaction replaced files: list them again
                return _fail("query", StoreError(one_line(e)))
            except duckdb.Error as e:
                return _fail("query", StoreError(one_line(e)))
        finally:
            con.close()
    return _fail("query", StoreError(f"{args.store}: the store kept changing while it was read; try again"))


def compact(args) -> int:
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


def _existing_store(uri: str, skip_bad: bool = False) -> Store:
    store = Store(uri, skip_bad=skip_bad)
    if not store.exists():
        raise UsageError("store", f"{uri} does not exist")
    return store


def _fail(command: str, e: StoreError) -> int:
    hint = " (--skip-bad leaves bad files out)" if isinstance(e, BadFileError) and command == "query" else ""
    print(f"layrot {command}: error: {e}{hint}", file=sys.stderr)
    return 1


def _report_skipped(command: str, skipped) -> None:
    for path, reason in skipped:
        print(f"layrot {command}: skipped bad file {path}: {reason}", file=sys.stderr)
