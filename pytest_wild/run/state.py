"""One `pytest --wild` run, as the plugin keeps it in the config's stash: the options (fixed
at configure), the suite once found, the per-process runtime that runs cases, and the results
the controller gathers. Each part has its own module and is changed only through its own
methods."""

from __future__ import annotations

from pathlib import Path

from ..cases.suite import Suite
from ..results.gathered import Results
from .options import Options


class WildRun:
    def __init__(self, options: Options, cache_note: str | None = None, progress=None) -> None:
        self.options = options
        self.progress = progress  # how the runtime shows its long steps (pytest_wild.run.progress)
        self.cache_note = cache_note  # said in the header when the statistics cache cannot be written
        self.found: Path | str | None = None  # the suite file, data file or hub id --wild-suite named
        self.suite: Suite | None = None
        self.runtime = None  # the Runtime, made with the suite
        self.results = Results()

    def use_suite(self, found: Path | str, suite: Suite) -> None:
        """The suite this run evaluates, and the runtime that evaluates it."""
        from .runtime import Runtime

        self.found, self.suite = found, suite
        self.runtime = Runtime(self.options, suite, self.progress)
        self.runtime.stop = self.results.terminated
        self.results.describe_suite(suite)

    @property
    def context(self) -> str:
        """How questions are put: the runtime's once the suite is known."""
        return self.runtime.context if self.runtime else (self.options.context or "question")
