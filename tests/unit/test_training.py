"""Training command lines, export parity and the committed model repository."""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from service.repository import sha256_of
from service.series import pad_left, recent_window
from training import digit, forecast
from training.digit_recipe import DigitRecipe
from training.export import check_parity, export_model, onnx_session
from training.forecast_recipes import RECIPES, ForecastRecipe
from training.networks import DigitClassifier, DigitLSTM, SeriesGRU
from training.recipes import from_dict, from_metadata

TOLERANCE = 1e-5


def _only_version(root: Path) -> Path:
    (version,) = [p for p in root.iterdir() if p.is_dir()]
    return version


def _assert_checksums(model_dir: Path) -> dict:
    metadata = json.loads((model_dir / "metadata.json").read_text())
    variants = {variant["onnx_file"] for variant in metadata.get("variants", {}).values()}
    assert set(metadata["files"]) == {"model.onnx", "model.pt", *variants}
    for name, entry in metadata["files"].items():
        assert sha256_of(model_dir / name) == entry["sha256"], f"{model_dir / name} does not match its sha256"
        assert (model_dir / name).stat().st_size == entry["bytes"]
    return metadata


@pytest.mark.slow  # a training dry run: seconds to tens of seconds of torch
def test_digit_dry_run_trains_exports_and_reports(tmp_path: Path, mnist_dir: Path) -> None:
    digit.main(
        [
            "--dry-run",
            "--data-dir",
            str(mnist_dir),
            "--out",
            str(tmp_path / "models"),
            "--report-dir",
            str(tmp_path / "report"),
        ]
    )
    model_dir = _only_version(tmp_path / "models" / "digit_lstm")
    metadata = _assert_checksums(model_dir)
    assert metadata["training"]["dry_run"] is True
    assert metadata["command"].startswith("python -m training.digit --dry-run")
    assert [i["name"] for i in metadata["inputs"]] == ["pixels"]
    assert metadata["metrics"]["parity_max_relative_difference"] <= TOLERANCE
    # Even one tiny epoch learns something: chance is 0.10.
    assert metadata["metrics"]["test_accuracy_onnx"] > 0.15
    for picture in ("curves.png", "confusion.png"):
        assert (tmp_path / "report" / picture).stat().st_size > 1000
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["metrics"]["test_images"] == 1000


@pytest.mark.slow  # a training dry run: seconds to tens of seconds of torch
def test_dry_run_metadata_holds_the_whole_recipe(tmp_path: Path, mnist_dir: Path) -> None:
    """The recipe, with the command line's overrides, is written whole and reads back equal."""
    options = ["--seed", "4", "--hidden-size", "32", "--no-augment", "--batch-size", "256"]
    places = ["--data-dir", str(mnist_dir), "--out", str(tmp_path / "m"), "--report-dir", str(tmp_path / "r")]
    digit.main(["--dry-run", *places, *options])
    expected = replace(DigitRecipe().dry(), seed=4, hidden_size=32, augment=False, batch_size=256)
    path = _only_version(tmp_path / "m" / "digit_lstm") / "metadata.json"
    metadata = json.loads(path.read_text())
    assert set(metadata["recipe"]) == {f.name for f in fields(DigitRecipe)}
    assert metadata["recipe"] == asdict(expected)
    assert from_metadata(DigitRecipe, path) == expected
    assert metadata["config"]["hidden_size"] == 32 and metadata["training"]["augmentation"] == "none"
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics"]["test_images"] == 1000


