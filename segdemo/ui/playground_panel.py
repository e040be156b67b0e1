"""Watching a run learn, on the Train tab: the probe timeline, the per-class curves and inside the U.

- **Timeline**: the run's probe frames (:mod:`segdemo.engine.probes`) behind a slider that scrubs
  back ("step 120 · Dice 0.61"), a Play button that steps it in the browser, and an export of the
  whole timeline as an animated GIF.
- **Per class**: validation Dice and IoU of every class over the run beside the mean, the
  shapes' data ceiling marked, and for multiclass data the confusion matrix of the last validation.
- **Inside the U**: the latest feature maps of the first probe at every stage, as a U and one
  picture per stage.

Everything reads the run the visitor watches (``BackgroundTrainer._shown``: the run going now, else
their own latest), as the curves and the snapshot do. The page learns that something changed from
the Train tab's own timer tick, which adds three keys to what it returns (:func:`keys`); the
pictures are sent by ``.change`` events of those keys, so watching costs nothing between frames.
"""

from __future__ import annotations

import base64
import math

import gradio as gr
import pandas as pd

from .. import viz
from ..animation import frame_caption, timeline_gif
from ..data.shapes import CEILINGS
from ..data.shapes import CLASSES as SHAPES_CLASSES
from .context import AppContext
from .files import bytes_file, png_file
from .messages import handler, refuse
from .widgets import curve_frame

FRAME_LAYOUT = "input | truth | prediction for each of the probe images"
PLAY_SECONDS = 0.35     # a frame this often while Play runs (in the browser: no server tick)
MEAN = "mean"

EXPLAIN = """
**Timeline.** Four validation images, never trained on, predicted as the run goes: every step at
first, then less often (the picture changes fastest early). Each shows input | truth | prediction.
**Per class.** The mean hides the hard classes: here each class's validation Dice and IoU, from the
first validation on. On the shapes, the mesh square cannot pass about 0.94: whether its box has one
more dot-free row or column is invisible in the image. **Inside the U.** One probe image at every
stage: the 4 strongest channels of each, labelled channels × height × width. The encoder trades
size for channels, the decoder brings the size back, and each skip (orange) hands it the encoder's
sharp detail.
"""


# --- the timeline -------------------------------------------------------------------------------------
def _frames(context: AppContext, request):
    return context.trainer.frames(context.owner(request))


def timeline(context: AppContext, since_step: float | None = 0, request: gr.Request = None) -> dict:
    """``/train_timeline``: the probe frames of the run you watch, after ``since_step`` (0: all):
    ``{"run_id", "frames": [{"step", "seconds", "dice", "image"}]}``, ``seconds`` of training,
    ``dice`` the mean Dice over the probe images (None when no class is present), ``image`` a
    ``data:image/png;base64,...`` URL of input | truth | prediction for each probe."""
    run_id, frames = _frames(context, request)
    since = float(since_step or 0)
    return {"run_id": run_id,
            "frames": [{"step": frame.step, "seconds": round(frame.elapsed, 3), "dice": frame.dice,
                        "image": "data:image/png;base64," + base64.b64encode(frame.image).decode("ascii")}
                       for frame in frames if frame.step > since]}


def export_animation(context: AppContext, request: gr.Request):
    """``/train_export_animation``: the probe timeline of the run you watch as an animated GIF
    (input | truth | prediction over time, each frame captioned with its step and Dice)."""
    run_id, frames = _frames(context, request)
    if not frames:
        raise refuse("no probe frames yet: start a run (or wait for its first step)")
    return bytes_file(timeline_gif(frames), f"timeline-{run_id}.gif")


def timeline_key(context: AppContext, request: gr.Request) -> str | None:
    """Changes when the watched run gets a new frame (or another run is watched)."""
    run_id, frames = _frames(context, request)
    return f"{run_id}:{len(frames)}:{frames[-1].step}" if frames else None


def follow_timeline(context: AppContext, key, request: gr.Request):
    """A new frame: the slider's range grows to the frame count. Where the slider goes is decided
    in the browser afterwards (:data:`FOLLOW_JS`), against where it is then: a scrub made while this
    request was on its way must not be undone by an answer computed before it."""
    _, frames = _frames(context, request)
    total = len(frames)
    return gr.Slider(minimum=0, maximum=max(total - 1, 1), interactive=total > 1), total


# In the browser, once the range has grown: a slider at the latest frame it followed (or past the
# end: a new run) moves on to the new latest; one scrubbed back stays where it is.
FOLLOW_JS = "(at, total, followed) => [(at >= followed - 1 || at >= total) ? Math.max(total - 1, 0) : at, total]"


def show_frame(context: AppContext, position, request: gr.Request):
    """The frame at slider ``position`` and its caption."""
    _, frames = _frames(context, request)
    if not frames:
        return None, "No probe frames yet."
    frame = frames[max(0, min(int(position or 0), len(frames) - 1))]
    return (bytes_file(frame.image, f"probe-{frame.step}.png"),
            f"**{frame_caption(frame.step, frame.dice)}**  \n{FRAME_LAYOUT}, {frame.elapsed:.0f} s into the run")


