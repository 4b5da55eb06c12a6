"""SIGTERM (a CI time limit, `kill`) as a request to stop, so the cases run so far reach a
partial report instead of the process dying with none."""

from __future__ import annotations

import signal
import threading
import time

import pytest

SESSION_KEY = pytest.StashKey[pytest.Session]()  # the session a SIGTERM asks to stop
SIGTERM_REASON = "received SIGTERM"
REPEATED = 5.0  # seconds within which a second SIGTERM is the same request


class Terminated(KeyboardInterrupt):
    """SIGTERM before any case runs: taken as Ctrl-C."""


def stop_on_sigterm(config: pytest.Config, results) -> None:
    """By default SIGTERM ends the process at once, with no report at all. Here it asks the
    session to stop after the case in progress (as `-x` does), so pytest finishes cleanly and
    the cases run so far reach a partial report (under xdist the controller stops handing out
    cases and shuts the workers down, and replaces none that dies after it: a CI's SIGTERM
    reaches the workers too); raising from the handler instead could land in any frame, where
    pytest's own traceback rendering sometimes fails. What checks `results.terminated()` stops
    sooner: a sequence before its next edit, the judging before its next request. A second
    SIGTERM, where the first was not enough, is taken as Ctrl-C, unless it follows within
    `REPEATED` seconds (`timeout` signals its child, then the child's whole process group). Only where nobody else
    handles SIGTERM (and only in the main thread, where handlers can be set); the default comes
    back at unconfigure. On an xdist worker too, which then ends its test and its session."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    first: list[float] = []  # when the first SIGTERM came

    def stop(signum, frame) -> None:
        session = config.stash.get(SESSION_KEY, None)
        if first and time.monotonic() - first[0] < REPEATED:
            return
        if session is None or first:
            raise Terminated(SIGTERM_REASON)
        first.append(time.monotonic())
        results.stop(SIGTERM_REASON)
        session.shouldstop = SIGTERM_REASON
        scheduler = config.pluginmanager.get_plugin("dsession")  # xdist's controller loop reads its own flag
        if scheduler is not None:
            scheduler.shouldstop = SIGTERM_REASON
            if hasattr(scheduler, "_max_worker_restart"):  # xdist has no public switch: a worker dying now is not replaced
                scheduler._max_worker_restart = 0

    signal.signal(signal.SIGTERM, stop)
    config.add_cleanup(lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
