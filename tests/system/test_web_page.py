"""The page at `/` and the API docs at `/docs` in a real headless Chromium (Debian's, driven by
Playwright), against `python -m service` on 127.0.0.1.

Digits are drawn with the mouse (and a finger, through Chromium's touch input) and must be read back
as the digit drawn, by the model chosen on the page; the default forecast must be plotted, its bands in
colours that stand out in the light and the dark scheme, and listed with the numbers `POST /forecast`
gives for the same series; nothing may be fetched from another host. (When things go wrong:
test_web_page_failures.py; the browser and the server: conftest.py.) Screenshots go to reports/browser/
(git-ignored), to be looked at.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from browsing import (
    DIGITS,
    Visit,
    contrast,
    draw,
    draw_by_touch,
    error_text,
    plot_pixels,
    shown_probabilities,
    stop,
    wait_for_state,
)
from playwright.sync_api import expect
from serving import start_service


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


def test_the_default_forecast_is_plotted_with_the_numbers_the_api_gives(
    server: str, visit: Callable[..., Visit]
) -> None:
    seen = visit(f"{server}/")
    page = seen.page
    assert page.locator("#forecast-plot").get_attribute("data-drawn") == "history"
    before = plot_pixels(page)
    assert before.counts["history"] > 200 and before.forecast == 0, before  # the series alone

    page.click("#forecast-run")
    assert wait_for_state(page, "forecast", "shown", "error") == "shown", error_text(page, "forecast")
    shown = json.loads(page.locator("#forecast").get_attribute("data-response") or "")
    series = [float(v) for v in page.locator("#series").input_value().replace(",", " ").split()]
    # The example: sin(3x) + x plus noise of standard deviation 0.3, for intervals wide enough to see.
    clean = [math.sin(3 * x) + x for x in np.linspace(0, 20, 200)]
    noise = np.array(series) - clean
    assert len(series) == 200 and abs(noise.mean()) < 0.1 and noise.std() == pytest.approx(0.3, abs=0.06)
    # Two forecasters are served, so the page names the one chosen: the service's default.
    request = {"series": series, "horizon": 48, "levels": [80, 95], "model": "series_gru"}
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
    after = plot_pixels(page)
    # The forecast is drawn right of the history (the last 48 of 248 steps), each band a filled area.
    assert after.counts["history"] > 200 and after.forecast_from > 0.7, after
    assert after.counts["band80"] > 500 and after.counts["band95"] > 250, after
    assert page.locator("#forecast-shown").inner_text() == ""  # no note: the bands show

    draw(page, DIGITS[3])
    wait_for_state(page, "digit", "shown")
    page.click("#forecast-values summary")  # closed again, for the picture
    seen.screenshot("page-desktop.png")
    page.check("#forecast-zoom")  # the forecast and the 24 values before it fill the plot
    zoomed = plot_pixels(page)
    assert zoomed.forecast > after.forecast and zoomed.forecast_from < after.forecast_from, zoomed
    seen.screenshot("page-desktop-zoomed.png")
    # A series the model knows well (no noise) gets intervals too thin to see: a note says how thin.
    page.fill("#series", ", ".join(f"{value:.4f}" for value in clean))
    with page.expect_response(lambda r: r.url.endswith("/forecast")) as answered:
        page.click("#forecast-run")
    assert answered.value.status == 200
    expect(page.locator("#forecast")).to_have_attribute("data-state", "shown")
    band = answered.value.json()["intervals"]["95"]
    widest = max(upper - lower for upper, lower in zip(band["upper"], band["lower"], strict=True))
    expect(page.locator("#forecast-shown")).to_contain_text(
        f"The 95 % interval is at most {widest:.2g} wide, under 3 pixels at this scale"
    )
    page.click("#series-example")  # the same example again
    assert [float(v) for v in page.locator("#series").input_value().replace(",", " ").split()] == series
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


def test_a_chosen_digit_model_reads_the_drawing_and_is_named(
    server: str, visit: Callable[..., Visit]
) -> None:
    seen = visit(f"{server}/")
    page = seen.page
    listed = httpx.get(f"{server}/models", timeout=10).json()["models"]
    digit_models = [model for model in listed if model.get("task") == "digit-classification"]
    assert [model["name"] for model in digit_models][:1] == ["digit_lstm"] and len(digit_models) == 3
    served = {model["name"]: model["version"] for model in digit_models}  # each model's newest version
    expect(page.locator("#digit-model-choice")).to_have_attribute("data-state", "listed")
    options = page.locator("#digit-model option").evaluate_all("all => all.map(o => [o.value, o.text])")
    assert options == [
        [model["name"], f"{model['name']} (version {model['version']}{', default' if i == 0 else ''})"]
        for i, model in enumerate(digit_models)
    ]
    assert page.locator("#digit-model").input_value() == "digit_lstm"
    # Two forecasters (series_gru, sine_gru): a choice, on the default.
    assert page.locator("#forecast-model-choice").is_visible()
    assert page.locator("#forecast-model").input_value() == "series_gru"

    draw(page, DIGITS[4])
    assert wait_for_state(page, "digit", "shown", "error") == "shown", error_text(page, "digit")
    sent = json.loads(seen.api_calls("/predict/digit")[-1].post_data or "")
    assert sent["model"] == "digit_lstm"
    expect(page.locator("#digit-answered")).to_have_text(
        f"Answered by digit_lstm, version {served['digit_lstm']}"
    )
    with page.expect_response(lambda r: r.url.endswith("/predict/digit")) as answered:
        page.select_option("#digit-model", "digit_gru")  # the drawing goes to the model chosen
    assert answered.value.status == 200
    assert json.loads(answered.value.request.post_data or "") == {**sent, "model": "digit_gru"}
    expect(page.locator("#digit-answered")).to_have_text(
        f"Answered by digit_gru, version {served['digit_gru']}"
    )
    expect(page.locator("#digit")).to_have_attribute("data-state", "shown")
    direct = httpx.post(f"{server}/predict/digit", json={**sent, "model": "digit_gru"}, timeout=30).json()
    assert direct["model"] == "digit_gru" and int(page.locator("#digit-result").inner_text()) == 4
    assert shown_probabilities(page) == pytest.approx(direct["probabilities"], abs=1e-6)
    description = next(m for m in digit_models if m["name"] == "digit_gru")["metadata"]["description"]
    assert page.locator("#digit-model-note").inner_text() == description

    page.click("#digit-clear")  # a new drawing goes to the model chosen too
    draw(page, DIGITS[7])
    assert wait_for_state(page, "digit", "shown", "error") == "shown", error_text(page, "digit")
    assert json.loads(seen.api_calls("/predict/digit")[-1].post_data or "")["model"] == "digit_gru"
    assert page.locator("#digit-result").inner_text() == "7"
    seen.screenshot("page-digit-model.png")
    assert seen.errors == []


def test_the_forecast_panel_offers_a_choice_when_two_forecasters_are_served(
    models_dir: Path, tmp_path: Path, visit: Callable[..., Visit]
) -> None:
    # A repository with one digit model and two forecasters: sine_gru (version 2) and, under its own
    # name, sine_gru's version 1.
    repository = tmp_path / "models"
    repository.mkdir()
    for name in ("digit_lstm", "sine_gru"):
        (repository / name).symlink_to(models_dir / name)
    (repository / "sine_gru_v1").mkdir()
    (repository / "sine_gru_v1" / "1").symlink_to(models_dir / "sine_gru" / "1")
    url, process = start_service(repository, tmp_path / "server.log", forecast_model="sine_gru")
    try:
        seen = visit(f"{url}/")
        page = seen.page
        expect(page.locator("#forecast-model-choice")).to_be_visible()
        assert page.locator("#digit-model-choice").is_hidden()  # one digit model: nothing to choose
        options = page.locator("#forecast-model option").evaluate_all("all => all.map(o => o.value)")
        assert options == ["sine_gru", "sine_gru_v1"]
        page.click("#forecast-run")
        assert wait_for_state(page, "forecast", "shown", "error") == "shown", error_text(page, "forecast")
        assert json.loads(seen.api_calls("/forecast")[-1].post_data or "")["model"] == "sine_gru"
        assert page.locator("#forecast-answered").inner_text() == "Forecast by sine_gru, version 2"

        with page.expect_response(lambda r: r.url.endswith("/forecast")) as answered:
            page.select_option("#forecast-model", "sine_gru_v1")  # the forecast is asked of it instead
        request = json.loads(answered.value.request.post_data or "")
        assert request["model"] == "sine_gru_v1" and answered.value.status == 200
        expect(page.locator("#forecast-answered")).to_have_text("Forecast by sine_gru_v1, version 1")
        expect(page.locator("#forecast")).to_have_attribute("data-state", "shown")
        shown = json.loads(page.locator("#forecast").get_attribute("data-response") or "")
        direct = httpx.post(f"{url}/forecast", json=request, timeout=30).json()
        assert shown["forecast"] == pytest.approx(direct["forecast"], abs=1e-6)
        seen.screenshot("page-forecast-model.png")
        assert seen.errors == []
    finally:
        stop(process)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_forecast_bands_are_filled_in_colours_that_stand_out(
    server: str, visit: Callable[..., Visit], scheme: str
) -> None:
    seen = visit(f"{server}/", color_scheme=scheme)
    page = seen.page
    page.click("#forecast-run")
    assert wait_for_state(page, "forecast", "shown", "error") == "shown", error_text(page, "forecast")
    page.check("#forecast-zoom")
    plot = plot_pixels(page)
    colours = plot.palette
    # The plot's background is the panel's, which differs between the schemes.
    panel = page.locator("#forecast").evaluate("panel => getComputedStyle(panel).backgroundColor")
    assert panel == "rgb({}, {}, {})".format(*colours["background"])
    assert (sum(colours["background"]) > 600) == (scheme == "light"), colours
    # Each band is a filled area of its own colour, each colour told apart from what it lies on (WCAG
    # contrast ratios), and the forecast line told apart from the band under it and from the history.
    assert plot.counts["band95"] > 3000 and plot.counts["band80"] > 6000, plot
    assert contrast(colours["band95"], colours["background"]) >= 1.3, colours
    assert contrast(colours["band80"], colours["band95"]) >= 1.2, colours
    assert contrast(colours["mean"], colours["band80"]) >= 3, colours
    assert contrast(colours["history"], colours["background"]) >= 7, colours
    assert math.dist(colours["mean"], colours["history"]) > 100, colours  # far apart in RGB
    # The legend shows the colours the plot is drawn in.
    swatches = page.locator(".legend .swatch").evaluate_all(
        "all => Object.fromEntries(all.map(s => [s.classList[1], getComputedStyle(s).backgroundColor]))"
    )
    assert swatches == {
        part: "rgb({}, {}, {})".format(*colours[part]) for part in ("history", "mean", "band80", "band95")
    }
    seen.screenshot(f"page-bands-{scheme}.png")
    assert seen.errors == []


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
