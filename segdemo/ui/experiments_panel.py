"""The Train tab's experiments panel: every run of your workspace, 2-4 of them overlaid, and lessons.

Thin over :mod:`segdemo.engine.experiments` (the list, read from the run folders, and the overlaid
curves, each run's probe frames) and :mod:`segdemo.engine.lessons` (what each lesson runs). A visitor
lists and overlays only the runs of their own workspace. Under the curves, a slider over training
seconds shows the chosen runs' probes next to each other at the same moment of their training (at
first the end: after a lesson the page at once shows how each run ended up seeing the probes). The
panel redraws on a timer of its own that ticks only while the visitor has a run going or waiting
(and once when the page opens, or on Refresh), and while another tab shows only once a minute
(``train_tab.wire_timer``): an idle page costs the server nothing. Started a lesson, the overlay
follows its runs as they come.
"""

from __future__ import annotations

import html
import math
import time

import gradio as gr
import pandas as pd

from ..animation import frame_caption
from ..engine import number
from ..engine.background import GOING, QUEUED
from ..engine.events import ProbeFrame
from ..engine.experiments import (RunRecord, curve_labels, find, frame_at, last_picture, list_runs, overlay_figure,
                                  run_checkpoint, run_frames)
from ..engine.lessons import DEFAULT_SECONDS, LESSONS, SECONDS_CHOICES, lesson, lesson_configs, lesson_names
from ..errors import SettingsError, UserError
from ..limits import current
from ..workspaces import MB
from .context import AppContext
from .files import bytes_file, png_file
from .messages import handler
from .playground_panel import FRAME_LAYOUT
from .widgets import format_dice

MAX_OVERLAY = 4
REFRESH_SECONDS = 2.0
AWAY_SECONDS = 60.0    # while another tab shows: the table is only seen on the Train tab
AWAKE_SECONDS = 30.0   # a Start or a lesson keeps the timer on this long, while the run is being set up
IN_PROGRESS = (QUEUED, *GOING)
TABLE_COLUMNS = ["run", "title", "state", "best Dice", "last Dice", "seconds", "steps", "settings"]

EXPLAIN = """
**Experiments.** Every run of your workspace stays listed with its settings. Pick two to four to lay
their curves over each other: validation Dice and training loss against training seconds, so a run
that takes cheaper steps is judged on the same clock; below them, the runs' probe images side by side
at the training second the slider names. A **lesson** queues runs that differ in one
setting, all with the same seconds, seed and data, one after another; the overlay follows them.
"""


def _records(context: AppContext, request) -> list[RunRecord]:
    """The visitor's runs: their workspace's run folders, and what the trainer holds of theirs."""
    return list_runs(context.workspace(request).data.runs, context.trainer.runs_of(context.owner(request)))


def train_runs(context: AppContext, request: gr.Request) -> list[dict]:
    """``/train_runs``: the runs of your workspace, oldest first: each with its id, title, model and
    settings (model options, loss, width, learning rate, batch size, seconds), its state, its best
    and last validation mean Dice, training seconds and steps. A lesson's runs still waiting are
    listed with no id yet."""
    return [record.as_dict() for record in _records(context, request)]


def train_compare(context: AppContext, run_ids, request: gr.Request):
    """``/train_compare``: up to four of your runs (``run_ids``, from ``/train_runs``) overlaid: their
    validation mean Dice and training loss over training seconds, one line per run, their latest
    probe frames side by side (a run without probes: its last validation picture), and the curves
    as data."""
    records = _records(context, request)
    return _overlay(context, records, find(records, _ids(run_ids)), request)


def train_compare_probes(context: AppContext, run_ids, seconds, request: gr.Request) -> list[tuple[str, str]]:
    """``/train_compare_probes``: up to four of your runs' (``run_ids``) probe frames side by side at
    training second ``seconds`` (empty: the end of each run): one picture per run, input | truth |
    prediction for each probe image, captioned "run · step 120 · Dice 0.61 · 12 s" (the latest frame
    at or before that second, each run's first before it). A run without probes shows its last
    validation picture."""
    records = _records(context, request)
    chosen = find(records, _ids(run_ids))
    return _probes(context, chosen, _seconds(seconds), request)


