"""/api/docs/: an interactive API reference (Swagger UI) of /api/schema/, from assets shipped
in a PyPI package (swagger-ui-py), so the page makes no request to any other host.

swagger-ui-py's own Falcon integration does run on ``falcon.asgi.App``, but it serves a copy
of the document (with a Swagger 2 ``host`` key added) under its own prefix, a Jinja page
without ``validatorUrl: null`` (so the page would fetch a badge from the public validator),
and its bundle with ``Content-Disposition: attachment`` and no caching headers. We use only
its files: the page and its initializer are ours, and the assets come from a fixed list of
names, so no part of a request path ever reaches the file system.

Served as one sink (``add_sink``), not routes: the page and its assets are not operations
of the API, and the OpenAPI document does not list them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import falcon
from falcon.asgi import Request, Response

DISTRIBUTION = "swagger-ui-py"
PREFIX = "/api/docs"
# the sink's prefix: /api/docs, /api/docs/ and anything under it, never /api/docsxyz
PATTERN = re.compile(r"/api/docs(?:/(?P<rest>.*))?\Z", re.DOTALL)

JS = "text/javascript; charset=utf-8"
# the assets the page loads: name in the package's static/ -> Content-Type
ASSETS = {
    "swagger-ui-bundle.js": JS,
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
    "LICENSE": "text/plain; charset=utf-8",
}
ALLOW = "GET, HEAD, OPTIONS"
PAGE_CACHE = "no-cache"  # revalidate: the page names the assets of the version installed
ASSET_CACHE = "public, max-age=31536000, immutable"  # their URLs carry the package version
# the page loads nothing from elsewhere; a request to any other host is refused by the browser
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

INIT_JS = b"""window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("../schema/?format=json", window.location.href).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayRequestDuration: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""

PAGE_CSS = b"""html { box-sizing: border-box; overflow-y: scroll; }
*, *:before, *:after { box-sizing: inherit; }
body { margin: 0; background: #fafafa; }
"""


def _page(assets: str) -> bytes:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>usage-ingest API reference</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="stylesheet" href="{assets}/page.css">
<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="{assets}/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js" charset="utf-8"></script>
<script src="{assets}/init.js" charset="utf-8"></script>
</body>
</html>
""".encode()


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]  # Falcon quotes it


class Docs:
    """The sink: GET (and HEAD) the page at /api/docs/ and its assets at
    /api/docs/assets/<swagger-ui-py version>/<name>; /api/docs redirects to /api/docs/."""

    def __init__(self) -> None:
        dist = metadata.distribution(DISTRIBUTION)
        self.version = dist.version
        self.static = Path(str(dist.locate_file("swagger_ui/static")))
        self.assets = f"assets/{self.version}"  # relative to /api/docs/: works under a proxy prefix
        page = _page(self.assets)
        # our own files, and the package's ones once read: name -> (bytes, Content-Type, ETag)
        self.files: dict[str, tuple[bytes, str, str]] = {
            "init.js": (INIT_JS, JS, _etag(INIT_JS)),
            "page.css": (PAGE_CSS, ASSETS["swagger-ui.css"], _etag(PAGE_CSS)),
        }
        self.page = (page, "text/html; charset=utf-8", _etag(page))

    async def __call__(self, req: Request, resp: Response | None, ws: Any = None, **groups: Any) -> None:
        if resp is None:  # a WebSocket (``ws``: Falcon's sink convention): Falcon closes it
            return
        rest: str | None = groups.get("rest")
        if req.method == "OPTIONS":
            resp.status = 200
            resp.set_header("Allow", ALLOW)
            resp.data = b""
            return
        if req.method not in ("GET", "HEAD"):
            raise falcon.HTTPMethodNotAllowed(ALLOW.split(", "))
        if rest is None:  # /api/docs: the page's relative links need the slash
            raise falcon.HTTPMovedPermanently(f"{PREFIX}/")
        if rest == "":
            self._send(req, resp, self.page, PAGE_CACHE)
            resp.set_header("Content-Security-Policy", CSP)
            return
        head, _, tail = rest.partition("/")
        version, _, name = tail.partition("/")
        found = await self._asset(name) if head == "assets" and version == self.version else None
        if found is None:
            raise falcon.HTTPNotFound()
        self._send(req, resp, found, ASSET_CACHE)

    async def _asset(self, name: str) -> tuple[bytes, str, str] | None:
        if name in self.files:
            return self.files[name]
        if name not in ASSETS:  # a fixed list: nothing of the request reaches the file system
            return None
        data = await asyncio.to_thread((self.static / name).read_bytes)  # once: two reads are harmless
        self.files[name] = (data, ASSETS[name], _etag(data))
        return self.files[name]

    @staticmethod
    def _send(req: Request, resp: Response, found: tuple[bytes, str, str], cache: str) -> None:
        data, content_type, etag = found
        resp.set_header("Cache-Control", cache)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.etag = etag
        if any(tag in (etag, "*") for tag in req.if_none_match or ()):
            resp.status = 304
            return
        resp.content_type = content_type
        resp.data = data
