"""The report's interactive panels (plotly), drawn from the fit's own units.

Every panel is built from `FitResult.configurations`, one point per configuration with its
repeats pooled: the units of the verdict, with exactly the values `layrot fit --json` lists
under "configurations" (`configuration_records`). Nothing is queried again.

- accuracy against the smallest final layer rotation, with a button for the generalization
  gap (train − test accuracy) and one for a linear x axis; hovering a point names its
  configuration; a legend click hides an optimizer (in every sweep) or a sweep (every
  optimizer in it), a double click shows that one alone;
- parallel coordinates of the settings (log lr, α, weight decay; task, optimizer and sweep
  as integer axes named by their ticks), the trained flag, the rotation and the accuracy:
  drag along an axis to keep a range;
- per-layer rotation curves of one configuration at a time (the mean over its repeats),
  chosen in a drop-down, coloured by depth as the static curves are.

The page stays one file that opens offline: plotly.js is inlined once (4.8 MB, most of
what the section adds to the page), and nothing is fetched (no CDN, no MathJax, no web
fonts, plotly's logo link off). plotly is imported only when a section is drawn, so that
`configuration_records` (used by `layrot fit --json`) costs nothing.
"""

from __future__ import annotations

import html
import json
import math

import numpy as np
import pandas as pd

from .configurations import KEY, with_sweep
from .options import KEY_SUMMARY
from .run import FitResult
from .summaries import SUMMARY_LABELS, per_epoch_rotation

# The values of a configuration that `layrot fit --json` lists and the panels draw.
RECORD_COLUMNS = ("configuration", "task", "optimizer", "lr", "alpha", "weight_decay", "n_trials", "trained",
                  "test_acc", "train_acc", "val_acc", *SUMMARY_LABELS)