def play(playing: bool):
    """Play ↔ Pause: the browser-side timer that steps the slider runs or stops."""
    playing = not playing
    return gr.Timer(active=playing), gr.Button("Pause" if playing else "Play"), playing


# --- per-class curves -----------------------------------------------------------------------------------
def class_names(context: AppContext, request) -> list[str]:
    started = context.trainer.started(context.owner(request))
    classes = (started.data or {}).get("classes") if started is not None else None
    return list(classes or [])


def class_frames(epochs, classes: list[str]) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Long-format frames of validation Dice and IoU per class and their means over the run
    (x = step), with each data ceiling (:data:`segdemo.data.shapes.CEILINGS`) as a flat line when
    the classes are the shapes'; None while no validation has ended."""
    names = [*classes, MEAN]
    frames = []
    for metric, mean in (("dice", "mean_dice"), ("iou", "miou")):
        rows = []
        for event in epochs:
            values = event.val.get(metric) or []
            for index, value in enumerate(values):
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    rows.append((event.step, float(value), names[index] if index < len(classes) else f"class {index}"))
            if event.val.get(mean) is not None:
                rows.append((event.step, float(event.val[mean]), MEAN))
        series = list(names)
        if metric == "dice" and tuple(classes) == SHAPES_CLASSES and rows:
            for name, ceiling in CEILINGS.items():
                label = f"{name}: data ceiling ≈{ceiling:.2f}"
                steps = sorted({row[0] for row in rows})
                rows += [(steps[0], ceiling, label), (max(steps[-1], steps[0] + 1), ceiling, label)]
                series.append(label)
        frames.append(curve_frame(rows, tuple(series)))
    return frames[0], frames[1]


def classes_key(context: AppContext, request: gr.Request) -> str | None:
    """Changes when the watched run ends a validation."""
    viewer = context.owner(request)
    run = context.trainer.curves_version(viewer)[0]
    epochs = context.trainer.epochs(viewer)
    return f"{run}:{len(epochs)}" if epochs else None


def show_classes(context: AppContext, key, request: gr.Request):
    """The per-class Dice and IoU plots and, for multiclass data, the latest confusion matrix; all
    hidden until the watched run's first validation (a new run's page must not show the last one's)."""
    epochs = context.trainer.epochs(context.owner(request)) if key else []
    classes = class_names(context, request)
    dice, iou = class_frames(epochs, classes)
    if dice is None:
        return gr.LinePlot(value=None, visible=False), gr.LinePlot(value=None, visible=False), gr.Image(visible=False)
    confusion = epochs[-1].val.get("confusion") if epochs else None
    matrix = gr.Image(visible=False)
    if confusion:
        names = classes if len(classes) == len(confusion) else [str(i) for i in range(len(confusion))]
        matrix = gr.Image(value=png_file(viz.confusion_picture(confusion, names), "confusion.png"), visible=True,
                          label=f"confusion matrix after step {epochs[-1].step}")
    return gr.LinePlot(value=dice, visible=True), gr.LinePlot(value=iou, visible=True), matrix


# --- inside the U -----------------------------------------------------------------------------------------
def features_key(context: AppContext, request: gr.Request) -> str | None:
    """Changes when the watched run shows new feature maps."""
    viewer = context.owner(request)
    features = context.trainer.features(viewer)
    run = context.trainer.curves_version(viewer)[0]
    return f"{run}:{features.step}" if features is not None else None


def _stage_gallery(features) -> list[tuple[str, str]]:
    from ..features import shape_text

    return [(bytes_file(picture, f"stage-{index}.png"), f"{name} · {shape_text(shape)}")
            for index, ((name, shape), picture) in enumerate(zip(features.stages, features.pictures))]


def train_features(context: AppContext, request: gr.Request):
    """``/train_features``: the latest feature maps of the run you watch, one picture per stage of
    the network (its 4 strongest channels for the first probe image), captioned with the stage and
    its shape (channels×height×width)."""
    features = context.trainer.features(context.owner(request))
    if features is None:
        raise refuse("no feature maps yet: start a run (they come with its first probe frame)")
    return _stage_gallery(features)


def show_features(context: AppContext, key, request: gr.Request):
    """The U picture and the per-stage gallery of the latest feature maps."""
    features = context.trainer.features(context.owner(request)) if key else None
    if features is None:   # a new run, none yet: not the last run's
        return None, []
    return (gr.Image(value=bytes_file(features.image, f"features-{features.step}.png"),
                     label=f"inside the U after step {features.step}"), _stage_gallery(features))


