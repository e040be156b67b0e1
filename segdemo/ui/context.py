"""The app's shared objects, created once per process and handed to every tab.

Per-visitor values live in ``gr.State``; what every visitor shares (the workspaces, the one
background trainer, the data folder) is made explicitly, here, by
:func:`segdemo.ui.app.create_context`. A handler finds its visitor's own things (models,
datasets, uploads) with :meth:`AppContext.workspace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..catalog import ModelCatalog
from ..datafolder import DataFolder
from ..engine import BackgroundTrainer
from ..limits import Deadline
from ..runtime import core_count
from ..sharing import Sharing
from ..workspaces import Workspace, Workspaces
from .visitors import Visitors


@dataclass
class AppContext:
    workspaces: Workspaces
    trainer: BackgroundTrainer
    data: DataFolder
    visitors: Visitors
    sharing: Sharing | None = None   # public mode only
    queue: Any = None                # gradio's queue, once the app is built (build_demo)

    @property
    def public(self) -> bool:
        return self.workspaces.public

    def workspace(self, request=None) -> Workspace:
        """The workspace of the visitor who sent ``request`` (a ``gr.Request``); in single-user
        mode, the one workspace."""
        return self.workspaces.get(self.owner(request))

    def page_catalog(self) -> ModelCatalog:
        """The models a page is built with: the one workspace's, or in public mode the ones every
        visitor shares (each visitor's own join their pickers when their page loads)."""
        return self.workspaces.shared if self.public else self.workspace().catalog

    def owner(self, request=None) -> str | None:
        """The visitor's workspace key, which also names who a training run belongs to (None in
        single-user mode)."""
        return self.visitors.key_for(request) if self.public else None

    def request_threads(self) -> int:
        """Torch threads for a request's prediction: one while anything else wants the cores (a
        training run, another request predicting or waiting to), every core this server has when
        the request is alone. Alone, two threads answered a 192×192 image of the default U-Net in
        7.0 ms against 10.5 ms with one, but took 14.9 ms of CPU against 10.5; and a team of threads
        that loses a core to other work waits for it at every layer. With 16 clients segmenting
        during a live run (bench/bench_load.py, 2-core EPYC), the /segment handler took 134 ms
        (median) with two threads and 87 ms with one, and the server answered 15.1 requests/s
        instead of 11.8. A run going meanwhile is asked to make room
        (:meth:`~segdemo.engine.background.BackgroundTrainer.make_room`): it trains on one thread
        until the requests stop."""
        if self.trainer.running:
            self.trainer.make_room()  # and the run goes down to one thread while requests come
            return 1
        if _others_predicting(self.queue):
            return 1
        return core_count()

    def deadline(self, request=None) -> Deadline:
        """When the inference of ``request`` must stop: after ``request_seconds`` (segdemo.limits),
        or as soon as its visitor has gone (the page closed, the client disconnected or cancelled)."""
        return Deadline.for_request(wanted=_still_wanted(self.queue, getattr(request, "request", None)))


INFERENCE = "inference"   # the concurrency group of the events that predict


def _others_predicting(queue) -> bool:
    """Whether gradio's queue runs another event of the inference group than the caller's, or has
    one waiting. ``event_queue_per_concurrency_id``, ``current_concurrency`` and ``queue`` are
    attributes of gradio's queue, not public settings: ``tests/test_app_api.py`` checks that they
    still exist."""
    group = getattr(queue, "event_queue_per_concurrency_id", {}).get(INFERENCE)
    return group is not None and (group.current_concurrency > 1 or len(group.queue) > 0)


def _still_wanted(queue, http_request):
    """A check of whether gradio's queue still runs the event of ``http_request`` for someone.

    Gradio cannot stop a handler's thread: when a page closes or a client disconnects it marks
    the session's events dead (``alive``), and a cancelled event leaves its ``active_jobs``. Both
    are attributes of gradio's queue, not public settings: ``tests/test_resources_requests.py``
    checks that they still exist. An event that was never seen there (a call outside the queue)
    counts as wanted."""
    if queue is None or http_request is None or not hasattr(queue, "active_jobs"):
        return None

    def running():
        return [event for job in list(queue.active_jobs) if job for event in job
                if getattr(event, "request", None) is http_request]

    if not running():
        return None
    return lambda: any(getattr(event, "alive", True) for event in running())
