"""The metrics of several processes: each process's values go to files named by its own id, also in a
child forked after the metrics were made, and one rendering sums them all. A process writes its values
there every FLUSH_INTERVAL_S, at exit, and when asked: not on every update."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FORKS_AND_COUNTS = """
import os, sys
from pathlib import Path
from prometheus_client import values
from service.metrics import ServiceMetrics, flush, process_id

assert values.ValueClass is not values.MutexValue
metrics = ServiceMetrics(Path(sys.argv[1]))
metrics.requests.labels("/predict/digit", "POST", "200").inc()
child = os.fork()  # the parent's 1 is not written yet: the child must not write it as its own
if child == 0:
    assert process_id() == os.getpid()
    metrics.requests.labels("/predict/digit", "POST", "200").inc(2)
    flush()  # os._exit skips the exit's flush
    os._exit(0)
os.waitpid(child, 0)
assert process_id() == os.getpid()
print(os.getpid(), child)
print(metrics.render().decode())
"""


def test_each_process_writes_its_own_values_and_a_rendering_sums_them(tmp_path: Path) -> None:
    environment = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", FORKS_AND_COUNTS, str(tmp_path)],
        env=environment, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    ids, _, rendered = run.stdout.partition("\n")
    parent, child = ids.split()
    assert {f"counter_{parent}.db", f"counter_{child}.db"} <= {p.name for p in tmp_path.iterdir()}
    line = 'rnnserve_http_requests_total{method="POST",route="/predict/digit",status="200"} 3.0'
    assert line in rendered.splitlines()


COUNTS_AND_WAITS = """
import os, sys, time
from pathlib import Path
from service.metrics import FLUSH_INTERVAL_S, ServiceMetrics

metrics = ServiceMetrics(Path(sys.argv[1]))
metrics.requests.labels("/forecast", "POST", "200").inc(5)
time.sleep(4 * FLUSH_INTERVAL_S)
os._exit(0)  # no flush at exit: only the periodic one wrote the 5
"""


def test_a_process_writes_its_values_within_the_flush_interval_unasked(tmp_path: Path) -> None:
    environment = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run(
        [sys.executable, "-c", COUNTS_AND_WAITS, str(tmp_path)],
        env=environment, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rendered = subprocess.run(
        [sys.executable, "-c", RENDERS, str(tmp_path)],
        env=environment, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    line = 'rnnserve_http_requests_total{method="POST",route="/forecast",status="200"} 5.0'
    assert line in rendered.splitlines()


RENDERS = """
import sys
from pathlib import Path
from service.metrics import ServiceMetrics

print(ServiceMetrics(Path(sys.argv[1])).render().decode())
"""
