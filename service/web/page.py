"""The page at `/` that lets a person try both models in a browser: draw a digit, forecast a series.

It is static: `index.html` and its scripts and styles in `static/`, served under `/page/assets/`,
nothing from another host. The page calls the same API as every other client (`GET /models` for the
models a person may choose, `POST /predict/digit`, `POST /forecast`), with the API key a person enters
in it, so the page itself needs no key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS = "/page/assets"
# Everything the page loads or calls comes from the service itself; a browser refuses anything else.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def install_page(app: FastAPI) -> None:
    """Serve the page at `/` and its scripts and styles under `/page/assets/`."""
    app.mount(ASSETS, StaticFiles(directory=STATIC_DIR), name="page-assets")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
        )
