"""Building the Gradio app: shared objects, the tabs, the queue, launch options.

Building imports no torch (a test checks it): gradio alone takes about 4 s of the 8 s the app
may take to serve its page on 2 cores, and torch 2.4 s more. :func:`warm_up` loads torch and the
default model once the page is served.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gradio as gr

from .. import limits
from ..data import open_source, shapes
from ..datafolder import DataFolder
from ..engine import BackgroundTrainer, plan_run, preset
from ..runtime import pin_this_thread, split_cores
from ..sharing import Sharing
from ..workspaces import Quotas, Workspaces
from . import annotate_tab, models_tab, shapes_tab, train_tab, upload_tab, workspace_panel
from .context import AppContext
from .files import remove_stale_scratch
from .messages import handler
from .visitors import Visitors
from .widgets import CSS

log = logging.getLogger(__name__)

DEFAULT_MODEL = "unet_shapes"
DEFAULT_QUEUE_LENGTH = 10     # public mode: runs that may wait behind the one training
DEFAULT_RUN_SECONDS = 300     # public mode: the longest one run may train
DEFAULT_SERVING_CORES = 1     # public mode: cores kept for requests; the run trains on the others

INTRO = """
# segdemo
Learn, try and annotate **U-Net** image segmentation. *Shapes*: segment synthetic images and compare with
the truth. *Upload*: your own images (DRIVE, Pascal VOC understood). *Models*: what is inside each network.
*Train*: watch a network learn, live, on this machine's CPU. *Annotate*: paint masks with a model's help and
train on them.
"""


def public_mode(flag: bool = False) -> bool:
    """Whether the app keeps a workspace per visitor: on a Hugging Face Space (``SPACE_ID`` is
    set), with ``--workspaces`` or with ``SEGDEMO_WORKSPACES=1``; plain ``python app.py`` is single-user."""
    return flag or bool(os.environ.get("SPACE_ID")) or os.environ.get("SEGDEMO_WORKSPACES", "") in ("1", "true", "yes")


def create_context(data_dir: str | Path | None, shipped_dir: str | Path, *, public: bool = False,
                   train_threads: int | None = None) -> AppContext:
    """The app's shared objects: the data folder (``data_dir``, else ``SEGDEMO_DATA_DIR``, else
    ``./.segdemo``), its workspaces (one, or one per visitor when ``public``) with the shipped
    checkpoints of ``shipped_dir`` in each, and the background trainer (in public mode a queue:
    ``SEGDEMO_QUEUE_LENGTH`` runs waiting, each at most ``SEGDEMO_RUN_SECONDS`` long). The
    process's limits (segdemo.limits) are set here, tighter in public mode."""
    limits.configure(public)
    removed = remove_stale_scratch()
    if removed:
        log.info("removed the scratch folders of %d stopped app processes", len(removed))
    data = DataFolder.at(data_dir)
    workspaces = Workspaces(data, shipped_dir, public=public, default_model=DEFAULT_MODEL,
                            quotas=Quotas.from_environment())
    if public:
        queue_length = int(os.environ.get("SEGDEMO_QUEUE_LENGTH", DEFAULT_QUEUE_LENGTH))
        time_cap = float(os.environ.get("SEGDEMO_RUN_SECONDS", DEFAULT_RUN_SECONDS))
    else:
        queue_length, time_cap = 0, None
    # A child process per run where the platform passes it a pipe (POSIX: Linux, a Space, macOS);
    # elsewhere (Windows) the run trains in a thread, as scripts do.
    trainer = BackgroundTrainer(data.runs, threads=train_threads, separate_process=os.name == "posix",
                                queue_length=queue_length, time_cap=time_cap)
    sharing = Sharing(data, admin_key=os.environ.get("SEGDEMO_ADMIN_KEY")) if public else None
    return AppContext(workspaces=workspaces, trainer=trainer, data=data, visitors=Visitors(data.secret("sessions")),
                      sharing=sharing)


def list_models(context: AppContext, request: gr.Request) -> list[str]:
    """``/models``: the names of the models you can pick (the default first)."""
    return context.workspace(request).catalog.names()


