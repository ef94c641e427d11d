"""The page at `/` and the API docs at `/docs` in a real headless Chromium (Debian's, driven by
Playwright), against `python -m service` on 127.0.0.1.

Digits are drawn with the mouse (and a finger, through Chromium's touch input) and must be read back
as the digit drawn; the default forecast must be plotted and listed with the numbers `POST /forecast`
gives for the same series; errors must show as messages; nothing may be fetched from another host.
Screenshots go to reports/browser/ (git-ignored), to be looked at.
"""

from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families
from serving import REPO_ROOT, start_service

CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium keeps trying to reach the internet. Playwright adds --headless
# and a fresh --user-data-dir for every launch itself (and refuses one given here).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = REPO_ROOT / "reports" / "browser"
CANVAS_SIDE = 280  # the digit canvas's own pixels (index.html)
Stroke = list[tuple[float, float]]


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, points: int = 16) -> Stroke:
    """Points along an ellipse's arc from `start` to `end` degrees (clockwise on screen)."""
    angles = [math.radians(start + (end - start) * i / points) for i in range(points + 1)]
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


# Each digit as strokes in canvas pixels, drawn the way a person would draw it.
DIGITS: dict[int, list[Stroke]] = {
    0: [arc(140, 140, 55, 85, -90, 270, 24)],
    1: [[(140, 50), (140, 230)]],
    2: [[*arc(140, 100, 50, 45, 200, 380, 12), (90, 225), (200, 225)]],
    3: [arc(135, 95, 50, 42, 210, 450, 12) + arc(135, 180, 55, 45, 270, 510, 12)[1:]],
    4: [[(170, 230), (170, 50), (80, 170), (210, 170)]],
    5: [[(200, 55), (100, 55), (95, 130), *arc(140, 170, 55, 55, 225, 495, 14)]],
    6: [[(180, 50), (110, 140), *arc(140, 180, 45, 45, 200, 560)]],
    7: [[(80, 60), (200, 60), (120, 230)]],
    8: [arc(140, 90, 40, 38, 90, 450) + arc(140, 180, 50, 48, -90, 270)],
    9: [[*arc(140, 100, 45, 42, 0, 360), (185, 100), (180, 230)]],
}


@dataclass
class Visit:
    """A page in its own browser context, with every request it made and every error it logged."""

    page: Page
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def foreign_requests(self, server_url: str) -> list[str]:
        """Requests that went anywhere but the server (data: URLs fetch nothing and are left out)."""
        host = urlsplit(server_url).netloc
        urls = [request.url for request in self.requests if not request.url.startswith("data:")]
        return [url for url in urls if urlsplit(url).netloc != host]

    def record_request(self, request: Request) -> None:
        self.requests.append(request)

    def record_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def api_calls(self, path: str) -> list[Request]:
        return [request for request in self.requests if urlsplit(request.url).path == path]

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / name, full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium. Install it with "
            "`apt-get install chromium` (`make browser-tools` does); no browser is downloaded."
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, process = start_service(models_dir, tmp_path_factory.mktemp("page") / "server.log")
    yield url
    stop(process)


@pytest.fixture
def visit(browser: Browser) -> Iterator[Callable[..., Visit]]:
    """`visit(url, **context_options)`: open `url` in a fresh browser context, recording as it loads."""
    contexts = []

    def open_page(url: str, **context_options: Any) -> Visit:
        context = browser.new_context(**{"viewport": {"width": 1200, "height": 900}, **context_options})
        context.set_default_timeout(60_000)
        contexts.append(context)
        page = context.new_page()
        visit = Visit(page)
        page.on("request", visit.record_request)
        page.on("console", visit.record_console)
        page.on("pageerror", lambda error: visit.errors.append(f"uncaught: {error}"))
        page.goto(url)
        page.wait_for_load_state("networkidle")
        return visit

    yield open_page
    for context in contexts:
        context.close()


def draw(page: Page, strokes: list[Stroke]) -> None:
    """Draw `strokes` (canvas pixels) on the digit canvas with the mouse."""
    box = page.locator("#digit-canvas").bounding_box()
    assert box is not None
    scale = box["width"] / CANVAS_SIDE
    for stroke in strokes:
        (x, y), rest = stroke[0], stroke[1:]
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=8)
        page.mouse.up()


