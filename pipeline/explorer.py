"""The explorer: one self-contained interactive HTML page of every layer's map (Bokeh, inline JS).

Plain arguments in, HTML out; no file reading here (the ``explore`` stage and command do that)::

    run = ExplorerRun(label="workspace", layers=["input", "conv1", ...],
                      maps={"tsne": {"input": xy0, "conv1": xy1, ...}},     # (n, 2+) per layer
                      preds=preds, confidence=conf,
                      scores={"tsne": {"conv1": {"knn_accuracy": 0.9, ...}}}, probes={"conv1": 0.93},
                      snapshot_layer="act4", snapshots={"tsne": [Snapshot(step, epoch, xy, acc), ...]})
    html = explorer_html([run], labels=labels, classes=classes, images=images_uint8, indices=indices)

Every point of every map of every run is one row of a single shared ``ColumnDataSource`` (one
column pair per run, method and layer; thumbnails once, as one sprite image), so a box or lasso
selection in any map selects the same images in all the others, in both runs, and in the weight
snapshots. The page has no server and loads nothing: Bokeh's JavaScript is inline (``INLINE``
resources) and the thumbnails are a PNG data URL in a CSS custom property (``--hs-sprite``), which
the tooltips and the selection list crop with ``background-position``.

Names a script can look up with ``Bokeh.documents[0].get_model_by_name(name)``: ``points`` (the
source), ``map_r{r}`` (the large map of run r), ``strip_r{r}_l{l}`` (layer l's small map),
``snap_r{r}`` (the snapshot map), ``layer_r{r}`` / ``snapshot_r{r}`` (sliders), ``method`` and
``colour`` (switches), ``selection`` (the list of selected thumbnails).
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["ExplorerRun", "Snapshot", "explorer_layout", "explorer_html", "thumbnail_sprite", "compact", "COLOUR_MODES",
           "METHOD_TITLES", "SCORE_NAMES"]

METHOD_TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
COLOUR_MODES = ("class", "prediction", "correct / wrong", "confidence")
# metrics/embeddings/<method>.json keys drawn against depth (the probe is per layer, not per method)
SCORE_NAMES = {"knn_accuracy": "kNN accuracy (map)", "trustworthiness": "trustworthiness",
               "silhouette": "silhouette"}
_THUMB_ZOOM = 2                    # tooltip thumbnails at 2x (28 px digits -> 56 px)
_LIST_CELL = 36                    # selection-list thumbnails, px
_MAX_LISTED = 500                  # thumbnails listed for one selection (the count is always exact)
_MAP_SIZE = 560
_STRIP_SIZE = 132
_STRIP_COLS = 4
_MANTISSA_BITS = 12               # coordinates kept to 1/4096 of their value: a 560 px map shows 1/560 of its range
_CORRECT = "rgba(150,150,150,0.35)"
_WRONG = "#d62728"


@dataclass
class Snapshot:
    """One weight snapshot's map of ``ExplorerRun.snapshot_layer``."""

    step: int
    epoch: float | None
    coords: np.ndarray                       # (n, 2+), rows as every other array
    accuracy: float | None = None            # test accuracy of the snapshot's predictions


@dataclass
class ExplorerRun:
    """One run's maps and numbers; every array has the same n rows in the same order."""

    label: str
    layers: Sequence[str]                                           # network order, input first
    maps: Mapping[str, Mapping[str, np.ndarray]]                    # method -> layer -> (n, 2+)
    preds: np.ndarray | None = None                                 # (n,) predicted class; None: no classifier
    confidence: np.ndarray | None = None                            # (n,) max softmax probability
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)  # method -> layer -> metrics
    probes: Mapping[str, float | None] = field(default_factory=dict)                     # layer -> probe accuracy
    skipped: Mapping[str, Mapping[str, str]] = field(default_factory=dict)               # method -> layer -> reason
    snapshot_layer: str | None = None
    snapshots: Mapping[str, Sequence[Snapshot]] = field(default_factory=dict)            # method -> frames
    test_accuracy: float | None = None

    def take(self, rows: np.ndarray) -> "ExplorerRun":
        """The same run on a subset (or reordering) of the rows (``test_accuracy`` and the scores still
        describe all the run's images)."""
        pick = lambda a: None if a is None else np.asarray(a)[rows]            # noqa: E731
        return ExplorerRun(
            label=self.label, layers=list(self.layers),
            maps={m: {l: np.asarray(xy)[rows] for l, xy in maps.items()} for m, maps in self.maps.items()},
            preds=pick(self.preds), confidence=pick(self.confidence), scores=self.scores, probes=self.probes,
            skipped=self.skipped, snapshot_layer=self.snapshot_layer,
            snapshots={m: [Snapshot(f.step, f.epoch, np.asarray(f.coords)[rows], f.accuracy) for f in frames]
                       for m, frames in self.snapshots.items()},
            test_accuracy=self.test_accuracy)


