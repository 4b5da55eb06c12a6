"""Suites: which cases to edit, how to ask them, what must hold. A suite is a YAML file, a
QAEdit data file used as-is, or a hub dataset id.

A suite file's `data` is a path relative to the suite file, inside its project, or
`@data/NAME`: the file NAME in the data directory the user names (`--wild-data=DIR`, else the
PYTEST_WILD_DATA environment variable), which is how the bundled suites reach benchmark files
that cannot ship with the package."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..scores.metrics import EDIT_METRICS
from .case import Case, WildInputError
from .contexts import CONTEXTS
from .files import read_yaml
from .loaders import load_file, load_hub

BUNDLED_SUITES = Path(__file__).parents[1] / "suites"
SUITE_KEYS = {"name", "description", "data", "hub", "split", "layout", "limit", "sampling", "seed", "context",
              "thresholds", "hparams", "perplexity"}
SAMPLINGS = ("seeded", "first")
DATA_SUFFIXES = (".json", ".jsonl")
DATA_DIR_PREFIX = "@data/"


@dataclass
class Suite:
    name: str
    source: str  # the file or dataset the cases came from, for headers and reports
    cases: list[Case]
    path: Path | None = None  # the suite or data file, for test locations
    context: str = "question"
    seed: int = 0
    limit: int | None = None
    sampling: str = "seeded"
    thresholds: dict[str, float] = field(default_factory=dict)  # per-case; none unless the suite sets them
    hparams: dict[str, dict] = field(default_factory=dict)
    perplexity_text: list[str] | None = None  # lines a sequence's general capability is measured on


def find_suite(spec: str | None, rootdir: Path, invocation_dir: Path, option: str = "--wild-suite") -> str | Path:
    """A suite file, a data file, or a hub id, from the value of `option` (`--wild-suite`, or
    `pytest-wild train-mend`'s `--data` and `--eval-suite`)."""
    spec = spec or "tinyworld"
    if spec.startswith("~"):
        spec = str(Path(spec).expanduser())
    for base in (invocation_dir, rootdir):
        candidate = base / spec
        if candidate.is_file():
            return candidate.resolve()
    for directory in (rootdir / "suites", BUNDLED_SUITES):
        candidate = directory / f"{spec}.yaml"
        if candidate.is_file():
            return candidate.resolve()
    if spec.startswith("hf:"):
        return spec[3:]
    if spec.count("/") == 1 and not spec.endswith(DATA_SUFFIXES + (".yaml", ".yml")):
        return spec
    raise WildInputError(
        f"{option}: {spec!r} is not a suite file, a .json/.jsonl data file, a suite in "
        f"{rootdir / 'suites'} or the bundled suites, nor a hub dataset id (owner/name)"
    )


def load_suite(found: str | Path, limit: int | None = None, sampling: str | None = None,
               rootdir: Path | None = None, data_dir: Path | None = None) -> Suite:
    """Load and sample a suite; `limit` and `sampling` (from `--wild-limit` and
    `--wild-sampling`) override the suite's own. A suite file's `data` must lie inside the
    project that holds the suite (`rootdir`, or the suite's own directory when it lies
    elsewhere) or be bundled data: suites arrive in pull requests, and their data ends up in
    reports."""
    if isinstance(found, str):
        suite = Suite(name=found.replace("/", "__"), source=f"hf:{found}", cases=load_hub(found))
    elif found.suffix in DATA_SUFFIXES:
        suite = Suite(name=found.stem, source=str(found), cases=load_file(found), path=found)
    elif found.suffix in (".yaml", ".yml"):
        suite = _from_yaml(found, _project_of(found, rootdir), data_dir)
    else:
        raise WildInputError(f"--wild-suite: {found}: expected a .yaml suite or a .json/.jsonl data file")
    if limit is not None:
        suite.limit = limit
    if sampling is not None:
        suite.sampling = sampling
    if not suite.cases:  # else pytest's bare "no tests ran", naming nothing
        raise WildInputError(f"{_shown(found)}: no case to run: its data holds none")
    if suite.limit == 0:
        raise WildInputError(f"{_shown(found)}: no case to run: its field 'limit' is 0")
    suite.cases = sample(suite.cases, suite.limit, suite.seed, suite.sampling)
    return suite


def _shown(found: str | Path) -> str:
    """A suite as a line names it: a hub id, or its file relative to here when it is below."""
    if isinstance(found, str):
        return found
    try:
        return str(found.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(found)


def sample(cases: list[Case], limit: int | None, seed: int, sampling: str = "seeded") -> list[Case]:
    """`limit` cases: the first ones in file order (`first`, as the paper's code takes the
    first K records), or a seeded sample kept in file order so ids read naturally."""
    if limit is None or limit >= len(cases):
        return cases
    if sampling == "first":
        return cases[:limit]
    chosen = set(random.Random(seed).sample(range(len(cases)), limit))
    return [case for i, case in enumerate(cases) if i in chosen]


def _project_of(suite: Path, rootdir: Path | None) -> Path:
    """The tree a suite file's data must stay in: the bundled suites' package, the rootdir
    when the suite lies inside it, else the suite's own directory."""
    suite = suite.resolve()
    for root in (BUNDLED_SUITES.parent, rootdir):
        if root is not None and suite.is_relative_to(root.resolve()):
            return root.resolve()
    return suite.parent


def available_suites(rootdir: Path) -> dict[str, Path]:
    """Suite name -> file, for every suite `--wild-suite NAME` can name: the project's
    `suites/*.yaml` first, then the bundled ones."""
    found: dict[str, Path] = {}
    for directory in (rootdir / "suites", BUNDLED_SUITES):
        if directory.is_dir():
            for path in sorted(directory.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def describe(path: Path) -> tuple[str, str]:
    """(description, where its cases come from) of a suite file, without loading its cases."""
    spec = read_yaml(path, "suite")
    source = f"hub {spec['hub']}" if "hub" in spec else f"data {spec.get('data', '?')}"
    return str(spec.get("description", "")), source


def _data_file(path: Path, value: str, project: Path, data_dir: Path | None, field: str = "data") -> Path:
    """The file a suite's `data` (or `perplexity`) field names (see the module docstring),
    refused when it leads out of its tree."""
    if value.startswith(DATA_DIR_PREFIX):
        if data_dir is None:
            raise WildInputError(f"{path}: field {field!r} is {value!r}, a file of the benchmark data directory: "
                                 "name that directory with --wild-data=DIR (or PYTEST_WILD_DATA)")
        tree = data_dir.resolve()
        data = (tree / value[len(DATA_DIR_PREFIX):]).resolve()
        where = f"the data directory {tree}"
    else:
        tree = project
        data = (path.parent / value).resolve()
        where = str(project)
    if not (data.is_relative_to(tree) or data.is_relative_to(BUNDLED_SUITES.parent.resolve())):
        raise WildInputError(f"{path}: field {field!r} leads out of {where} (links followed); a suite's data "
                             "stays in its project: pass an outside file with --wild-suite=PATH")
    if not data.is_file():
        raise WildInputError(f"{path}: field {field!r} names {data}, which does not exist")
    return data


def _text_lines(path: Path, value: str, project: Path, data_dir: Path | None) -> list[str]:
    """The non-empty lines of the text a suite's `perplexity` field names."""
    text = _data_file(path, value, project, data_dir, "perplexity")
    try:
        lines = [line for line in text.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise WildInputError(f"{text}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    if not lines:
        raise WildInputError(f"{path}: field 'perplexity' names {text}, which has no text")
    return lines


def _from_yaml(path: Path, project: Path, data_dir: Path | None = None) -> Suite:
    spec = read_yaml(path, "suite")
    unknown = sorted(set(spec) - SUITE_KEYS)
    if unknown:
        raise WildInputError(f"{path}: unknown suite field {unknown[0]!r} (known: {', '.join(sorted(SUITE_KEYS))})")
    layout = spec.get("layout", "auto")
    if layout not in ("auto", "qaedit", "counterfact"):
        raise WildInputError(f"{path}: field 'layout' must be auto, qaedit or counterfact, got {layout!r}")
    if "data" in spec and "hub" not in spec:
        data = _data_file(path, str(spec["data"]), project, data_dir)
        cases, source = load_file(data, layout), str(data)
    elif "hub" in spec and "data" not in spec:
        split = str(spec.get("split", "train"))
        cases, source = load_hub(str(spec["hub"]), split, layout), f"hf:{spec['hub']}[{split}]"
    else:
        raise WildInputError(f"{path}: give exactly one of the fields 'data' (a file) or 'hub' (a dataset id)")
    return Suite(
        name=str(spec.get("name", path.stem)),
        source=source,
        cases=cases,
        path=path,
        context=_choice(spec, "context", CONTEXTS, "question", path),
        seed=_integer(spec, "seed", 0, path),
        limit=_integer(spec, "limit", None, path),
        sampling=_choice(spec, "sampling", SAMPLINGS, "seeded", path),
        thresholds=_thresholds(spec.get("thresholds", {}), path),
        perplexity_text=(_text_lines(path, str(spec["perplexity"]), project, data_dir) if "perplexity" in spec else None),
        hparams=_hparams(spec.get("hparams", {}), path),
    )


def _choice(spec: dict, key: str, options: tuple, default: str, path: Path) -> str:
    value = spec.get(key, default)
    if value not in options:
        raise WildInputError(f"{path}: field {key!r} must be one of {', '.join(options)}, got {value!r}")
    return value


def _integer(spec: dict, key: str, default, path: Path):
    value = spec.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise WildInputError(f"{path}: field {key!r} must be a non-negative integer, got {value!r}")
    return value


def _thresholds(value, path: Path) -> dict[str, float]:
    if not isinstance(value, dict):
        raise WildInputError(f"{path}: field 'thresholds' must map metrics to minimum values")
    out = {}
    for metric, minimum in value.items():
        if metric not in EDIT_METRICS:
            raise WildInputError(f"{path}: thresholds.{metric}: unknown metric (known: {', '.join(EDIT_METRICS)})")
        if isinstance(minimum, bool) or not isinstance(minimum, (int, float)) or not 0 <= minimum <= 1:
            raise WildInputError(f"{path}: thresholds.{metric}: expected a number in [0, 1], got {minimum!r}")
        out[metric] = float(minimum)
    return out


def _hparams(value, path: Path) -> dict[str, dict]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise WildInputError(f"{path}: field 'hparams' must map editor names to hyperparameter mappings")
    return value