def train_keep_models(context: AppContext, run_ids, request: gr.Request) -> str:
    """``/train_keep_models``: add the models of up to four of your runs (``run_ids``) to your model
    pickers, each its best checkpoint (else its last), to try them on the other tabs: a lesson's
    no-skip U-Net beside the U-Net in Models › Compare, say. A lesson's runs are not added by
    themselves (three models a lesson would crowd the pickers). A run still going or waiting, or
    one that ended before saving a model, is refused; one kept already is named, not added twice."""
    records = _records(context, request)
    chosen = find(records, _ids(run_ids))
    if not chosen:
        raise UserError("pick the runs whose models to keep first (in the runs to overlay)")
    space = context.workspace(request)
    found = []
    for record in chosen:
        if record.state in IN_PROGRESS:
            raise UserError(f"run {record.run_id} ({record.title}) is {record.state}: keep its model once it has ended")
        path = run_checkpoint(space.data.runs / record.run_id)
        if path is None:
            raise UserError(f"run {record.run_id} ({record.title}) saved no model: it ended before its first "
                            "validation")
        found.append((record, path))
    said = []
    for record, path in found:
        known = space.catalog.name_of_file(path)
        if known:
            said.append(f"{html.escape(record.title)}: in your models already, as **{html.escape(known)}**")
        else:
            title = record.title.replace(": ", " - ")   # "How wide - width 8": a file name has no colon
            name = space.catalog.add_trained(path, title=f"{title} {record.run_id}")
            said.append(f"{html.escape(record.title)}: added as **{html.escape(name)}**")
    return "Your models (in every model picker):\n\n" + "\n".join(f"- {line}" for line in said)


def _seconds(seconds) -> float | None:
    """A training second asked for, or None (the end) for nothing."""
    if seconds is None or (isinstance(seconds, str) and not seconds.strip()):
        return None
    value = number(seconds, "seconds")
    if math.isnan(value):
        raise SettingsError("seconds must be a number of training seconds (got NaN)")
    return value


def _ids(run_ids) -> list[str]:
    ids = [run_ids] if isinstance(run_ids, str) else list(run_ids or [])
    if len(ids) > MAX_OVERLAY:
        raise UserError(f"pick at most {MAX_OVERLAY} runs to overlay (got {len(ids)})")
    return ids


def _overlay(context: AppContext, records: list[RunRecord], chosen: list[RunRecord], request,
             pictures: bool = True):
    """The figure, the gallery of latest probes (:func:`_probes`; left out for ``pictures=False``)
    and the curves (as data) of the ``chosen`` runs."""
    if not chosen:
        return None, [], {}
    labels = curve_labels(chosen)
    pictures = _probes(context, chosen, None, request) if pictures else []
    curves = {label: {"run_id": record.run_id, "settings": record.settings_text(),
                      "seconds": [point[0] for point in record.val_curve],
                      "val_mean_dice": [point[2] for point in record.val_curve],
                      "loss_seconds": [point[0] for point in record.loss_curve],
                      "loss": [point[2] for point in record.loss_curve]}
              for record, label in zip(chosen, labels)}
    return overlay_figure(chosen), pictures, curves


def _frames(context: AppContext, chosen: list[RunRecord], request) -> list[list[ProbeFrame]]:
    """The probe frames of each of the ``chosen`` runs (:func:`~segdemo.engine.experiments.run_frames`)."""
    in_memory = context.trainer.runs_of(context.owner(request))
    runs_dir = context.workspace(request).data.runs
    return [run_frames(record, runs_dir, in_memory) for record in chosen]


def _span(frames: list[list[ProbeFrame]]) -> float:
    """The training seconds the slider spans: to the latest frame of any run (0 when none has one),
    in the slider's tenths of a second, rounded up so that the last frame stays within reach."""
    return math.ceil(max((run[-1].elapsed for run in frames if run), default=0.0) * 10) / 10


