"""Grading answers through an OpenAI-compatible chat-completions server (OpenAI, vLLM,
llama.cpp's server, ...).

Requests run on a bounded thread pool over one `httpx2` client (the HTTP library the hub client
already brings; a pool of threads rather than asyncio because the callers are synchronous
pytest hooks and the work is waiting, not computing). Each request is retried, up to
`retries` times, after a timeout, a connection error, a 5xx, or a 429 (after the server's
`Retry-After`, capped, else an exponential backoff). An answer still not graded, or graded
with a reply that is not exactly CORRECT or INCORRECT, is `unjudged` with the reason.

The API key goes in the Authorization header and nowhere else: reasons are our own words
(the status code, the exception's type), never a response body, a header or an exception's
text, which could echo it."""

from __future__ import annotations

import email.utils
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .cache import VerdictCache, through_cache
from .grader import Answer, Grader, Verdict

DEFAULT_CONCURRENCY = 32
RETRY_AFTER_CAP = 60.0


class JudgeClient:
    def __init__(self, url: str, model: str, api_key: str | None = None, *, grader: Grader = Grader(),
                 concurrency: int = DEFAULT_CONCURRENCY, timeout: float = 60.0, retries: int = 4,
                 backoff: float = 1.0, cache: VerdictCache | None = None) -> None:
        import httpx2

        self.endpoint = url.rstrip("/") + ("" if url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.model, self.grader, self.cache = model, grader, cache
        self.concurrency, self.retries, self.backoff = concurrency, retries, backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx2.Client(headers=headers, timeout=timeout, follow_redirects=False,  # the key stays with the URL named
                                   limits=httpx2.Limits(max_connections=concurrency))
        self.requests = 0  # sent, retries included
        self._count = threading.Lock()

    def judge(self, answers: list[Answer]) -> list[Verdict]:
        """A verdict per answer, in order: from the cache, else asked concurrently."""
        return through_cache(self.cache, answers, self.model, self.grader.version, self._ask_all)

    def _ask_all(self, answers: list[Answer]) -> list[Verdict]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._ask, answers))

    def _ask(self, answer: Answer) -> Verdict:
        import httpx2

        limit = {} if self.grader.max_tokens is None else {"max_tokens": self.grader.max_tokens}
        body = {"model": self.model, "temperature": 0, **limit, "messages": self.grader.messages(answer)}
        reason, wait = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(wait)
            wait = self.backoff * 2 ** attempt
            with self._count:
                self.requests += 1
            try:
                response = self._http.post(self.endpoint, json=body)
            except httpx2.TimeoutException:
                reason = "timed out"
                continue
            except httpx2.TransportError as exc:
                reason = f"connection failed ({type(exc).__name__})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                reason = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    wait = retry_after(response.headers.get("Retry-After"), wait)
                continue
            if response.status_code != 200:
                return Verdict(None, f"HTTP {response.status_code}")
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                return Verdict(None, "malformed response (not a chat completion)")
            return self.grader.verdict(content if isinstance(content, str) else "")
        attempts = self.retries + 1
        return Verdict(None, f"{reason} after {attempts} attempt{'s' if attempts > 1 else ''}")

    def close(self) -> None:
        self._http.close()


def retry_after(value: str | None, default: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = default
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)
