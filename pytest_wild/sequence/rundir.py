"""A sequence's run directory (--wild-run-dir, --wild-resume): what a sequence of edits has
done so far, written so that a run killed at any moment (power, OOM, a CI time limit,
SIGKILL) loses at most the edits since the last snapshot.

    DIR/run.json                    what the results depend on (checked on --wild-resume)
    DIR/<sequence>/latest.json      the name of the sequence's complete snapshot
    DIR/<sequence>/snapshot-000700/ weights.safetensors: the touched tensors as they are now
                                    state.safetensors: the editor's state (AlphaEdit's keys)
                                    progress.json: the edits done and their scores so far

A snapshot is written into a temporary directory, renamed into place and only then named in
`latest.json` (itself replaced atomically), so a reader finds either the previous snapshot or
the new one, whole. The tensors are stored as they are (not as a difference from the original,
which floating point would not give back exactly), and only those an edit touched: a few
layers, not the model. The directory comes from the user and may be handed around: nothing in
it is followed out of it (links are refused), file names in it are checked before use, and
tensors are read with safetensors (no pickle)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

from ..cases.case import WildInputError
from ..storage import sync, write_bytes_atomic, write_json_atomic

FORMAT = 1
SNAPSHOT = re.compile(r"snapshot-\d{6,}")


class RunDirectory:
    """The run directory as one run uses it: created (or checked, on resume) at configure,
    then one `SequenceStore` per sequence (one per --wild-orders order)."""

    def __init__(self, path: Path, option: str) -> None:
        self.path, self.option = path, option

    def create(self, identity: dict) -> None:
        """A new run: the directory must hold no run yet (but this very run, recorded by a
        start that ended before its first snapshot, say on a usage error)."""
        if (self.path / "run.json").exists() or (self.path / "run.json").is_symlink():
            if self._unstarted(identity):
                return
            raise WildInputError(f"{self.option} {self.path}: already holds a run; continue it with "
                                 f"--wild-resume {self.path}, or name an empty directory")
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise WildInputError(f"{self.option} {self.path}: not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path / "run.json", {"format": FORMAT, "identity": identity})
        except OSError as exc:
            raise WildInputError(f"{self.option} {self.path}: cannot write there ({exc.strerror})") from None

    def check(self, identity: dict) -> None:
        """A resumed run: the directory's run must be this run, or one line names what differs."""
        saved = self.read_json(self.path / "run.json", "run.json")
        if saved.get("format") != FORMAT or not isinstance(saved.get("identity"), dict):
            raise WildInputError(f"{self.option} {self.path}: run.json is not a pytest-wild run directory "
                                 f"(format {saved.get('format')!r}, expected {FORMAT})")
        different = first_difference(saved["identity"], identity)
        if different:
            raise WildInputError(f"{self.option} {self.path}: the run there differs from this one: {different}")

    def _unstarted(self, identity: dict) -> bool:
        """Whether the directory holds this run's record and nothing else yet."""
        try:
            self.check(identity)
        except WildInputError:
            return False
        return [entry.name for entry in self.path.iterdir()] == ["run.json"]

    def sequence(self, name: str) -> SequenceStore:
        return SequenceStore(self, self.path / name)

    def read_json(self, path: Path, what: str) -> dict:
        """A JSON object of the run directory, or one line saying why it cannot be one."""
        try:
            checked = self.inside(path, what)
            data = json.loads(checked.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WildInputError(f"{self.option} {self.path}: no {what} (not a pytest-wild run directory)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WildInputError(f"{self.option} {self.path}: {what} is corrupt ({_reason(exc)})") from None
        if not isinstance(data, dict):
            raise WildInputError(f"{self.option} {self.path}: {what} is corrupt (not a JSON object)")
        return data

    def inside(self, path: Path, what: str) -> Path:
        """`path` if nothing on the way to it from the run directory is a link."""
        part = self.path
        for name in path.relative_to(self.path).parts:
            part = part / name
            if part.is_symlink():
                raise WildInputError(f"{self.option} {self.path}: {what} is a link; a run directory holds no links")
        if not path.exists():
            raise FileNotFoundError(path)
        return path


class SequenceStore:
    """One sequence's snapshots."""

    def __init__(self, run: RunDirectory, path: Path) -> None:
        self.run, self.path = run, path

    def latest(self) -> tuple[dict, dict, dict] | None:
        """(progress, weights, state) of the last complete snapshot, or None when the sequence
        has none yet; a corrupt one is one line naming the file."""
        import safetensors.torch

        found = self.progress()
        if found is None:
            return None
        snapshot, progress = found
        tensors = []
        for file in ("weights.safetensors", "state.safetensors"):
            what = self._where(snapshot / file)
            try:
                tensors.append(safetensors.torch.load_file(self.run.inside(snapshot / file, what)))
            except FileNotFoundError:
                raise WildInputError(f"{self.run.option} {self.run.path}: {what} is missing") from None
            except WildInputError:
                raise
            except Exception as exc:  # OSError, or safetensors' own error for a bad header
                raise WildInputError(f"{self.run.option} {self.run.path}: {what} is corrupt ({_reason(exc)})") from None
        return progress, tensors[0], tensors[1]

    def progress(self) -> tuple[Path, dict] | None:
        """(directory, progress) of the last complete snapshot, or None when there is none."""
        pointer = self.path / "latest.json"
        if not pointer.exists() and not pointer.is_symlink():
            return None
        where = self._where(pointer)
        name = self.run.read_json(pointer, where).get("snapshot")
        if not isinstance(name, str) or not SNAPSHOT.fullmatch(name):
            raise WildInputError(f"{self.run.option} {self.run.path}: {where} is corrupt (snapshot {name!r})")
        snapshot = self.path / name
        progress = self.run.read_json(snapshot / "progress.json", self._where(snapshot / "progress.json"))
        if not isinstance(progress.get("done"), int):
            raise WildInputError(f"{self.run.option} {self.run.path}: {self._where(snapshot / 'progress.json')} "
                                 "is corrupt (no number of edits done)")
        return snapshot, progress

    def save(self, done: int, progress: dict, weights: dict, state: dict) -> None:
        """Write the snapshot after `done` edits whole, point `latest.json` at it, then remove
        the older ones."""
        import safetensors.torch

        name = f"snapshot-{done:06d}"
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.path / f".{name}.{os.getpid()}.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        try:
            safetensors.torch.save_file({k: v.detach().to("cpu").contiguous() for k, v in weights.items()},
                                        temporary / "weights.safetensors")
            safetensors.torch.save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()},
                                        temporary / "state.safetensors")
            write_bytes_atomic(temporary / "progress.json", (json.dumps(progress, sort_keys=True) + "\n").encode())
            for file in temporary.iterdir():
                sync(file)
        except (OSError, safetensors.SafetensorError) as exc:  # a full disk: the last whole snapshot stays the latest
            shutil.rmtree(temporary, ignore_errors=True)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).rpartition(": ")[2]
            raise OSError(errno.EIO, f"the snapshot after {done} edits was not saved: {why}", str(self.path)) from None
        final = self.path / name
        shutil.rmtree(final, ignore_errors=True)  # left by a run killed before it named it in latest.json
        os.rename(temporary, final)
        sync(self.path)
        write_json_atomic(self.path / "latest.json", {"snapshot": name, "done": done})
        for old in self.path.iterdir():
            if old.name != name and (SNAPSHOT.fullmatch(old.name) or old.name.endswith(".tmp")) and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)

    def _where(self, path: Path) -> str:
        return str(path.relative_to(self.run.path))


def first_difference(saved: dict, current: dict, prefix: str = "") -> str | None:
    """'editor: 'memit' there, 'ft-m' here' for the first key (in order) whose value differs."""
    for key in sorted(set(saved) | set(current)):
        there, here = saved.get(key), current.get(key)
        if isinstance(there, dict) and isinstance(here, dict):
            found = first_difference(there, here, f"{prefix}{key}.")
            if found:
                return found
        elif there != here:
            return f"{prefix}{key}: {_short(there)} there, {_short(here)} here"
    return None


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    return text[:120]
