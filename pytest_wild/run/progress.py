"""Lines about the long work pytest's dots say nothing about: loading the model, what every
edit needs (an editor's statistics, with their own progress bar), the unedited answers of the
cases. They run before the first case, where pytest captures no output; a serial run writes
them through pytest's terminal, an xdist worker to its stderr (the terminal it inherited),
tagged with its id; a sequence of edits, which runs inside its first case, says how far it
is past pytest's output capture. Not shown with `-q`."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import pytest

LIVE_SECONDS = 10.0  # a line in a CI log every 10 s, not one per edit


class Progress:
    def __init__(self, config: pytest.Config) -> None:
        self.shown = config.get_verbosity() >= 0
        self.worker = getattr(config, "workerinput", {}).get("workerid")
        self.plugins = config.pluginmanager  # the terminal reporter registers after this plugin's configure
        self._last_live = time.monotonic()

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Say what starts, then how long it took."""
        self._line(f"wild: {what} ...")
        started = time.perf_counter()
        yield
        self._line(f"wild: {what}: done in {time.perf_counter() - started:.1f} s")

    def note(self, text: str) -> None:
        """A line about work in progress (a sequence of edits, which runs in its first case)."""
        self._line(f"wild: {text}")

    def live(self, text: str) -> None:
        """A line that says where a long piece of work is, at most every `LIVE_SECONDS` (a
        sequence of 1,000 edits is one test for pytest's progress)."""
        now = time.monotonic()
        if now - self._last_live >= LIVE_SECONDS:
            self._last_live = now
            self._line(f"wild: {text}")

    def _line(self, text: str) -> None:
        """Written past pytest's output capture, which is on while a case runs."""
        if not self.shown:
            return
        reporter = self.plugins.get_plugin("terminalreporter")
        capture = self.plugins.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
            if self.worker is None and reporter is not None:
                reporter.write_line(text)
            else:
                print(f"[{self.worker}] {text}" if self.worker else text, file=sys.stderr, flush=True)


class Silent:
    """For a runtime used outside pytest (tests, benchmarks)."""

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        yield

    def note(self, text: str) -> None:
        pass

    def live(self, text: str) -> None:
        pass
