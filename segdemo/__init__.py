"""segdemo: learn, try and annotate U-Net-family image segmentation.

The package is layered so that imports only point down:
``ui -> engine, inference -> models, data, losses, metrics, checkpoints``.
Only :mod:`segdemo.ui` imports gradio.
"""

__version__ = "0.1.0"