def build_demo(context: AppContext) -> gr.Blocks:
    """The whole app; nothing heavy happens here (models load on first use)."""
    choices = context.page_catalog().names()
    # Gradio keeps every uploaded and served file in its cache; without delete_cache a long-running
    # Space would fill its disk. Files older than an hour go, checked every half hour.
    with gr.Blocks(title="segdemo", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        panel = workspace_panel.build(context) if context.public else None
        with gr.Tabs():
            with gr.Tab("Shapes", id="shapes") as shapes_page:
                shapes_parts = shapes_tab.build(context, choices)
            with gr.Tab("Upload", id="upload") as upload_page:
                upload_parts = upload_tab.build(context, choices)
            with gr.Tab("Models", id="models") as models_page:
                models_parts = models_tab.build(context, choices)
            with gr.Tab("Train", id="train") as train_page:
                train_parts = train_tab.build(context)
            with gr.Tab("Annotate", id="annotate") as annotate_page:
                annotate_parts = annotate_tab.build(context, choices)
        dropdowns = [shapes_parts["model"], upload_parts["model"], models_parts["model"], models_parts["compare"],
                     annotate_parts["model"]]
        train_tab.wire_timer(context, train_parts, dropdowns, train_page,
                             [shapes_page, upload_page, models_page, annotate_page])
        with gr.Group(visible=False):
            models_button = gr.Button("models (API)")
            model_names = gr.JSON(label="model names")
        models_button.click(handler(list_models, context), None, [model_names], api_name="models")
        demo.load(models_parts["show"], [models_parts["model"]],
                  [models_parts["details"], models_parts["stages"], models_parts["legend"]], api_visibility="private")
        demo.load(train_tab.model_choices, None, [train_parts["model"]], api_visibility="private", queue=False)
        if panel is not None:
            # The visitor's workspace first, then their own models and datasets in the pickers.
            own = dict(api_visibility="private", queue=False)
            shown = [panel["stored"], panel["shown"], panel["key"]]
            opened = (demo.load(panel["open"], [panel["stored"]], shown, **own),
                      panel["switch"].click(panel["switch_to"], [panel["other"]], [*shown, panel["other"], panel["said"]],
                                            **own))
            for event in opened:
                event.success(handler(train_tab.refresh_pickers, context, len(dropdowns)), [panel["shown"]], dropdowns,
                              **own).then(annotate_parts["list_datasets"], None, [annotate_parts["dataset"]], **own)
    demo.queue(default_concurrency_limit=2, max_size=128)
    calm_queue(demo)
    context.queue = demo._queue   # a request's deadline ends when its visitor has gone (AppContext.deadline)
    demo.segdemo_context = context
    return demo


QUEUE_IDLE_POLL_SECONDS = 0.01   # how often an idle queue looks for new events (gradio: 0.001)
PROGRESS_POLL_SECONDS = 0.05     # how often it forwards gr.Progress updates (gradio: 0.01)


def calm_queue(demo: gr.Blocks) -> None:
    """Make gradio's queue poll less often when it has nothing to do.

    Its two loops wake every 1 ms and 10 ms even when idle: about 10 % of a core on two cores,
    taken from a training run all the time, measured with no page open. Every 10 ms instead
    delays picking up a request by 5 ms on average. These are attributes of gradio's ``Queue``
    object, not public settings: ``tests/test_app_api.py`` checks that they still exist.
    """
    queue = demo._queue
    queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_IDLE_POLL_SECONDS)
    queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, PROGRESS_POLL_SECONDS)


def warm_up(context: AppContext) -> None:
    """Load the default model (which imports torch and every model module) and run it once, so
    that the first visitor's first segmentation does not wait about 3 s for them; plan the live
    run once, so that the first Start does not wait as long for the run planner's meta kernels;
    and start the training child the first Start will use. ``app.py`` calls it in the main thread
    once the page is served: the server runs in threads of its own, and torch's long-lived
    allocations stay in the main thread's heap rather than one a training thread reuses."""
    try:
        image = shapes.generate(1, 192, seed=0)[0][0]
        context.page_catalog().get().predict(image)
    except Exception:  # noqa: BLE001  (the same error reaches the first visitor who asks, as a message)
        log.exception("warming up the default model failed")
    try:  # the run planner's first trace loads torch's meta kernels (about 3 s)
        live = preset("live")
        plan_run(live, open_source(live.data, **live.data_options))
    except Exception:  # noqa: BLE001  (a Start plans the same run and says what went wrong)
        log.exception("warming up the run planner failed")
    context.trainer.warm()  # a child process ready for the first Start


def reserve_cores(context: AppContext) -> str:
    """On a shared app, give the training run cores of its own: the requests of a class (pages
    polling the run, students segmenting) then cannot slow it, and it cannot slow them. Call it in
    the main thread before ``launch``: the server's threads, started later, inherit the serving
    cores. ``SEGDEMO_SERVING_CORES`` sets how many serve (default 1; 0: everything shares every
    core, as on your own machine, where the one visitor's run should have them all). A line for
    the log saying what was decided."""
    serving = int(os.environ.get("SEGDEMO_SERVING_CORES", DEFAULT_SERVING_CORES if context.public else 0))
    split = split_cores(serving)
    if split is None:
        return "training and requests share every core"
    serving_cores, training_cores = split
    pin_this_thread(serving_cores)
    context.trainer.cores = training_cores
    return f"requests are served on cores {sorted(serving_cores)}, training runs on {sorted(training_cores)}"


def launch_options() -> dict:
    """Options for ``demo.launch`` (theme and CSS go here in Gradio 6)."""
    return {"theme": gr.themes.Soft(), "css": CSS, "max_file_size": "200mb"}
