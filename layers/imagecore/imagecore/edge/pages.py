"""The service's own web pages (the Swagger UI docs and the playground) and the static files they load.

The pages load nothing from outside the service: every script and style sheet is one of the files shipped with
the health function (Swagger UI vendored from npm at a pinned version, see ``vendor.json``), served from
``/v1/assets/<name>``. Each page is sent with a Content-Security-Policy that allows exactly that: scripts,
styles and calls from the API's own origin, images from it and from S3 (the presigned URLs), no frames, no
plugins, no inline script or style. The pages keep no credential anywhere but in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

# Presigned URLs point at S3's regional or global endpoint, virtual-hosted or path style.
S3_IMAGE_SOURCES = ("https://*.amazonaws.com",)
# The file name a page asks for -> (its path under the static folder, its content type).
ASSETS = {
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
    "docs.js": ("docs.js", "text/javascript; charset=utf-8"),
    "playground.js": ("playground.js", "text/javascript; charset=utf-8"),
    "playground-images.js": ("playground-images.js", "text/javascript; charset=utf-8"),
    "playground.css": ("playground.css", "text/css; charset=utf-8"),
    "conversation.js": ("conversation.js", "text/javascript; charset=utf-8"),
}
PAGES = {"docs": "docs.html", "playground": "playground.html"}
HTML = "text/html; charset=utf-8"


def content_security_policy(s3_endpoint_url: str | None = None) -> str:
    """The pages' policy: only this origin, plus S3 for images (the local S3 endpoint when one is set)."""
    images = ["'self'", "data:", "blob:", *S3_IMAGE_SOURCES]
    if s3_endpoint_url:
        parts = urlsplit(s3_endpoint_url)
        images.append(f"{parts.scheme}://{parts.netloc}")
    directives = {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": images,
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def page_headers(s3_endpoint_url: str | None = None) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(s3_endpoint_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
    }


@dataclass(frozen=True)
class StaticFiles:
    """The pages and assets in one folder, read once (the files are a few hundred KB, the bundle 1.7 MB)."""

    folder: Path

    def page(self, name: str) -> str:
        return _read(self.folder / PAGES[name])

    def asset(self, name: str) -> tuple[str, str] | None:
        """(text, content type) of a named asset; None for a name that is not one."""
        entry = ASSETS.get(name)
        if entry is None:
            return None
        path, content_type = entry
        return _read(self.folder / path), content_type


@lru_cache(maxsize=16)
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")
