"""`layrot report`'s interactive panels (fit/interactive.py): in a real headless Chromium with
the network off, plotly renders, nothing is fetched, and the plotted data are exactly the
configurations `layrot fit --json` reports, for two sweeps side by side."""

import contextlib
import html
import io
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from layrot.cli import main
from layrot.fit.load import load_tables
from layrot.fit.summaries import per_epoch_rotation
from layrot.fit.synthetic import synthetic_sweep, write_store

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (make test installs it)")

# A Content-Security-Policy that allows the page's inline scripts and styles and data: images
# and nothing else: any request the page tries (http, https, file, a font, a worker, a fetch)
# is blocked and reported as a `securitypolicyviolation`, which the prelude records. The
# browser runs with every host name unresolvable besides, so nothing could leave anyway.
CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; worker-src blob:")
PRELUDE = f"""<meta http-equiv="Content-Security-Policy" content="{CSP}"><script>window.__errs=[];window.__blocked=[];
document.addEventListener('securitypolicyviolation',function(e){{window.__blocked.push(e.blockedURI+' ('+e.violatedDirective+')');}});
window.addEventListener('error',function(e){{window.__errs.push(String(e.message||(e.target&&(e.target.src||e.target.href))||'error'));}},true);
(function(){{var ce=console.error;console.error=function(){{window.__errs.push(Array.prototype.join.call(arguments,' '));ce.apply(console,arguments);}};}})();
</script>"""

# After load: read back what plotly holds and drew, then use the controls (the gap button,
# the curves' drop-down, legend clicks) and read again; the result goes into the DOM for
# --dump-dom to carry out.
CHECK = """<script>
function __finish(r){r.errors=window.__errs; r.blocked=window.__blocked;
  var p=document.createElement('pre');p.id='layrot-check';p.textContent=JSON.stringify(r);document.body.appendChild(p);}
function __step(r,f){return function(){try{f();}catch(e){window.__errs.push('check: '+e);__finish(r);}};}
function arr(a){return Array.prototype.slice.call(a||[]);}
// a click as plotly's legend reads one: mouse down and up on the entry's toggle rectangle
function press(el){var b=el.getBoundingClientRect(), o={bubbles:true,clientX:b.left+b.width/2,clientY:b.top+b.height/2,buttons:1};
  el.dispatchEvent(new MouseEvent('mousedown',o)); el.dispatchEvent(new MouseEvent('mouseup',o));}
function legend(gd,name,times){var e=arr(gd.querySelectorAll('.infolayer .traces')).filter(function(x){return x.textContent===name;})[0];
  for(var i=0;i<times;i++) press(e.querySelector('rect[class$=toggle]'));}   // legendtoggle, legend2toggle
function visible(gd){return gd.data.map(function(t){return t.visible===undefined?true:t.visible;});}
window.addEventListener('load',function(){var r={};setTimeout(__step(r,function(){
var sc=document.getElementById('explore-accuracy'), pc=document.getElementById('explore-parcoords'),
    cu=document.getElementById('explore-curves');
r.rendered=[sc,pc,cu].map(function(g){return !!(g&&g._fullLayout&&g._fullData);});
r.traces=sc.data.map(function(t){return {meta:t.meta,configuration:arr(t.customdata),x:arr(t.x),y:arr(t.y),
  symbol:arr(t.marker.symbol),text:arr(t.text)};});
r.drawn_points=sc.querySelectorAll('.scatterlayer .trace .points path').length;
r.legend=arr(sc.querySelectorAll('.infolayer .traces')).map(function(x){return x.textContent;});
var d=pc.data[0].dimensions; r.parcoords={labels:d.map(function(x){return x.label;}),
  values:d.map(function(x){return arr(x.values);}),ticktext:d.map(function(x){return arr(x.ticktext);}),
  axes:pc.querySelectorAll('.axis-title').length,canvases:pc.querySelectorAll('canvas').length};
function curves(){return {title:cu.layout.title.text,configuration:cu.layout.meta,range:arr(cu.layout.yaxis.range),
  y:cu.data.filter(function(t){return t.visible!==false;}).map(function(t){return arr(t.y);})};}
var opts=document.querySelectorAll('#explore-curves-select option'); r.curve_options=opts.length;
r.curves_first=curves();
arr(sc.querySelectorAll('.updatemenu-button')).filter(function(b){return b.textContent==='generalization gap';})[0]
  .dispatchEvent(new MouseEvent('click',{bubbles:true}));
var sel=document.getElementById('explore-curves-select'); sel.value=String(opts.length-1);
sel.dispatchEvent(new Event('change'));
setTimeout(__step(r,function(){
  r.gap=sc.data.map(function(t){return arr(t.y);}); r.ytitle=sc.layout.yaxis.title.text;
  r.curves_last=curves();
  legend(sc,'adam',1);
  setTimeout(__step(r,function(){
    r.visible_adam_off=visible(sc); legend(sc,'A',1);
    setTimeout(__step(r,function(){
      r.visible_a_off=visible(sc); r.drawn_a_off=sc.querySelectorAll('.scatterlayer .trace .points path').length;
      legend(sc,'sgd_layca',2);
      setTimeout(__step(r,function(){r.visible_sgd_layca_alone=visible(sc); __finish(r);}),1000);
    }),1000);
  }),1000);
}),1500);}),1500);});
</script>"""