def draw_by_touch(page: Page, stroke: Stroke) -> None:
    """Draw one stroke with a finger: touch events through Chromium's own input pipeline (CDP)."""
    box = page.locator("#digit-canvas").bounding_box()
    assert box is not None
    scale = box["width"] / CANVAS_SIDE
    cdp = page.context.new_cdp_session(page)
    points = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in stroke]
    path = [points[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        path += [(x0 + (x1 - x0) * i / 12, y0 + (y1 - y0) * i / 12) for i in range(1, 13)]
    for kind, (x, y) in [("touchStart", path[0])] + [("touchMove", p) for p in path[1:]]:
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def wait_for_state(page: Page, panel: str, *states: str) -> str:
    """Wait until the panel (`digit`, `forecast`) is in one of `states`; the state it is in."""
    page.wait_for_function(
        "([panel, states]) => states.includes(document.getElementById(panel).dataset.state)",
        arg=[panel, list(states)],
    )
    return str(page.locator(f"#{panel}").get_attribute("data-state"))


def shown_probabilities(page: Page) -> list[float]:
    values = page.locator("#digit-bars li").evaluate_all("rows => rows.map(r => r.dataset.probability)")
    return [float(value) for value in values]


def error_text(page: Page, panel: str) -> str:
    return page.locator(f"#{panel}-error").inner_text().strip()


def test_the_page_comes_from_the_server_alone_and_reads_drawn_digits(
    server: str, visit: Callable[..., Visit]
) -> None:
    seen = visit(f"{server}/")
    page = seen.page
    assert page.title() == "rnnserve: try the models"
    assert page.locator("#digit-hint").is_visible() and page.locator("#digit-result").inner_text() == "–"
    misread = {}
    for digit, strokes in DIGITS.items():
        page.click("#digit-clear")
        draw(page, strokes)
        assert wait_for_state(page, "digit", "shown", "error") == "shown", error_text(page, "digit")
        read = int(page.locator("#digit-result").inner_text())
        probabilities = shown_probabilities(page)
        assert len(probabilities) == 10 and sum(probabilities) == pytest.approx(1.0, abs=1e-3)
        assert probabilities.index(max(probabilities)) == read
        assert page.locator("#digit-bars li.top").get_attribute("data-digit") == str(read)
        if read != digit:
            misread[digit] = read
    assert not misread, f"digits drawn -> read: {misread}"

    # What the page sent: 28×28 raw values, the digit in a 20×20 box centred by mass, as in MNIST.
    sent = np.array(json.loads(seen.api_calls("/predict/digit")[-1].post_data or "")["pixels"], dtype=float)
    assert sent.shape == (28, 28) and sent.min() == 0 and sent.max() == 255
    rows, columns = np.flatnonzero(sent.any(axis=1)), np.flatnonzero(sent.any(axis=0))
    assert max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1 == 20
    ys, xs = np.indices(sent.shape)
    centre = ((ys * sent).sum() / sent.sum(), (xs * sent).sum() / sent.sum())
    assert centre == pytest.approx((14, 14), abs=0.5)
    # The bars are as long as the probabilities say.
    widths = page.locator("#digit-bars .fill").evaluate_all(
        "fills => fills.map(f => f.offsetWidth / f.parentElement.offsetWidth)"
    )
    assert widths == pytest.approx(shown_probabilities(page), abs=0.01)

    page.click("#digit-clear")
    assert page.locator("#digit-result").inner_text() == "–" and page.locator("#digit-hint").is_visible()
    assert seen.foreign_requests(server) == []
    assert seen.errors == []


def plot_colours(page: Page) -> dict[str, float]:
    """What the forecast plot's pixels show: how many are orange (the forecast mean and its bands), of
    the 80 % band's own colour (over the 95 % band, over white) and of the dark history line, and where
    the leftmost orange one is (a fraction of the width)."""
    counts = page.locator("#forecast-plot").evaluate(
        """canvas => {
            const {width, height} = canvas;
            const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
            const near = (i, colour) => colour.every((value, k) => Math.abs(data[i + k] - value) < 12);
            const counts = {orange: 0, band80: 0, history: 0, orangeFrom: 1};
            for (let i = 0; i < data.length; i += 4) {
                if (data[i] - data[i + 2] > 60 && data[i] > 150) {
                    counts.orange += 1;
                    counts.orangeFrom = Math.min(counts.orangeFrom, ((i / 4) % width) / width);
                }
                if (near(i, [243, 161, 119])) counts.band80 += 1;
                if (near(i, [31, 41, 55])) counts.history += 1;
            }
            return counts;
        }"""
    )
    return {name: float(count) for name, count in counts.items()}


def test_the_default_forecast_is_plotted_with_the_numbers_the_api_gives(
    server: str, visit: Callable[..., Visit]
) -> None:
    seen = visit(f"{server}/")
    page = seen.page
    assert page.locator("#forecast-plot").get_attribute("data-drawn") == "history"
    before = plot_colours(page)
    assert before["history"] > 200 and before["orange"] == 0  # the series alone, before any forecast

    page.click("#forecast-run")
    assert wait_for_state(page, "forecast", "shown", "error") == "shown", error_text(page, "forecast")
    shown = json.loads(page.locator("#forecast").get_attribute("data-response") or "")
    series = [float(v) for v in page.locator("#series").input_value().replace(",", " ").split()]
    assert len(series) == 200 and series[0] == 0
    assert series == pytest.approx([math.sin(3 * x) + x for x in np.linspace(0, 20, 200)], abs=1e-4)
    request = {"series": series, "horizon": 48, "levels": [80, 95]}
    (call,) = seen.api_calls("/forecast")
    assert json.loads(call.post_data or "") == request
    direct = httpx.post(f"{server}/forecast", json=request, timeout=30).json()
    assert len(shown["forecast"]) == 48
    assert shown["forecast"] == pytest.approx(direct["forecast"], abs=1e-6)
    for level in ("80", "95"):
        for side in ("lower", "upper"):
            assert shown["intervals"][level][side] == pytest.approx(
                direct["intervals"][level][side], abs=1e-6
            )

    page.click("#forecast-values summary")
    rows = page.locator("#forecast-table tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    expected = [
        [str(200 + i), *(f"{value:.4f}" for value in values)]
        for i, values in enumerate(
            zip(
                direct["forecast"],
                direct["intervals"]["80"]["lower"],
                direct["intervals"]["80"]["upper"],
                direct["intervals"]["95"]["lower"],
                direct["intervals"]["95"]["upper"],
                strict=True,
            )
        )
    ]
    assert [row[0] for row in rows] == [row[0] for row in expected]
    assert np.allclose(np.array([row[1:] for row in rows], float), np.array([r[1:] for r in expected], float))
    assert page.locator("#forecast-plot").get_attribute("data-drawn") == "forecast"
    after = plot_colours(page)
    # The forecast is drawn, right of the history (the last 48 of 248 steps); its bands may be thinner
    # than a pixel at this scale, for a series the model knows well.
    assert after["orange"] > 100 and after["history"] > 200, after
    assert after["orangeFrom"] > 0.7, after

    draw(page, DIGITS[3])
    wait_for_state(page, "digit", "shown")
    page.click("#forecast-values summary")  # closed again, for the picture
    seen.screenshot("page-desktop.png")
    page.check("#forecast-zoom")  # the forecast and the 24 values before it fill the plot
    zoomed = plot_colours(page)
    assert zoomed["orange"] > after["orange"] and zoomed["orangeFrom"] < after["orangeFrom"], zoomed
    # A noisy series gets bands wide enough to see: the 80 % band is drawn in its own colour.
    noise = np.random.default_rng(0).normal(0, 0.3, 200)
    noisy = [round(math.sin(3 * x) + x + e, 4) for x, e in zip(np.linspace(0, 20, 200), noise, strict=True)]
    page.fill("#series", ", ".join(map(str, noisy)))
    with page.expect_response(lambda r: r.url.endswith("/forecast")) as answered:
        page.click("#forecast-run")
    assert answered.value.status == 200
    expect(page.locator("#forecast")).to_have_attribute("data-state", "shown")
    expect(page.locator("#forecast-plot")).to_have_attribute("data-drawn", "forecast")
    assert plot_colours(page)["band80"] > 10
    seen.screenshot("page-desktop-zoomed.png")
    assert seen.foreign_requests(server) == []
    assert seen.errors == []


def test_a_finger_draws_and_the_page_fits_a_phone(server: str, visit: Callable[..., Visit]) -> None:
    seen = visit(
        f"{server}/",
        viewport={"width": 390, "height": 844},
        has_touch=True,
        is_mobile=True,
        device_scale_factor=2,
    )
    page = seen.page
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
    draw_by_touch(page, DIGITS[1][0])
    assert wait_for_state(page, "digit", "shown", "error") == "shown", error_text(page, "digit")
    assert page.locator("#digit-result").inner_text() == "1"
    page.click("#forecast-run")
    wait_for_state(page, "forecast", "shown")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    seen.screenshot("page-phone.png")
    assert seen.foreign_requests(server) == []
    assert seen.errors == []


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
        page.click("#forecast-run")
        assert wait_for_state(page, "forecast", "shown", "error") == "error"
        assert "needs an API key" in error_text(page, "forecast")
        seen.screenshot("page-api-key.png")

        page.fill("#api-key", "wrong")
        page.click("#key-form button")
        expect(page.locator("#digit-error")).to_contain_text("refused")
        assert wait_for_state(page, "digit", "error") == "error"

        page.fill("#api-key", "k1")
        page.click("#key-form button")  # the drawing and the refused forecast are sent again
        assert wait_for_state(page, "digit", "shown", "error") == "shown", error_text(page, "digit")
        assert page.locator("#digit-result").inner_text() == "1"
        assert wait_for_state(page, "forecast", "shown", "error") == "shown", error_text(page, "forecast")
        assert seen.api_calls("/forecast")[-1].headers["authorization"] == "Bearer k1"

        page.reload()
        assert page.locator("#api-key").input_value() == "k1"  # kept in this browser
        page.click("#forecast-run")
        assert wait_for_state(page, "forecast", "shown", "error") == "shown", error_text(page, "forecast")
        assert seen.foreign_requests(url) == []
    finally:
        stop(process)


def queue_depth(url: str, model: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "rnnserve_queue_depth" and sample.labels.get("model") == model:
                return float(sample.value)
    return 0.0


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
            if queue_depth(url, "sine_gru") >= 1:
                break
            time.sleep(0.05)
        assert queue_depth(url, "sine_gru") == 1
        page.click("#forecast-run")
        assert wait_for_state(page, "forecast", "shown", "error") == "error"
        message = error_text(page, "forecast")
        assert message.startswith("The service is busy: retry in 1 s") and "sine_gru" in message, message
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


def test_the_api_docs_render_in_chromium_from_the_server_alone(
    server: str, visit: Callable[..., Visit]
) -> None:
    seen = visit(f"{server}/docs")
    page = seen.page
    page.wait_for_selector(".opblock-summary, .version-pragma")  # the operations, or Swagger UI's refusal
    seen.screenshot("docs.png")
    refusal = page.locator(".version-pragma")
    if refusal.count():
        openapi = httpx.get(f"{server}/openapi.json", timeout=30).json()["openapi"]
        pytest.fail(
            f"Swagger UI at /docs cannot render the schema (OpenAPI {openapi}): "
            f"{' '.join(refusal.inner_text().split())} Serve a Swagger UI that reads OpenAPI {openapi} "
            "(3.1 needs swagger-ui 5 or newer)."
        )
    operations = page.locator(".opblock-summary").evaluate_all(
        "blocks => blocks.map(b => [b.querySelector('.opblock-summary-method').textContent,"
        " b.querySelector('.opblock-summary-path').textContent.replace(/\\u200b/g, '')])"
    )
    assert ["POST", "/predict/digit"] in operations and ["POST", "/forecast"] in operations, operations
    assert ["GET", "/health/ready"] in operations
    assert not [path for _, path in operations if path == "/" or path.startswith("/page")]
    assert seen.foreign_requests(server) == []
    assert seen.errors == []
