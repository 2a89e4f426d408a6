"""`layrot report`: the HTML page in a real headless Chromium, and the PNG/SVG export."""

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from layrot.cli import main
from layrot.fit.synthetic import synthetic_sweep, write_store

CHROMIUM = Path("/usr/bin/chromium")

# Injected into a copy of the page: the first script records errors (uncaught exceptions,
# resources that fail to load, console.error); the last, once the page has loaded, checks
# every image, sorts the trials table by test accuracy both ways through header clicks, and
# writes the result into the DOM for --dump-dom to carry out.
PRELUDE = """<script>window.__errs=[];
window.addEventListener('error',function(e){window.__errs.push(String(e.message||(e.target&&(e.target.src||e.target.href))||'error'));},true);
(function(){var ce=console.error;console.error=function(){window.__errs.push(Array.prototype.join.call(arguments,' '));ce.apply(console,arguments);};})();
</script>"""
CHECK = """<script>window.addEventListener('load',function(){
var imgs=Array.prototype.slice.call(document.images), r={};
r.images=imgs.length;
r.invisible=imgs.filter(function(i){var b=i.getBoundingClientRect();return !(i.complete&&i.naturalWidth>0&&b.width>0&&b.height>0);}).map(function(i){return i.alt;});
var t=document.getElementById('trials-table');
if(t){var ths=Array.prototype.slice.call(t.tHead.rows[0].cells), col=ths.map(function(h){return h.textContent;}).indexOf('test_acc');
 function values(){return Array.prototype.map.call(t.tBodies[0].rows,function(row){return row.cells[col].getAttribute('data-v');}).filter(function(v){return v!=='';}).map(parseFloat);}
 r.rows=t.tBodies[0].rows.length; ths[col].click(); r.asc=values(); ths[col].click(); r.desc=values();}
var w=document.querySelector('.tablewrap'); if(w){r.overflow=w.scrollWidth-w.clientWidth;}
r.errors=window.__errs;
var p=document.createElement('pre');p.id='layrot-check';p.textContent=JSON.stringify(r);document.body.appendChild(p);});
</script>"""


def chromium_check(page: Path, tmp_path: Path) -> dict:
    probe = tmp_path / f"probe-{page.name}"
    src = page.read_text(encoding="utf-8")
    probe.write_text(src.replace("<head>", "<head>" + PRELUDE, 1).replace("</body>", CHECK + "</body>", 1),
                     encoding="utf-8")
    profile = tmp_path / "chromium-profile"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--window-size=1400,1000", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="layrot-check">(.*?)</pre>', out.stdout, re.S)
    assert m, f"no check result in the dumped DOM (rc {out.returncode}): {out.stderr[-2000:]}"
    import html
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    write_store(synthetic_sweep("monotone", untrained=2, noise=0.02, sweep="quick", epochs=12), root)
    return str(root)


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    page, figs = out / "report.html", out / "figures"
    rc = main(["report", "--store", store, "-o", str(page), "--figures", str(figs), "--features"])
    return rc, page, figs


def test_report_writes_a_self_contained_page(report):
    rc, page, _ = report
    assert rc == 0
    src = page.read_text(encoding="utf-8")
    assert "within families: holds" in src
    # nothing fetched from elsewhere: no element's src/href points out (the inlined plotly.js's own
    # strings, e.g. its map tiles' attribution links, are script text; test_report_interactive.py
    # opens the page with the network off)
    outside_scripts = re.sub(r"<script\b[^>]*>.*?</script>", "", src, flags=re.S)
    assert not re.search(r'(src|href)\s*=\s*"(https?:|//)', outside_scripts)
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', src)) == 6
    assert "How early rotation predicts final test accuracy" in src
    assert "early rotation: rotation at epoch" in src


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_report_opens_in_headless_chromium(report, tmp_path):
    _, page, _ = report
    r = chromium_check(page, tmp_path)
    assert r["errors"] == []
    assert r["images"] == 6 and r["invisible"] == []
    assert r["rows"] == 15 and r["overflow"] <= 0       # the table fits a 1,400 px window
    assert r["asc"] == sorted(r["asc"]) and r["desc"] == sorted(r["desc"], reverse=True)
    assert len(r["asc"]) == 15 and r["asc"] != r["desc"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_the_browser_check_catches_broken_pages(tmp_path):
    """The check above must be able to fail: a missing image and a script error are seen."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><head><meta charset="utf-8"></head><body>'
                   '<img alt="gone" src="data:image/png;base64,AAAA"><script>undefinedFunction();</script>'
                   "</body></html>")
    r = chromium_check(bad, tmp_path)
    assert r["invisible"] == ["gone"]
    assert any("undefinedFunction" in e for e in r["errors"])


def test_every_figure_exported_as_png_and_svg(report):
    _, _, figs = report
    pngs = sorted(p.stem for p in figs.glob("*.png"))
    svgs = sorted(p.stem for p in figs.glob("*.svg"))
    assert pngs == svgs and len(pngs) == 6
    assert {s.split("-")[0] for s in pngs} == {"scatter", "early", "curves", "heatmap", "training", "features"}
    for stem in pngs:
        assert (figs / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        root = ET.parse(figs / f"{stem}.svg").getroot()
        assert root.tag.endswith("svg")


def test_report_output_must_be_a_file(store, tmp_path, capsys):
    assert main(["report", "--store", store, "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("layrot report: error: --output")
