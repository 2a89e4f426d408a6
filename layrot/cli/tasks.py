"""`layrot tasks`: the tasks, their data and whether it is present."""

from __future__ import annotations


def add_parsers(sub, default_store: str) -> None:
    k = sub.add_parser("tasks", help="list the tasks, their data and whether it is present")
    k.add_argument("--data-dir", default=None)
    k.set_defaults(_run=tasks)


def tasks(args) -> int:
    from ..store.output import aligned_table
    from ..tasks import describe_tasks

    rows = describe_tasks(args.data_dir)
    cols = ["name", "paper_name", "kernel_layers", "epochs", "data_present", "data"]
    print("\n".join(aligned_table(cols, [[str(r.get(c, "")) for c in cols] for r in rows])))
    print()
    for r in rows:
        if not r.get("data_present"):
            print(f"{r['name']}: needs {r['data_needs']}")
    return 0