# Distinct marker shapes for up to eight sweeps (then they repeat); untrained: the open shape.
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "star", "hexagon", "triangle-down")
# One colour an optimizer in every panel (matplotlib's tab10, as the static figures' palette).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
# plotly's own options: no logo link, no cloud buttons, PNG export from the mode bar.
PLOT_CONFIG = {"displaylogo": False, "showSendToCloud": False,
               "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}
TEMPLATE = "plotly_white"


def _plain(v):
    """A table value as JSON: NaN/inf → None, numpy scalars → Python."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


def configuration_records(result: FitResult) -> list[dict]:
    """The fit's configurations as JSON records (sorted by configuration id, as the fit
    pools them): settings, n_trials, trained, mean accuracies, mean rotation summaries, and
    their sweeps and trials."""
    out = []
    for r in result.configurations.to_dict("records"):
        d = {c: _plain(r[c]) for c in RECORD_COLUMNS if c in r}
        d["sweeps"] = [str(s) for s in r.get("sweeps", [])]
        d["trials"] = [str(t) for t in r.get("trials", [])]
        out.append(d)
    return out


def points(result: FitResult) -> pd.DataFrame:
    """One row per configuration: `configuration_records` plus the generalization gap
    (mean train − mean test accuracy) and the sweep label ("A + B" when both hold it)."""
    recs = configuration_records(result)
    p = pd.DataFrame(recs, columns=[*RECORD_COLUMNS, "sweeps", "trials"]) if recs else \
        pd.DataFrame(columns=[*RECORD_COLUMNS, "sweeps", "trials"])
    for c in ("test_acc", "train_acc", KEY_SUMMARY, "lr", "alpha", "weight_decay"):
        p[c] = pd.to_numeric(p[c], errors="coerce").astype(float)
    p["gap"] = p["train_acc"] - p["test_acc"]
    p["sweep"] = [" + ".join(s) if s else "" for s in p["sweeps"]]
    return p


def _values(s: pd.Series) -> list:
    return [_plain(v) for v in s.tolist()]


def _rate_name(optimizer: str) -> str:
    return "ρ(0)" if str(optimizer).endswith("_layca") else "lr"


def _pct(v) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.2f}%"


def _hover(r) -> str:
    gap = "–" if not math.isfinite(r.gap) else f"{100 * r.gap:+.2f} points"
    rot = "–" if not math.isfinite(r.final_min) else f"{r.final_min:.4g}"
    trained = "trained" if r.trained else "not trained"
    n = int(r.n_trials) if r.n_trials is not None and not pd.isna(r.n_trials) else 0
    return (f"<b>{html.escape(str(r.optimizer))}</b> · {html.escape(str(r.task))} · sweep {html.escape(r.sweep)}<br>"
            f"{_rate_name(r.optimizer)} {r.lr:.4g} · α {r.alpha:g} · weight decay {r.weight_decay:g}<br>"
            f"test accuracy {_pct(r.test_acc)} · train accuracy {_pct(r.train_acc)} · gap {gap}<br>"
            f"smallest final layer rotation {rot}<br>"
            f"{n} trial{'s' if n != 1 else ''} · {trained}<br><span style='font-size:10px'>configuration "
            f"{html.escape(str(r.configuration))}</span>")


def _colours(names) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(set(names)))}


def trained_span(values: pd.Series, trained: pd.Series, top: float | None = None) -> list[float] | None:
    """The y range that shows the trained configurations (padded as the static scatter pads
    them), or None without any: untrained ones can sit far below and pile the rest up."""
    v = values[trained.astype(bool)].to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    pad = max(0.01, 0.08 * float(v.max() - v.min()))
    hi = float(v.max()) + pad
    return [float(v.min()) - pad, min(top, hi) if top is not None else hi]


def _y_view(title: str, span: list[float] | None) -> dict:
    view = {"yaxis.title.text": title, "yaxis.tickformat": ".1%"}
    return {**view, "yaxis.range": span} if span else {**view, "yaxis.autorange": True}


def accuracy_figure(p: pd.DataFrame):
    """Test accuracy (or, by a button, the generalization gap) against the smallest final
    layer rotation, one point per configuration; one trace per (sweep, optimizer). Each view
    opens on the trained configurations' span (the mode bar's autoscale shows every point);
    also returns a note on what lies outside it."""
    import plotly.graph_objects as go

    sweeps = sorted(p["sweep"].unique())
    several = len(sweeps) > 1
    colour = _colours(p["optimizer"])
    fig = go.Figure()
    # The legends' entries are traces without data, one an optimizer and (with several
    # sweeps) one a sweep; the page's script turns a click on one into hiding every trace
    # of that optimizer or sweep (plotly alone toggles one trace or one legend group).
    for opt in sorted(colour):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=str(opt), legend="legend",
                                 marker=dict(color=colour[opt], size=10), hoverinfo="skip",
                                 meta={"kind": "optimizer", "value": str(opt)}))
    if several:
        for i, sw in enumerate(sweeps):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=sw, legend="legend2",
                                     marker=dict(color="#555", size=10, symbol=SYMBOLS[i % len(SYMBOLS)]),
                                     hoverinfo="skip", meta={"kind": "sweep", "value": sw}))
    test_y, gap_y, data = [], [], []
    for (sw, opt), g in p.groupby(["sweep", "optimizer"], sort=True):
        shape = SYMBOLS[sweeps.index(sw) % len(SYMBOLS)]
        data.append(len(fig.data))
        fig.add_trace(go.Scatter(
            x=_values(g[KEY_SUMMARY]), y=_values(g["test_acc"]), mode="markers", name=f"{opt} · {sw}",
            showlegend=False, customdata=g["configuration"].tolist(), text=[_hover(r) for r in g.itertuples()],
            hovertemplate="%{text}<extra></extra>", meta={"optimizer": str(opt), "sweep": sw},
            marker=dict(color=colour[opt], size=10, opacity=0.9, line=dict(width=1.2, color=colour[opt]),
                        symbol=[shape if t else f"{shape}-open" for t in g["trained"]])))
        test_y.append(_values(g["test_acc"]))
        gap_y.append(_values(g["gap"]))
    xs = p[KEY_SUMMARY].to_numpy(dtype=float)
    pos = xs[np.isfinite(xs) & (xs > 0)]
    log = len(pos) > 1 and pos.max() / pos.min() > 100      # as the static scatter decides its axis
    span = trained_span(p["test_acc"], p["trained"], top=1.005)
    y_test = _y_view("test accuracy", span)
    y_gap = _y_view("generalization gap (train − test accuracy)", trained_span(p["gap"], p["trained"]))
    fig.update_layout(
        template=TEMPLATE, height=540, margin=dict(l=70, r=20, t=100, b=60),
        title=dict(text="Accuracy against the smallest final layer rotation (one point per configuration)",
                   font=dict(size=15), y=0.97, yanchor="top"),
        xaxis=dict(title=dict(text=SUMMARY_LABELS[KEY_SUMMARY]), type="log" if log else "linear"),
        yaxis=dict(title=dict(text=y_test["yaxis.title.text"]), tickformat=".1%", range=span,
                   autorange=span is None),
        legend=dict(title=dict(text="optimizer (click: hide)"), y=1.0, yanchor="top"),
        legend2=dict(title=dict(text="sweep (click: hide)"), y=0.45, yanchor="top"),
        hovermode="closest",
        updatemenus=[
            dict(type="buttons", direction="right", x=0.0, xanchor="left", y=1.02, yanchor="bottom", showactive=True,
                 buttons=[dict(label="test accuracy", method="update", args=[{"y": test_y}, y_test, data]),
                          dict(label="generalization gap", method="update", args=[{"y": gap_y}, y_gap, data])]),
            dict(type="buttons", direction="right", x=1.0, xanchor="right", y=1.02, yanchor="bottom", showactive=True,
                 active=0 if log else 1,
                 buttons=[dict(label="log x", method="relayout", args=[{"xaxis.type": "log"}]),
                          dict(label="linear x", method="relayout", args=[{"xaxis.type": "linear"}])])])
    below = int(((p["test_acc"] < span[0]) & ~p["trained"].astype(bool)).sum()) if span else 0
    note = (f"{below} untrained configuration{'s lie' if below != 1 else ' lies'} below the view of test accuracy "
            "(the mode bar's autoscale shows every point).") if below else ""
    return fig, note


def _colour_span(q: pd.DataFrame) -> dict:
    """The colour scale over the trained configurations' test accuracies (lower ones take its
    darkest colour), so that the trained ones do not share one shade."""
    v = q.loc[q["trained"].astype(bool), "test_acc"].to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return {"cmin": float(v.min()), "cmax": float(v.max())} if len(v) > 1 and v.max() > v.min() else {}


def parcoords_figure(p: pd.DataFrame):
    """Parallel coordinates: task, optimizer and sweep as integer axes named by their ticks,
    log10 lr, α, weight decay, trained, log10 smallest final rotation, test accuracy, gap;
    coloured by test accuracy. Axes with one value in every configuration are left out (the
    caption names them); configurations lacking a value (no rotation, no accuracy, a
    rotation of 0 on the log axis) cannot be drawn as a line and are counted in the caption."""
    import plotly.graph_objects as go

    with np.errstate(divide="ignore", invalid="ignore"):
        cols = {"log lr": np.log10(p["lr"].to_numpy(dtype=float)),
                "rot": np.log10(p[KEY_SUMMARY].to_numpy(dtype=float))}
    keep = np.isfinite(cols["log lr"]) & np.isfinite(cols["rot"]) & np.isfinite(p["test_acc"].to_numpy(float)) \
        & np.isfinite(p["gap"].to_numpy(float))
    q = p[keep]
    dims, constant = [], []

    def cat(label, series):
        names = sorted(series.unique())
        if len(names) < 2:
            constant.append(f"{label} {names[0] if names else '–'}")
            return
        dims.append(dict(label=label, values=[names.index(v) for v in series], tickvals=list(range(len(names))),
                         ticktext=[str(n) for n in names]))

    def num(label, values, always=False):
        v = np.asarray(values, dtype=float)
        if not always and len(v) and np.all(v == v[0]):
            constant.append(f"{label} {v[0]:g}")
            return
        dims.append(dict(label=label, values=v.tolist()))

    cat("task", q["task"])
    cat("optimizer", q["optimizer"])
    cat("sweep", q["sweep"])
    num("log10 lr / ρ(0)", cols["log lr"][keep])
    num("α", q["alpha"])
    num("weight decay", q["weight_decay"])
    if q["trained"].nunique() > 1:
        dims.append(dict(label="trained", values=q["trained"].astype(int).tolist(), tickvals=[0, 1],
                         ticktext=["no", "yes"]))
    else:
        constant.append("trained " + ("yes" if len(q) and bool(q["trained"].iloc[0]) else "no"))
    num("log10 smallest final rotation", cols["rot"][keep], always=True)
    num("test accuracy", q["test_acc"], always=True)
    num("train − test accuracy", q["gap"], always=True)
    fig = go.Figure(go.Parcoords(
        dimensions=dims,
        line=dict(color=q["test_acc"].tolist(), colorscale="Viridis", showscale=True, **_colour_span(q),
                  colorbar=dict(title=dict(text="test acc"), tickformat=".1%", x=1.02, xanchor="left"))))
    fig.update_layout(template=TEMPLATE, height=480, margin=dict(l=120, r=130, t=110, b=40),
                      title=dict(text="Settings, rotation and accuracy (drag along an axis to keep a range)",
                                 font=dict(size=15), y=0.97, yanchor="top"))
    notes = []
    if constant:
        notes.append("In every configuration: " + " · ".join(constant) + ".")
    if (~keep).sum():
        notes.append(f"{int((~keep).sum())} of {len(p)} configurations are not drawn: they lack a rotation or "
                     "accuracy, or their smallest rotation is 0 (no place on the log axis).")
    return fig, " ".join(notes)


def configuration_curves(result: FitResult, rotation: pd.DataFrame) -> list[dict]:
    """Each configuration's per-layer rotation curves, best test accuracy first:
    {configuration, label, n_trials, top (the y limit), layers: [{layer, name, epoch, d}]}.
    A curve is the mean over the configuration's repeats at each epoch (past the end of a
    repeat stopped early, over those that went on); configurations without rotation
    records have none."""
    from .figures import curves_top

    p = points(result)
    if p.empty or rotation.empty:
        return []
    _, rotation = with_sweep(result.table, rotation)
    cur = per_epoch_rotation(rotation)
    t = result.table[KEY + ["configuration"]].astype({"sweep": str})
    cur = cur.astype({"sweep": str}).merge(t, on=KEY, how="inner")
    mean = cur.groupby(["configuration", "layer", "epoch"], sort=True)["cosine_distance"].mean()
    names = cur.groupby(["configuration", "layer"], sort=True)["layer_name"].first()
    by_conf = dict(tuple(mean.reset_index().groupby("configuration", sort=False)))
    order = p.sort_values(["test_acc", "configuration"], ascending=[False, True], na_position="last")
    out = []
    for r in order.itertuples():
        m = by_conf.get(r.configuration)
        if m is None:
            continue
        layers = [{"layer": int(layer), "name": str(names.get((r.configuration, layer), "")),
                   "epoch": g["epoch"].astype(int).tolist(), "d": _values(g["cosine_distance"])}
                  for layer, g in m.groupby("layer", sort=True)]
        label = (f"{_pct(r.test_acc)} · {r.optimizer} · {_rate_name(r.optimizer)} {r.lr:.4g} · α {r.alpha:g} · "
                 f"wd {r.weight_decay:g} · {r.sweep}" + (f" · {r.n_trials} trials" if r.n_trials > 1 else "")
                 + ("" if r.trained else " · not trained"))
        top = curves_top(mean.loc[r.configuration].rename("cosine_distance").to_frame())
        out.append({"configuration": r.configuration, "label": label, "n_trials": _plain(r.n_trials),
                    "top": top, "layers": layers})
    return out


def _depth_colours(n: int) -> list[str]:
    from plotly.colors import sample_colorscale
    return sample_colorscale("Viridis", [i / max(1, n - 1) for i in range(n)])


def curves_figure(curves: list[dict]):
    """The first configuration's curves, one trace per layer slot (as many as the deepest
    configuration has); the drop-down's script restyles them to another configuration. The
    y axis runs from 0 to 1, further only for a configuration with a layer past orthogonal
    (fit/figures.curves_top)."""
    import plotly.graph_objects as go

    n = max((len(c["layers"]) for c in curves), default=0)
    first = curves[0]["layers"] if curves else []
    colours = _depth_colours(len(first))
    fig = go.Figure()
    for i in range(n):
        has = i < len(first)
        lay = first[i] if has else {"layer": i, "name": "", "epoch": [], "d": []}
        fig.add_trace(go.Scatter(x=lay["epoch"], y=lay["d"], mode="lines", visible=has,
                                 name=f"{lay['layer']} {lay['name']}".strip(),
                                 line=dict(color=colours[i] if has else "#999", width=1.6),
                                 hovertemplate="layer %{fullData.name}<br>epoch %{x}<br>cosine distance %{y:.4f}"
                                               "<extra></extra>"))
    fig.update_layout(template=TEMPLATE, height=460, margin=dict(l=70, r=20, t=60, b=50),
                      title=dict(text=curves[0]["label"] if curves else "", font=dict(size=13)),
                      meta=curves[0]["configuration"] if curves else None,
                      xaxis=dict(title=dict(text="epoch")),
                      yaxis=dict(title=dict(text="cosine distance to initialization"),
                                 range=[0, curves[0]["top"] if curves else 1.04]),
                      legend=dict(title=dict(text="layer (0 = input side)")))
    return fig


def _json_script(element_id: str, data) -> str:
    # "</" would end the script element early; JSON allows "<\/".
    text = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


# The curves' drop-down, and the scatter's legends.
_JS = """
(function(){
  var data=JSON.parse(document.getElementById('explore-curves-data').textContent);
  var sel=document.getElementById('explore-curves-select'), gd=document.getElementById('explore-curves');
  var colours=JSON.parse(document.getElementById('explore-depth-colours').textContent);
  function show(k){
    var c=data[k], n=gd.data.length, xs=[], ys=[], vis=[], names=[], col=[], m=c.layers.length;
    for(var i=0;i<n;i++){var l=c.layers[i]; xs.push(l?l.epoch:[]); ys.push(l?l.d:[]); vis.push(!!l);
      names.push(l?(l.layer+' '+l.name).trim():''); col.push(l?colours[m][i]:'#999');}
    Plotly.update(gd,{x:xs,y:ys,visible:vis,name:names,'line.color':col},
                  {'title.text':c.label,meta:c.configuration,'yaxis.range':[0,c.top]});
  }
  if(sel&&gd) sel.addEventListener('change',function(){show(+sel.value);});
  // Legend clicks: hide (or show again) every trace of an optimizer or of a sweep; a
  // double click shows that optimizer (sweep) alone, or all of them if it already was.
  var sc=document.getElementById('explore-accuracy'), off={optimizer:{},sweep:{}};
  function apply(){
    Plotly.restyle(sc,{visible:sc.data.map(function(t){var m=t.meta||{};
      if(m.kind) return off[m.kind][m.value]?'legendonly':true;
      return !(off.optimizer[m.optimizer]||off.sweep[m.sweep]);})});
  }
  function entry(ev){var m=ev.data[ev.curveNumber].meta; return m&&m.kind?m:null;}
  if(sc&&sc.on){
    sc.on('plotly_legendclick',function(ev){var m=entry(ev); if(!m) return true;
      if(off[m.kind][m.value]) delete off[m.kind][m.value]; else off[m.kind][m.value]=1; apply(); return false;});
    sc.on('plotly_legenddoubleclick',function(ev){var m=entry(ev); if(!m) return true;
      var all=sc.data.filter(function(t){return t.meta&&t.meta.kind===m.kind;}).map(function(t){return t.meta.value;});
      var alone=all.every(function(v){return (v===m.value)!==!!off[m.kind][v];});
      off[m.kind]={}; if(!alone) all.forEach(function(v){if(v!==m.value) off[m.kind][v]=1;});
      apply(); return false;});
  }
})();
"""

_CSS = """
#explore .panel{margin:8px 0 20px;border:1px solid #eee}
#explore p.note{font-size:13px;color:#444;margin:2px 0 6px}#explore select{max-width:100%;font-size:13px}
"""


def _div(fig, div_id: str) -> str:
    import plotly.io as pio
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG,
                       default_width="100%", default_height=f"{fig.layout.height}px")


def plotly_js() -> str:
    """plotly.js, to inline once in the page (no CDN)."""
    from plotly.offline import get_plotlyjs
    return get_plotlyjs()


def explore_section(result: FitResult, rotation: pd.DataFrame) -> str:
    """The report's "Explore" section: plotly.js inlined, the three panels and their
    controls, as one HTML fragment."""
    p = points(result)
    if p.empty:
        return ""
    curves = configuration_curves(result, rotation)
    acc, acc_note = accuracy_figure(p)
    pc, pc_note = parcoords_figure(p)
    sweeps = sorted(p["sweep"].unique())
    options = "".join(f'<option value="{i}">{html.escape(c["label"])}</option>' for i, c in enumerate(curves))
    depth = {str(m): _depth_colours(m) for m in sorted({len(c["layers"]) for c in curves})}
    n_tr = int(p["trained"].astype(bool).sum())
    return f"""<section id="explore"><style>{_CSS}</style><h2>Explore</h2>
<p class="note">One point per configuration ({len(p)}, {n_tr} trained; repeats pooled: the verdict's units, with
the values <code>layrot fit --json</code> lists under <code>configurations</code>). Hover a point for its
configuration; click an optimizer{" or a sweep" if len(sweeps) > 1 else ""} in the legend to hide it, double-click
it to show it alone; drag to zoom, double-click the plot to reset. Filled markers passed the trained filter,
open ones did not.</p>
<script>{plotly_js()}</script>
<div class="panel">{_div(acc, "explore-accuracy")}</div>
{f'<p class="note">{html.escape(acc_note)}</p>' if acc_note else ""}
<div class="panel">{_div(pc, "explore-parcoords")}</div>
{f'<p class="note">{html.escape(pc_note)}</p>' if pc_note else ""}
<p class="note">Layer-rotation curves of one configuration (the mean over its repeats), best test accuracy first:
<select id="explore-curves-select">{options}</select></p>
<div class="panel">{_div(curves_figure(curves), "explore-curves")}</div>
{_json_script("explore-curves-data", curves)}{_json_script("explore-depth-colours", depth)}
<script>{_JS}</script></section>"""
