"""The web page at ``GET /``: paste a text, see the verdict, the score and each segment highlighted by its score.

Three static files shipped inside the package (``static/``): the HTML, its script and its style sheet, served as
they are (no build step, nothing fetched from anywhere else). They are answered without the API key (they hold
nothing secret, like the health probes); the page's own calls to ``POST /v1/explain`` carry the key a person
types into it, which the page keeps in the tab's ``sessionStorage`` only. The script writes the pasted text into
the page with ``textContent``, never as HTML, and the Content-Security-Policy allows scripts, styles and requests
to this origin only, so text that did get into the page as markup could still not run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import FastAPI, Response

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
}
PAGE_PATHS = tuple(_FILES)


def _route(content: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def serve() -> Response:
        return Response(content, media_type=media_type, headers=PAGE_HEADERS)

    return serve


def add_page_routes(app: FastAPI) -> None:
    """Serve the page's files at :data:`PAGE_PATHS` (read once, here; left out of the OpenAPI schema)."""
    static = resources.files("aidetect_infer.serve") / "static"
    for path, (name, media_type) in _FILES.items():
        app.add_api_route(
            path, _route((static / name).read_bytes(), media_type), methods=["GET"], include_in_schema=False
        )
