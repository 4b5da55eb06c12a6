"""The judge a run asks for (`--wild-metric judge` with `--wild-judge` and its options), checked
when the run starts, without importing torch, and opened at the end of the run.

The API key is read from the environment (`WILD_JUDGE_API_KEY`, else `OPENAI_API_KEY`) only
when the judge is opened, and handed to the client alone: the settings, and so the report,
never hold it. A URL carrying credentials is refused for the same reason, and a URL is
reported without its query string."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..cases.case import WildInputError
from .grader import PUBLISHED, Grader, grader_from_text

KEY_VARIABLES = ("WILD_JUDGE_API_KEY", "OPENAI_API_KEY")
LOCAL = "hf:"
MAX_CONCURRENCY = 256  # requests at once, a thread each
MAX_RETRIES = 20  # retries of one request; the waits between them are capped (judge.client)


@dataclass(frozen=True)
class JudgeSettings:
    target: str  # an OpenAI-compatible server's URL, or "hf:" and a local model's path or hub id
    model: str  # the name a server is asked for; a local judge's spec
    grader: Grader
    concurrency: int
    cache: Path
    allow_unjudged: bool = False
    retries: int = 4  # after a timeout, a connection error, a 429 or a 5xx
    timeout: float = 60.0  # seconds a request may take

    @property
    def local(self) -> str | None:
        """A local judge's path or hub id, or None for a server."""
        return self.target[len(LOCAL):] if self.target.startswith(LOCAL) else None

    def described(self) -> dict:
        """What the report says of the judge: where, which model, which prompt (never a key)."""
        parts = urlsplit(self.target)
        where = self.target if self.local else f"{parts.scheme}://{parts.netloc}{parts.path}"
        server = {} if self.local else {"concurrency": self.concurrency, "retries": self.retries, "timeout": self.timeout}
        return {"judge": where, "model": self.model, "prompt_version": self.grader.version,
                "allow_unjudged": self.allow_unjudged} | server

    @property
    def name(self) -> str:
        """How the summary names the judge: `hf:PATH`, or the model and where it is served."""
        described = self.described()
        return described["judge"] if self.local else f"{self.model} at {described['judge']}"

    def open(self, device: str, dtype: str, trust_remote_code: bool):
        """The judge, with its cache: a client of the server, or the local model loaded."""
        from .cache import VerdictCache

        cache = VerdictCache(self.cache)
        if self.local is None:
            from .client import JudgeClient

            return JudgeClient(self.target, self.model, api_key(), grader=self.grader, concurrency=self.concurrency,
                               timeout=self.timeout, retries=self.retries, cache=cache)
        from .local import LocalJudge

        try:
            return LocalJudge(self.local, grader=self.grader, cache=cache, device=device, dtype=dtype,
                              trust_remote_code=trust_remote_code)
        except WildInputError as exc:
            cache.close()
            raise WildInputError(as_judge(str(exc), self.target)) from None


def api_key() -> str | None:
    """The key from the environment; one refused for characters a header cannot carry is
    named by its variable, never shown."""
    for variable in KEY_VARIABLES:
        key = os.environ.get(variable)
        if key:
            if not key.isprintable() or any(ch.isspace() for ch in key):
                raise WildInputError(f"{variable}: the API key holds whitespace or control characters")
            if not key.isascii():  # an HTTP header carries ASCII (httpx2 encodes it so)
                raise WildInputError(f"{variable}: the API key holds characters that are not ASCII, which a header "
                                     "cannot carry")
            return key
    return None


def as_judge(message: str, target: str) -> str:
    """A model check's line (written for --wild-model) naming the judge instead."""
    return message.replace("--wild-model", f"--wild-judge {target}", 1)


def judge_settings(metric: str, cache: Path, target: str | None = None, model: str | None = None,
                   prompt_file: str | None = None, concurrency: int | None = None, allow_unjudged: bool = False,
                   retries: int | None = None, timeout: float | None = None) -> JudgeSettings | None:
    """The judge options, each checked with one line naming it; None when the metric is not
    the judge (and then no judge option may be given)."""
    given = {"--wild-judge": target, "--wild-judge-model": model, "--wild-judge-prompt": prompt_file,
             "--wild-judge-concurrency": concurrency, "--wild-judge-allow-unjudged": allow_unjudged or None,
             "--wild-judge-retries": retries, "--wild-judge-timeout": timeout}
    if metric != "judge":
        for option, value in given.items():
            if value is not None:
                raise WildInputError(f"{option}: only with --wild-metric judge")
        return None
    if not target:
        raise WildInputError("--wild-metric judge: name the judge with --wild-judge URL (an OpenAI-compatible "
                             "server, e.g. http://127.0.0.1:8000/v1) or --wild-judge hf:PATH_OR_ID (a local model)")
    if target.startswith(LOCAL):
        if not target[len(LOCAL):].strip():
            raise WildInputError(f"--wild-judge {target}: write hf: and a model's directory or hub id")
        for option in ("--wild-judge-model", "--wild-judge-concurrency", "--wild-judge-retries", "--wild-judge-timeout"):
            if given[option] is not None:
                raise WildInputError(f"{option}: only with a judge server's URL (--wild-judge {target} is a local model)")
        model = target[len(LOCAL):]
    else:
        check_url(target)
        if not model:
            raise WildInputError(f"--wild-judge-model: name the model the server at {target} is asked for")
        api_key()  # a key a header cannot carry is refused now, not after the run
    if concurrency is not None and concurrency < 1:
        raise WildInputError(f"--wild-judge-concurrency: expected a positive number of requests, got {concurrency}")
    if concurrency is not None and concurrency > MAX_CONCURRENCY:  # a thread each
        raise WildInputError(f"--wild-judge-concurrency: at most {MAX_CONCURRENCY} requests at once, got {concurrency}")
    if retries is not None and not 0 <= retries <= MAX_RETRIES:
        raise WildInputError(f"--wild-judge-retries: expected 0 to {MAX_RETRIES} retries, got {retries}")
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise WildInputError(f"--wild-judge-timeout: expected a positive number of seconds, got {timeout}")
    grader = Grader()
    if prompt_file == "published":
        grader = PUBLISHED
    elif prompt_file is not None:
        path = Path(prompt_file).expanduser()
        if path.is_symlink() or not path.is_file():
            raise WildInputError(f"--wild-judge-prompt: {path} is not a regular file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WildInputError(f"--wild-judge-prompt: {path}: cannot read it as UTF-8 ({type(exc).__name__})") from None
        grader = grader_from_text(text, f"--wild-judge-prompt {path}")
    from .client import DEFAULT_CONCURRENCY

    return JudgeSettings(target, model, grader, concurrency or DEFAULT_CONCURRENCY, cache, allow_unjudged,
                         4 if retries is None else retries, 60.0 if timeout is None else timeout)


def check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise WildInputError(f"--wild-judge {url}: not an http(s) URL of an OpenAI-compatible server "
                             "(e.g. http://127.0.0.1:8000/v1), nor hf:PATH_OR_ID")
    if parts.username is not None or parts.password is not None:
        raise WildInputError("--wild-judge: the URL holds credentials; put the key in WILD_JUDGE_API_KEY instead")
