"""Project-level pytest configuration: pytester for the plugin's own tests, and the path
of the shared benchmark data that tests read when it is present."""

from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

SHARED_DATA = Path(__file__).parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data/`, or a skip saying why when it is absent."""
    if not (SHARED_DATA / "qaedit-800.json").is_file():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA
