"""rnnserve: the HTTP service that serves the recurrent models in `models/`."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rnnserve")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