def thumbnail_sprite(images: np.ndarray) -> tuple[bytes, int, int]:
    """All thumbnails as one PNG grid, row-major: ``(png, columns, cell size in px)``.
    ``images`` is uint8 ``(n, C, H, W)`` with C = 1 or 3 (or ``(n, H, W)``)."""
    from PIL import Image

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (n, 1 or 3, H, W), got {images.dtype} {images.shape}")
    n, c, h, w = images.shape
    cell = max(h, w)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = np.zeros((rows * cell, cols * cell, c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[r * cell:r * cell + h, q * cell:q * cell + w] = images[i].transpose(1, 2, 0)
    mode = "L" if c == 1 else "RGB"
    buf = io.BytesIO()
    Image.fromarray(grid[..., 0] if c == 1 else grid, mode=mode).save(buf, format="PNG", optimize=True)
    return buf.getvalue(), cols, cell


def compact(values: np.ndarray, bits: int = _MANTISSA_BITS) -> np.ndarray:
    """float32 rounded to ``bits`` mantissa bits (relative error <= 2**-(bits+1)): the page stores
    arrays gzipped, and zeroed low bits shrink them by about a quarter. NaN and inf stay as they are."""
    x = np.ascontiguousarray(values, dtype=np.float32)
    drop = 23 - bits
    if drop <= 0:
        return x.copy()
    u = x.view(np.uint32).astype(np.uint64)
    rounded = ((u + (1 << (drop - 1))) & ~np.uint64((1 << drop) - 1)).astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(x) & np.isfinite(rounded), rounded, x)


def _hex(rgba: Sequence[float]) -> str:
    return "#" + "".join(f"{int(round(255 * v)):02x}" for v in rgba[:3])


def _class_palette(n_classes: int) -> list[str]:
    from pipeline.plots.common import class_colors       # the PNG figures' colours

    return [_hex(c) for c in class_colors(n_classes)]


def _bounds(xy: np.ndarray) -> list[float]:
    """[x0, x1, y0, y1] with 5% margins (a unit box around 0 for empty or non-finite maps)."""
    finite = xy[np.isfinite(xy).all(axis=1)] if len(xy) else xy
    if not len(finite):
        return [-1.0, 1.0, -1.0, 1.0]
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    return [round(float(lo[0]), 6), round(float(hi[0]), 6), round(float(lo[1]), 6), round(float(hi[1]), 6)]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return float("nan")
    return float(value)


def _check(runs: Sequence[ExplorerRun], labels: np.ndarray, images: np.ndarray | None) -> list[str]:
    """The methods shown (in METHOD_TITLES order, then any other); ValueError on inconsistent input."""
    if not runs:
        raise ValueError("no runs to show")
    n = len(labels)
    methods: list[str] = []
    for run in runs:
        if not run.layers:
            raise ValueError(f"run {run.label}: no layers")
        for method, maps in run.maps.items():
            for layer, xy in maps.items():
                if layer not in run.layers:
                    raise ValueError(f"run {run.label}: {method} map of {layer}, which is not in its layer list")
                if xy.ndim != 2 or xy.shape[0] != n or xy.shape[1] < 2:
                    raise ValueError(f"run {run.label}: {method} map of {layer} has shape {xy.shape}, "
                                     f"expected ({n}, 2 or 3)")
            if maps and method not in methods:
                methods.append(method)
        for name, arr in (("preds", run.preds), ("confidence", run.confidence)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"run {run.label}: {name} has {len(arr)} rows, labels {n}")
        for method, frames in run.snapshots.items():
            for snap in frames:
                if snap.coords.ndim != 2 or snap.coords.shape[0] != n or snap.coords.shape[1] < 2:
                    raise ValueError(f"run {run.label}: {method} snapshot at step {snap.step} has shape "
                                     f"{snap.coords.shape}, expected ({n}, 2 or 3)")
    if images is not None and len(images) != n:
        raise ValueError(f"{len(images)} images for {n} points")
    if not methods:
        raise ValueError("no maps to show (every run has an empty `maps`)")
    order = [m for m in METHOD_TITLES if m in methods] + [m for m in methods if m not in METHOD_TITLES]
    return order


def explorer_layout(runs: Sequence[ExplorerRun], *, labels: np.ndarray, classes: Sequence[str],
                    images: np.ndarray | None = None, indices: np.ndarray | None = None,
                    title: str = "hidden-spaces explorer") -> tuple[Any, str | None]:
    """The Bokeh layout of the explorer and the sprite's data URL (None without images).

    ``runs`` share the rows: point i is the same test image in every run (``labels[i]``, ``images[i]``,
    test-split number ``indices[i]``). One run gives one panel; two give two side by side."""
    from bokeh.layouts import column, row
    from bokeh.models import (BoxSelectTool, Button, ColumnDataSource, CustomJS, CustomJSTickFormatter, Div,
                              HoverTool, LassoSelectTool, PanTool, RadioButtonGroup, Range1d, ResetTool, Slider,
                              WheelZoomTool)
    from bokeh.palettes import Viridis256
    from bokeh.plotting import figure

    labels = np.asarray(labels).astype(np.int32)
    methods = _check(runs, labels, images)
    n = len(labels)
    classes = [str(c) for c in classes]
    palette = _class_palette(len(classes))
    indices = np.arange(n) if indices is None else np.asarray(indices)

    data: dict[str, Any] = {"idx": indices.astype(np.int32), "label": labels,
                            "cls": [classes[k] for k in labels], "_nan": np.full(n, np.nan, dtype=np.float32)}
    sprite_url, sprite_width, cell = None, 0, 0
    if images is not None:
        png, cols, cell = thumbnail_sprite(images)
        sprite_url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        sprite_width = cols * cell
        pos = np.arange(n)
        data["tx"] = ((pos % cols) * cell * _THUMB_ZOOM).astype(np.int32)
        data["ty"] = ((pos // cols) * cell * _THUMB_ZOOM).astype(np.int32)

    # Columns and view metadata per run: coords, bounds, titles.
    meta: list[dict[str, Any]] = []
    for r, run in enumerate(runs):
        p = f"r{r}_"
        has_preds = run.preds is not None
        if has_preds:
            preds = np.asarray(run.preds).astype(np.int32)
            data[p + "pred"] = preds
            data[p + "pcls"] = [classes[k] if 0 <= k < len(classes) else str(k) for k in preds]
            conf = (np.asarray(run.confidence, dtype=np.float32) if run.confidence is not None
                    else np.full(n, np.nan, dtype=np.float32))
            data[p + "conf"] = compact(conf)
        data[p + "color"] = [palette[k] for k in labels]
        cols_xy: dict[str, list[str]] = {}         # "m{m}_l{l}" -> [x column, y column]
        bounds: dict[str, list[float]] = {}
        notes: dict[str, str] = {}
        for m, method in enumerate(methods):
            maps = run.maps.get(method, {})
            for l, layer in enumerate(run.layers):
                key = f"m{m}_l{l}"
                xy = maps.get(layer)
                if xy is None:
                    cols_xy[key] = ["_nan", "_nan"]
                    bounds[key] = [-1.0, 1.0, -1.0, 1.0]
                    reason = run.skipped.get(method, {}).get(layer)
                    notes[key] = f"no {METHOD_TITLES.get(method, method)} map" + (f" ({reason})" if reason else "")
                    continue
                xy = np.asarray(xy, dtype=np.float32)
                data[p + key + "_x"], data[p + key + "_y"] = compact(xy[:, 0]), compact(xy[:, 1])
                cols_xy[key] = [p + key + "_x", p + key + "_y"]
                bounds[key] = _bounds(xy[:, :2])
                if xy.shape[1] > 2:
                    notes[key] = f"first 2 of {xy.shape[1]} axes"
        snaps: dict[str, list[dict[str, Any]]] = {}
        for m, method in enumerate(methods):
            frames = list(run.snapshots.get(method, []))
            if not frames:
                continue
            box = _bounds(np.concatenate([np.asarray(f.coords, dtype=np.float32)[:, :2] for f in frames]))
            rows = []
            for s, frame in enumerate(frames):
                xy = np.asarray(frame.coords, dtype=np.float32)
                key = f"{p}m{m}_s{s}"
                data[key + "_x"], data[key + "_y"] = compact(xy[:, 0]), compact(xy[:, 1])
                epoch = "" if frame.epoch is None else f" (epoch {frame.epoch:.1f})"
                acc = "" if frame.accuracy is None else f", test accuracy {frame.accuracy:.3f}"
                rows.append({"x": key + "_x", "y": key + "_y", "bounds": box, "step": int(frame.step),
                             "title": f"{run.snapshot_layer} at step {frame.step}{epoch}{acc}"})
            snaps[str(m)] = rows
        meta.append({"cols": cols_xy, "bounds": bounds, "notes": notes, "snaps": snaps,
                     "layers": list(run.layers), "has_preds": has_preds})

    source = ColumnDataSource(data=data, name="points")
    tools_common = dict(toolbar_location="above", match_aspect=True)

    # -- controls shared by every panel -------------------------------------------------------
    method_switch = RadioButtonGroup(labels=[METHOD_TITLES.get(m, m) for m in methods], active=0, name="method")
    any_preds = any(mt["has_preds"] for mt in meta)
    colour_labels = list(COLOUR_MODES if any_preds else COLOUR_MODES[:1])
    colour_switch = RadioButtonGroup(labels=colour_labels, active=0, name="colour")
    legend = Div(text="", name="legend", width=560)
    clear = Button(label="clear selection", button_type="default", width=130)
    selection = Div(text="<i>Select points (box or lasso) in any map: the same images light up in every "
                         "layer and are listed here.</i>", name="selection", width=380, styles={"overflow": "auto"})

    panels = []
    view_args: dict[str, Any] = {"method": method_switch, "meta": meta, "method_names": methods,
                                 **{k: [] for k in ("bigs", "bigfigs", "sliders", "spans", "snaps", "snapfigs",
                                                    "snapsliders", "lines", "strips", "stripfigs")}}
    for r, run in enumerate(runs):
        mt = meta[r]
        L = len(run.layers)
        start = L - 2 if L >= 2 else 0         # open on the layer before the output
        key0 = f"m0_l{start}"
        tooltip = _tooltip(r, sprite_width, cell, mt["has_preds"], sprite_url is not None)

        big = figure(width=_MAP_SIZE, height=_MAP_SIZE, tools=[], name=f"map_fig_r{r}",
                     x_range=Range1d(*mt["bounds"][key0][:2]), y_range=Range1d(*mt["bounds"][key0][2:]),
                     title=_map_title(run, methods, 0, start, mt), **tools_common)
        big_r = big.scatter(x=mt["cols"][key0][0], y=mt["cols"][key0][1], source=source, size=5,
                            fill_color=f"r{r}_color", line_color=None, fill_alpha=0.85, name=f"map_r{r}",
                            selection_line_color="black", selection_fill_alpha=1.0,
                            nonselection_fill_alpha=0.15)
        box, lasso = BoxSelectTool(renderers=[big_r]), LassoSelectTool(renderers=[big_r])
        big.add_tools(box, lasso, PanTool(), WheelZoomTool(), ResetTool(),
                      HoverTool(renderers=[big_r], tooltips=tooltip))
        big.toolbar.active_drag = box
        _quiet_axes(big)

        strip_figs, strip_rs = [], []
        for l, layer in enumerate(run.layers):
            key = f"m0_l{l}"
            f = figure(width=_STRIP_SIZE, height=_STRIP_SIZE, tools=[], toolbar_location=None,
                       x_range=Range1d(*mt["bounds"][key][:2]), y_range=Range1d(*mt["bounds"][key][2:]),
                       title=f"{l}: {layer}", name=f"strip_fig_r{r}_l{l}", min_border=2)
            sr = f.scatter(x=mt["cols"][key][0], y=mt["cols"][key][1], source=source, size=2,
                           fill_color=f"r{r}_color", line_color=None, name=f"strip_r{r}_l{l}",
                           nonselection_fill_alpha=0.12)
            f.add_tools(BoxSelectTool(renderers=[sr]), LassoSelectTool(renderers=[sr]))
            f.title.text_font_size = "9pt"
            f.outline_line_width = 3 if l == start else 1
            f.outline_line_color = "#1f77b4" if l == start else "#dddddd"
            _quiet_axes(f, hide=True)
            strip_figs.append(f)
            strip_rs.append(sr)

        slider = Slider(start=0, end=max(L - 1, 1), value=start, step=1, title="layer (input → output)",
                        format=CustomJSTickFormatter(args={"names": list(run.layers)},
                                                     code="return names[Math.round(tick)] || '';"),
                        width=_MAP_SIZE, name=f"layer_r{r}", disabled=L < 2)
        for l, f in enumerate(strip_figs):
            f.js_on_event("tap", CustomJS(args={"slider": slider, "l": l}, code="slider.value = l;"))

        metrics_fig, metric_lines, span = _metrics_figure(run, methods, start, r)

        snap_children: list[Any] = []
        snap_r = snap_slider = snap_fig = None
        first_snaps = mt["snaps"].get("0") or next(iter(mt["snaps"].values()), None)
        if first_snaps:
            s0 = len(first_snaps) - 1
            b = first_snaps[s0]["bounds"]
            snap_fig = figure(width=420, height=420, tools=[], x_range=Range1d(*b[:2]), y_range=Range1d(*b[2:]),
                              title=first_snaps[s0]["title"], name=f"snap_fig_r{r}", **tools_common)
            snap_r = snap_fig.scatter(x=first_snaps[s0]["x"], y=first_snaps[s0]["y"], source=source, size=4,
                                      fill_color=f"r{r}_color", line_color=None, name=f"snap_r{r}",
                                      selection_line_color="black", nonselection_fill_alpha=0.15)
            sbox = BoxSelectTool(renderers=[snap_r])
            snap_fig.add_tools(sbox, LassoSelectTool(renderers=[snap_r]), HoverTool(renderers=[snap_r],
                                                                                     tooltips=tooltip))
            snap_fig.toolbar.active_drag = sbox
            _quiet_axes(snap_fig)
            n_frames = max(len(v) for v in mt["snaps"].values())
            steps = {str(m): [row["step"] for row in rows] for m, rows in mt["snaps"].items()}
            snap_slider = Slider(start=0, end=max(n_frames - 1, 1), value=s0, step=1, width=420,
                                 title=f"weight snapshot ({METHOD_TITLES.get(methods[0], methods[0])}), training step",
                                 format=CustomJSTickFormatter(args={"steps": steps, "method": method_switch},
                                                              code="const s = steps[String(method.active)] || [];"
                                                                   " const v = s[Math.round(tick)];"
                                                                   " return v === undefined ? '' : String(v);"),
                                 name=f"snapshot_r{r}", disabled=n_frames < 2)
            snap_children = [Div(text="<b>Over training</b>: the same layer's map at each weight snapshot "
                                      "(same selection).", width=420), snap_slider, snap_fig]
        else:
            snap_children = [Div(text="<i>No weight snapshot maps in this run (train.snapshot_every = 0, or the "
                                      "reduce stages made none).</i>", width=420)]

        head = Div(text=_run_heading(run, n), width=_MAP_SIZE)
        strip = _grid(strip_figs, _STRIP_COLS)
        maps_col = column(head, slider, big, Div(text="<b>Every layer</b> (click one to show it above)",
                                                 width=_MAP_SIZE), strip)
        more = [metrics_fig, *snap_children]
        panels.append((maps_col, more))
        for key, value in (("bigs", big_r), ("bigfigs", big), ("sliders", slider), ("spans", span),
                           ("snaps", snap_r), ("snapfigs", snap_fig), ("snapsliders", snap_slider),
                           ("lines", metric_lines), ("strips", strip_rs), ("stripfigs", strip_figs)):
            view_args[key].append(value)

    view = CustomJS(args=view_args, code=_VIEW_JS)
    method_switch.js_on_change("active", view)
    for widget in [*view_args["sliders"], *view_args["snapsliders"]]:
        if widget is not None:
            widget.js_on_change("value", view)

    colour = CustomJS(args={"source": source, "colour": colour_switch, "palette": palette, "classes": classes,
                            "viridis": list(Viridis256), "n_runs": len(runs), "legend": legend,
                            "has_preds": [mt["has_preds"] for mt in meta], "correct": _CORRECT, "wrong": _WRONG},
                      code=_COLOUR_JS)
    colour_switch.js_on_change("active", colour)
    listing = CustomJS(args={"source": source, "div": selection, "n_runs": len(runs),
                             "labels": [run.label for run in runs], "has_preds": [mt["has_preds"] for mt in meta],
                             "sprite_width": sprite_width, "cell": cell, "has_sprite": sprite_url is not None,
                             "zoom": _LIST_CELL / cell if cell else 1, "max_listed": _MAX_LISTED},
                       code=_LIST_JS)
    source.selected.js_on_change("indices", listing)
    clear.js_on_click(CustomJS(args={"source": source}, code="source.selected.indices = [];"))
    legend.text = _legend_html(classes, palette)

    header = Div(text=f"<h2 style='margin:4px 0'>{_esc(title)}</h2>"
                      f"<div>{n:,} test images · {len(runs)} run{'s' if len(runs) > 1 else ''} · "
                      f"maps: {', '.join(METHOD_TITLES.get(m, m) for m in methods)}. Hover a point for its "
                      f"image; drag to select (box), or pick the lasso in a map's toolbar.</div>", width=1100)
    controls = row(Div(text="<b>map</b>", width=40), method_switch, Div(text="<b>colour</b>", width=50),
                   colour_switch, clear)
    side = column(Div(text="<b>Selection</b>", width=380), selection)
    if len(panels) == 1:                     # one run: maps | scores and snapshots | selection
        body = row(panels[0][0], column(*panels[0][1]), side)
    else:                                    # runs side by side, each with its scores below
        body = row(*[column(maps_col, *more) for maps_col, more in panels], side)
    layout = column(header, controls, legend, body)
    return layout, sprite_url


def _esc(text: Any) -> str:
    import html

    return html.escape(str(text), quote=True)


def _run_heading(run: ExplorerRun, n: int) -> str:
    acc = "" if run.test_accuracy is None else f" · test accuracy {run.test_accuracy:.3f}"
    return f"<h3 style='margin:4px 0'>{_esc(run.label)}</h3><div>{len(run.layers)} layers{acc}</div>"


def _map_title(run: ExplorerRun, methods: Sequence[str], m: int, l: int, mt: Mapping[str, Any]) -> str:
    layer = run.layers[l]
    note = mt["notes"].get(f"m{m}_l{l}")
    return (f"{METHOD_TITLES.get(methods[m], methods[m])}: {layer} (layer {l + 1} of {len(run.layers)})"
            + (f" – {note}" if note else ""))


def _quiet_axes(fig: Any, hide: bool = False) -> None:
    for axis in (fig.xaxis, fig.yaxis):
        axis.major_label_text_font_size = "0pt" if hide else "8pt"
        if hide:
            axis.visible = False
    fig.grid.visible = False


def _grid(figs: Sequence[Any], ncols: int) -> Any:
    from bokeh.layouts import column, row

    return column(*[row(*figs[i:i + ncols]) for i in range(0, len(figs), ncols)])


def _tooltip(r: int, sprite_width: int, cell: int, has_preds: bool, has_sprite: bool) -> str:
    thumb = ""
    if has_sprite:
        size = cell * _THUMB_ZOOM
        thumb = (f"<div style='width:{size}px;height:{size}px;flex:none;background-image:var(--hs-sprite);"
                 f"background-size:{sprite_width * _THUMB_ZOOM}px auto;background-position:-@{{tx}}px -@{{ty}}px;"
                 f"image-rendering:pixelated;border:1px solid #ccc'></div>")
    pred = (f"<div>predicted <b>@{{r{r}_pcls}}</b> (p = @{{r{r}_conf}}{{0.000}})</div>" if has_preds else "")
    return (f"<div style='display:flex;gap:8px;align-items:center'>{thumb}<div>"
            f"<div>test image @{{idx}}</div><div>true <b>@{{cls}}</b></div>{pred}</div></div>")


def _legend_html(classes: Sequence[str], palette: Sequence[str]) -> str:
    items = "".join(f"<span style='margin-right:10px'><span style='display:inline-block;width:10px;height:10px;"
                    f"background:{c};margin-right:3px'></span>{_esc(k)}</span>" for k, c in zip(classes, palette))
    return f"<div>{items}</div>"


def _metrics_figure(run: ExplorerRun, methods: Sequence[str], start: int, r: int) -> tuple[Any, dict, Any]:
    """Scores per layer against depth: map metrics of each method (shown for the current one) and the
    linear probe; a vertical line marks the layer on show."""
    from bokeh.models import ColumnDataSource, FixedTicker, HoverTool, Legend, LegendItem, Span
    from bokeh.plotting import figure

    L = len(run.layers)
    fig = figure(width=_MAP_SIZE, height=300, title="scores per layer (input → output)", tools=[],
                 x_range=(-0.5, L - 0.5), y_range=(-0.25 if _any_negative(run) else 0.0, 1.02),
                 toolbar_location=None, name=f"metrics_fig_r{r}")
    fig.xaxis.ticker = FixedTicker(ticks=list(range(L)))
    fig.xaxis.major_label_overrides = {i: name for i, name in enumerate(run.layers)}
    fig.xaxis.major_label_orientation = 0.9
    colours = {"knn_accuracy": "#1f77b4", "trustworthiness": "#2ca02c", "silhouette": "#9467bd"}
    lines: dict[str, list[Any]] = {}
    items = []
    x = list(range(L))
    for m, method in enumerate(methods):
        scores = run.scores.get(method, {})
        for key, name in SCORE_NAMES.items():
            y = [_number((scores.get(layer) or {}).get(key)) for layer in run.layers]
            if all(math.isnan(v) for v in y):
                continue
            src = ColumnDataSource({"x": x, "y": y, "layer": list(run.layers)})
            line = fig.line("x", "y", source=src, color=colours[key], line_width=2, visible=m == 0)
            dots = fig.scatter("x", "y", source=src, color=colours[key], size=6, visible=m == 0,
                               name=f"score_r{r}_m{m}_{key}")
            lines.setdefault(str(m), []).extend([line, dots])
            if m == 0:
                items.append(LegendItem(label=name, renderers=[line, dots]))
    probe = [_number(run.probes.get(layer)) for layer in run.layers]
    if not all(math.isnan(v) for v in probe):
        src = ColumnDataSource({"x": x, "y": probe, "layer": list(run.layers)})
        pl = fig.line("x", "y", source=src, color="#ff7f0e", line_width=2, line_dash="dashed")
        pd = fig.scatter("x", "y", source=src, color="#ff7f0e", size=6, name=f"probe_r{r}")
        items.append(LegendItem(label="linear probe accuracy", renderers=[pl, pd]))
    fig.add_tools(HoverTool(tooltips=[("layer", "@layer"), ("value", "@y{0.000}")], mode="mouse"))
    fig.add_layout(Legend(items=items, location="bottom_right", label_text_font_size="8pt", background_fill_alpha=0.7))
    span = Span(location=start, dimension="height", line_color="#888888", line_dash="dotted", line_width=2)
    fig.add_layout(span)
    return fig, lines, span


def _any_negative(run: ExplorerRun) -> bool:
    return any(_number((row or {}).get("silhouette")) < 0 for scores in run.scores.values() for row in scores.values())


# The view: which layer, method and snapshot each panel shows. Idempotent: reads every control.
_VIEW_JS = """
// Every glyph variant holds its own x/y spec (selected and unselected points draw with their own).
function setxy(r, fx, fy) {
  for (const g of [r.glyph, r.selection_glyph, r.nonselection_glyph, r.hover_glyph, r.muted_glyph]) {
    if (g != null && g !== 'auto' && g.x !== undefined) { g.setv({x: {field: fx}, y: {field: fy}}); }
  }
}
const m = method.active;
for (let r = 0; r < meta.length; r++) {
  const mt = meta[r];
  const slider = sliders[r];
  const l = Math.round(slider.value);
  const key = 'm' + m + '_l' + l;
  const big = bigs[r], bigfig = bigfigs[r];
  const cols = mt.cols[key], b = mt.bounds[key];
  setxy(big, cols[0], cols[1]);
  bigfig.x_range.setv({start: b[0], end: b[1]});
  bigfig.y_range.setv({start: b[2], end: b[3]});
  const note = mt.notes[key];
  const title = {pca: 'PCA', tsne: 't-SNE', umap: 'UMAP'}[method_names[m]] || method_names[m];
  bigfig.title.text = title + ': ' + mt.layers[l] + ' (layer ' + (l + 1) + ' of ' + mt.layers.length + ')'
                      + (note ? ' \u2013 ' + note : '');
  spans[r].location = l;
  const strip = strips[r], stripfig = stripfigs[r];
  for (let k = 0; k < strip.length; k++) {
    const kk = 'm' + m + '_l' + k, c = mt.cols[kk], bb = mt.bounds[kk];
    setxy(strip[k], c[0], c[1]);
    stripfig[k].x_range.setv({start: bb[0], end: bb[1]});
    stripfig[k].y_range.setv({start: bb[2], end: bb[3]});
    stripfig[k].outline_line_width = k == l ? 3 : 1;
    stripfig[k].outline_line_color = k == l ? '#1f77b4' : '#dddddd';
  }
  for (const [mm, rs] of Object.entries(lines[r])) {
    for (const x of rs) { x.visible = (Number(mm) == m); }
  }
  const snap = snaps[r];
  if (snap != null) {
    const frames = mt.snaps[String(m)];
    const snapfig = snapfigs[r], snapslider = snapsliders[r];
    if (frames && frames.length) {
      const s = Math.min(Math.round(snapslider.value), frames.length - 1);
      const f = frames[s];
      setxy(snap, f.x, f.y);
      snapfig.x_range.setv({start: f.bounds[0], end: f.bounds[1]});
      snapfig.y_range.setv({start: f.bounds[2], end: f.bounds[3]});
      snapfig.title.text = title + ': ' + f.title;
      snapslider.title = 'weight snapshot (' + title + '), training step';  // re-renders the step shown
      snap.visible = true;
    } else {
      snapfig.title.text = 'no ' + title + ' snapshot maps in this run';
      snap.visible = false;
    }
  }
}
"""

# Colours: class, prediction, correct / wrong, or confidence (viridis), for every run's column.
_COLOUR_JS = """
const mode = colour.active;
const d = source.data;
const label = d['label'];
const n = label.length;
for (let r = 0; r < n_runs; r++) {
  const out = new Array(n);
  const pred = d['r' + r + '_pred'], conf = d['r' + r + '_conf'];
  for (let i = 0; i < n; i++) {
    if (mode == 0 || !has_preds[r]) { out[i] = palette[label[i]] || '#777777'; }
    else if (mode == 1) { out[i] = palette[pred[i]] || '#777777'; }
    else if (mode == 2) { out[i] = pred[i] == label[i] ? correct : wrong; }
    else {
      const c = conf[i];
      out[i] = Number.isFinite(c) ? viridis[Math.max(0, Math.min(255, Math.floor(c * 255.999)))] : '#777777';
    }
  }
  d['r' + r + '_color'] = out;
}
source.change.emit();
const sw = (c) => "<span style='display:inline-block;width:10px;height:10px;background:" + c + ";margin-right:3px'></span>";
if (mode <= 1) {
  legend.text = '<div>' + (mode == 1 ? 'predicted class: ' : '') + classes.map((k, j) =>
    "<span style='margin-right:10px'>" + sw(palette[j]) + k + '</span>').join('') + '</div>';
} else if (mode == 2) {
  legend.text = '<div>' + sw(correct) + 'correct &nbsp; ' + sw(wrong) + 'wrong</div>';
} else {
  legend.text = '<div>confidence (max softmax probability): ' + [0, 0.25, 0.5, 0.75, 1].map((v) =>
    sw(viridis[Math.min(255, Math.floor(v * 255.999))]) + v.toFixed(2)).join(' &nbsp; ') + '</div>';
}
"""

# The selection: count, per-class counts, wrong per run, and the thumbnails of the selected images.
_LIST_JS = """
const idx = source.selected.indices.slice().sort((a, b) => a - b);
const d = source.data;
if (idx.length == 0) { div.text = '<i>nothing selected</i>'; return; }
const cls = d['cls'];
const counts = {};
for (const i of idx) { counts[cls[i]] = (counts[cls[i]] || 0) + 1; }
let html = '<div><b><span class="hs-count">' + idx.length + '</span> selected</b></div><div>true class: '
  + Object.entries(counts).map(([k, v]) => k + ' \u00d7' + v).join(', ') + '</div>';
for (let r = 0; r < n_runs; r++) {
  if (!has_preds[r]) continue;
  const pred = d['r' + r + '_pred'], label = d['label'];
  let wrong = 0;
  for (const i of idx) { if (pred[i] != label[i]) wrong++; }
  html += '<div>' + labels[r] + ': ' + wrong + ' misclassified</div>';
}
html += '<div style="display:flex;flex-wrap:wrap;gap:2px;margin-top:6px">';
const shown = idx.slice(0, max_listed);
const size = Math.round(cell * zoom);
for (const i of shown) {
  let tip = 'test image ' + d['idx'][i] + ': true ' + cls[i];
  for (let r = 0; r < n_runs; r++) {
    if (has_preds[r]) tip += ', ' + labels[r] + ' predicts ' + d['r' + r + '_pcls'][i]
                           + ' (p=' + Number(d['r' + r + '_conf'][i]).toFixed(2) + ')';
  }
  let wrong = false;
  for (let r = 0; r < n_runs; r++) { if (has_preds[r] && d['r' + r + '_pred'][i] != d['label'][i]) wrong = true; }
  const border = wrong ? '2px solid #d62728' : '1px solid #ccc';
  if (has_sprite) {
    const x = d['tx'][i] / 2 * zoom, y = d['ty'][i] / 2 * zoom;
    html += '<div class="hs-thumb" title="' + tip + '" style="width:' + size + 'px;height:' + size
      + 'px;background-image:var(--hs-sprite);background-size:' + (sprite_width * zoom) + 'px auto;'
      + 'background-position:-' + x + 'px -' + y + 'px;image-rendering:pixelated;border:' + border + '"></div>';
  } else {
    html += '<div class="hs-thumb" title="' + tip + '" style="padding:2px;border:' + border + '">' + cls[i] + '</div>';
  }
}
html += '</div>';
if (idx.length > shown.length) html += '<div>(first ' + shown.length + ' of ' + idx.length + ' shown)</div>';
div.text = html;
"""



@contextlib.contextmanager
def _deterministic_ids() -> Iterator[None]:
    """Model ids from p1000 and document / root ids from a counter for this build, so the same
    input gives the same bytes (Bokeh otherwise uses a process-wide counter and uuid4)."""
    from unittest import mock

    import bokeh.embed.elements as embed_elements
    import bokeh.embed.util as embed_util
    import bokeh.util.serialization as ser

    counter = iter(range(1, 1 << 30))
    fixed = lambda: f"hs-{next(counter):08d}"          # noqa: E731
    with ser._simple_id_lock:
        before = ser._simple_id
        ser._simple_id = 999
    try:
        with mock.patch.object(embed_util, "make_globally_unique_id", fixed), \
             mock.patch.object(embed_util, "make_globally_unique_css_safe_id", fixed), \
             mock.patch.object(embed_elements, "make_globally_unique_css_safe_id", fixed):
            yield
    finally:
        with ser._simple_id_lock:
            ser._simple_id = max(before, ser._simple_id)


def explorer_html(runs: Sequence[ExplorerRun], *, labels: np.ndarray, classes: Sequence[str],
                  images: np.ndarray | None = None, indices: np.ndarray | None = None,
                  title: str = "hidden-spaces explorer") -> str:
    """The whole explorer as one HTML document (Bokeh JS inline, thumbnails inline, no requests).
    The same input gives the same text."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    with _deterministic_ids():
        layout, sprite_url = explorer_layout(runs, labels=labels, classes=classes, images=images,
                                             indices=indices, title=title)
        page = file_html(layout, resources=INLINE, title=title)
    # The thumbnails once, as a CSS custom property: it inherits into Bokeh's shadow roots.
    sprite_css = f'url("{sprite_url}")' if sprite_url else "none"
    # (after the first <head>: Bokeh's inline JS further down contains the text "</head>")
    head, sep, rest = page.partition("<head>")
    if not sep:
        raise RuntimeError("Bokeh's page has no <head>")
    return f"{head}{sep}\n<style>:root{{--hs-sprite:{sprite_css};}}</style>{rest}"
