"""optuna-dashboard on a study file, served in-process for a test (``served_dashboard``)."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on the test's output."""


@contextmanager
def served_dashboard(storage: str) -> Iterator[str]:
    """Serve the current optuna-dashboard's app on ``storage`` (a URL, as its command line
    takes) on a free local port; yield its base URL. The server ends on leaving, even on
    failure."""
    from optuna_dashboard import wsgi

    server = make_server("127.0.0.1", 0, wsgi(storage), handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def get_json(url: str) -> Any:
    """GET ``url``: its JSON body (an HTTP error raises)."""
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def dashboard_trials(storage: str, study_name: str) -> list[dict[str, Any]]:
    """The trials of ``study_name`` as the dashboard's HTTP API lists them."""
    with served_dashboard(storage) as base:
        studies = get_json(f"{base}/api/studies")["study_summaries"]
        (study,) = [s for s in studies if s["study_name"] == study_name]
        return list(get_json(f"{base}/api/studies/{study['study_id']}")["trials"])
