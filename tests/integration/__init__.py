import importlib
import os


def outer_xdist_removed() -> dict[str, str]:
    """The environment without the outer run's xdist variables and addopts, which would make
    syrupy and the plugin in an inner pytest run believe they are an xdist worker."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}


def import_what_runs_import(*more: str) -> None:
    """What an in-process run imports (and the modules `more`), imported before the first
    one, with the bundled model loaded and checked once: pytester drops the modules a run
    imports when it ends, and torch's C extension cannot be imported twice."""
    for name in ("pytest_wild.editors.finetune.ft", "pytest_wild.evaluation", "pytest_wild.golden", "pytest_wild.stats",
                 *more):
        importlib.import_module(name)
    from pytest_wild.model import check_model, load_model

    load_model(None, "cpu")
    check_model(None)
