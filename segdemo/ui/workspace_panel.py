"""The workspace panel of a public app: which workspace this browser uses, and how to open another.

Shown only in public mode. When a page loads, the key its browser keeps (a ``gr.BrowserState``)
is told to the server, or a new one is made; the visitor's own models and datasets then fill the
pickers. Pasting a key opens that workspace instead (the same student on another computer).
"""

from __future__ import annotations

import gradio as gr

from ..errors import UserError
from ..workspaces import check_key, new_key
from .context import AppContext
from .messages import handler
from .visitors import HEADER, STORAGE_KEY

EXPLAIN = f"""
Your models, datasets and training runs are kept in a workspace of your own; nobody else sees
them. This browser remembers it. To use it on another computer, paste its key below there. From
Python: `Client(url, headers={{"{HEADER}": "YOUR KEY"}})`. Keep the key to yourself: whoever has it
can open your workspace.
"""


def describe(key: str) -> str:
    """The workspace's name on the page: the key's first characters only (a projector shows the
    page to the whole class; the full key opens the workspace)."""
    return f"**Your private workspace:** `{key[:6]}…`"


def open_workspace(context: AppContext, stored_key, request: gr.Request):
    """The workspace this browser keeps (a new one on its first visit), for this page's session."""
    try:
        key = check_key(stored_key) if stored_key else new_key()
    except UserError:  # a stored value that is no key: start afresh rather than fail
        key = new_key()
    context.visitors.remember(request.session_hash, key)
    return key, describe(key), key


def switch_workspace(context: AppContext, key, request: gr.Request):
    """Open the workspace of ``key`` in this browser from now on."""
    key = check_key((key or "").strip())
    context.visitors.remember(request.session_hash, key)
    return key, describe(key), key, "", f"Opened workspace `{key[:6]}…`."


def build(context: AppContext) -> dict:
    """The panel; returns its parts for the app to wire to the pickers."""
    secret = context.data.secret("browser-state")  # the same across restarts, so browsers keep their key
    stored = gr.BrowserState(None, storage_key=STORAGE_KEY, secret=secret)
    shown = gr.Markdown(label="workspace", elem_id="workspace-name")
    with gr.Accordion("your workspace: private, kept by this browser", open=False, elem_id="workspace-panel"):
        gr.Markdown(EXPLAIN, elem_classes="segdemo-explain")
        key = gr.Textbox(label="your workspace key (hidden; copy it to use it elsewhere)", type="password",
                         interactive=False, buttons=["copy"], elem_id="workspace-key")
        with gr.Row():
            other = gr.Textbox(label="open another workspace (paste its key)", type="password", scale=3,
                               elem_id="workspace-other")
            switch = gr.Button("Open", scale=1, elem_id="workspace-open")
        said = gr.Markdown(label="message", elem_id="workspace-message")
    return {"stored": stored, "shown": shown, "key": key, "other": other, "switch": switch, "said": said,
            "open": handler(open_workspace, context), "switch_to": handler(switch_workspace, context)}
