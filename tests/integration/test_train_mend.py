"""`pytest-wild train-mend` through the real command line: a training killed midway resumes to
the weights of an uninterrupted one, the loss falls, overlap with an evaluated suite is
refused, and a MEND trained for a random tiny Llama edits that model through the plugin."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_wild.model.load import TINYWORLD_DIR

from ..tiny_models import tiny_model
from . import outer_xdist_removed, read_only

DATA = TINYWORLD_DIR / "mend.jsonl"
SHORT = ["--rank", "8", "--lr", "1e-3", "--lr-lr", "1e-3", "--edit-lr", "1e-2", "--accumulate", "2",
         "--val-every", "4", "--val-cases", "6", "--eval-suite", "tinyworld", "--quiet", "--device", "cpu"]


def train_mend(*args: str, cwd: Path, wait: bool = True):
    command = [sys.executable, "-m", "pytest_wild.cli", "train-mend", *args]
    env = outer_xdist_removed()
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def tensors(path: Path) -> dict:
    import safetensors.torch

    return safetensors.torch.load_file(path)


def checkpoint_step(path: Path) -> int:
    import safetensors

    with safetensors.safe_open(path, "pt") as opened:
        return json.loads(opened.metadata()["progress"])["step"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and bool((a[k] == b[k]).all()) for k in a)


def test_a_training_killed_midway_resumes_to_the_weights_of_an_uninterrupted_one_and_its_loss_falls(tmp_path):
    steps = ["--steps", "24", "--data", str(DATA)]
    whole = train_mend(*SHORT, *steps, "--out", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "MEND trained for 24 steps" in whole.stdout

    killed = train_mend(*SHORT, *steps, "--out", "killed", cwd=tmp_path, wait=False)
    checkpoint = tmp_path / "killed" / "checkpoint.safetensors"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL, "the training ended before it could be killed"
    assert 0 < checkpoint_step(checkpoint) < 24  # killed midway, a checkpoint behind it

    resumed = train_mend(*SHORT, *steps, "--out", "killed", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("mend.safetensors", "checkpoint.safetensors"):
        assert same(tensors(tmp_path / "whole" / name), tensors(tmp_path / "killed" / name)), name
    record = {d: json.loads((tmp_path / d / "mend.json").read_text())["training"] for d in ("whole", "killed")}
    assert record["whole"]["history"] == record["killed"]["history"]
    assert record["whole"]["best"] == record["killed"]["best"]

    history = record["whole"]["history"]
    assert [h["step"] for h in history] == [4, 8, 12, 16, 20, 24]
    assert history[-1]["total"] < history[0]["total"]  # the training loss falls on held-out edits
    assert all(h["edit"] < h["edit_before"] for h in history)  # every edit lowers the rephrase's loss

    again = train_mend(*SHORT, *steps, "--out", "whole", cwd=tmp_path)
    assert again.returncode == 2 and "--out: whole already holds" in again.stderr and "--resume" in again.stderr
    other = train_mend(*SHORT, "--steps", "24", "--data", str(DATA), "--rank", "16", "--out", "whole", "--resume",
                       cwd=tmp_path)
    assert other.returncode == 2 and "trained with other settings (--rank 8)" in other.stderr.strip().splitlines()[-1]


def overlapping_data(tmp_path: Path, rename: bool) -> Path:
    records = [json.loads(line) for line in (TINYWORLD_DIR / "suite.jsonl").read_text().splitlines()[:20]]
    if rename:
        for index, record in enumerate(records):
            record["id"] = f"mine-{index}"
    path = tmp_path / ("renamed.json" if rename else "copied.json")
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize(("rename", "message"), [
    (False, "--data: 20 training cases have the id of a case of suite tinyworld (first: tw-0000)"),
    (True, "--data: 20 training cases ask a prompt or rephrase of suite tinyworld (first: mine-0)"),
])
def test_training_data_that_overlaps_an_evaluated_suite_is_refused(tmp_path, rename, message):
    data = overlapping_data(tmp_path, rename)
    done = train_mend("--data", str(data), "--out", "out", "--val-cases", "2", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"pytest-wild train-mend: {message}; train on cases the suite does "
                                                "not evaluate"]
    assert not (tmp_path / "out").exists()


def test_a_mend_trained_for_a_random_tiny_llama_edits_it_through_the_plugin(tmp_path):
    model, tok = tiny_model("llama", seed=4)
    model.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    records = [json.loads(line) for line in DATA.read_text().splitlines()]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:40]))
    (tmp_path / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[40:43]))
    trained = train_mend("--model", "llama", "--data", "train.jsonl", "--out", "mend", "--eval-suite", "cases.jsonl",
                         "--rank", "8", "--steps", "4", "--accumulate", "2", "--val-every", "2", "--val-cases", "4",
                         "--lr", "1e-3", "--edit-lr", "1e-1", "--quiet", "--device", "cpu", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    config = json.loads((tmp_path / "mend" / "mend.json").read_text())
    assert config["model_type"] == "llama"
    assert sorted(config["modules"]) == sorted(f"model.layers.{i}.mlp.{w}" for i in (1, 2, 3)
                                               for w in ("gate_proj", "up_proj", "down_proj"))
    assert config["training"]["checked_against"] == ["cases.jsonl"]

    (tmp_path / "hp.yaml").write_text("directory: mend\n")
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--wild", "--editor", "mend", "--wild-model=llama", "--wild-suite=cases.jsonl",
         "--wild-hparams=hp.yaml", "--wild-device", "cpu", f"--wild-report={report}", "-p",
         "no:cacheprovider", "-p", "no:randomly", "-q", "--wild-eval", "wild,synthetic"],
        cwd=tmp_path, capture_output=True, text=True,
        env=outer_xdist_removed())
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-2000:]  # a random model may fail its cases
    samples = json.loads(report.read_text())["samples"]
    assert len(samples) == 3
    answers = [s["modes"]["wild"]["answers"][q] for s in samples for q in ("prompt", "rephrase")]
    assert any(a["after"] != a["before"] for a in answers)  # the trained network's update reached the model


def test_a_network_trained_on_a_case_of_the_run_warns_for_that_case(tmp_path):
    import shutil

    from pytest_wild.editors.meta.training_data import prompt_hash

    shutil.copytree(TINYWORLD_DIR / "mend", tmp_path / "md", ignore=shutil.ignore_patterns("checkpoint.*"))
    config = json.loads((tmp_path / "md" / "mend.json").read_text())
    suite = [json.loads(line) for line in (TINYWORLD_DIR / "suite.jsonl").read_text().splitlines()]
    config["training"]["prompt_hashes"].append(prompt_hash(suite[1]["prompt"]))
    (tmp_path / "md" / "mend.json").write_text(json.dumps(config))
    (tmp_path / "hp.yaml").write_text("directory: md\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--wild", "--editor", "mend", "--wild-hparams=hp.yaml", "-p", "no:cacheprovider",
         "--wild-limit=2", "--wild-sampling=first", "--wild-device", "cpu"],
        cwd=tmp_path, capture_output=True, text=True,
        env=outer_xdist_removed())
    assert done.returncode in (0, 1), done.stdout[-3000:]
    warned = [line for line in done.stdout.splitlines() if "TrainedOnTheSuite: " in line]
    assert len(warned) == 1 and f"trained on the prompt of case {suite[1]['id']}:" in warned[0], done.stdout[-3000:]


@pytest.mark.parametrize(("args", "message"), [
    (["--steps", "15"], "--steps: 15 is not a multiple of --accumulate 10 (checkpoints fall between optimiser steps)"),
    (["--lr", "-1"], "--lr: -1.0 must be positive"),
    (["--lr", "nan"], "--lr: nan must be a finite number"),
    (["--edit-lr", "inf"], "--edit-lr: inf must be a finite number"),
    (["--lr-lr", "1e400"], "--lr-lr: inf must be a finite number"),  # past float: infinity
    (["--data", "missing.jsonl"], "--data"),
    (["--model", "llama"], "--eval-suite: name the suites this MEND will be evaluated on (repeatable), so the training "
                           "data can be checked against them"),
    (["--val-cases", "1200"], "--val-cases: 1200 of 1200 cases leaves no training or no validation"),
    (["--out", "afile"], "--out: afile is a link or a file; give a directory"),
])
def test_bad_training_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    (tmp_path / "afile").write_text("keep\n")
    options = {"--data": str(DATA), "--out": "out"}
    for key, value in zip(args[::2], args[1::2]):
        options[key] = value
    done = train_mend(*[item for pair in options.items() for item in pair], cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"pytest-wild train-mend: {message}"), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "keep\n"


def test_an_out_directory_that_cannot_be_written_is_refused_before_the_model_is_loaded(tmp_path):
    """The refusal comes after the data's checks and before anything is loaded (the probe says
    whether torch was imported): not at the first checkpoint, minutes in."""
    (tmp_path / "ro").mkdir()
    probe = ("import sys\nfrom pytest_wild.cli import main\n"
             f"status = main(['train-mend', '--data', {str(DATA)!r}, '--out', 'ro/out', '--quiet'])\n"
             "print(status, 'torch' in sys.modules)")
    with read_only(tmp_path / "ro"):
        done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                              env=outer_xdist_removed())
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == "pytest-wild train-mend: --out: ro/out cannot be written (ro is read-only)"
    assert list((tmp_path / "ro").iterdir()) == []


def test_training_input_is_refused_before_torch_is_imported(tmp_path):
    probe = ("import sys\nfrom pytest_wild.cli import main\n"
             "status = main(['train-mend', '--data', 'missing.jsonl', '--out', 'out'])\n"
             "print(status, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          env=outer_xdist_removed())
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