def test_recipes_read_back_from_json_and_refuse_what_they_do_not_hold(models_dir: Path) -> None:
    for recipe in RECIPES.values():
        written = json.loads(json.dumps(asdict(recipe.dry())))  # tuples become lists, as in metadata.json
        assert from_dict(ForecastRecipe, written) == recipe.dry()
    with pytest.raises(ValueError, match="no field 'learning_rate'"):
        from_dict(DigitRecipe, {"learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"not a DigitRecipe.*epochs"):
        from_dict(DigitRecipe, {"epochs": "many"})
    with pytest.raises(ValueError, match="no 'recipe' section"):
        from_metadata(DigitRecipe, _committed(models_dir, "digit_lstm") / "metadata.json")


def test_digit_without_data_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"MNIST/raw/train-images-idx3-ubyte.*--data-dir"):
        digit.main(["--dry-run", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")])


@pytest.mark.slow  # a training dry run: seconds to tens of seconds of torch
def test_forecast_dry_run_is_reproducible(tmp_path: Path) -> None:
    reports = []
    for run in ("a", "b"):
        forecast.main(
            [
                "--dry-run",
                "--seed",
                "3",
                "--out",
                str(tmp_path / run),
                "--report-dir",
                str(tmp_path / f"report-{run}"),
            ]
        )
        model_dir = _only_version(tmp_path / run / "sine_gru")
        metadata = _assert_checksums(model_dir)
        assert metadata["config"]["patch_size"] == 8
        assert (tmp_path / f"report-{run}" / "forecasts.png").stat().st_size > 1000
        reports.append(metadata["metrics"]["model"])
    for key in ("mae", "mase", "coverage_95"):
        assert reports[0][key] == pytest.approx(reports[1][key], rel=1e-4)


@pytest.mark.slow  # a training dry run: seconds to tens of seconds of torch
def test_forecast_dry_runs_follow_their_recipe(tmp_path: Path) -> None:
    """The default recipe (v2) and `--recipe v1` export the network and family each one names."""
    expected = {
        "v2": ("HarmonicGRU", 1024, {"period_range": [4.0, 256.0], "noise_range": [0.0, 0.2]}),
        "v1": ("SeriesGRU", 256, {"period_range": [16.0, 64.0], "noise_range": [0.0, 0.1]}),
    }
    for recipe, (network, context, family) in expected.items():
        arguments = [
            "--dry-run",
            "--out",
            str(tmp_path / recipe),
            "--report-dir",
            str(tmp_path / f"r-{recipe}"),
        ]
        forecast.main(arguments + (["--recipe", "v1"] if recipe == "v1" else []))
        metadata = _assert_checksums(_only_version(tmp_path / recipe / "sine_gru"))
        assert metadata["config"]["network"] == network
        assert metadata["config"]["context_length"] == context
        assert metadata["training"]["recipe"] == recipe and metadata["training"]["family"] == family
        assert from_metadata(ForecastRecipe, metadata) == RECIPES[recipe].dry()
        assert metadata["metrics"]["parity_max_relative_difference"] <= TOLERANCE
        assert set(metadata["metrics"]["protocol_v2"]["model"]) == {"family", "short", "long", "unseen"}
    calibration = json.loads(next((tmp_path / "v2").rglob("metadata.json")).read_text())["training"]
    assert len(calibration["std_calibration"]) == 128


def _series_batch(lengths: list[int], scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(sum(lengths))
    windows = [(rng.standard_normal(n) * scale + 1).astype(np.float32) for n in lengths]
    values, mask = pad_left(windows, 8)
    return torch.from_numpy(values), torch.from_numpy(mask)


def test_export_parity_on_random_inputs(tmp_path: Path) -> None:
    """ONNX Runtime and TorchScript equal the eager model within 1e-5 for batches 1 and 37."""
    torch.manual_seed(0)
    classifier = DigitClassifier(DigitLSTM()).eval()
    export_model(classifier, (torch.rand(2, 28, 28) * 255,), digit.INPUTS, digit.OUTPUTS, tmp_path / "digit")
    worst = check_parity(tmp_path / "digit", classifier, [(torch.rand(b, 28, 28) * 255,) for b in (1, 37)])
    assert worst <= TOLERANCE

    network = SeriesGRU().eval()
    export_model(network, _series_batch([40]), forecast.INPUTS, forecast.outputs(128), tmp_path / "gru")
    cases = [_series_batch([16]), _series_batch([256]), _series_batch([16, 100, 256, 37] * 9 + [200])]
    assert len(cases[-1][0]) == 37
    assert check_parity(tmp_path / "gru", network, cases) <= TOLERANCE


def test_export_parity_detects_a_different_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    exported = DigitClassifier(DigitLSTM()).eval()
    export_model(exported, (torch.rand(2, 28, 28) * 255,), digit.INPUTS, digit.OUTPUTS, tmp_path)
    other = DigitClassifier(DigitLSTM()).eval()
    with pytest.raises(AssertionError, match="differs"):
        check_parity(tmp_path, other, [(torch.rand(3, 28, 28) * 255,)])


@pytest.mark.parametrize(
    ("name", "dynamic"), [("digit_lstm", {"pixels": [0]}), ("sine_gru", {"series": [0, 1], "mask": [0, 1]})]
)
def test_committed_onnx_declares_its_dynamic_axes(models_dir: Path, name: str, dynamic: dict) -> None:
    """The batch axis (and the forecaster's time axis) are named, not fixed to the export example."""
    model_dir = _committed(models_dir, name)
    metadata = json.loads((model_dir / "metadata.json").read_text())
    declared = {i["name"]: i["shape"] for i in metadata["inputs"]}
    for graph_input in onnx_session(model_dir / "model.onnx").get_inputs():
        named = [axis for axis, size in enumerate(graph_input.shape) if isinstance(size, str)]
        assert named == dynamic[graph_input.name]
        assert [str(s) for s in graph_input.shape] == [str(s) for s in declared[graph_input.name]]


# --- the committed model repository ---------------------------------------------------------------


def _committed(models_dir: Path, name: str) -> Path:
    versions = sorted(
        (p for p in (models_dir / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    assert versions, f"no committed version of {name}"
    return versions[-1]


@pytest.mark.parametrize("name", ["digit_lstm", "sine_gru"])
def test_committed_checksums_and_sizes(models_dir: Path, name: str) -> None:
    model_dir = _committed(models_dir, name)
    metadata = _assert_checksums(model_dir)
    assert metadata["training"]["dry_run"] is False
    for entry in metadata["files"].values():
        assert entry["bytes"] < 5 * 1024 * 1024


def test_committed_digit_model_accuracy(
    models_dir: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    """≥ 99.2 % top-1 on all 10,000 MNIST test images, through ONNX Runtime."""
    images, labels = mnist_test_set
    predictions = digit.onnx_predictions(_committed(models_dir, "digit_lstm") / "model.onnx", images)
    accuracy = float((predictions == labels).mean())
    assert len(labels) == 10_000
    assert accuracy >= 0.992, f"accuracy {accuracy:.4f} is below the 0.992 target"


def test_committed_forecaster_meets_targets(models_dir: Path) -> None:
    model_dir = _committed(models_dir, "sine_gru")
    config = json.loads((model_dir / "metadata.json").read_text())["config"]
    report = forecast.evaluate(model_dir / "model.onnx", config["context_length"], config["patch_size"])
    model = report["model"]
    assert report["protocol"]["series"] >= 200
    assert model["mae"] <= 0.20
    assert model["mase"] <= 0.30
    assert 0.92 <= model["coverage_95"] <= 0.98
    assert model["mae"] < report["seasonal_naive"]["mae"] and model["mae"] < report["last_value"]["mae"]
    recorded = json.loads((model_dir / "metadata.json").read_text())["metrics"]["model"]
    assert recorded["mae"] == pytest.approx(model["mae"], rel=1e-3)


@pytest.mark.parametrize("name", ["digit_lstm", "sine_gru"])
def test_committed_onnx_and_torchscript_agree(models_dir: Path, name: str) -> None:
    model_dir = _committed(models_dir, name)
    session = onnx_session(model_dir / "model.onnx")
    scripted = torch.jit.load(str(model_dir / "model.pt"), map_location="cpu")
    cases: list[tuple[torch.Tensor, ...]]
    if name == "digit_lstm":
        cases = [(torch.rand(b, 28, 28) * 255,) for b in (1, 37)]
    else:
        cases = [_series_batch([16]), _series_batch([44, 256, 16] * 12 + [64])]
    for case in cases:
        names = [i.name for i in session.get_inputs()]
        expected = session.run(None, {n: t.numpy() for n, t in zip(names, case, strict=True)})
        with torch.no_grad():
            actual = [t.numpy() for t in scripted(*case)]
        for a, e in zip(actual, expected, strict=True):
            np.testing.assert_allclose(
                a, e, rtol=TOLERANCE, atol=TOLERANCE * max(1.0, float(np.abs(e).max()))
            )


def _forecast(session: object, histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    values, mask = pad_left([recent_window(h, forecast.CONTEXT_LENGTH) for h in histories], 8)
    mean, std = session.run(["mean", "std"], {"series": values, "mask": mask})  # type: ignore[attr-defined]
    return mean, std


def test_committed_forecaster_is_affine_equivariant_and_padding_free(models_dir: Path) -> None:
    session = onnx_session(_committed(models_dir, "sine_gru") / "model.onnx")
    rng = np.random.default_rng(7)
    y = (np.sin(np.arange(200) * 2 * np.pi / 23) + 0.01 * np.arange(200)).astype(np.float32)
    (mean,), (std,) = _forecast(session, [y])
    (mean_big,), (std_big,) = _forecast(session, [(1000 * y.astype(np.float64) + 1e6).astype(np.float32)])
    np.testing.assert_allclose(mean_big, 1000 * mean + 1e6, rtol=0, atol=1000 * 2e-3)
    np.testing.assert_allclose(std_big, 1000 * std, rtol=2e-3)

    # Alone or beside longer and shorter series: the same forecast.
    others = [rng.standard_normal(n).astype(np.float32) for n in (16, 4096, 77)]
    means, stds = _forecast(session, [others[0], y, *others[1:]])
    np.testing.assert_allclose(means[1], mean, rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(stds[1], std, rtol=TOLERANCE, atol=TOLERANCE)

    for level in (0.0, 5.5, -3e4):
        (constant,), (spread,) = _forecast(session, [np.full(64, level, dtype=np.float32)])
        assert np.isfinite(constant).all() and np.isfinite(spread).all()
        np.testing.assert_allclose(constant, level, rtol=1e-5, atol=1e-5)
