"""The client's version: the package metadata reads it from here, and it travels in `User-Agent`."""

__version__ = "0.1.0"
