"""SIGTERM (a CI time limit, `kill`) as a request to stop, so the cases run so far reach a
partial report instead of the process dying with none."""

from __future__ import annotations

import signal
import threading

import pytest

SESSION_KEY = pytest.StashKey[pytest.Session]()  # the session a SIGTERM asks to stop
SIGTERM_REASON = "received SIGTERM"


class Terminated(KeyboardInterrupt):
    """SIGTERM before any case runs: taken as Ctrl-C."""


def stop_on_sigterm(config: pytest.Config, results) -> None:
    """By default SIGTERM ends the process at once, with no report at all. Here it asks the
    session to stop after the case in progress (as `-x` does), so pytest finishes cleanly and
    the cases run so far reach a partial report (under xdist the controller stops handing out
    cases and shuts the workers down); raising from the handler instead could land
    in any frame, where pytest's own traceback rendering sometimes fails. Only where nobody
    else handles SIGTERM (and only in the main thread, where handlers can be set); the default
    comes back at unconfigure."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def stop(signum, frame) -> None:
        session = config.stash.get(SESSION_KEY, None)
        if session is None:
            raise Terminated(SIGTERM_REASON)
        results.stop(SIGTERM_REASON)
        session.shouldstop = SIGTERM_REASON
        scheduler = config.pluginmanager.get_plugin("dsession")  # xdist's controller loop reads its own flag
        if scheduler is not None:
            scheduler.shouldstop = SIGTERM_REASON

    signal.signal(signal.SIGTERM, stop)
    config.add_cleanup(lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
