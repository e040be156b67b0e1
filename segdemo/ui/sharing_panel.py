"""Sharing for teaching, on a public app's Models and Annotate tabs: make a code for a model or a
dataset, take one by its code, and (with the teacher's key) publish to the whole class."""

from __future__ import annotations

import gradio as gr

from .context import AppContext
from .messages import handler, refuse


def _sharing(context: AppContext):
    if context.sharing is None:
        raise refuse("sharing is for a shared app (a Space, or --workspaces)")
    return context.sharing


def share_model(context: AppContext, model, request: gr.Request):
    """A code that gives others a copy of ``model`` (one you trained or uploaded)."""
    code = _sharing(context).share_model(context.workspace(request), model)
    return f"Share code for **{model}**: `{code}`. Whoever enters it gets a copy; yours stays yours."


def share_dataset(context: AppContext, dataset, request: gr.Request):
    """A code that gives others a copy of ``dataset`` as it is now."""
    if not dataset:
        raise refuse("pick a dataset first")
    code = _sharing(context).share_dataset(context.workspace(request), dataset)
    return f"Share code for **{dataset}**: `{code}`. Whoever enters it gets a copy of it as it is now."


def take_shared(context: AppContext, code, request: gr.Request):
    """Copy the model or dataset that ``code`` names into your workspace."""
    return f"Added {_sharing(context).take(context.workspace(request), code)} to your workspace."


def publish_model(context: AppContext, model, teacher_key, request: gr.Request):
    """Put ``model`` in every visitor's model pickers (needs the teacher's key)."""
    name = _sharing(context).publish_model(context.workspace(request), model, teacher_key)
    return f"Published: every visitor now has **{name}**."


def publish_dataset(context: AppContext, dataset, teacher_key, request: gr.Request):
    """Offer ``dataset`` to every visitor (needs the teacher's key)."""
    if not dataset:
        raise refuse("pick a dataset first")
    name = _sharing(context).publish_dataset(context.workspace(request), dataset, teacher_key)
    return f"Published: every visitor can now take **{name}**."


def published_datasets(context: AppContext):
    """The datasets the teacher has published (their names, for the picker)."""
    return gr.Dropdown(choices=_sharing(context).published_datasets())


def take_published(context: AppContext, dataset, request: gr.Request):
    """Copy the teacher's published ``dataset`` into your workspace."""
    if not dataset:
        raise refuse("pick one of the teacher's datasets first")
    return f"Added {_sharing(context).take_published(context.workspace(request), dataset)} to your workspace."


def _take_row(label: str, **textbox):
    """A share-code field and its Take button."""
    with gr.Row():
        code = gr.Textbox(label=label, placeholder="K7QM-4XPA", scale=2, **textbox)
        take = gr.Button("Take", size="sm")
    return code, take


def _publish_row(what: str):
    """The teacher's key and a button that publishes ``what``."""
    with gr.Row():
        teacher_key = gr.Textbox(label="teacher key", type="password", scale=2)
        publish = gr.Button(f"Publish {what} to everybody", size="sm")
    return teacher_key, publish


def model_panel(context: AppContext, model: gr.Dropdown) -> None:
    """The Models tab's sharing: share the picked model, take by code, publish (teacher)."""
    with gr.Accordion("share with the class", open=False, elem_id="share-models"):
        share = gr.Button("Share the model picked above", size="sm", elem_id="share-model")
        code, take = _take_row("a share code (for a model or a dataset)", elem_id="take-code")
        teacher_key, publish = _publish_row("the picked model")
        said = gr.Markdown(label="message", elem_id="share-message")
    share.click(handler(share_model, context), [model], [said], api_name="share_model")
    take.click(handler(take_shared, context, heavy=True), [code], [said], api_name="take_shared")
    publish.click(handler(publish_model, context), [model, teacher_key], [said], api_name="publish_model")


def dataset_panel(context: AppContext, dataset: gr.Dropdown) -> None:
    """The Annotate tab's sharing: share the picked dataset, take by code or from the teacher, publish."""
    with gr.Accordion("share with the class", open=False, elem_id="share-datasets"):
        share = gr.Button("Share this dataset", size="sm", elem_id="share-dataset")
        code, take = _take_row("a share code")
        with gr.Row():
            published = gr.Dropdown([], label="datasets the teacher published", allow_custom_value=True, scale=2,
                                    elem_id="published-datasets")
            take_it = gr.Button("Take", size="sm", elem_id="take-published")
        teacher_key, publish = _publish_row("this dataset")
        said = gr.Markdown(label="message", elem_id="share-dataset-message")
    share.click(handler(share_dataset, context), [dataset], [said], api_name="share_dataset")
    take.click(handler(take_shared, context, heavy=True), [code], [said], api_visibility="private")
    published.focus(handler(published_datasets, context), None, [published], api_visibility="private", queue=False)
    take_it.click(handler(take_published, context, heavy=True), [published], [said], api_name="take_published")
    publish.click(handler(publish_dataset, context), [dataset, teacher_key], [said], api_name="publish_dataset")
