"""Verdicts on disk, so a rerun asks the judge nothing it was asked before.

SQLite (the standard library's, one file) rather than one JSON file per verdict or a JSON
map: xdist workers and sharded runs write at once, and SQLite serialises writers with its own
file lock, keeps every transaction whole if a process dies mid-write, and finds a verdict by
key without reading the rest. The key is a SHA-256 of (question, gold, prediction, judge
model, prompt version): nothing else decides a verdict. Only verdicts are stored, never an
unjudged answer (it is asked again next time) and never anything from the request's headers.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from ..cases.case import WildInputError
from .grader import Answer, Verdict

COLUMNS = ["key", "verdict", "created"]
SCHEMA = "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict TEXT NOT NULL, created REAL NOT NULL)"


def verdict_key(question: str, gold: str, prediction: str, model: str, prompt_version: str) -> str:
    return hashlib.sha256(json.dumps([question, gold, prediction, model, prompt_version]).encode("utf-8")).hexdigest()


class VerdictCache:
    """A SQLite file of key -> verdict, safe to share between processes."""

    def __init__(self, path: Path) -> None:
        if path.is_symlink():
            raise WildInputError(f"{path}: the judge cache is a link, refused")
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            names = [name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            tables = {name: [row[0] for row in self._db.execute("SELECT name FROM pragma_table_info(?)", (name,))]
                      for name in names}
            if tables and tables != {"verdicts": COLUMNS}:  # another program's database: read, never changed
                self._db.close()
                found = "; ".join(f"{name}: {', '.join(columns)}" for name, columns in sorted(tables.items()))[:200]
                found = "".join(ch if ch.isprintable() else "?" for ch in found)  # names from an untrusted file
                raise WildInputError(f"{path}: not a judge cache (it holds tables {found}); remove it to start afresh")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
        except OSError as exc:
            raise WildInputError(f"{path}: cannot open the judge cache ({type(exc).__name__}); "
                                 "set PYTEST_WILD_CACHE to a directory you can write") from None
        except sqlite3.OperationalError as exc:
            raise WildInputError(f"{path}: cannot open the judge cache ({exc}); "
                                 "set PYTEST_WILD_CACHE to a directory you can write") from None
        except sqlite3.DatabaseError as exc:
            raise WildInputError(f"{path}: not a judge cache ({type(exc).__name__}); remove it to start afresh") from None

    def get(self, keys: list[str]) -> dict[str, str]:
        """The cached verdicts among `keys`."""
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):  # SQLite's limit on bound parameters
            chunk = keys[start:start + 500]
            rows = self._db.execute(f"SELECT key, verdict FROM verdicts WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk)
            found.update(rows.fetchall())
        return found

    def put(self, verdicts: dict[str, str]) -> None:
        """Store verdicts in one transaction (a key already there keeps its first verdict)."""
        if verdicts:
            now = time.time()
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR IGNORE INTO verdicts VALUES (?, ?, ?)",
                                     [(key, verdict, now) for key, verdict in verdicts.items()])

    def close(self) -> None:
        self._db.close()


def through_cache(cache: VerdictCache | None, answers: list[Answer], model: str, prompt_version: str,
                  ask: Callable[[list[Answer]], list[Verdict]]) -> list[Verdict]:
    """A verdict per answer, in order: from the cache where it has one, else from `ask`, which
    is given each distinct answer once; its verdicts are stored, its unjudged answers not."""
    keys = [verdict_key(a.question, a.gold, a.prediction, model, prompt_version) for a in answers]
    known = cache.get(sorted(set(keys))) if cache else {}
    todo = sorted({key: answer for key, answer in zip(keys, answers) if key not in known}.items())
    asked = dict(zip((key for key, _ in todo), ask([answer for _, answer in todo]) if todo else []))
    if cache:
        cache.put({key: v.verdict for key, v in asked.items() if v.verdict is not None})
    return [Verdict(known[key], cached=True) if key in known else asked[key] for key in keys]
