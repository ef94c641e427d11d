"""rnnserve training: data, networks, training command lines and export to `models/`."""

import os

# Torch's OpenMP threads spin-wait by default; on a shared 2-core machine that made LSTM steps
# 20–90× slower whenever another process held a core. It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
