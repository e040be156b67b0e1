"""Which workspace a request belongs to, in public mode.

- A **browser** keeps its workspace key in ``localStorage`` (a ``gr.BrowserState``, encrypted with
  a secret the app keeps across restarts), so a reload or a restart of the app finds the same
  workspace; the page's load event tells the server which key its session uses.
- An **API client** (``gradio_client.Client``) sends its key in the ``x-segdemo-workspace`` header
  (``Client(url, headers={"x-segdemo-workspace": KEY})``); without one, each client session is a
  visitor of its own, with a workspace derived from its session that nobody else can name.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict

from ..workspaces import check_key

HEADER = "x-segdemo-workspace"
STORAGE_KEY = "segdemo-workspace"
SESSIONS_KEPT = 20_000


class Visitors:
    """Session → workspace key, for the sessions whose page said which key it holds."""

    def __init__(self, secret: str):
        self._secret = secret.encode()
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, str] = OrderedDict()

    def remember(self, session: str, key: str) -> None:
        check_key(key)
        with self._lock:
            self._sessions[session] = key
            self._sessions.move_to_end(session)
            while len(self._sessions) > SESSIONS_KEPT:
                self._sessions.popitem(last=False)

    def key_for(self, request) -> str:
        """The workspace key of ``request``: its header, else its page's key, else one derived from
        its session (an HMAC with the app's secret: a session id alone does not give it away)."""
        header = (request.headers or {}).get(HEADER) if request is not None else None
        if header:
            return check_key(header.strip())
        session = getattr(request, "session_hash", None) or "no-session"
        with self._lock:
            if session in self._sessions:
                return self._sessions[session]
        return hmac.new(self._secret, session.encode(), hashlib.sha256).hexdigest()[:32]