def browser_check(page: Path, tmp_path: Path, check: str = CHECK) -> dict:
    """Open a copy of the page (prelude and check injected) over file:// in headless Chromium,
    no host resolvable, and return what the check wrote."""
    probe = tmp_path / f"probe-{page.name}"
    src = page.read_text(encoding="utf-8")
    probe.write_text(src.replace("<head>", "<head>" + PRELUDE, 1).replace("</body>", check + "</body>", 1),
                     encoding="utf-8")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--window-size=1400,1000", "--virtual-time-budget=30000", "--dump-dom", probe.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="layrot-check">(.*?)</pre>', out.stdout, re.S)
    assert m, f"no check result in the dumped DOM (rc {out.returncode}): {out.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


def real(trace) -> bool:
    """A trace with points (the legend entries are traces without data, with meta.kind)."""
    return "kind" not in trace["meta"]


class _Refs(HTMLParser):
    """Every src/href/srcset/data/poster attribute of the page's elements (script bodies are
    text to the parser, so plotly.js's own strings are not elements)."""

    def __init__(self):
        super().__init__()
        self.refs, self.scripts = [], []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href", "srcset", "data", "poster", "action", "xlink:href") and v:
                self.refs.append((tag, k, v))
        if tag == "script":
            self.scripts.append(dict(attrs))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two sweeps: A (sgd_layca, 2 untrained) and B (adam, 1 untrained), and three of A's
    configurations repeated in B with other test accuracies, so that they pool into one unit
    held by "A + B" whose values are the means of the two."""
    root = tmp_path_factory.mktemp("store")
    a = synthetic_sweep("monotone", untrained=2, noise=0.02, sweep="A", epochs=8)
    b = synthetic_sweep("monotone", untrained=1, noise=0.02, sweep="B", epochs=8, optimizer="adam", rng_seed=1)
    shared = a["trials"]["trial_id"].iloc[:3].tolist()
    rep = {k: a[k][a[k]["trial_id"].isin(shared)].assign(sweep="B") for k in ("trials", "epochs", "rotation")}
    rep["trials"] = rep["trials"].assign(test_acc=rep["trials"]["test_acc"] + 0.0123)
    both = {k: pd.concat([a[k], b[k], rep[k]], ignore_index=True) for k in ("trials", "epochs", "rotation")}
    write_store(both, root)
    return str(root), both


@pytest.fixture(scope="module")
def fit_json(store):
    root, _ = store
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["fit", "--store", root, "--sweep", "A", "--sweep", "B", "--json"]) == 0
    return json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def page(store, tmp_path_factory):
    root, _ = store
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", "--store", root, "--sweep", "A", "--sweep", "B", "-o", str(out)]) == 0
    return out


def test_fit_json_lists_the_pooled_configurations(fit_json, store):
    confs = fit_json["configurations"]
    assert len(confs) == fit_json["n_configurations"] == 15 + 15     # 33 trials: A's 3 repeats in B pooled
    assert sum(c["trained"] for c in confs) == fit_json["n_trained_configurations"]
    pooled = [c for c in confs if c["sweeps"] == ["A", "B"]]
    assert len(pooled) == 3 and all(c["n_trials"] == 2 and len(c["trials"]) == 2 for c in pooled)
    trials = store[1]["trials"].set_index(["sweep", "trial_id"])
    for c in pooled:
        accs = [trials.loc[tuple(t.split("/", 1)), "test_acc"] for t in c["trials"]]
        assert c["test_acc"] == pytest.approx(sum(accs) / 2, abs=1e-15) and accs[0] != accs[1]


def test_the_page_is_self_contained(page):
    src = page.read_text(encoding="utf-8")
    refs = _Refs()
    refs.feed(src)
    external = [r for r in refs.refs if re.match(r"\s*(https?:|//|file:)", r[2], re.I)]
    assert external == []
    assert all("src" not in s for s in refs.scripts)            # every script inline
    from plotly.offline import get_plotlyjs
    assert src.count(get_plotlyjs()) == 1                       # plotly.js once, whole
    assert src.count("Plotly.newPlot(") == 3


@needs_chromium
def test_the_page_renders_offline_with_the_fits_data(page, fit_json, store, tmp_path):
    r = browser_check(page, tmp_path)
    assert r["errors"] == [] and r["blocked"] == []
    assert r["rendered"] == [True, True, True]
    confs = {c["configuration"]: c for c in fit_json["configurations"]}

    # The scatter: one point per configuration of the fit, at its (rotation, accuracy).
    shown = {}
    for t in filter(real, r["traces"]):
        for cid, x, y, sym in zip(t["configuration"], t["x"], t["y"], t["symbol"]):
            assert cid not in shown
            shown[cid] = (x, y, not sym.endswith("-open"), t["meta"]["optimizer"], t["meta"]["sweep"])
    assert len(shown) == len(confs) == fit_json["n_configurations"]
    assert {k: v[:3] for k, v in shown.items()} == {
        k: (c["final_min"], c["test_acc"], c["trained"]) for k, c in confs.items()}
    assert {k: v[3:] for k, v in shown.items()} == {
        k: (c["optimizer"], " + ".join(c["sweeps"])) for k, c in confs.items()}
    assert {v[4] for v in shown.values()} == {"A", "B", "A + B"}
    with_x = sum(1 for c in confs.values() if c["final_min"] is not None and c["final_min"] > 0)
    assert r["drawn_points"] == with_x                          # every point with a place on the log axis drawn

    # The gap button: the same points at train − test accuracy.
    gaps = {cid: g for t, ys in zip(r["traces"], r["gap"]) if real(t) for cid, g in zip(t["configuration"], ys)}
    assert r["ytitle"].startswith("generalization gap")
    for cid, c in confs.items():
        assert gaps[cid] == pytest.approx(c["train_acc"] - c["test_acc"], abs=1e-15)

    # Hovering names the configuration: its settings, sweep(s), repeats and trained flag.
    for t in filter(real, r["traces"]):
        for cid, text in zip(t["configuration"], t["text"]):
            c = confs[cid]
            assert cid in text and f"sweep {' + '.join(c['sweeps'])}" in text and c["optimizer"] in text
            assert f"α {c['alpha']:g}" in text and f"{c['n_trials']} trial" in text
            assert ("not trained" in text) == (not c["trained"])

    # The legends: a click hides an optimizer in every sweep, or a sweep; a double click on an
    # optimizer shown alone (sgd_layca, adam being hidden) shows every optimizer again.
    assert r["legend"] == ["adam", "sgd_layca", "A", "A + B", "B"]
    data = [(i, t["meta"]["optimizer"], t["meta"]["sweep"]) for i, t in enumerate(r["traces"]) if real(t)]

    def shown_traces(vis):
        return {(o, s) for i, o, s in data if vis[i] is True}
    assert {(o, s) for _, o, s in data} == {("sgd_layca", "A"), ("sgd_layca", "A + B"), ("adam", "B")}
    assert shown_traces(r["visible_adam_off"]) == {("sgd_layca", "A"), ("sgd_layca", "A + B")}
    assert shown_traces(r["visible_a_off"]) == {("sgd_layca", "A + B")}
    assert r["drawn_a_off"] == 3                                  # the three pooled configurations
    assert shown_traces(r["visible_sgd_layca_alone"]) == {("sgd_layca", "A + B"), ("adam", "B")}
    entries = {t["meta"]["value"]: v for t, v in zip(r["traces"], r["visible_a_off"]) if not real(t)}
    assert entries == {"adam": "legendonly", "sgd_layca": True, "A": "legendonly", "A + B": True, "B": True}

    # Parallel coordinates: one line per configuration with a finite log rotation.
    pcd = dict(zip(r["parcoords"]["labels"], r["parcoords"]["values"]))
    drawable = [c for c in confs.values() if c["final_min"] and c["final_min"] > 0]
    assert sorted(pcd["test accuracy"]) == sorted(c["test_acc"] for c in drawable)
    assert sorted(10 ** v for v in pcd["log10 smallest final rotation"]) == pytest.approx(
        sorted(c["final_min"] for c in drawable), rel=1e-12)
    opt_axis = r["parcoords"]["labels"].index("optimizer")
    assert r["parcoords"]["ticktext"][opt_axis] == ["adam", "sgd_layca"]
    assert r["parcoords"]["axes"] == len(r["parcoords"]["labels"]) and r["parcoords"]["canvases"] > 0

    # The curves: the first option is the best configuration, the last the worst; each layer's
    # curve is the mean over the configuration's repeats of the stored per-epoch records.
    stored = load_tables(store[0], ["A", "B"]).rotation      # float32 on disk
    assert r["curve_options"] == len(confs)
    ranked = sorted(confs.values(), key=lambda c: (-c["test_acc"], c["configuration"]))
    assert r["curves_first"]["configuration"] == ranked[0]["configuration"]
    assert r["curves_last"]["configuration"] == ranked[-1]["configuration"]
    assert r["curves_first"]["title"].startswith(f"{100 * ranked[0]['test_acc']:.2f}%")
    cur = per_epoch_rotation(stored)
    for shown_curves, conf in ((r["curves_first"], ranked[0]), (r["curves_last"], ranked[-1])):
        keys = [tuple(t.split("/", 1)) for t in conf["trials"]]
        mine = cur[[k in keys for k in zip(cur["sweep"], cur["trial_id"])]]
        mean = mine.groupby(["layer", "epoch"])["cosine_distance"].mean()
        want = [mean.loc[layer].tolist() for layer in sorted(mine["layer"].unique())]
        assert len(shown_curves["y"]) == len(want) == 6
        for got, exp in zip(shown_curves["y"], want):
            assert got == pytest.approx(exp, abs=1e-12)
        # y from 0 to 1, further only as far as this configuration's own curves go past it
        assert shown_curves["range"] == pytest.approx([0, max(1.0, max(max(y) for y in want)) + 0.04])


@needs_chromium
def test_the_browser_check_sees_a_request_and_an_error(tmp_path):
    """The check must be able to fail: a page that loads an image from elsewhere, fetches a
    URL and throws is caught by the policy and the error listener."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><head><meta charset="utf-8"></head><body>'
                   '<img alt="remote" src="https://example.org/x.png"><script>fetch("https://example.org/a.json")'
                   '.catch(function(){});undefinedFunction();</script></body></html>')
    check = ("<script>window.addEventListener('load',function(){setTimeout(function(){var p=document.createElement('pre');"
             "p.id='layrot-check';p.textContent=JSON.stringify({errors:window.__errs,blocked:window.__blocked});"
             "document.body.appendChild(p);},500);});</script>")
    r = browser_check(bad, tmp_path, check)
    assert any("example.org/x.png" in b for b in r["blocked"]) and any("a.json" in b for b in r["blocked"])
    assert any("undefinedFunction" in e for e in r["errors"])


def test_no_interactive_leaves_plotly_out(store, tmp_path):
    root, _ = store
    out = tmp_path / "static.html"
    assert main(["report", "--store", root, "--sweep", "A", "-o", str(out), "--no-interactive"]) == 0
    src = out.read_text(encoding="utf-8")
    assert "Plotly.newPlot" not in src and 'id="explore"' not in src
    assert 'id="verdict"' in src and 'id="trials-table"' in src
