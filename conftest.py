"""Project-level pytest configuration: pytester for the plugin's own tests, the path of the
shared benchmark data that tests read when it is present, one CPU thread per torch process
(the tests run the tiny model in several processes at once, xdist workers and pytester
subprocesses, where more threads than cores makes them many times slower), and the `slow`
mark on every test that runs pytest or a subprocess (all of tests/integration/, and any
test elsewhere that asks for pytester), so `-m "not slow"` is the quick loop; and after each
test, every report and golden it wrote checked against the package's JSON Schemas
(tests/schemas.py), unless the test writes malformed ones on purpose
(`@pytest.mark.malformed_outputs`)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = ("pytester",)

SHARED_DATA = Path(__file__).parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data/`, or a skip saying why when it is absent."""
    if not (SHARED_DATA / "qaedit-800.json").is_file():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = Path(__file__).parent / "tests" / "integration"
    for item in items:
        if integration in item.path.parents or "pytester" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _reports_and_goldens_match_their_schemas(request: pytest.FixtureRequest):
    """After the test: the reports and goldens under its tmp_path and pytester directory."""
    yield
    if request.node.get_closest_marker("malformed_outputs"):
        return
    given = request.node.funcargs
    directories = [given["tmp_path"]] if "tmp_path" in given else []
    directories += [given["pytester"].path] if "pytester" in given else []
    if directories:
        from tests.schemas import written_problems

        found = [line for directory in directories for line in written_problems(directory)]
        if found:
            pytest.fail("written outside the JSON Schema:\n" + "\n".join(found[:20]), pytrace=False)
