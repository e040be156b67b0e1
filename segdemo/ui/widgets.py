"""What the tabs show alike: legends, numbers, pickers that grow, and the page's style."""

from __future__ import annotations

import html

import gradio as gr
import numpy as np
import pandas as pd

# Largest side of pictures sent to the browser: bigger images are predicted at full size but
# shown downscaled (a 4000×4000 overlay would be a 48 MB PNG).
DISPLAY_SIDE = 1600

CSS = """
.segdemo-legend { display: flex; flex-wrap: wrap; gap: 6px 14px; margin: 4px 0; }
.segdemo-chip { display: inline-flex; align-items: center; gap: 6px; font-size: 0.9em; }
.segdemo-chip span { display: inline-block; width: 14px; height: 14px; border-radius: 3px;
                     border: 1px solid rgba(0,0,0,0.25); }
.segdemo-progress { height: 14px; background: #e5e7eb; border-radius: 7px; overflow: hidden; }
.segdemo-progress div { height: 100%; background: #4f46e5; transition: width 0.4s; }
.segdemo-explain { font-size: 0.92em; opacity: 0.85; }
.segdemo-fill img { width: 100%; height: 100%; object-fit: contain; }  /* a small picture grown to its box */
.segdemo-strips .thumbnail-item { aspect-ratio: 3 / 1; }  /* probe frames: 3 times as wide as high, not squares */
"""


def hex_color(color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*[int(v) for v in color[:3]])


def legend_html(names, colors) -> str:
    """Colored chips naming each class."""
    chips = "".join(
        f'<span class="segdemo-chip"><span style="background:{hex_color(c)}"></span>{html.escape(str(n))}</span>'
        for n, c in zip(names, colors))
    return f'<div class="segdemo-legend">{chips}</div>'


def format_dice(value) -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.3f}"


def live_dropdown(choices, **options) -> gr.Dropdown:
    """A picker whose choices grow while the app runs (trained models, new datasets). Gradio
    checks a value against the choices the session was built with, which would refuse a model
    trained after the page (or API client) connected; the handlers check names themselves, with
    a clear message, so the server accepts any value here."""
    return gr.Dropdown(choices, allow_custom_value=True, **options)


CURVE_COLUMNS = {"step": "int64", "value": "float64", "series": "str"}   # a LinePlot's long format


def curve_frame(rows: list[tuple], series: tuple[str, ...]) -> pd.DataFrame | None:
    """One plot's frame, shaped for gradio's LinePlot, which fixes its axis types and its legend
    from the first frame it draws and never updates them.

    So no frame is sent before there is data (an empty frame's columns are ``object``: both axes
    would be categories and no line drawn, for the whole run), the columns are numeric, and every
    series is in every frame, a series with no point yet as one NaN placeholder (otherwise the
    epoch curves, which start later, would never be drawn).
    """
    if not rows:
        return None
    present = {name for _, _, name in rows}
    rows = rows + [(rows[0][0], float("nan"), name) for name in series if name not in present]
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS)).astype(CURVE_COLUMNS)


def timer_follows_tab(timer, shown_tab, other_tabs, shown_seconds: float, away_seconds: float) -> None:
    """Tick ``timer`` every ``shown_seconds`` while ``shown_tab`` shows and every ``away_seconds``
    while one of ``other_tabs`` does: the period is switched in the browser (a tab's select event
    with only ``js``), at no cost to the server."""
    shown_tab.select(None, None, [timer], js=f"() => {shown_seconds}", api_visibility="private", queue=False)
    for tab in other_tabs:
        tab.select(None, None, [timer], js=f"() => {away_seconds}", api_visibility="private", queue=False)