def _probes(context: AppContext, chosen: list[RunRecord], seconds: float | None, request,
            frames: list[list[ProbeFrame]] | None = None) -> list[tuple[str, str]]:
    """The ``chosen`` runs' pictures side by side, captioned: each one's probe frame at training
    second ``seconds`` (None: its last), or its last validation picture when it has no frames (an
    older run, a command-line run without probes)."""
    frames = _frames(context, chosen, request) if frames is None else frames
    in_memory = context.trainer.runs_of(context.owner(request))
    runs_dir = context.workspace(request).data.runs
    pictures = []
    for record, label, run in zip(chosen, curve_labels(chosen), frames):
        frame = frame_at(run, seconds)
        if frame is not None:
            pictures.append((bytes_file(frame.image, f"{record.run_id}-step-{frame.step}.png"),
                             f"{label} · {frame_caption(frame.step, frame.dice)} · {frame.elapsed:.0f} s"))
        elif (picture := last_picture(record, runs_dir, in_memory)) is not None:
            pictures.append((png_file(picture, f"{record.run_id}.png"),
                             f"{label} · last validation picture · best Dice {format_dice(record.best_dice)}"))
    return pictures


def seconds_slider(span: float, seconds: float | None) -> gr.Slider:
    """The slider over ``span`` training seconds, at ``seconds`` (None: the end)."""
    return gr.Slider(minimum=0, maximum=max(span, 0.1), value=span if seconds is None else min(seconds, span),
                     interactive=span > 0)


def _picked(records: list[RunRecord], chosen) -> list[RunRecord]:
    """The records of the page's choice that are still listed (a pruned run drops out)."""
    known = {record.run_id for record in records}
    return find(records, [run_id for run_id in _ids((chosen or [])[:MAX_OVERLAY]) if run_id in known])


def show_probes(context: AppContext, chosen, seconds, request: gr.Request):
    """The slider let go at ``seconds``: the chosen runs' probes at that second, and the second
    kept for the timer's redraws (None at the slider's end: it follows runs still going)."""
    picked = _picked(_records(context, request), chosen)
    frames = _frames(context, picked, request)
    at = _seconds(seconds)
    at = None if at is None or at >= _span(frames) else at
    return _probes(context, picked, at, request, frames), at


def probes_to_end(context: AppContext, chosen, request: gr.Request):
    """A new choice of runs: the slider spans theirs, at the end (where ``/train_compare`` shows them)."""
    picked = _picked(_records(context, request), chosen)
    return seconds_slider(_span(_frames(context, picked, request)), None), None


def train_lesson(context: AppContext, lesson_name, seconds_per_run, request: gr.Request) -> str:
    """``/train_lesson``: start lesson ``lesson_name`` (see the Train tab for the lessons), each of
    its runs training ``seconds_per_run`` seconds from the live preset, one after another; in a
    shared app they wait in the queue together. Stop ends the run going and cancels the rest."""
    chosen = lesson(lesson_name)
    space, owner, trainer = context.workspace(request), context.owner(request), context.trainer
    configs = lesson_configs(chosen.name, number(seconds_per_run, "seconds per run"))
    if space.quotas is not None:  # each run saves checkpoints: room for all of them first
        space.room(int(len(configs) * space.quotas.run_mb * MB), "run")
    series = trainer.start_series(configs, name=chosen.name, owner=owner, runs_dir=space.data.runs)
    held = trainer.runs_of(owner)
    space.data.prune_runs(current().runs_kept, in_use={run.run_id for run in held if run.run_id})
    labels = ", ".join(variant.label for variant in chosen.variants)
    seconds = configs[0].max_seconds if trainer.time_cap is None else min(configs[0].max_seconds, trainer.time_cap)
    if any(run.series is series and run.run_id for run in held):
        started = f"Started the lesson **{html.escape(chosen.name)}**"
    else:
        queue = trainer.queue(owner)   # runs ahead are counted one by one, a lesson's too
        wait = queue["your_wait_seconds"]
        started = (f"Queued the lesson **{html.escape(chosen.name)}**; you are number {queue['your_position']} in "
                   "the queue" + (f" (it should start in about {wait:.0f} s)" if wait is not None else ""))
    return (f"{started}: {len(configs)} runs of {seconds:g} s, one after another ({html.escape(labels)}). "
            f"Stop ends the run going and cancels the rest.\n\n{html.escape(chosen.explanation)}")


def _lesson_runs(records: list[RunRecord], lesson_name: str) -> list[str]:
    """The ids of the newest runs of lesson ``lesson_name`` (its last series) that have started."""
    count = len(lesson(lesson_name).variants)
    newest = [record for record in records if record.title.startswith(f"{lesson_name}: ")][-count:]
    return [record.run_id for record in newest if record.run_id]


