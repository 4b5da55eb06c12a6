import os


def outer_xdist_removed() -> dict[str, str]:
    """The environment without the outer run's xdist variables and addopts, which would make
    syrupy and the plugin in an inner pytest run believe they are an xdist worker."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}
