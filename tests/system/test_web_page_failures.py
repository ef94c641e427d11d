"""The page at `/` in a real headless Chromium when things go wrong: input the service refuses, a service
that asks for an API key (the models cannot even be listed without it), a busy service and a lost one.
Each must show as a message that says what to do. Screenshots go to reports/browser/ (git-ignored).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from browsing import DIGITS, Visit, draw, error_text, queue_depth, stop, wait_for_state
from playwright.sync_api import expect
from serving import start_service


def test_input_errors_show_as_messages(server: str, visit: Callable[..., Visit]) -> None:
    seen = visit(f"{server}/")
    page = seen.page
    too_short = {"series": [1.0, 2.0, 3.0], "horizon": 48, "levels": [80, 95]}
    page.fill("#series", "1, 2, 3")
    page.click("#forecast-run")
    assert wait_for_state(page, "forecast", "shown", "error") == "error"
    service_says = httpx.post(f"{server}/forecast", json=too_short, timeout=30).json()["detail"]
    assert "16 to 4096" in service_says
    assert error_text(page, "forecast") == service_says
    assert page.locator("#forecast").get_attribute("data-response") is None

    page.click("#series-example")
    page.fill("#horizon", "500")
    page.click("#forecast-run")
    wait_for_state(page, "forecast", "error")
    assert error_text(page, "forecast").startswith("horizon") and "128" in error_text(page, "forecast")

    seen.screenshot("page-input-error.png")
    page.fill("#horizon", "48")
    page.fill("#series", "1, 2, 3, four, 5")
    calls_before = page.evaluate("performance.getEntriesByType('resource').length")
    page.click("#forecast-run")
    wait_for_state(page, "forecast", "error")
    assert "“four”" in error_text(page, "forecast") and "not a number" in error_text(page, "forecast")
    assert page.evaluate("performance.getEntriesByType('resource').length") == calls_before  # not sent

    page.click("#series-example")
    page.click("#forecast-run")
    wait_for_state(page, "forecast", "shown")
    assert page.locator("#forecast-error").is_hidden()


def test_the_page_asks_for_the_api_key_until_it_is_entered(
    models_dir: Path, tmp_path: Path, visit: Callable[..., Visit]
) -> None:
    url, process = start_service(models_dir, tmp_path / "server.log", api_keys="k1")
    try:
        seen = visit(f"{url}/")  # the page and its assets need no key
        page = seen.page
        assert page.locator("#digit-canvas").is_visible()
        draw(page, DIGITS[1])
        assert wait_for_state(page, "digit", "shown", "error") == "error"
        assert "needs an API key" in error_text(page, "digit")
        # Without the key the models cannot be listed: the page sends no model, the default answers.
        choice = page.locator("#digit-model-choice")
        expect(choice).to_have_attribute("data-state", "unlisted")
        expect(page.locator("#digit-model-note")).to_contain_text("needs an API key")
        assert page.locator("#digit-model").is_disabled()
        assert "model" not in json.loads(seen.api_calls("/predict/digit")[-1].post_data or "")
        page.click("#forecast-run")
        assert wait_for_state(page, "forecast", "shown", "error") == "error"
        assert "needs an API key" in error_text(page, "forecast")
        seen.screenshot("page-api-key.png")

        page.fill("#api-key", "wrong")
        page.click("#key-form button")
        expect(page.locator("#digit-error")).to_contain_text("refused")
        assert wait_for_state(page, "digit", "error") == "error"

        page.fill("#api-key", "k1")
        # The drawing and the refused forecast are sent again; until then the panel still shows the
        # refusal of the wrong key, so wait for the new answer before reading the state.
        keyed = "Bearer k1"
        with page.expect_response(
            lambda r: r.url.endswith("/predict/digit") and r.request.headers.get("authorization") == keyed
        ):
            page.click("#key-form button")
        assert wait_for_state(page, "digit", "shown", "error") == "shown", error_text(page, "digit")
        assert page.locator("#digit-result").inner_text() == "1"
        assert wait_for_state(page, "forecast", "shown", "error") == "shown", error_text(page, "forecast")
        assert seen.api_calls("/forecast")[-1].headers["authorization"] == "Bearer k1"
        expect(choice).to_have_attribute("data-state", "listed")  # listed again, with the key
        assert seen.api_calls("/models")[-1].headers["authorization"] == "Bearer k1"
        assert json.loads(seen.api_calls("/predict/digit")[-1].post_data or "")["model"] == "digit_lstm"

        page.reload()
        assert page.locator("#api-key").input_value() == "k1"  # kept in this browser
        page.click("#forecast-run")
        assert wait_for_state(page, "forecast", "shown", "error") == "shown", error_text(page, "forecast")
        assert seen.foreign_requests(url) == []
    finally:
        stop(process)


def test_overload_and_a_lost_server_show_as_messages(
    models_dir: Path, tmp_path: Path, visit: Callable[..., Visit]
) -> None:
    # One input may wait, and it waits 5 s for a batch to fill: a second one is refused with 429.
    url, process = start_service(
        models_dir, tmp_path / "server.log",
        workers="1", max_queue_size="1", max_inputs_per_request="1", max_delay_ms="5000",
    )  # fmt: skip
    try:
        seen = visit(f"{url}/")
        page = seen.page
        held: list[int] = []
        body = {"series": list(range(16)), "horizon": 1}
        holder = threading.Thread(
            target=lambda: held.append(httpx.post(f"{url}/forecast", json=body, timeout=60).status_code)
        )
        holder.start()
        for _ in range(200):  # until the held request waits in the queue
            if queue_depth(url, "series_gru") >= 1:
                break
            time.sleep(0.05)
        assert queue_depth(url, "series_gru") == 1
        page.click("#forecast-run")
        assert wait_for_state(page, "forecast", "shown", "error") == "error"
        message = error_text(page, "forecast")
        assert message.startswith("The service is busy: retry in 1 s") and "series_gru" in message, message
        seen.screenshot("page-busy.png")
        holder.join(timeout=60)
        assert held == [200]
    finally:
        stop(process)

    page.click("#forecast-run")
    assert wait_for_state(page, "forecast", "shown", "error") == "error"
    assert error_text(page, "forecast").startswith(f"Could not reach the service at {url}")
    draw(page, DIGITS[7])
    assert wait_for_state(page, "digit", "shown", "error") == "error"
    assert error_text(page, "digit").startswith("Could not reach the service")