def runs_table(records: list[RunRecord]) -> pd.DataFrame:
    rows = [[record.run_id or "(waiting)", record.title + (f" ({record.lesson})" if record.lesson else ""),
             record.state, format_dice(record.best_dice), format_dice(record.last_dice),
             "–" if record.elapsed is None else f"{record.elapsed:.0f}", record.steps, record.settings_text()]
            for record in records]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _latest_frames(context: AppContext, request) -> dict[str, int]:
    """The step of the newest probe frame of each run the trainer holds (the runs that still get
    frames: the others' are in their folders and do not change)."""
    latest = {}
    for run in context.trainer.runs_of(context.owner(request)):
        frame = run.history.latest(ProbeFrame) if run.run_id else None
        if frame is not None:
            latest[run.run_id] = frame.step
    return latest


def refresh(context: AppContext, seen, following, chosen, awake_until, at_seconds, request: gr.Request):
    """One tick: the runs table when a run's state or steps changed, the run picker when the runs
    or the choice changed, the overlay when a chosen run validated again or changed state (drawing
    it costs 0.2-0.4 s of a core: not at every step); the probes and the seconds slider also when a
    chosen run got a new frame (at ``at_seconds``, None: the end). The timer stays on only while one
    of the visitor's runs goes or waits, or until ``awake_until`` (a Start, whose run may take
    seconds to be set up and queued)."""
    records = _records(context, request)
    if following:
        chosen = _lesson_runs(records, following)
    picked = _picked(records, chosen)
    chosen = [record.run_id for record in picked]
    latest = _latest_frames(context, request)
    key = {"table": [[record.run_id, record.state, record.steps] for record in records],
           "picker": [[record.run_id for record in records], chosen],
           "overlay": [[record.run_id, record.state, len(record.val_curve)] for record in picked],
           "probes": [[record.run_id, latest.get(record.run_id)] for record in picked]}
    seen = seen or {}
    going = any(record.state in IN_PROGRESS for record in records)
    timer = gr.Timer(active=going or time.time() < (awake_until or 0))
    table = picker = figure = pictures = curves = slider = gr.skip()
    if key["table"] != seen.get("table"):
        table = runs_table(records)
    if key["picker"] != seen.get("picker"):   # not at every tick: it would reset a choice being made
        picker = gr.Dropdown(choices=[(f"{record.title} · {record.run_id}", record.run_id) for record in records
                                      if record.run_id], value=chosen)
    if key["overlay"] != seen.get("overlay"):
        figure, _, curves = _overlay(context, records, picked, request, pictures=False)
    if key["overlay"] != seen.get("overlay") or key["probes"] != seen.get("probes"):
        frames = _frames(context, picked, request)
        pictures = _probes(context, picked, at_seconds, request, frames)
        slider = seconds_slider(_span(frames), at_seconds)
    return table, picker, figure, pictures, curves, key, timer, slider


def lessons_markdown() -> str:
    return "\n\n".join(f"**{html.escape(known.name)}.** {html.escape(known.explanation)}" for known in LESSONS)


