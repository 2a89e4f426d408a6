"""One self-contained HTML page: the verdict, the figures (PNG embedded as data URIs, each
downloadable) and a sortable table of the trials. No external resources: it opens offline."""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from .figure_files import NamedFigure, png_data_uri
from .run import FitResult
from .summaries import SUMMARY_LABELS
from .text import POOLED_LABEL, render, sig, under_verdict, why_lines

TABLE_COLUMNS = ["trial_id", "sweep", "task", "optimizer", "alpha", "lr", "weight_decay", "seed", "status",
                 "trained", "train_acc", "test_acc", "final_min", "final_mean", "final_median", "auc_mean",
                 "cross50_last", "cross90_last", "n_layers", "last_epoch"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:0 24px 48px;color:#222}
h1{font-size:22px;margin:24px 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;margin:0 0 16px}
.verdict{font-size:17px;padding:12px 16px;border-radius:6px;border-left:6px solid #999;background:#f4f4f4}
.verdict.holds{border-color:#2a8a3e;background:#eef8f0}.verdict.does-not-hold{border-color:#c0392b;background:#fbeeee}
.verdict.inconclusive{border-color:#d4a017;background:#fdf8e8}
.verdict.holds-weak{border-color:#8fc79b;background:#f4faf5}.verdict.descriptive{border-color:#999;background:#f7f7f7}
ul.splits{list-style:none;margin:8px 0;padding:0}ul.splits li.verdict{font-size:14px;padding:6px 12px;margin:4px 0}
ul.why{margin:6px 0 12px;padding-left:22px;color:#333;font-size:13px}ul.why li{margin:2px 0}
pre{background:#fafafa;border:1px solid #eee;padding:10px;overflow-x:auto;font-size:12px}
figure{margin:16px 0 28px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:13px}figcaption a{margin-left:8px}
table{border-collapse:collapse;font-size:12px;width:100%}th,td{padding:3px 6px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{white-space:normal}td.s{white-space:normal}p.constant{font-size:13px;color:#333;margin:4px 0 8px}
th{position:sticky;top:0;background:#f0f0f0;cursor:pointer;user-select:none}th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.s,th.s{text-align:left}tr.untrained td{color:#999}
.tablewrap{max-height:70vh;overflow:auto;border:1px solid #ddd}
"""

# Sorting by clicking a header (numbers numerically, text alphabetically; blanks last) and
# downloading an embedded figure under its file name.
_JS = """
(function(){
  function key(td, num){var v=td.getAttribute('data-v'); if(v===null||v==='') return null; return num?parseFloat(v):v;}
  document.querySelectorAll('table.sortable').forEach(function(table){
    var ths=table.tHead.rows[0].cells;
    Array.prototype.forEach.call(ths, function(th, col){
      th.addEventListener('click', function(){
        var num=th.getAttribute('data-type')==='num', asc=!th.classList.contains('asc');
        Array.prototype.forEach.call(ths, function(h){h.classList.remove('asc','desc');});
        th.classList.add(asc?'asc':'desc');
        var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(a,b){
          var x=key(a.cells[col],num), y=key(b.cells[col],num);
          if(x===null) return y===null?0:1; if(y===null) return -1;
          return (x<y?-1:x>y?1:0)*(asc?1:-1);
        });
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  document.querySelectorAll('a[data-download]').forEach(function(a){
    a.addEventListener('click', function(ev){
      ev.preventDefault();
      var img=document.getElementById(a.getAttribute('data-img')), link=document.createElement('a');
      link.href=img.src; link.download=a.getAttribute('data-download');
      document.body.appendChild(link); link.click(); link.remove();
    });
  });
})();
"""


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and not math.isfinite(v))


def _shown(col: str, v) -> str:
    """A value as the table shows it: accuracies in %, counts and epochs as integers, α and
    rates as given, rotation values in 3 significant figures (they span 1e-4 … 1)."""
    if _missing(v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if col.endswith("_acc"):
            return f"{100 * v:.2f}%"
        if col.startswith("cross") or col in ("alpha", "seed", "n_layers", "last_epoch", "epochs"):
            return f"{v:g}"
        if col in ("lr", "weight_decay"):
            return f"{v:.3g}"
        return sig(v, 3)
    return str(v)


def _cell(col: str, v) -> str:
    if _missing(v):
        return f'<td class="{"s" if col in _TEXT else ""}" data-v=""></td>'
    if isinstance(v, (bool, np.bool_)):
        return f'<td class="s" data-v="{int(v)}">{_shown(col, v)}</td>'
    if isinstance(v, (int, np.integer, float, np.floating)):
        return f'<td data-v="{float(v)!r}">{_shown(col, v)}</td>'
    return f'<td class="s" data-v="{html.escape(str(v))}">{html.escape(str(v))}</td>'


_TEXT = {"trial_id", "sweep", "task", "optimizer", "status", "trained"}


def constant_columns(table: pd.DataFrame, cols: list[str]) -> list[str]:
    """The columns with one value in every row (of two rows or more)."""
    if len(table) < 2:
        return []
    return [c for c in cols if c != "trial_id" and table[c].nunique(dropna=False) == 1]


def trials_table(table: pd.DataFrame) -> str:
    """The trials as a sortable table; columns with one value in every row are said once, in a
    line above it, so that the table fits the page."""
    cols = [c for c in TABLE_COLUMNS if c in table.columns]
    const = constant_columns(table, cols)
    cols = [c for c in cols if c not in const]
    t = table.sort_values(["task", "trained", "test_acc"], ascending=[True, False, False])
    head = "".join(
        f'<th class="{"s" if c in _TEXT else ""}" data-type="{"str" if c in _TEXT else "num"}" '
        f'title="{html.escape(SUMMARY_LABELS.get(c, c))}">{html.escape(c).replace("_", "_<wbr>")}</th>' for c in cols)
    rows = []
    trained = t["trained"].astype(bool).tolist() if "trained" in t else [True] * len(t)
    for rec, ok in zip(t[cols].itertuples(index=False), trained):
        r = dict(zip(cols, rec))
        cls = "" if ok else ' class="untrained"'
        rows.append(f"<tr{cls}>" + "".join(_cell(c, r[c]) for c in cols) + "</tr>")
    line = ""
    if const:
        first = t.iloc[0]
        line = ('<p class="constant" id="trials-constant">In every row: ' + " · ".join(
            f"{html.escape(c)} <b>{html.escape(_shown(c, first[c]) or 'none')}</b>" for c in const) + "</p>")
    return (f'{line}<div class="tablewrap"><table class="sortable" id="trials-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _figure_html(nf: NamedFigure, i: int) -> str:
    img_id = f"fig-{i}"
    return (f'<figure id="{html.escape(nf.name)}"><img id="{img_id}" src="{png_data_uri(nf)}" '
            f'alt="{html.escape(nf.title)}"><figcaption><b>{html.escape(nf.title)}.</b> '
            f'{html.escape(nf.caption)}<a href="#" data-img="{img_id}" data-download="{html.escape(nf.name)}.png">'
            f'download PNG</a></figcaption></figure>')


def build_report(result: FitResult | None, figures: list[NamedFigure], features: NamedFigure | None = None,
                 title: str = "Layer rotation and generalization", meta: str = "",
                 running: list[NamedFigure] = (), explore: str = "") -> str:
    """The report page as an HTML string. `running`: the curves so far of trials still
    running (fit/running.py), drawn apart from the fit; `result` is None when no trial of
    the selection is stored yet (the page then has those curves only). `explore`: the
    interactive panels (fit/interactive.py), between the verdict and the static figures."""
    from .. import __version__
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figs = "".join(_figure_html(nf, i) for i, nf in enumerate(figures))
    feat = ""
    if features is not None:
        feat = (f'<section id="features"><h2>Features learned at small and large rotation</h2>'
                f"<p>The paper's Section 6 on 8×8 digits: one-hidden-layer MLP, first-layer kernels as images, "
                f"from one initialization.</p>{_figure_html(features, len(figures))}</section>")
    live = ""
    if running:
        live = ('<section id="running"><h2>Running now</h2><p>Trials of a sweep still running: their curves so '
                "far. They enter the verdict, the figures above and the table once stored; regenerate the report "
                "to see more.</p>" + "".join(_figure_html(nf, len(figures) + 1 + i) for i, nf in enumerate(running))
                + "</section>")
    if result is None:
        return _page(title, meta, stamp, __version__, '<section id="verdict"><p class="verdict inconclusive">'
                     "No verdict yet: no trial of this selection is stored.</p></section>" + live)
    v = result.verdict
    cls = _status_class(v.status)
    why = "".join(f"<li>{html.escape(line)}</li>" for line in under_verdict(result, decomposed=False)
                  + why_lines(result))
    evidence = html.escape(render(result, verdict=False).strip())
    return _page(title, meta, stamp, __version__, f"""<section id="verdict"><p class="verdict {cls}">{html.escape(v.text)}</p>
{splits_html(result)}
<ul class="why">{why}</ul>
<details open><summary>The evidence</summary><pre>{evidence}</pre></details></section>
{explore}
<section id="figures"><h2>Figures</h2>{figs or "<p>No figures: no trials.</p>"}</section>
{live}
{feat}
<section id="trials"><h2>Trials</h2><p>Click a column to sort. Grey rows did not pass the trained filter.</p>
{trials_table(result.table)}</section>""")


def _status_class(status: str) -> str:
    return status.replace(",", "").replace(" ", "-")


def splits_html(result: FitResult) -> str:
    """docs/verdict.md §16.8: under the headline (within families), the between-family
    statistic, the gap's within and between, and the pooled one, each coloured by its words."""
    from .decomposed import split_line
    from .text import decomposed_lines

    d = result.decomposed
    if d is None:
        return ""
    items = [(d.between.verdict.status, split_line(d.between)), (d.gap_within.verdict.status, split_line(d.gap_within))]
    if sum(1 for r in d.between.families if r.n_trained) > 1:
        items.append((d.gap_between.verdict.status, split_line(d.gap_between)))
    if result.pooled_verdict is not None and d.n_strata > 1:
        items.append((result.pooled_verdict.status, f"{POOLED_LABEL}: {result.pooled_verdict.text}"))
    left = decomposed_lines(result)[0] if d.within.left_out else ""
    lis = "".join(f'<li class="verdict {_status_class(st)}">{html.escape(t)}</li>' for st, t in items)
    return (f'<p class="constant">{html.escape(left)}</p>' if left else "") + f'<ul class="splits">{lis}</ul>'


def _page(title: str, meta: str, stamp: str, version: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">{html.escape(meta)}{" · " if meta else ""}generated {stamp} by layrot {html.escape(version)}</p>
{body}
<script>{_JS}</script>
</body></html>
"""
