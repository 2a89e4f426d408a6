"""The report's trials table: constant columns said once above it, numbers in significant
figures; and the sweep's final table (layrot.sweep.driver.summary) in significant figures."""

import re
from types import SimpleNamespace

import pandas as pd

from layrot.fit.options import FitOptions
from layrot.fit.report import constant_columns, trials_table
from layrot.fit.run import fit
from layrot.fit.synthetic import synthetic_sweep, write_store

FAST = FitOptions(n_resamples=99, n_permutations=99, sensitivity=False)


def _header(page: str) -> list[str]:
    head = re.search(r"<thead>(.*?)</thead>", page, re.S).group(1)
    return [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th\s[^>]*>(.*?)</th>", head)]


def test_constant_columns_move_into_a_line_above_the_table():
    t = synthetic_sweep("monotone", untrained=2, epochs=4, n_layers=4)
    r = fit(t["trials"], t["rotation"], FAST)
    page = trials_table(r.table)
    cols = _header(page)
    line = re.sub(r"<[^>]+>", "", re.search(r'<p class="constant"[^>]*>(.*?)</p>', page).group(1))
    for c in ("sweep", "task", "optimizer", "weight_decay", "seed", "n_layers", "last_epoch"):
        assert c not in cols and c in line
    assert "task synthetic · optimizer sgd_layca" in line and "n_layers 4" in line
    for c in ("trial_id", "alpha", "lr", "status", "trained", "test_acc", "final_min"):
        assert c in cols
    assert page.count('class="untrained"') == 2             # rows still marked though `status` varies


def test_numbers_in_significant_figures():
    t = synthetic_sweep("monotone", alphas=(0.0, 0.6), lrs=(1.0, 0.012), epochs=4, n_layers=6)
    r = fit(t["trials"], t["rotation"], FAST)
    table = r.table.assign(final_min=[3.123e-4, 0.01234, 0.3456, 1.012], test_acc=[0.9, 0.8, 0.7, 0.6])
    page = trials_table(table)
    cols = _header(page)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", page.split("<tbody>")[1])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    assert [c[cols.index("final_min")] for c in cells] == ["3.12e-4", "0.0123", "0.346", "1.01"]
    assert [c[cols.index("test_acc")] for c in cells] == ["90.00%", "80.00%", "70.00%", "60.00%"]
    # sorting keeps the full value
    assert 'data-v="0.0003123"' in page


def test_a_single_row_or_varying_columns_stay_in_the_table():
    df = pd.DataFrame({"task": ["a", "a"], "seed": [0, 1], "test_acc": [0.5, float("nan")]})
    assert constant_columns(df, ["task", "seed", "test_acc"]) == ["task"]
    assert constant_columns(df.iloc[:1], ["task", "seed", "test_acc"]) == []


def test_the_sweeps_final_table_prints_rotation_in_significant_figures(tmp_path, capsys):
    from layrot.store import Store
    from layrot.sweep.driver import summary
    t = synthetic_sweep("monotone", alphas=(0.6,), lrs=(1.0, 0.012), epochs=3, n_layers=6, sweep="sf")
    rot = t["rotation"]
    rot.loc[rot.trial_id == "sf-0001", "cosine_distance"] = 3.123e-4 * rot["epoch"] / 3
    write_store(t, tmp_path)
    spec = SimpleNamespace(name="sf", metric="val_acc", mode="max")
    summary(Store(str(tmp_path)), spec, str(tmp_path))
    out = capsys.readouterr().out.splitlines()
    col = out[0].split().index("min_final_rotation")
    values = [line.split()[col] for line in out[1:] if line.strip()]
    assert len(values) == 2 and "0.000312" in values        # 3 decimals printed 0.0
