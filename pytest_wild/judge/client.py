"""Grading answers through an OpenAI-compatible chat-completions server (OpenAI, vLLM,
llama.cpp's server, ...).

Requests run on a bounded set of threads over one `httpx2` client (the HTTP library the hub client
already brings; a pool of threads rather than asyncio because the callers are synchronous
pytest hooks and the work is waiting, not computing). Each request is retried, up to
`retries` times, after a timeout, a connection error, a 5xx, or a 429 (after the server's
`Retry-After`, capped, else an exponential backoff). An answer still not graded, or graded
with a reply that is not exactly CORRECT or INCORRECT, is `unjudged` with the reason.

A reply is untrusted: its body is streamed and abandoned past `REPLY_BYTES` ("reply too large";
a chat completion of one word is a few hundred bytes), one attempt (the request, the reply
read and parsed) ends at `timeout` seconds from its start ("timed out"; a server trickling
bytes is caught at its next chunk; a silent one by the read timeout, the same seconds), and JSON
nested past what the parser can follow is "malformed", never an exception that would lose the
run's results.

The API key goes in the Authorization header and nowhere else: reasons are our own words
(the status code, the exception's type), never a response body, a header or an exception's
text, which could echo it."""

from __future__ import annotations

import email.utils
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

from .cache import VerdictCache, through_cache
from .grader import Answer, Grader, Verdict

DEFAULT_CONCURRENCY = 32
REPLY_BYTES = 64 * 1024
RETRY_AFTER_CAP = 60.0
STOP_POLL = 0.2  # seconds between two looks at whether to stop


class JudgeClient:
    def __init__(self, url: str, model: str, api_key: str | None = None, *, grader: Grader = Grader(),
                 concurrency: int = DEFAULT_CONCURRENCY, timeout: float = 60.0, retries: int = 4,
                 backoff: float = 1.0, cache: VerdictCache | None = None) -> None:
        import httpx2

        self.endpoint = url.rstrip("/") + ("" if url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.model, self.grader, self.cache = model, grader, cache
        self.concurrency, self.retries, self.backoff, self.timeout = concurrency, retries, backoff, timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx2.Client(headers=headers, timeout=timeout, follow_redirects=False,  # the key stays with the URL named
                                   limits=httpx2.Limits(max_connections=concurrency))
        self.requests = 0  # attempts sent, retries included
        self.asked = 0  # answers asked at least once (not from the cache)
        self.failed_attempts: Counter[str] = Counter()  # reason -> attempts that got no usable reply
        self._count = threading.Lock()
        self.stop: Callable[[], str | None] = lambda: None  # why to ask no more (SIGTERM), or None

    def judge(self, answers: list[Answer]) -> list[Verdict]:
        """A verdict per answer, in order: from the cache, else asked concurrently."""
        return through_cache(self.cache, answers, self.model, self.grader.version, self._ask_all)

    def _ask_all(self, answers: list[Answer]) -> list[Verdict]:
        """Every answer asked by `concurrency` threads; when `stop()` gives a reason, the verdicts
        so far are kept and every other answer is unjudged with it at once. The threads are
        daemons, not a ThreadPoolExecutor's, whose threads the interpreter joins at exit: a
        request hanging on a server would hold a stopped run up to its timeout after its report."""
        verdicts: list[Verdict | None] = [None] * len(answers)
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(answers)):
            todo.put(index)
        finished = threading.Semaphore(0)

        def work() -> None:
            while not self.stop():
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    verdicts[index] = self._ask(answers[index])
                except Exception as exc:  # a fault of ours or the HTTP library's: that answer unjudged, not the run lost
                    verdicts[index] = Verdict(None, f"failed ({type(exc).__name__})")
                finished.release()

        for _ in range(min(self.concurrency, len(answers))):
            threading.Thread(target=work, name="wild-judge", daemon=True).start()
        count, reason = 0, None
        while count < len(answers) and not reason:
            if finished.acquire(timeout=STOP_POLL):
                count += 1
            else:
                reason = self.stop()
        return [verdict or Verdict(None, f"run stopped ({reason})") for verdict in verdicts]

    def _ask(self, answer: Answer) -> Verdict:
        import httpx2

        limit = {} if self.grader.max_tokens is None else {"max_tokens": self.grader.max_tokens}
        body = {"model": self.model, "temperature": 0, **limit, "messages": self.grader.messages(answer)}
        reason, wait = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(wait)
            stopped = self.stop()
            if stopped:
                return Verdict(None, f"run stopped ({stopped})")
            wait = min(self.backoff * 2 ** attempt, RETRY_AFTER_CAP)  # 20 retries doubling from 1 s would wait 12 days
            with self._count:
                self.requests += 1
                self.asked += attempt == 0
            try:
                status, headers, content = self._post(body, time.monotonic() + self.timeout)
            except httpx2.TimeoutException:
                reason = self._failed("timed out")
                continue
            except httpx2.TransportError as exc:
                reason = self._failed(f"connection failed ({type(exc).__name__})")
                continue
            if status == 429 or status >= 500:
                reason = self._failed(f"HTTP {status}")
                if status == 429:
                    wait = retry_after(headers.get("Retry-After"), wait)
                continue
            if status != 200:
                return Verdict(None, f"HTTP {status}")
            if content is None:
                return Verdict(None, f"reply too large (over {REPLY_BYTES // 1024} KiB)")
            return self._verdict(content)
        attempts = self.retries + 1
        return Verdict(None, f"{reason} after {attempts} attempt{'s' if attempts > 1 else ''}")

    def _failed(self, reason: str) -> str:
        """Count an attempt that got no usable reply (a connection that failed never reached
        the server, so a server counts fewer requests than were attempted)."""
        with self._count:
            self.failed_attempts[reason] += 1
        return reason

    @property
    def retries_sent(self) -> int:
        return self.requests - self.asked

    def _verdict(self, content: bytes) -> Verdict:
        """The verdict of a chat completion's body: unjudged, with why, when it is none."""
        try:
            reply = json.loads(content)["choices"][0]["message"]["content"]
        except RecursionError:
            return Verdict(None, "malformed response (nested too deeply)")
        except (ValueError, KeyError, IndexError, TypeError):
            return Verdict(None, "malformed response (not a chat completion)")
        return self.grader.verdict(reply if isinstance(reply, str) else "")

    def _post(self, body: dict, deadline: float):
        """(status, headers, body) of one request; the body is read only from a 200, and is
        None past `REPLY_BYTES`. A `TimeoutException` past `deadline`."""
        import httpx2

        with self._http.stream("POST", self.endpoint, json=body) as response:
            if response.status_code != 200:
                return response.status_code, response.headers, b""
            received, size = [], 0
            for chunk in response.iter_bytes():  # decoded: a compressed reply is bounded by what it unpacks to
                size += len(chunk)
                if size > REPLY_BYTES:
                    return response.status_code, response.headers, None
                if time.monotonic() > deadline:
                    raise httpx2.ReadTimeout("the reply took longer than the timeout")
                received.append(chunk)
            return response.status_code, response.headers, b"".join(received)

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
