"""segdemo's app: ``python app.py`` serves it on http://127.0.0.1:7860 (also a Hugging Face Space).

Options: ``--data-dir PATH`` (or SEGDEMO_DATA_DIR) for saved models and annotations,
``--workspaces`` (or SEGDEMO_WORKSPACES=1; on by itself on a Space) for a private workspace per
visitor and a training queue, ``--host``, ``--port``. ``SEGDEMO_LOG_LEVEL=DEBUG`` (or INFO) shows
segdemo's own log on standard error, ``/segment``'s time per phase among it.
"""

import argparse
import logging
import os
from pathlib import Path

# No usage analytics unless asked for: the app must work offline, and gradio's version check
# and telemetry cost about 0.3 s of start.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from segdemo.ui import build_demo, create_context, launch_options, public_mode, reserve_cores, warm_up  # noqa: E402  (after the setting above)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="segdemo: learn, try and annotate image segmentation")
    parser.add_argument("--data-dir", default=os.environ.get("SEGDEMO_DATA_DIR"),
                        help="folder for uploaded/trained models and annotations (default .segdemo)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--workspaces", action="store_true",
                        help="a private workspace per visitor and a training queue (on by itself on a Space)")
    args, _ = parser.parse_known_args(argv)
    return args


_args = parse_args()
demo = build_demo(create_context(_args.data_dir, shipped_dir=Path(__file__).resolve().parent / "checkpoints",
                                 public=public_mode(_args.workspaces)))

if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("segdemo").setLevel(os.environ.get("SEGDEMO_LOG_LEVEL", "WARNING").upper())
    print(reserve_cores(demo.segdemo_context), flush=True)
    # Serve the page first (nothing so far has imported torch; the server runs in its own
    # threads), then load torch and the default model while the first visitor reads it.
    demo.launch(server_name=_args.host, server_port=_args.port, prevent_thread_lock=True, **launch_options())
    warm_up(demo.segdemo_context)
    demo.block_thread()
