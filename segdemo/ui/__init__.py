"""The Gradio app. The only package of segdemo that imports gradio."""

from .app import build_demo, create_context, launch_options, public_mode, reserve_cores, warm_up

__all__ = ["build_demo", "create_context", "launch_options", "public_mode", "reserve_cores", "warm_up"]
