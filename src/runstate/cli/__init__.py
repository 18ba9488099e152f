"""The ``runstate`` command line: inspect runs and events, tail live, relay, demo, bench."""

from ._app import app, main

__all__ = ["app", "main"]
