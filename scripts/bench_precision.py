"""One digit model served in int8 and in float on one machine, measured interleaved: images per second of
three request forms.

    python scripts/bench_precision.py                        # digit_rnn, 3 rounds of 4 s
    python scripts/bench_precision.py --model digit_lstm --rounds 5

Two servers (`RNNSERVE_DIGIT_MODEL` the model, `RNNSERVE_PRECISION=int8` and `fp32`, otherwise the
defaults) are started together; then `hey` drives each form against each server, round after round,
each round in the other order, so that a slow minute of the machine costs both. The forms: 64 images
in one octet-stream request at c=8 and at c=1, and one image a request at c=64; and, in the same rounds,
each graph alone in this process on the same 64 images with one ONNX Runtime thread, as each server's
model calls get: the most that the service's int8 ÷ float ratio can reach. Prints every round's images
per second, then the medians and the int8 ÷ float ratios. `scripts/bench.py` compares the two
precisions of the default digit model (digit_lstm) within its full run; this measures any digit model
alone, e.g. digit_rnn, whose int8 graph `RNNSERVE_PRECISION=auto` serves on CPU hosts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_baselines import newest_version, ort_session, precision_graphs, runs_per_second
from bench_forms import make_forms
from bench_load import interleaved, outcome, run_hey
from local_server import REPO_ROOT, start_service, stop

CELLS = (("64-images", 8), ("64-images", 1), ("octet-stream", 64))
"""(form, concurrency) of each measured cell."""
PRECISIONS = ("int8", "fp32")
ALONE = "ONNX Runtime alone, one thread"
"""The form of the cell of each graph alone, on the 64-images form's 64 images as one batch."""
ROWS = (*CELLS, (ALONE, 64))
"""(form, concurrency, or batch for ALONE) of every row of the table."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digit_rnn", help="the digit model (default digit_rnn)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    forms = make_forms()
    cells = [(precision, form, c) for precision in PRECISIONS for form, c in ROWS]
    version = newest_version(args.model)
    graphs = precision_graphs(version)
    if "int8" not in graphs:
        raise SystemExit(f"{version} has no int8 variant: pass a digit model made by training.quantize")
    sessions = {precision: ort_session(path, threads=1) for precision, path in graphs.items()}
    many, shape = forms["64-images"], sessions["fp32"].get_inputs()[0].shape  # [batch, side, side]
    batch = np.frombuffer(many.body, np.uint8).reshape(many.inputs, *shape[1:]).astype(np.float32)
    servers = {}
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as scratch:
        bodies = {}
        for form, _ in CELLS:
            bodies[form] = Path(scratch) / f"{form}.body"
            bodies[form].write_bytes(forms[form].body)
        try:
            for precision in PRECISIONS:
                settings = {
                    "model_dir": str(REPO_ROOT / "models"),
                    "digit_model": args.model,
                    "precision": precision,
                    "log_level": "WARNING",
                }
                servers[precision] = start_service(settings, log_path=Path(scratch) / f"{precision}.log")

            def measure(cell: tuple[str, str, int]) -> tuple[float, str]:
                precision, form, concurrency = cell
                if form == ALONE:
                    runs = runs_per_second(sessions[precision], {"pixels": batch}, args.seconds)
                    images = runs * len(batch)
                    line = f"{precision} {ALONE}, batch {len(batch)}: {images:,.0f} images/s, 0 failed"
                    return images, line
                result = run_hey(servers[precision][0], forms[form], bodies[form], concurrency, args.seconds)
                failed, rate = outcome(result)
                images = (rate or 0.0) * forms[form].inputs
                return images, f"{precision} {form} c={concurrency}: {images:,.0f} images/s, {failed} failed"

            rates = interleaved(cells, args.rounds, measure)
        finally:
            for _, process in servers.values():
                stop(process)
    medians = {cell: statistics.median(values) for cell, values in rates.items()}
    print(f"\n| {args.model}: form | c | float images/s | int8 images/s | int8 ÷ float |")
    print("|---|---:|---:|---:|---:|")
    for form, concurrency in ROWS:
        fp32, int8 = medians["fp32", form, concurrency], medians["int8", form, concurrency]
        ratio = int8 / fp32 if fp32 else 0.0
        c = f"batch {concurrency}" if form == ALONE else concurrency
        print(f"| {form} | {c} | {fp32:,.0f} | {int8:,.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