def build(context: AppContext, start_button: gr.Button) -> dict:
    """The panel, under the Train tab's curves; ``start_button`` (the tab's Start) wakes its timer."""
    with gr.Accordion("Experiments and lessons", open=True, elem_id="experiments"):
        gr.Markdown(EXPLAIN, elem_classes="segdemo-explain")
        with gr.Row():
            seconds = gr.Dropdown(list(SECONDS_CHOICES), value=DEFAULT_SECONDS, allow_custom_value=True,
                                  label="seconds per run", elem_id="lesson-seconds", scale=1)
            lesson_buttons = [gr.Button(known.name, size="sm", elem_id=f"lesson-{index}", scale=1)
                              for index, known in enumerate(LESSONS)]
        with gr.Accordion("What each lesson shows", open=False):
            gr.Markdown(lessons_markdown(), elem_classes="segdemo-explain")
        message = gr.Markdown(label="message", elem_id="lesson-message")
        table = gr.Dataframe(runs_table([]), label="your runs", interactive=False, wrap=True, elem_id="runs-table",
                             column_widths=["15%", "17%", "8%", "7%", "7%", "7%", "6%", "33%"])
        with gr.Row():
            chosen = gr.Dropdown([], value=[], multiselect=True, max_choices=MAX_OVERLAY, allow_custom_value=True,
                                 label=f"runs to overlay (up to {MAX_OVERLAY})", elem_id="runs-chosen", scale=4)
            with gr.Column(scale=1, min_width=160):
                refresh_button = gr.Button("Refresh", size="sm", elem_id="runs-refresh")
                keep_button = gr.Button("Add to my models", size="sm", elem_id="runs-keep")
        plot = gr.Plot(label="overlaid curves", elem_id="runs-overlay")
        slider = gr.Slider(0, 0.1, value=0.1, step=0.1, interactive=False, elem_id="runs-seconds",
                           label="training seconds: each run's probes at that moment (at the right end: its last)")
        gr.Markdown(f"**Probes**: {FRAME_LAYOUT}, at the second the slider names (a run without probes: its "
                    "last validation picture).", elem_classes="segdemo-explain")
        # Two a row, whole: a frame is three times as wide as high (input | truth | prediction, twice).
        gallery = gr.Gallery(label="probes", show_label=False, columns=2, height="auto", object_fit="contain",
                             preview=False, format="png", elem_id="runs-pictures", elem_classes="segdemo-strips")
        curves = gr.JSON(label="curves", visible=False)
    seen, following, awake_until = gr.State(None), gr.State(None), gr.State(0.0)
    at_seconds = gr.State(None)   # the slider's second; None: the end, following runs still going
    timer = gr.Timer(AWAY_SECONDS)  # the page opens on the first tab (train_tab.wire_timer switches it)
    private = dict(api_visibility="private", show_progress="hidden")

    def wake():
        return time.time() + AWAKE_SECONDS, gr.Timer(active=True)

    def follow(name):
        return name, time.time() + AWAKE_SECONDS, gr.Timer(active=True)

    with gr.Group(visible=False):
        # The API's lesson: any name (the handler says which there are).
        lesson_picker = gr.Dropdown(lesson_names(), label="lesson", allow_custom_value=True)
        lesson_api, runs_api = gr.Button("lesson (API)"), gr.Button("runs (API)")
        runs_json = gr.JSON(label="runs")
        probe_ids = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, label="run ids")
        probe_seconds = gr.Number(None, label="seconds")
        probes_api, probes_gallery = gr.Button("probes (API)"), gr.Gallery(label="probes")
    # Named first: gradio names the buttons' events below after the same function (train_lesson_1 …).
    lesson_api.click(handler(train_lesson, context), [lesson_picker, seconds], [message],
                     api_name="train_lesson")
    runs_api.click(handler(train_runs, context), None, [runs_json], api_name="train_runs", queue=False)
    for button in (start_button, refresh_button):
        button.click(wake, None, [awake_until, timer], queue=False, **private)
    for known, button in zip(LESSONS, lesson_buttons):
        name = gr.State(known.name)
        button.click(handler(train_lesson, context), [name, seconds], [message], **private) \
            .success(follow, [name], [following, awake_until, timer], queue=False, **private)
    probes_api.click(handler(train_compare_probes, context), [probe_ids, probe_seconds], [probes_gallery],
                     api_name="train_compare_probes")
    keep_button.click(handler(train_keep_models, context), [chosen], [message], api_name="train_keep_models")
    poll = dict(trigger_mode="always_last", concurrency_limit=None, concurrency_id="poll", **private)
    timer.tick(handler(refresh, context), [seen, following, chosen, awake_until, at_seconds],
               [table, chosen, plot, gallery, curves, seen, timer, slider], **poll)
    chosen.input(lambda: None, None, [following], queue=False, **private)   # a choice of one's own: stop following
    chosen.input(handler(train_compare, context), [chosen], [plot, gallery, curves], api_name="train_compare") \
        .then(handler(probes_to_end, context), [chosen], [slider, at_seconds], **poll)
    # Let go, not every move: a drag would redraw at each tenth of a second it passes.
    slider.release(handler(show_probes, context), [chosen, slider], [gallery, at_seconds], **poll)
    return {"table": table, "chosen": chosen, "plot": plot, "slider": slider, "gallery": gallery, "timer": timer}
