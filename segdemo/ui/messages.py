"""Errors as messages: what a visitor (or an API client) reads when something they gave is wrong.

Every handler is wrapped by :func:`handler`, so that a :class:`~segdemo.errors.UserError` from the
library becomes a ``gr.Error`` (a red message on the page, an error over the API) with the
library's own words, and nothing a visitor does crashes a handler silently.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing

import gradio as gr

from ..errors import OUT_OF_MEMORY, UserError, out_of_memory

log = logging.getLogger(__name__)

def user_errors(function):
    """``function`` with the library's user errors turned into ``gr.Error``; running out of memory
    (Python's MemoryError or torch's allocation RuntimeError) and failing file access are reported
    briefly, the detail logged; anything else is a bug and propagates (gradio then shows the
    visitor a generic error, never its text)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as error:
            raise gr.Error(str(error), print_exception=False) from error
        except (MemoryError, RuntimeError) as error:
            if not out_of_memory(error):
                raise
            log.error("out of memory in %s", getattr(function, "__name__", function), exc_info=error)
            raise gr.Error(OUT_OF_MEMORY, print_exception=False) from error
        except OSError as error:
            log.exception("I/O error in %s", getattr(function, "__name__", function))
            raise gr.Error(f"could not read or write a file: {error.strerror or error}", print_exception=False) from error

    return wrapper


def _load_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _load_trim()


def give_back_memory() -> None:
    """Return the memory a large request freed to the system.

    glibc keeps what a thread frees in that thread's arena for its next allocation, and gradio
    runs handlers on a pool of threads: after a 64-megapixel photo, a tiled prediction or a
    dataset view, each thread that served one held on to hundreds of MB (measured: +375 MB over
    the hostile-request matrix, +87 MB after ``malloc_trim``; a case of issue 18 held 7.7 GB for
    minutes after its requests failed). A few milliseconds, after the heavy handlers only."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def handler(function, *bound, heavy: bool = False):
    """``function`` with its first arguments bound (the app's context) and user errors reported.

    Gradio names an endpoint's parameters after the remaining ones, so they are what an API client
    sees (``image``, ``model``, ``threshold`` …), and finds the values it fills in itself (a click's
    ``gr.SelectData``) by their annotations: both are kept, resolved, on the bound function. The
    docstring becomes the endpoint's description on the API page, which reads it as Markdown.
    A ``heavy`` handler (large images, predictions, whole datasets) gives the memory it freed
    back to the system when it ends (:func:`give_back_memory`)."""
    hints = typing.get_type_hints(function)
    signature = inspect.signature(function)
    parameters = [parameter.replace(annotation=hints.get(parameter.name, parameter.annotation))
                  for parameter in list(signature.parameters.values())[len(bound):]]

    @functools.wraps(function)
    def bound_function(*args, **kwargs):
        return function(*bound, *args, **kwargs)

    bound_function.__doc__ = (function.__doc__ or "").replace("``", "`")
    bound_function.__signature__ = signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty)
    bound_function.__annotations__ = {p.name: p.annotation for p in parameters if p.name in hints}
    checked = user_errors(bound_function)
    if not heavy:
        return checked

    @functools.wraps(checked)
    def giving_back(*args, **kwargs):
        try:
            return checked(*args, **kwargs)
        finally:
            give_back_memory()

    return giving_back


def refuse(message: str):
    """A ``gr.Error`` for a visitor's mistake that the page catches before the library does."""
    return gr.Error(message, print_exception=False)
