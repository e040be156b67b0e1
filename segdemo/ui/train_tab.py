"""The Train tab: train a model in the background and watch it learn.

One run at a time for the whole app (a second Start is refused with a message); every open page
polls the same run with a ``gr.Timer``, so several tabs see the same curves. Polling only copies
the run's bounded history when it has changed, so watching costs the run almost nothing.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import gradio as gr
import pandas as pd

from ..data import open_source, spec_for_archive
from ..engine import EpochDone, StepDone, configure, number, plan_run, preset, whole_number
from ..filenames import safe_name
from ..limits import current
from ..loss_names import AUTO, LOSS_LABELS
from ..mask_doctor import FIXED, HEADERS, findings_table
from ..models import names as model_names
from ..annotations import DatasetStore
from ..catalog import ModelCatalog
from . import experiments_panel, playground_panel
from .context import AppContext
from .files import download, png_file, required_upload
from .messages import handler
from .widgets import curve_frame, live_dropdown, timer_follows_tab

SHAPES = "synthetic shapes"
UPLOADED = "uploaded .zip (DRIVE, VOC or image/mask folder)"
ANNOTATIONS_PREFIX = "annotations: "
MAX_ZIP_BYTES = 1024 * 2**20

EXPLAIN = """
**What you are watching.** Each step shows the network a batch of fresh images and nudges its
weights to lower the **loss** (binary cross-entropy + Dice for the shapes). The **train Dice** is
measured on the batch it just learned from; the **validation Dice**, after each epoch, on images
it never trains on: that is the honest one. The default run is tuned for two CPU cores: a slim
U-Net learning on small batches of 80×80 crops (shapes keep their scale; many cheap steps teach it
more than a few big ones), evaluated on whole 192×192 images, with a one-cycle learning rate that warms
up, peaks and anneals within the time limit. Its last layer starts out predicting how much of an image
each class covers, so the first steps are not spent learning that most pixels are background.

