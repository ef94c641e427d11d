"""/docs works without internet: every script, style and icon it loads is served by the app."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import ServeApp


async def test_the_docs_page_loads_only_assets_the_app_serves(serve: ServeApp) -> None:
    async with serve(api_keys="secret") as (_, client):  # the docs stay open when keys are required
        page = await client.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        loaded = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        loaded += re.findall(r"""url: ?["']([^"']+)["']""", page.text)
        assert "/openapi.json" in loaded
        assert not [url for url in loaded if "://" in url or url.startswith("//")], loaded
        for asset in [url for url in loaded if url.startswith("/docs/assets/")]:
            answer = await client.get(asset)
            assert answer.status_code == 200 and len(answer.content) > 500, asset
        script = await client.get("/docs/assets/swagger-ui-bundle.js")
        assert "javascript" in script.headers["content-type"] and b"SwaggerUIBundle" in script.content
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/docs/oauth2-redirect")).status_code == 200
    async with serve() as (_, client):
        assert (await client.get("/redoc")).status_code == 404  # not served: /docs covers it
