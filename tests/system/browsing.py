"""Helpers for the browser tests of the page at `/` (test_web_page.py): Debian's Chromium, a visit that
records what the page fetched and logged, digits drawn as a person draws them, and the forecast plot's
pixels read back by colour."""

from __future__ import annotations

import itertools
import math
import signal
import subprocess
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import ConsoleMessage, Page, Request
from prometheus_client.parser import text_string_to_metric_families
from serving import REPO_ROOT

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


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


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


def queue_depth(url: str, model: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "rnnserve_queue_depth" and sample.labels.get("model") == model:
                return float(sample.value)
    return 0.0


RGB = tuple[int, int, int]
PLOT_PARTS = ("background", "history", "mean", "band80", "band95")
FORECAST_PARTS = ("mean", "band80", "band95")


@dataclass
class PlotPixels:
    """The forecast plot's colours (its `--plot-*` CSS properties, as the canvas paints them), how many
    of its pixels show each, and where the leftmost pixel of the forecast is (a fraction of the width;
    1 when none is drawn)."""

    palette: dict[str, RGB]
    counts: dict[str, int]
    forecast_from: float

    @property
    def forecast(self) -> int:
        return sum(self.counts[part] for part in FORECAST_PARTS)


def plot_pixels(page: Page) -> PlotPixels:
    found = page.locator("#forecast-plot").evaluate(
        """(canvas, parts) => {
            const style = getComputedStyle(canvas);
            const probe = document.createElement("canvas").getContext("2d", {willReadFrequently: true});
            const declared = {}, palette = {};
            for (const part of parts) {
                declared[part] = style.getPropertyValue(`--plot-${part}`).trim();
                probe.clearRect(0, 0, 1, 1);
                probe.fillStyle = declared[part];
                probe.fillRect(0, 0, 1, 1);
                palette[part] = [...probe.getImageData(0, 0, 1, 1).data.slice(0, 3)];
            }
            const {width, height} = canvas;
            const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
            const counts = Object.fromEntries(parts.map((part) => [part, 0]));
            let forecastFrom = 1;
            for (let i = 0; i < data.length; i += 4) {
                const part = parts.find((p) => palette[p].every((v, k) => Math.abs(data[i + k] - v) < 12));
                if (part === undefined) continue;
                counts[part] += 1;
                if (part === "mean" || part.startsWith("band")) {
                    forecastFrom = Math.min(forecastFrom, ((i / 4) % width) / width);
                }
            }
            return {declared, palette, counts, forecastFrom};
        }""",
        list(PLOT_PARTS),
    )
    missing = [part for part, value in found["declared"].items() if not value]
    assert not missing, f"page.css declares no --plot-* colour for {missing}"
    palette = {part: (int(r), int(g), int(b)) for part, (r, g, b) in found["palette"].items()}
    return PlotPixels(palette, {k: int(v) for k, v in found["counts"].items()}, float(found["forecastFrom"]))


def relative_luminance(colour: RGB) -> float:
    linear = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in colour]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: RGB, second: RGB) -> float:
    """The WCAG contrast ratio of two colours, 1 (the same) to 21 (black on white)."""
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)
