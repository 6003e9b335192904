"""DVC plots offline: the vendored vega template, our map template, network order, a real browser.

`.dvc/config` sets ``plots.html_template`` to ``.dvc/plots/offline/index.html`` (vega, vega-lite
and vega-embed inline); dvc.yaml draws plots/points/<method>/<NN>_<layer>.csv with
``.dvc/plots/map.json``. The browser test runs the plain `dvc plots show` / `dvc plots diff` in
the session's tiny DVC repository and opens the pages in headless Chromium (tests/browser.py).
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.browser import nonblank_fraction
from tests.conftest import REPO

OFFLINE = REPO / ".dvc" / "plots" / "offline"
MAP_TEMPLATE = REPO / ".dvc" / "plots" / "map.json"
CDN = ("cdn.jsdelivr", "https://cdn", "unpkg.com", "cdn.plot.ly")
METHODS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


def _inline_scripts(html: str) -> list[tuple[dict[str, str], str]]:
    """(attributes, body) of every <script> in the template."""
    out = []
    for attrs, body in re.findall(r"<script([^>]*)>\n(.*?)\n    </script>", html, flags=re.S):
        out.append((dict(re.findall(r'([\w-]+)="([^"]*)"', attrs)), body))
    return out


def test_offline_template_holds_the_published_builds_with_their_licences() -> None:
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert (REPO / ".dvc" / config["plots"]["html_template"]).resolve() == OFFLINE / "index.html"

    html = (OFFLINE / "index.html").read_text(encoding="utf-8")
    assert "{plot_divs}" in html and "{refresh_tag}" in html
    assert "{scripts}" not in html                # DVC would put its CDN <script src=...> tags there
    assert not re.search(r"<script[^>]*\ssrc=", html) and not any(c in html for c in CDN)
    scripts = _inline_scripts(html)
    readme = (OFFLINE / "README.md").read_text(encoding="utf-8")
    assert [a["data-package"].rsplit("@", 1)[0] for a, _ in scripts] == ["vega", "vega-lite", "vega-embed"]
    for attrs, body in scripts:
        name, version = attrs["data-package"].rsplit("@", 1)
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
        assert digest == attrs["data-sha256"], f"{name}: inline build differs from the recorded hash"
        assert f"| {name} | {version} | BSD-3-Clause | `{attrs['data-file']}` | `{digest}` |" in readme
        licence = (OFFLINE / f"LICENSE.{name}").read_text()
        assert "University of Washington Interactive Data Lab" in licence
        assert "Redistribution and use in source and binary forms" in licence


def test_map_plots_use_our_template_with_method_axes() -> None:
    template = json.loads(MAP_TEMPLATE.read_text())
    unit = template["spec"]["encoding"]
    assert template["data"] == {"values": "<DVC_METRIC_DATA>"}
    assert template["facet"]["column"]["field"] == "map"           # the chart title, from the data
    assert unit["color"]["field"] == "class"
    assert [t["field"] for t in unit["tooltip"]][:3] == ["class", "prediction", "correct"]

    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    maps = {k: v for p in plots if isinstance(p, dict) for k, v in p.items() if k.startswith("plots/points/")}
    assert set(maps) == {f"plots/points/{m}" for m in METHODS}
    for key, spec in maps.items():
        name = METHODS[key.rsplit("/", 1)[1]]
        assert spec["template"] == "map"
        assert (spec["x_label"], spec["y_label"]) == (f"{name} 1", f"{name} 2")


# --------------------------------------------------------------------------- real DVC + browser

_SPEC = re.compile(r"var spec = (\{.*?\});\s*vegaEmbed\('#([^']+)', spec\);", re.S)


def _specs(html: str) -> list[tuple[str, dict]]:
    """(div id, vega-lite spec) of every vega chart on a DVC plots page, in page order."""
    return [(div, json.loads(spec)) for spec, div in _SPEC.findall(html)]


def _hues(png: bytes, min_pixels: int = 15) -> int:
    """How many of 12 hue sectors the points of a chart cover (the legend, on the right, left out):
    a one-colour scatter gives 1 or 2, the ten class colours at least 6 (red/orange/brown and
    red/pink share sectors)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    plot = image.crop((0, 0, int(0.85 * image.size[0]), image.size[1]))
    hsv = np.asarray(plot.convert("HSV")).reshape(-1, 3)
    saturated = hsv[(hsv[:, 1] > 40) & (hsv[:, 2] > 60)]
    counts = np.bincount(saturated[:, 0].astype(int) * 12 // 256, minlength=12)
    return int((counts >= min_pixels).sum())


def _check_page(browser, page: Path, name: str, n_charts: int) -> bytes:
    browser.open(page)
    drawn = browser.wait_for(
        f"const d = document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks');"
        f"return d.length >= {n_charts} ? d.length : 0", timeout=120)
    assert drawn == n_charts
    assert browser.console_errors() == []
    assert browser.external_requests() == []
    widths = browser.run("return [window.innerWidth, document.documentElement.scrollWidth, "
                         "Array.from(document.images).map(i => i.getBoundingClientRect().right)]")
    inner, scroll, image_right = widths
    assert image_right and max(image_right) <= inner and scroll <= inner, widths   # images fit the page
    return browser.screenshot(name, full_page=False)         # the page is tens of thousands of px tall


@pytest.mark.slow
def test_dvc_plots_show_and_diff_draw_offline(dvc_repo: Path, browser) -> None:
    from tests.dvc_repo import dvc

    dvc("plots", "show", cwd=dvc_repo)                     # plain command: .dvc/config picks the template
    page = dvc_repo / "dvc_plots" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert not any(c in html for c in CDN)
    specs = _specs(html)

    # the maps: network order, titles from the data, coloured by class, axes named after the method
    layers = [l["name"] for l in json.loads((dvc_repo / "data/activations/layers.json").read_text())["layers"]]
    maps = [(div, s) for div, s in specs if "map" in s["data"]["values"][0]]
    expected = [f"{METHODS[m]}: {layer} (layer {i} of {len(layers)})"
                for m in ("pca", "tsne", "umap") for i, layer in enumerate(layers, start=1)]
    titles = [s["data"]["values"][0]["map"] for _, s in maps]
    assert titles == [t for t in expected if t in set(titles)] and len(titles) >= len(expected) - 3
    for _, spec in maps:
        assert {row["map"] for row in spec["data"]["values"]} == {spec["data"]["values"][0]["map"]}
        method = spec["data"]["values"][0]["map"].split(":")[0]
        assert spec["spec"]["encoding"]["x"]["title"] == f"{method} 1"
        assert spec["spec"]["encoding"]["color"]["field"] == "class"

    shot = _check_page(browser, page, "dvc_plots_show", len(specs))
    assert nonblank_fraction(shot) > 0.02
    # every map is drawn in the class colours (not blank, not one colour)
    for div, _ in maps:
        url = browser.run(f"return document.querySelector('#{div} canvas').toDataURL('image/png')")
        png = base64.b64decode(url.split(",", 1)[1])
        assert nonblank_fraction(png) > 0.01, div
        assert _hues(png) >= 6, div

    # dvc plots diff (workspace against HEAD): the same template, a row of maps per revision
    dvc("plots", "diff", "HEAD", "-o", "diff_plots", cwd=dvc_repo)
    diff_page = dvc_repo / "diff_plots" / "index.html"
    html = diff_page.read_text(encoding="utf-8")
    assert not any(c in html for c in CDN)
    _check_page(browser, diff_page, "dvc_plots_diff", len(_specs(html)))
