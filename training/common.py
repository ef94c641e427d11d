"""What both training command lines share: arguments, device, seeding, where results go."""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def base_parser(description: str, epochs: str) -> argparse.ArgumentParser:
    """The options every trainer has. Those that set a recipe field (--epochs, --seed, --dry-run and the
    trainer's own) default to None: not given, the recipe's value stands. `epochs` says what that is."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {epochs})")
    parser.add_argument("--seed", type=int, help="seed for weights, data order and noise (default 0)")
    parser.add_argument("--out", type=Path, default=Path("models"), help="model repository root")
    parser.add_argument("--version", help="version folder to write (default: one past the newest)")
    parser.add_argument("--report-dir", type=Path, help="where metrics and plots go (default reports/...)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--dry-run", action="store_true", default=None, help="the recipe on a tiny slice, in seconds"
    )
    return parser


def repository_arguments(parser: argparse.ArgumentParser, models: tuple[str, ...] = ()) -> None:
    """--data-dir and --model-dir, and with `models` --models (comma-separated, those by default): what
    every command line on the committed models takes."""
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="folder holding MNIST/raw")
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="model repository root")
    if models:
        default = ",".join(models)
        parser.add_argument("--models", default=default, help=f"comma-separated (default {default})")


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
