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

from ..errors import UserError

log = logging.getLogger(__name__)


def user_errors(function):
    """``function`` with the library's user errors turned into ``gr.Error``; running out of memory
    and failing file access are reported briefly, anything else is a bug and propagates."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as error:
            raise gr.Error(str(error), print_exception=False) from error
        except MemoryError as error:
            raise gr.Error("out of memory: try a smaller image or model", print_exception=False) from error
        except OSError as error:
            log.exception("I/O error in %s", getattr(function, "__name__", function))
            raise gr.Error(f"could not read or write a file: {error.strerror or error}", print_exception=False) from error

    return wrapper


def handler(function, *bound):
    """``function`` with its first arguments bound (the app's context) and user errors reported.

    Gradio names an endpoint's parameters after the remaining ones, so they are what an API client
    sees (``image``, ``model``, ``threshold`` …), and finds the values it fills in itself (a click's
    ``gr.SelectData``) by their annotations: both are kept, resolved, on the bound function. The
    docstring becomes the endpoint's description on the API page, which reads it as Markdown."""
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
    return user_errors(bound_function)


def refuse(message: str):
    """A ``gr.Error`` for a visitor's mistake that the page catches before the library does."""
    return gr.Error(message, print_exception=False)
