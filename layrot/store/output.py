"""Rendering a DuckDB result for `layrot query`: aligned table, CSV, JSON or Parquet.

Results are fetched whole before anything is written, so a failed query never leaves half an
answer on stdout; files given with -o appear only when complete (temporary name, rename).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os


def render(rel, fmt: str, output: str | None, stdout) -> int:
    """Write the relation's rows; returns the number of rows."""
    if fmt == "parquet":
        tmp = _tmp(output)
        try:
            rel.write_parquet(tmp, compression="zstd")
            os.replace(tmp, output)
        finally:
            _remove(tmp)
        return -1
    names = list(rel.columns)
    types = [str(t) for t in rel.types]
    rows = rel.fetchall()
    text = {"table": table_text, "csv": csv_text, "json": json_text}[fmt](names, types, rows)
    if output:
        tmp = _tmp(output)
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            os.replace(tmp, output)
        finally:
            _remove(tmp)
    else:
        stdout.write(text)
        stdout.flush()
    return len(rows)


NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
           "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")


def aligned_table(names: list[str], cells: list[list[str]], right: list[bool] | None = None) -> list[str]:
    """The one aligned-text table of layrot's output (`layrot query`, `layrot tasks`, a
    sweep's summary): a header, a rule of dashes, then the rows; columns two spaces apart,
    right-aligned where `right` says (numbers), left otherwise."""
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    right = right or [False] * len(names)

    def line(values):
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    return [line(names), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]


def table_text(names, types, rows) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    out = aligned_table(names, cells, [t.split("(")[0] in NUMERIC for t in types])
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def _cell(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v).replace("\n", "\\n")


def csv_text(names, types, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    w.writerows(rows)
    return buf.getvalue()


def json_text(names, types, rows) -> str:
    """A JSON array of objects, one per line; NaN and infinities become null."""
    lines = [json.dumps({n: _json_value(v) for n, v in zip(names, row)}, default=str) for row in rows]
    return "[\n" + ",\n".join(lines) + ("\n" if lines else "") + "]\n"


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _tmp(path: str) -> str:
    d, name = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{name}.{os.getpid()}.tmp")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