# --- building ---------------------------------------------------------------------------------------------
def build(context: AppContext) -> dict:
    """The panel's components, under the Train tab's curves (wired by :func:`wire`)."""
    parts = {}
    with gr.Accordion("Watch it learn: timeline, classes, inside the U", open=True, elem_id="train-playground"):
        with gr.Row():
            with gr.Column(scale=3):
                parts["frame"] = gr.Image(label="probe images: input | truth | prediction", show_label=False, format="png",
                                          type="filepath", interactive=False, elem_id="train-timeline-image")
            with gr.Column(scale=2, min_width=240):
                parts["caption"] = gr.Markdown("No probe frames yet.", elem_id="train-timeline-caption")
                parts["slider"] = gr.Slider(0, 1, value=0, step=1, label="frame (drag to go back in time)",
                                            interactive=False, elem_id="train-timeline-slider")
                with gr.Row():
                    parts["play"] = gr.Button("Play", elem_id="train-timeline-play")
                    parts["export"] = gr.Button("Export animation", elem_id="train-export")
                parts["animation"] = gr.File(label="animated GIF", interactive=False, visible=False,
                                             elem_id="train-animation")   # shown once exported
        # One plot a row: the legend (every class, the mean, the ceiling) needs the width.
        parts["class_dice"] = gr.LinePlot(x="step", y="value", color="series", title="validation Dice per class",
                                          y_lim=[0, 1], height=260, visible=False, elem_id="train-class-dice")
        parts["class_iou"] = gr.LinePlot(x="step", y="value", color="series", title="validation IoU per class",
                                         y_lim=[0, 1], height=260, visible=False, elem_id="train-class-iou")
        parts["confusion"] = gr.Image(label="confusion matrix", visible=False, interactive=False,
                                      elem_id="train-confusion")
        parts["u"] = gr.Image(label="inside the U", format="png", type="filepath", interactive=False,
                              elem_id="train-features-u")
        parts["features"] = gr.Gallery(label="each stage (4 strongest channels)", show_label=False, columns=4,
                                       height="auto", object_fit="contain", preview=False, format="png",
                                       elem_id="train-features-gallery")
        gr.Markdown(EXPLAIN, elem_classes="segdemo-explain")
    with gr.Group(visible=False):
        parts["timeline_button"] = gr.Button("timeline (API)")
        parts["since"] = gr.Number(value=0, label="since_step")
        parts["timeline_json"] = gr.JSON(label="timeline")
        parts["features_button"] = gr.Button("features (API)")
    return parts


def keys(context: AppContext, request) -> tuple:
    """What the Train tab's timer tick adds for this panel (:func:`wire`): the keys of the
    timeline, the per-class curves and the feature maps of the watched run. Comparing keys is all
    a tick does here; their ``.change`` events redraw only what changed."""
    return timeline_key(context, request), classes_key(context, request), features_key(context, request)


def wire(context: AppContext, parts: dict) -> list:
    """Events of the panel; returns the key states that the Train tab's timer tick fills with
    :func:`keys` (one tick for the whole tab: each event costs the server about 14 ms whatever it
    does). Play runs a browser-side timer; the API endpoints are wired here too."""
    private = dict(api_visibility="private", show_progress="hidden", concurrency_limit=None, concurrency_id="poll")
    frames_seen, classes_seen, features_seen = gr.State(None), gr.State(None), gr.State(None)
    # The frame count is a hidden Number, not a State: Play's browser-side step reads it, and a
    # State's value stays on the server.
    count, followed, playing = gr.Number(0, visible=False), gr.Number(0, visible=False), gr.State(False)
    frames_seen.change(handler(follow_timeline, context), [frames_seen], [parts["slider"], count], **private) \
        .then(None, [parts["slider"], count, followed], [parts["slider"], followed], js=FOLLOW_JS,
              api_visibility="private", show_progress="hidden")
    parts["slider"].change(handler(show_frame, context), [parts["slider"]], [parts["frame"], parts["caption"]],
                           **private)
    classes_seen.change(handler(show_classes, context), [classes_seen],
                        [parts["class_dice"], parts["class_iou"], parts["confusion"]], **private)
    features_seen.change(handler(show_features, context), [features_seen], [parts["u"], parts["features"]], **private)

    stepper = gr.Timer(PLAY_SECONDS, active=False)
    parts["play"].click(play, [playing], [stepper, parts["play"], playing], api_visibility="private", queue=False)
    stepper.tick(None, [parts["slider"], count], [parts["slider"]], js="(at, n) => (n > 1 ? (at + 1) % n : at)",
                 api_visibility="private", queue=False)
    parts["export"].click(handler(export_animation, context, heavy=True), None, [parts["animation"]],
                          api_name="train_export_animation").success(
        lambda: gr.File(visible=True), None, [parts["animation"]], api_visibility="private", queue=False)
    parts["timeline_button"].click(handler(timeline, context), [parts["since"]], [parts["timeline_json"]],
                                   api_name="train_timeline", queue=False)
    parts["features_button"].click(handler(train_features, context), None, [parts["features"]],
                                   api_name="train_features", queue=False)
    return [frames_seen, classes_seen, features_seen]
