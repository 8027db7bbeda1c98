"""A forged cross-site POST in a real browser: a page on another origin, opened by a logged-in
administrator, submits a form to the UI and fires a fetch at the API. Both are refused and
nothing changes."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pvc.cluster import faults
from pvc.core.zk import ZK
from pvc.lab.zkserver import free_port
from tests.conftest import Api
from tests.ui.conftest import UI


@pytest.fixture
def evil_site(api: Api) -> Iterator[str]:
    """A web server on another port of this host, serving the attacker's pages."""
    target = api.base
    pages = {
        "/form": f"""<!doctype html><title>Win a prize</title>
<form id="f" method="post" action="{target}/faults/ack">
<input type="hidden" name="csrf_token" value="guessed-token">
<input type="hidden" name="next" value="/"></form>
<script>document.getElementById('f').submit()</script>""",
        "/fetch": f"""<!doctype html><title>Nothing to see</title>
<script>
fetch("{target}/api/v1/faults", {{method: "PUT", mode: "no-cors", credentials: "include"}})
  .then(() => document.title = "sent").catch(() => document.title = "failed");
</script>""",
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    port = free_port()
    # `localhost` is another site than `127.0.0.1` (the UI's address) for the browser.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{port}"
    server.shutdown()
    server.server_close()


def test_forged_cross_site_posts_are_refused(ui: UI, api: Api, zk: ZK, evil_site: str,
                                             cluster: dict[str, Any]) -> None:
    ui.login()
    with ui.page.expect_navigation(url=f"{api.base}/faults/ack") as navigation:
        ui.page.goto(evil_site + "/form")
    answer = navigation.value
    assert answer is not None and answer.status == 403
    text = ui.page.locator("main").inner_text()
    assert "cross-site request" in text
    ui.shot("forged-post-refused")
    ui.page.goto(evil_site + "/fetch")
    ui.page.wait_for_function("document.title === 'sent' || document.title === 'failed'")
    for fault in faults.load_faults(zk):
        assert fault.status == "new", fault.id
    assert {f["status"] for f in api.get("/faults").json()} == {"new"}
