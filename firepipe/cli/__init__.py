"""The `firepipe` command (app) and the run summary it prints (summary)."""

from firepipe.cli.app import main

__all__ = ["main"]
