"""The real-series protocol (training.real_series, training.evaluate_real) on a small sample: the fixed
catalogue and its sets, the windows, and the report's numbers, the served model's recomputed from
an ONNX Runtime session of its own."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from service.repository import newest_version
from service.series import normal_quantile
from training import evaluate_forecast
from training.evaluate_real import COVERAGE_GOAL, GROUP_COVERAGE_GOAL, mase_scale, refusal, served_model
from training.real_series import (
    CATALOGUE,
    FREQUENCIES,
    HELD_OUT,
    HELD_OUT_2,
    MAX_HISTORY,
    SETS,
    VALIDATION,
    spread,
    window,
    windows,
)
from training.real_tables import calibrated_chance, markdown
from training.textbook_series import HELD_OUT_3, VALIDATION_2

SAMPLE = 6
SERVED = newest_version(Path(__file__).resolve().parents[2] / "models", "series_gru").name  # as served
MODEL = f"series_gru v{SERVED} (m given)"
DETECTED = f"series_gru v{SERVED} (m detected)"
BASELINES = ["SeasonalNaive", "AutoETS"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> dict[str, Any]:
    """The protocol run through its command line on SAMPLE validation series, two baselines."""
    out = tmp_path_factory.mktemp("real") / "report.json"
    evaluate_forecast.main(
        ["--real", "--model-dir", str(models_dir), "--version", SERVED, "--sample", str(SAMPLE),
         "--baselines", *BASELINES, "--out", str(out), "--plot", str(out.with_suffix(".png"))]
    )  # fmt: skip
    return json.loads(out.read_text())


def test_the_sets_split_the_catalogue_into_different_series() -> None:
    sets = [set(names) for names in SETS.values()]
    assert all(not a & b for i, a in enumerate(sets) for b in sets[i + 1 :])
    assert set.union(*sets) == set(CATALOGUE)
    assert sum(map(len, sets)) == sum(map(len, SETS.values())) == len(CATALOGUE)
    assert len(VALIDATION_2) == len(HELD_OUT_3) == 20
    # Series of one phenomenon lie in one set, or in the held-out sets only.
    assert {"sunspots.monthly", "sunspots.yearly"} <= set(HELD_OUT)
    assert "msft.close" in VALIDATION and not any(name.startswith("stocks.MSFT") for name in CATALOGUE)
    copper = {name for name in CATALOGUE if name.startswith("copper.")}
    assert copper <= set(HELD_OUT) | set(HELD_OUT_2)
    tourism = {"fpp2.arrivals.Japan", "fpp2.arrivals.US", "fpp2.austourists", "fpp2.austa"}
    assert tourism <= set(VALIDATION_2)
    electricity = {"fpp2.usmelec", "fpp2.qauselec", "fpp2.elecdaily.Demand", "fpp2.elecdemand.Demand"}
    assert electricity <= set(HELD_OUT_3) and "taylor" in HELD_OUT
    # A series another set holds already is not taken again from R's copies.
    sources = [CATALOGUE[name].source for name in (*VALIDATION_2, *HELD_OUT_3)]
    for copy in ("AirPassengers", "austres", "lynx", "Nile", "sunspot", "ausbeer", "elecequip", "co2"):
        assert not any(f" {copy}" in source for source in sources), copy


def test_every_window_holds_out_its_groups_horizon_after_at_most_1024_values() -> None:
    for set_name in SETS:
        for w in windows(set_name):
            group = FREQUENCIES[w.series.group]
            assert len(w.truth) == group.horizon, w.series.name
            assert 16 <= len(w.history) <= MAX_HISTORY, w.series.name
            assert np.isfinite(w.history).all() and np.isfinite(w.truth).all(), w.series.name
            values = w.series.load()
            values = values[: np.flatnonzero(np.isfinite(values))[-1] + 1]
            np.testing.assert_array_equal(w.truth, values[-group.horizon :])
            np.testing.assert_array_equal(w.history, values[: -group.horizon][-MAX_HISTORY:])


def test_rolling_origins_and_a_longer_horizon_cut_earlier_and_longer_windows() -> None:
    plain = {w.label: w for w in windows("validation")}
    cut = windows("validation", origins=3, horizon_scale=4)
    labels = [w.label for w in cut]
    assert len(labels) == len(set(labels)) and set(labels) & set(plain)
    assert any(label.endswith("@2") for label in labels)
    for w in cut:
        group = FREQUENCIES[w.series.group]
        origin = int(w.label.split("@")[1]) if "@" in w.label else 0
        assert w.horizon == min(4 * group.horizon, 128), w.label
        assert len(w.history) >= max(3 * group.season, 16), w.label
        values = w.series.load()
        values = values[: np.flatnonzero(np.isfinite(values))[-1] + 1]
        end = len(values) - origin * group.horizon
        np.testing.assert_array_equal(w.truth, values[end - w.horizon : end])
        np.testing.assert_array_equal(w.history, values[: end - w.horizon][-MAX_HISTORY:])


def test_a_sample_spreads_over_the_frequency_groups() -> None:
    chosen = spread(list(VALIDATION), SAMPLE)
    assert len(chosen) == SAMPLE
    assert len({CATALOGUE[name].group for name in chosen}) == SAMPLE


def test_the_mase_scale_falls_back_to_lag_1_on_a_history_shorter_than_two_seasons() -> None:
    assert mase_scale(np.arange(10.0) * 3.0, 12) == 3.0
    assert mase_scale(np.tile([0.0, 4.0, 1.0, 7.0], 3) + np.arange(12.0), 4) == 4.0


def test_a_window_the_models_metadata_forbids_is_refused_with_the_reason(models_dir: Path) -> None:
    model = served_model(models_dir, "sine_gru", "2")
    short = window(CATALOGUE["nile"], CATALOGUE["nile"].load()[:20])
    reason = refusal(model, short)
    assert reason is not None and "needs 16" in reason
    assert refusal(model, window(CATALOGUE["nile"])) is None


def test_every_number_is_finite_and_every_coverage_a_share(report: dict[str, Any]) -> None:
    assert report["forecasters"] == [MODEL, DETECTED, *BASELINES]
    assert len(report["series"]) == SAMPLE and not report["skipped"]
    for name, scored in report["series"].items():
        for who, numbers in scored["forecasters"].items():
            assert math.isfinite(numbers["mase"]) and numbers["mase"] > 0, (name, who)
            assert math.isfinite(numbers["relative_mase"]) and numbers["relative_mase"] > 0, (name, who)
            assert 0.0 <= numbers["coverage_95"] <= 1.0, (name, who)
            # The 80 % band lies inside the 95 % one, so it can cover no more of the values.
            assert 0.0 <= numbers["coverage_80"] <= numbers["coverage_95"], (name, who)
    for who, groups in report["summary"].items():
        assert groups["all"]["series"] == SAMPLE
        for group, summary in groups.items():
            assert all(math.isfinite(v) for v in summary.values()), (who, group)
            assert (
                0.0 <= summary["coverage_95"] <= 1.0 and 0.0 <= summary["share_worse_than_1.5x_naive"] <= 1.0
            )
            assert 0.0 <= summary["coverage_80"] <= summary["coverage_95"], (who, group)


def test_statsforecasts_seasonal_naive_is_the_reference_exactly(report: dict[str, Any]) -> None:
    for name, scored in report["series"].items():
        naive = scored["forecasters"]["SeasonalNaive"]
        assert naive["relative_mase"] == 1.0, name
        assert naive["mase"] == scored["seasonal_naive_mase"], name
    for summary in report["summary"]["SeasonalNaive"].values():
        assert summary["geomean_relative_mase"] == 1.0
        assert summary["share_worse_than_1.5x_naive"] == 0.0


def test_several_sets_are_read_as_one(tmp_path: Path, models_dir: Path) -> None:
    out = tmp_path / "report.json"
    evaluate_forecast.main(
        ["--real", "--model-dir", str(models_dir), "--version", SERVED, "--set", "validation", "held-out-3",
         "--sample", "2", "--out", str(out)]
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["protocol"]["set"] == "validation+held-out-3"
    assert report["protocol"]["series"] == [*VALIDATION, *HELD_OUT_3]
    assert list(report["series"]) == [*spread(list(VALIDATION), 2), *spread(list(HELD_OUT_3), 2)]
    assert report["summary"][MODEL]["all"]["series"] == 4


def test_a_baselines_80_percent_band_is_statsforecasts_own(report: dict[str, Any]) -> None:
    from statsforecast.models import AutoETS

    w = window(CATALOGUE["airpassengers"])
    answer = AutoETS(season_length=12).forecast(y=w.history, h=w.horizon, level=[80])
    inside = (w.truth >= answer["lo-80"]) & (w.truth <= answer["hi-80"])
    assert report["series"]["airpassengers"]["forecasters"]["AutoETS"]["coverage_80"] == inside.mean()


def test_long_seasons_fit_ets_to_the_seasonally_adjusted_series(report: dict[str, Any]) -> None:
    assert report["series"]["co2"]["season"] == 52
    assert report["series"]["co2"]["forecasters"]["AutoETS"]["fitted"].startswith("MSTL(season_length=52)")
    assert (
        report["series"]["airpassengers"]["forecasters"]["AutoETS"]["fitted"] == "AutoETS(season_length=12)"
    )


@pytest.mark.parametrize(("name", "given"), [("co2", True), ("nile", True), ("co2", False)])
def test_the_served_models_numbers_match_its_onnx_session(
    report: dict[str, Any], models_dir: Path, name: str, given: bool
) -> None:
    """co2 fills the 1,024-value context; nile's 94 values are padded to 96 here by hand. With the season
    given, the group's m goes in as the hint; detected, 0 does."""
    w = window(CATALOGUE[name])
    h = w.series.horizon
    length = -(-len(w.history) // 16) * 16
    series = np.zeros((1, length), dtype=np.float32)
    mask = np.zeros((1, length), dtype=np.float32)
    series[0, length - len(w.history) :] = w.history
    mask[0, length - len(w.history) :] = 1.0
    season = np.array([[w.series.season if given else 0]], dtype=np.float32)
    session = ort.InferenceSession(str(models_dir / "series_gru" / SERVED / "model.onnx"))
    feeds = {"series": series, "mask": mask, "season": season}
    mean, std = (a[0, :h].astype(np.float64) for a in session.run(["mean", "std"], feeds))
    scale = np.abs(w.history[w.series.season :] - w.history[: -w.series.season]).mean()
    half, half_80 = normal_quantile(95.0) * std, normal_quantile(80.0) * std
    scored = report["series"][name]["forecasters"][MODEL if given else DETECTED]
    # float32 forecasts of values far from zero (co2: about 370) round to about 1e-7 of the values: alone
    # here, in a batch of other lengths there.
    rounding = 1e-6 * np.abs(w.history).max() / scale
    assert scored["mase"] == pytest.approx(np.abs(mean - w.truth).mean() / scale, rel=1e-5, abs=rounding)
    assert scored["coverage_95"] == np.mean(np.abs(w.truth - mean) <= half)
    assert scored["coverage_80"] == np.mean(np.abs(w.truth - mean) <= half_80)
    assert scored["fitted"].startswith(f"series_gru v{SERVED} (ONNX Runtime")


def test_the_picture_is_drawn(report: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    pictures = list(tmp_path_factory.getbasetemp().glob("real*/report.png"))
    assert pictures and pictures[0].stat().st_size > 10_000


def test_the_tables_have_a_row_per_forecaster_and_per_group(report: dict[str, Any]) -> None:
    rows = [line for line in markdown(report).splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 2 + len(report["forecasters"]) + SAMPLE
    assert rows[0].startswith("| forecaster (6 series) |")
    assert rows[0].endswith("| 95 % coverage | share > 1.5× naive | 80 % coverage |")
    everything, other = report["summary"][MODEL]["all"], report["summary"][MODEL]["other"]
    assert rows[1].startswith(f"| {MODEL} | ")
    assert rows[1].endswith(f" | {everything['coverage_80']:.2f} |")
    assert (
        f"\n{everything['values']} held-out values: exactly calibrated 95 % bands (each value missed "
        f"independently) would cover 0.90–0.98 of them with chance {everything['calibrated_in_goal']:.2f}.\n"
    ) in markdown(report)
    assert rows[-1].startswith(f"| other (1; {other['values']}, {other['calibrated_in_goal']:.2f}) | ")


def test_each_group_counts_its_held_out_values_and_the_chance_calibrated_bands_meet_its_goal(
    report: dict[str, Any],
) -> None:
    for group, summary in report["summary"][MODEL].items():
        chosen = [s for s in report["series"].values() if group in (s["group"], "all")]
        assert summary["values"] == sum(s["horizon"] for s in chosen), group
        goal = COVERAGE_GOAL if group == "all" else GROUP_COVERAGE_GOAL
        assert summary["calibrated_in_goal"] == calibrated_chance(summary["values"], 95, *goal), group


def exact_chance(values: int, low: float, high: float, miss: float = 0.05) -> float:
    """The same probability summed term by term, each count of misses whose share covered lies in range."""
    return sum(
        math.comb(values, k) * miss**k * (1 - miss) ** (values - k)
        for k in range(values + 1)
        if low <= round(1 - k / values, 9) <= high
    )


@pytest.mark.parametrize("values", [1, 8, 12, 13, 14, 20, 36, 48, 88, 100, 414])
def test_the_calibrated_chance_is_the_binomial_share_of_miss_counts_in_range(values: int) -> None:
    assert calibrated_chance(values, 95, 0.85, 0.99) == pytest.approx(
        exact_chance(values, 0.85, 0.99), abs=1e-12
    )


def test_a_group_of_few_values_rarely_shows_calibrated_bands_inside_the_goal() -> None:
    assert calibrated_chance(1, 95, 0.85, 0.99) == 0.0  # one value is covered wholly or not at all
    assert calibrated_chance(8, 95, 0.85, 0.99) == pytest.approx(0.279, abs=1e-3)  # 1 miss of 8
    assert calibrated_chance(100, 95, 0.85, 0.99) > 0.99


def test_the_served_forecaster_meets_its_goals_on_the_sample(report: dict[str, Any]) -> None:
    """The goals the sample can check: no worse than AutoETS and at most 0.90 of seasonal naive (geometric
    mean of relative MASE), 95 % bands that are not too narrow (covering at least 0.85 of the held-out
    values; on these 6 series they cover all of them), and no series more than 1.5× worse than seasonal
    naive (at most 10 % of 6 series is none)."""
    ours = report["summary"][MODEL]["all"]
    ets = report["summary"]["AutoETS"]["all"]
    assert ours["geomean_relative_mase"] <= min(0.90, ets["geomean_relative_mase"]), (ours, ets)
    assert ours["coverage_95"] >= 0.85, ours
    assert ours["share_worse_than_1.5x_naive"] == 0.0, ours