**The loss** is what each step lowers. **BCE** scores every pixel of every class on its own;
**Dice** scores each class's overlap as a whole, so a small shape counts as much as a big one;
**focal** loss is cross-entropy turned down where the model is already sure, so the hard pixels
(edges, small shapes) teach; **cross-entropy** makes the classes compete for each pixel (data with
one class per pixel); the **boundary** term punishes predicted area by how far it lies outside the
true shape, and is weighted in over the run (Kervadec et al.). BCE suits the shapes and other data
whose classes may overlap, cross-entropy data with one class per pixel, Dice and focal any data.
"""

NEW_MODEL = "(none: a new model)"


def init_choices(catalog: ModelCatalog) -> list[str]:
    """Checkpoints that can be fine-tuned (the pretrained VOC models are inference-only)."""
    return [NEW_MODEL, *[e.name for e in catalog.entries() if e.path and e.available]]


def model_choices() -> gr.Dropdown:
    """The trainable models, filled in when a page loads: listing them imports the model modules,
    and torch with them, which the app does only after it has served its page."""
    return gr.Dropdown(choices=model_names(trainable=True))


def start(context: AppContext, model, unet_width, data, dataset_zip, epochs, batch_size, learning_rate, crop_size,
          time_limit_seconds, fine_tune_from=None, loss=AUTO, request: gr.Request = None):
    """Start a run on top of the ``live`` preset: ``model`` (a U-Net ``unet_width`` channels wide),
    on ``data`` (shapes, an uploaded ``dataset_zip``, or an annotation dataset), for ``epochs`` or
    ``time_limit_seconds`` (0: none; on a shared app, its limit per run), optionally fine-tuning
    ``fine_tune_from``, with the ``loss`` named (one of ``segdemo.loss_names.LOSS_NAMES``); in a
    shared app it waits in the queue while another visitor's run trains. The data is opened here
    and the run planned against this server's memory, so a broken upload, a loss that does not
    suit the data or a run that cannot fit is refused at once, with what would work."""
    space = context.workspace(request)
    kept = None   # an uploaded zip kept for the run: removed again if the run is refused, and when it ends
    try:
        if data == UPLOADED:
            path = required_upload(dataset_zip, "dataset zip", "upload a dataset .zip first", limit=MAX_ZIP_BYTES)
            kept = space.keep_upload(path, "dataset")
        config, source, notes, findings = _run_settings(space, model, unet_width, data, kept, epochs, batch_size,
                                                        learning_rate, crop_size, time_limit_seconds, fine_tune_from,
                                                        loss)

        def register(run_id, result):  # the new model joins its owner's pickers (a run that learned nothing
            path = result.best_path or result.last_path  # does not); the zip is read no more
            if path and result.steps:
                space.catalog.add_trained(path, title=f"{(result.meta or {}).get('title') or 'trained'} {run_id}")
            if kept is not None:
                shutil.rmtree(kept.parent, ignore_errors=True)

        space.room_for_run()
        owner = context.owner(request)
        run_id = context.trainer.start(config, source, owner=owner, runs_dir=space.data.runs, on_finish=register)
    except BaseException:
        if kept is not None:
            shutil.rmtree(kept.parent, ignore_errors=True)
        raise
    # One run per workspace (one at a time in a single-user app): no other run reads this
    # workspace's uploads or its older run folders now.
    space.data.remove_uploads(keep=[kept] if kept is not None else [])
    space.data.prune_runs(current().runs_kept, in_use={run_id})
    queue = context.trainer.queue(owner)
    cap = context.trainer.time_cap
    if cap and (not config.max_seconds or config.max_seconds > cap):
        notes.append(f"it stops after {_duration(cap)}, this app's limit per run")
    said = "".join(f" Note: {html.escape(note, quote=False)}." for note in notes) + _mask_report(findings)
    if queue["your_position"]:
        wait = queue["your_wait_seconds"]
        return (f"Queued run **{run_id}**: {html.escape(config.title)}. You are number {queue['your_position']} in "
                f"the queue" + (f"; it should start in about {_duration(wait)}." if wait is not None else ".") +
                " Stop cancels it." + said)
    return f"Started run **{run_id}**: {html.escape(config.title)}.{said}"


def _run_settings(space, model, unet_width, data, kept, epochs, batch_size, learning_rate, crop_size,
                  time_limit_seconds, fine_tune_from, loss=AUTO):
    """The run's checked configuration, its opened data source, notes for the visitor and what the
    mask doctor found in an uploaded zip, planned against this server's memory (a run that cannot
    fit is refused with what would)."""
    base = preset("live")
    settings = dict(model=model, epochs=whole_number(epochs, "epochs"), batch_size=whole_number(batch_size, "batch size"),
                    lr=number(learning_rate, "learning rate"), crop_size=whole_number(crop_size or 0, "crop size"),
                    max_seconds=number(time_limit_seconds or 0, "time limit"), loss=loss or AUTO)
    model_options = {"base_channels": whole_number(unet_width, "U-Net width")} if model == "unet" else {}
    if data == SHAPES:
        settings["data"] = "shapes"
    elif data == UPLOADED:
        settings.update(data=spec_for_archive(str(kept)), val_images=16)
    elif data and data.startswith(ANNOTATIONS_PREFIX):
        settings.update(data=f"folder:{space.store.dataset_path(data[len(ANNOTATIONS_PREFIX):])}", val_images=16)
    else:
        raise gr.Error("pick the training data", print_exception=False)
    kind = settings["data"].split(":")[0]
    title = f"{model}{'-' + str(model_options['base_channels']) if model == 'unet' else ''} on {kind}"
    initial_meta = None
    if fine_tune_from and fine_tune_from != NEW_MODEL:
        entry = space.catalog.entry(fine_tune_from)
        if not entry.path:
            raise gr.Error(f"{fine_tune_from} cannot be fine-tuned here", print_exception=False)
        settings["init_from"] = entry.path
        from .. import checkpoints  # imports torch: not while the page is built

        initial_meta = checkpoints.read(entry.path)["meta"]
        title = f"{fine_tune_from.split(': ')[-1]} fine-tuned on {kind}"
    if settings["loss"] != AUTO and settings["loss"] in LOSS_LABELS:
        title += f", {LOSS_LABELS[settings['loss']]} loss"
    config = configure(base, model_options=model_options, title=title, **settings)
    source = open_source(config.data, **config.data_options)
    # An uploaded image/mask folder's masks are checked before anything is planned or trained: fixed
    # as its loader will fix them, or refused (MaskError) naming every mask that cannot be used.
    findings = source.check() if data == UPLOADED and hasattr(source, "check") else []
    plan = plan_run(config, source, initial_meta=initial_meta)  # refuses what cannot fit; fits the batch to the data
    return plan.config, source, list(plan.notes), findings


def _mask_report(findings) -> str:
    """What the mask doctor found in an uploaded zip, as a Markdown table after the message."""
    if not findings:
        return ""
    fixed = sum(finding.action == FIXED for finding in findings)
    rows = "".join("\n| " + " | ".join(html.escape(text, quote=False).replace("|", "\\|") for text in row) + " |"
                   for row in findings_table(findings)["data"])
    said = (f"fixed {fixed} problem{'s' if fixed != 1 else ''} (its loader reads the masks the same way)" if fixed
            else "found nothing to fix")
    return f"\n\nThe mask check of the zip {said}:\n\n| {' | '.join(HEADERS)} |\n|---|---|---|{rows}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def data_choices(store: DatasetStore) -> list[str]:
    """Shapes, an uploaded zip, and every annotation dataset."""
    return [SHAPES, UPLOADED, *[ANNOTATIONS_PREFIX + name for name in store.datasets()]]


def stop(context: AppContext, request: gr.Request):
    """Stop your run (it validates and saves what it has learned), or take it out of the queue."""
    outcome = context.trainer.stop(context.owner(request))
    if outcome == "stopping":
        return "Stopping after this step; what was learned is validated and saved."
    if outcome == "cancelled":
        return "Your queued run is cancelled."
    return "You have no run going or queued." if context.public else "No run is going."


def pause(context: AppContext, request: gr.Request):
    """Pause your run before its next step (it holds no core while paused)."""
    context.trainer.pause(context.owner(request))
    return ("Pausing after this step: then the run waits. One step takes a single step; Resume goes on."
            + (" On this shared app the time limit keeps running while paused." if context.trainer.pauses_count else ""))


def resume(context: AppContext, request: gr.Request):
    """Resume your paused run."""
    context.trainer.resume(context.owner(request))
    return "Resumed."


def one_step(context: AppContext, request: gr.Request):
    """Let your paused run take exactly one step (then it waits again)."""
    context.trainer.step(context.owner(request))
    return "One step taken; the run waits again."


def set_learning_rate(context: AppContext, learning_rate, request: gr.Request):
    """Train your run at ``learning_rate`` from its next step on: the schedule is set aside for the
    rest of the run (the rate stays where you put it)."""
    rate = context.trainer.set_lr(context.owner(request), learning_rate)
    return f"Learning rate set to {rate:g} from the next step on; the schedule is set aside for the rest of the run."


CONTROLS_HELP = ("**Pause** holds the run before its next step (it uses no CPU meanwhile); **One step** then takes a "
                 "single step; **Stop** still validates and saves. A learning rate **set** here replaces the schedule "
                 "for the rest of the run.")


def build_controls(context: AppContext) -> dict:
    """Pause, Resume, One step and a learning rate for the run going (its owner's only)."""
    with gr.Row(elem_id="train-controls"):
        pause_button = gr.Button("Pause", min_width=70, elem_id="train-pause")
        resume_button = gr.Button("Resume", min_width=70, elem_id="train-resume")
        step_button = gr.Button("One step", min_width=70, elem_id="train-step")
    with gr.Row():
        new_lr = gr.Number(value=preset("live").lr, label="learning rate from now on", elem_id="train-new-lr",
                           scale=3, min_width=120)
        set_lr_button = gr.Button("Set", min_width=60, elem_id="train-set-lr", scale=1)
    shared = (" On this shared app the time limit keeps running while a run is paused: others are waiting."
              if context.trainer.pauses_count else " Time paused does not count against the time limit.")
    gr.Markdown(CONTROLS_HELP + shared, elem_classes="segdemo-explain")
    return {"pause": pause_button, "resume": resume_button, "step": step_button, "new_lr": new_lr,
            "set_lr": set_lr_button}


def wire_controls(context: AppContext, controls: dict, message) -> None:
    """The controls answer at once (outside the queue, as Stop does): each only flags the run."""
    now = {"queue": False}
    controls["pause"].click(handler(pause, context), None, [message], api_name="train_pause", **now)
    controls["resume"].click(handler(resume, context), None, [message], api_name="train_resume", **now)
    controls["step"].click(handler(one_step, context), None, [message], api_name="train_step", **now)
    controls["set_lr"].click(handler(set_learning_rate, context), [controls["new_lr"]], [message],
                             api_name="train_set_lr", **now)


def workspace_choices(context: AppContext, request: gr.Request):
    """The visitor's own annotation datasets and checkpoints in the data and fine-tune pickers."""
    space = context.workspace(request)
    return gr.Dropdown(choices=data_choices(space.store)), gr.Dropdown(choices=init_choices(space.catalog))


CURVE_POINTS = 200         # per-step series are thinned to about this many points (plus the latest)
REFRESH_SECONDS = 0.8      # the timer's period on the Train tab: a step shows within a second
AWAY_SECONDS = 5.0         # elsewhere: only the model pickers follow (a finished run's model appears)


def thinned(events: list[dict], limit: int = CURVE_POINTS) -> list[dict]:
    """Every k-th event so that at most ``limit`` (and always the latest) are drawn: a long run's
    curve keeps its shape while each redraw stays small."""
    stride = max(1, -(-len(events) // limit))
    kept = events[::stride]
    if events and kept[-1] is not events[-1]:
        kept.append(events[-1])
    return kept


TRAIN_LOSS, EPOCH_LOSS = "train loss (batch)", "train loss (epoch mean)"
TRAIN_DICE, VAL_DICE = "train Dice (batch)", "validation Dice (epoch)"


def curve_frames(steps: list[StepDone], epochs: list[EpochDone]) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Long-format frames for the loss and Dice plots (x = step, one series per curve); None for
    a plot with nothing to draw yet."""
    loss_rows, dice_rows = [], []
    for event in thinned(steps):
        loss_rows.append((event.step, event.loss, TRAIN_LOSS))
        if event.dice is not None:
            dice_rows.append((event.step, event.dice, TRAIN_DICE))
    for event in epochs:
        if event.train_loss is not None:
            loss_rows.append((event.step, event.train_loss, EPOCH_LOSS))
        if event.val.get("mean_dice") is not None:
            dice_rows.append((event.step, event.val["mean_dice"], VAL_DICE))
    return curve_frame(loss_rows, (TRAIN_LOSS, EPOCH_LOSS)), curve_frame(dice_rows, (TRAIN_DICE, VAL_DICE))


def progress_html(status: dict) -> str:
    progress = status.get("progress") or 0.0
    state = status["state"]
    parts = [f"<b>{'paused' if status.get('paused') else html.escape(state)}</b>"]
    if status.get("step"):
        parts.append(f"step {status['step']}" + (f" / {status['total_steps']}" if status.get("total_steps") else ""))
    if status.get("lr") is not None and state in ("starting", "running", "stopping"):
        parts.append(f"learning rate {status['lr']:.3g}"
                     + (" (set by hand)" if status.get("lr_set_by") == "visitor" else " (schedule)"))
    if status.get("val_mean_dice") is not None:
        parts.append(f"validation Dice {status['val_mean_dice']:.3f}")
    if status.get("images_per_second"):
        parts.append(f"{status['images_per_second']:.0f} images/s")
    if status.get("eta_seconds") is not None:
        parts.append(f"about {status['eta_seconds']:.0f} s left")
    if state in ("finished", "stopped", "failed") and status.get("message"):
        parts.append(html.escape(status["message"]))
    if status.get("series"):
        series = status["series"]
        parts.append(f"{html.escape(series['name'])}: lesson run {series['index']} of {series['total']}")
    if status.get("run_id") and not status.get("yours", True):
        parts.append("another visitor's run")
    if status.get("your_position") and not (status.get("series") and status.get("yours")):  # not your lesson's next
        wait = status.get("your_wait_seconds")
        parts.append(f"<b>your run: number {status['your_position']} in the queue</b>"
                     + (f", starts in about {_duration(wait)}" if wait is not None else ""))
    width = 100 * (1.0 if state in ("finished",) else progress)
    return (f'<div class="segdemo-progress" id="train-progress" data-state="{state}"><div style="width:{width:.1f}%"></div></div>'
            f'<div id="train-status-line">{" · ".join(parts)}</div>')


def status(context: AppContext, request: gr.Request) -> dict:
    """``/train_status``: the run training now (else your latest), its curves so far, and your place
    in the queue, as data (the checkpoint named by run and file, not where the server keeps it)."""
    viewer, trainer = context.owner(request), context.trainer
    shown = trainer.status(viewer)
    if shown.get("checkpoint"):  # the visitor's own: named within their data, never as a server path
        shown["checkpoint"] = _visitor_path(shown["checkpoint"], context.workspace(request).data.root)
    return {**shown,
            "steps": [{"step": e.step, "loss": e.loss, "dice": e.dice, "lr": e.lr,
                       "images_per_second": e.images_per_second, "elapsed": e.elapsed}
                      for e in trainer.steps(viewer)],
            "epochs": [{"epoch": e.epoch, "step": e.step, "train_loss": e.train_loss,
                        "val_mean_dice": e.val.get("mean_dice"), "val_dice": e.val.get("dice"), "elapsed": e.elapsed}
                       for e in trainer.epochs(viewer)]}


def _visitor_path(path: str, root) -> str:
    """``path`` relative to the visitor's data folder ("runs/RUN/best.pt"), or its name alone."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).name


def poll(context: AppContext, seen: dict | None, request: gr.Request):
    """One timer tick: the progress line, the curves when they changed since ``seen``, and the
    keys of the rarer outputs (snapshot, checkpoint, model list).

    The rarer outputs are redrawn by ``.change`` events of those keys, not by this tick: gradio
    rebuilds a component for every ``gr.skip()`` an event returns, which made a tick that skipped
    nine outputs cost about 15 ms of server time, every half second, for every open page.
    """
    seen = dict(seen or {"curves": -1})
    viewer, trainer = context.owner(request), context.trainer
    status = trainer.status(viewer)
    curves_version = trainer.curves_version(viewer)
    frames = (None, None)
    if curves_version != seen["curves"]:
        seen["curves"] = curves_version
        frames = curve_frames(trainer.steps(viewer), trainer.epochs(viewer))
    loss, dice = (gr.skip() if frame is None else frame for frame in frames)
    snapshot = trainer.snapshot(viewer)
    snapshot_key = f"{status.get('run_id')}:{snapshot.step}" if snapshot else None
    checkpoint = status.get("checkpoint") if status["state"] in ("finished", "stopped") else None
    return (progress_html(status), loss, dice, seen, snapshot_key, checkpoint,
            context.workspace(request).catalog.version, *playground_panel.keys(context, request))


def show_snapshot(context: AppContext, snapshot_key, request: gr.Request):
    """The watched run's latest validation prediction, labelled with its step (as a file: every
    watching page asks for the same picture at the same moment)."""
    snapshot = context.trainer.snapshot(context.owner(request))
    if snapshot is None:
        return gr.skip()
    return gr.Image(value=png_file(snapshot.image, "snapshot.png"),
                    label=f"validation prediction after step {snapshot.step}")


def offer_checkpoint(context: AppContext, checkpoint: str | None, request: gr.Request):
    """Your finished run's checkpoint as a download (nothing changes while a run goes)."""
    if not checkpoint:
        return gr.skip()
    run_id = context.trainer.status(context.owner(request)).get("run_id")
    return download(checkpoint, f"{safe_name(run_id or 'run')}.pt")


def refresh_pickers(context: AppContext, count: int, catalog_version, request: gr.Request):
    """Every model picker, with the visitor's models (when their list has changed)."""
    return [gr.Dropdown(choices=context.workspace(request).catalog.names()) for _ in range(count)]


def build(context: AppContext) -> dict:
    base = preset("live")
    gr.Markdown("Train a model right here and watch it learn. On two CPU cores the defaults reach a validation Dice "
                "of 0.9 on the shapes in about 15 seconds and 0.97 in 30.")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            model = live_dropdown([base.model], value=base.model, label="model", elem_id="train-model")
            width = gr.Slider(4, 64, value=base.model_options["base_channels"], step=4,
                              label="U-Net width (channels of the first stage)")
            page_store = None if context.public else context.workspace().store  # public: each visitor's own on focus
            data = live_dropdown(data_choices(page_store) if page_store else [SHAPES, UPLOADED], value=SHAPES,
                                 label="data", elem_id="train-data")
            data_zip = gr.File(label="dataset .zip (for uploaded data)", file_types=[".zip"], elem_id="train-data-zip")
            init_from = live_dropdown(init_choices(context.page_catalog()), value=NEW_MODEL, label="fine-tune from",
                                      elem_id="train-init")
            # Whole numbers are checked, not rounded (precision=0 would turn 2.7 epochs into 3 unsaid).
            with gr.Row():
                epochs = gr.Number(value=base.epochs, step=1, label="epochs")
                batch_size = gr.Number(value=base.batch_size, step=1, label="batch size")
            with gr.Row():
                lr = gr.Number(value=base.lr, label="learning rate")
                size = gr.Number(value=base.crop_size, step=1, label="training crop size")
            loss_choice = gr.Dropdown([(label, name) for name, label in LOSS_LABELS.items()], value=base.loss,
                                      label="loss", elem_id="train-loss-choice")
            cap = context.trainer.time_cap
            seconds = gr.Number(value=min(base.max_seconds, cap or base.max_seconds),
                                label=f"time limit (seconds; 0 = {f'this app’s limit, {cap:g}' if cap else 'none'})")
            with gr.Row():
                start_button = gr.Button("Start", variant="primary", elem_id="train-start")
                stop_button = gr.Button("Stop", variant="stop", elem_id="train-stop")
            controls = build_controls(context)
            message = gr.Markdown(label="message", elem_id="train-message")
            download = gr.File(label="trained checkpoint", interactive=False, elem_id="train-download")
        with gr.Column(scale=2):
            progress = gr.HTML(progress_html(context.trainer.status()),
                               elem_id="train-progress-box")
            with gr.Row():
                loss_plot = gr.LinePlot(x="step", y="value", color="series", title="loss", height=260,
                                        elem_id="train-loss")
                dice_plot = gr.LinePlot(x="step", y="value", color="series", title="Dice", y_lim=[0, 1], height=260,
                                        elem_id="train-dice")
            snapshot = gr.Image(label="validation prediction", format="png", type="numpy", elem_id="train-snapshot")
            gr.Markdown(EXPLAIN, elem_classes="segdemo-explain")
            playground = playground_panel.build(context)
    experiments = experiments_panel.build(context, start_button)
    widgets = [model, width, data, data_zip, epochs, batch_size, lr, size, seconds, init_from, loss_choice]
    start_button.click(handler(start, context, heavy=True), widgets, [message], api_name="train_start")
    stop_button.click(handler(stop, context), None, [message], api_name="train_stop", queue=False)
    wire_controls(context, controls, message)
    for picker in (data, init_from):
        picker.focus(handler(workspace_choices, context), None, [data, init_from], api_visibility="private",
                     queue=False)
    status_button = gr.Button(visible=False)
    status_json = gr.JSON(label="training status", visible=False)
    status_button.click(handler(status, context), None, [status_json], api_name="train_status", queue=False)
    return {"model": model, "widgets": widgets, "progress": progress, "loss": loss_plot, "dice": dice_plot, "snapshot": snapshot,
            "download": download, "data": data, "playground": playground, "experiments": experiments}


def wire_timer(context: AppContext, parts: dict, dropdowns: list, train_page: gr.Tab, other_pages: list) -> None:
    """Poll the trainer every REFRESH_SECONDS while the Train tab shows, every AWAY_SECONDS while
    another does; redraw the snapshot, the download and every model picker only when what they
    show has changed.

    Each tick costs the server about 14 ms whatever it returns (gradio's own work for an event,
    measured on a 2-core EPYC), so a class of 30 pages polling at 0.8 s would keep half a core
    busy; most pages are on other tabs most of the time. The period is switched in the browser
    (a tab's select event with only ``js``), at no cost to the server."""
    seen = gr.State(None)
    snapshot_key, checkpoint = gr.State(None), gr.State(None)
    catalog_version = gr.State(None if context.public else context.page_catalog().version)
    private = dict(api_visibility="private", show_progress="hidden", concurrency_limit=None, concurrency_id="poll")
    timer = gr.Timer(AWAY_SECONDS)  # the page opens on the first tab
    timer_follows_tab(timer, train_page, other_pages, REFRESH_SECONDS, AWAY_SECONDS)
    timer_follows_tab(parts["experiments"]["timer"], train_page, other_pages, experiments_panel.REFRESH_SECONDS,
                      experiments_panel.AWAY_SECONDS)
    playground_keys = playground_panel.wire(context, parts["playground"])
    timer.tick(handler(poll, context), [seen],
               [parts["progress"], parts["loss"], parts["dice"], seen, snapshot_key, checkpoint, catalog_version,
                *playground_keys], trigger_mode="always_last", **private)
    snapshot_key.change(handler(show_snapshot, context), [snapshot_key], [parts["snapshot"]], **private)
    checkpoint.change(handler(offer_checkpoint, context), [checkpoint], [parts["download"]], **private)
    catalog_version.change(handler(refresh_pickers, context, len(dropdowns)), [catalog_version], dropdowns, **private)
