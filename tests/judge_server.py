"""A real chat-completions server on 127.0.0.1 for the judge's tests and benchmark. What it
does with a request is read from the answer being graded (the prompt's "Answer to grade:"
line, or the paper's prompt's "Predicted answer:"), by its first word:

- `right ...` / `wrong ...`: replies CORRECT / INCORRECT;
- `busy ...`: 429 with `Retry-After: <retry_after>` the first time this answer is asked, then CORRECT;
- `broken ...`: 500, always; `flaky ...`: 500 the first time, then CORRECT;
- `hang ...`: answers CORRECT after `hang` seconds (past the client's timeout);
- `malformed ...`: a 200 whose body is not JSON; `chatty ...`: "Correct, I think." (no verdict);
- hostile replies: `spaces ...` replies 20,000 spaces; `padded ...` "CORRECT", 5 MB of spaces
  and "x"; `huge ...` a 200 MB body, streamed (never held in memory); `nested ...` JSON nested
  100,000 deep, `nested-small ...` 30,000 deep (under 64 KiB); `trickle ...` a chat completion
  one byte every 50 ms (each read is quick, the whole reply is not).

`every=` gives one of those behaviours to every answer, whatever its first word, and two more:
`every="reference"` replies CORRECT when each word of the reference answer is among the answer's
words (letter case and punctuation aside), else INCORRECT, a lenient grader that disagrees with
exact match where a real judge would; `every="echo"` replies 200 with the request's Authorization
header as the verdict, and `every="echo-500"` a 500 whose body is that header, as a hostile or
careless server might; `every="redirect"` answers 307 to another address. It keeps each
request's parameters (its body but the messages).

With `failures=N`, the first N requests answer 500 whatever they grade.

To the paper's prompt, which asks for a letter, it replies A for CORRECT and B for INCORRECT.

Every request waits `latency` seconds first; with `gather=N`, the first N requests wait (10 s
at most) until all N are in flight together, so a client that is concurrent is seen to be,
however busy the machine. The server counts requests, keeps the Authorization headers it saw, and the most
requests it held at once."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JudgeServer:
    def __init__(self, latency: float = 0.0, hang: float = 2.0, retry_after: str = "0", gather: int = 0,
                 every: str | None = None, failures: int = 0) -> None:
        self.latency, self.hang, self.retry_after, self.gather, self.every = latency, hang, retry_after, gather, every
        self.failures = failures
        self.requests, self.in_flight, self.most_in_flight = 0, 0, 0
        self.authorizations: list[str] = []
        self.systems: list[str | None] = []  # each request's system turn, or None without one
        self.parameters: list[dict] = []  # each request's body but its messages
        self.seen: dict[str, int] = {}
        self._gathered = False  # `gather` requests were once in flight together
        self._lock = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                server._enter(self.headers.get("Authorization", ""))
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    prompt = body["messages"][-1]["content"]
                    server.systems.append(body["messages"][0]["content"] if len(body["messages"]) > 1 else None)
                    server.parameters.append({key: value for key, value in body.items() if key != "messages"})
                    answer = re.findall(r"^(?:Answer to grade|Predicted answer): (.*)$", prompt, re.M)[-1]
                    reference = re.findall(r"^(?:Reference answer|Gold target): (.*)$", prompt, re.M)
                    status, body, headers = server._reply(answer, reference[-1] if reference else "",
                                                          self.headers.get("Authorization", ""))
                    if "Just return the letters" in prompt:  # the paper's prompt: A for CORRECT, B for INCORRECT
                        body = body.replace(b'"CORRECT"', b'"A"').replace(b'"INCORRECT"', b'"B"')
                    reply = status, body, headers
                finally:
                    server._leave()  # before the reply goes out: the client's next request may follow at once
                server._send(self, *reply)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the listen backlog: the client opens up to 32 connections at once

        self._http = Server(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_port}/v1"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> JudgeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _enter(self, authorization: str) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.authorizations.append(authorization)
            self._gathered = self._gathered or self.in_flight >= self.gather
            self._lock.notify_all()
            self._lock.wait_for(lambda: self._gathered, timeout=10)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _reply(self, answer: str, reference: str, authorization: str) -> tuple[int, bytes, dict]:
        """(status, body, headers) for a request grading `answer` against `reference`."""
        time.sleep(self.latency)
        kind = self.every or (answer.split()[0] if answer.split() else "")
        if kind == "echo-500":
            return 500, authorization.encode(), {}
        if kind == "redirect":
            return 307, b"", {"Location": "http://127.0.0.2:9/v1/chat/completions"}
        if kind == "reference":
            found = set(words(answer))
            kind = "right" if words(reference) and all(word in found for word in words(reference)) else "wrong"
        with self._lock:
            times = self.seen[answer] = self.seen.get(answer, 0) + 1
            failing, self.failures = self.failures > 0, max(self.failures - 1, 0)
        if failing:
            return 500, b'{"error": "server error"}', {}
        if kind == "busy" and times == 1:
            return 429, b"{}", {"Retry-After": self.retry_after}
        if kind == "broken" or (kind == "flaky" and times == 1):
            return 500, b'{"error": "server error"}', {}
        if kind == "hang":
            time.sleep(self.hang)
        if kind == "malformed":
            return 200, b"<html>not json", {}
        if kind in HOSTILE:
            return HOSTILE[kind]()
        reply = {"wrong": "INCORRECT", "chatty": "Correct, I think.", "echo": authorization}.get(kind, "CORRECT")
        return 200, completion(reply), {}

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes | Iterator[bytes], headers: dict) -> None:
        """Send the reply; a body given as chunks is written (and made) one chunk at a time,
        with the Content-Length its headers give."""
        try:
            handler.send_response(status)
            length = {"Content-Length": str(len(body))} if isinstance(body, bytes) else {}
            for key, value in {"Content-Type": "application/json", **length, **headers}.items():
                handler.send_header(key, value)
            handler.end_headers()
            for chunk in [body] if isinstance(body, bytes) else body:
                handler.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):  # a client that timed out (or stopped reading) has gone
            pass


def completion(reply: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]}).encode()


def streamed(total: int, chunk: bytes = b" " * 65536) -> tuple[int, Iterator[bytes], dict]:
    """A 200 of `total` bytes (spaces before a completion's JSON), made as it is sent."""
    return 200, (chunk for _ in range(total // len(chunk))), {"Content-Length": str(total // len(chunk) * len(chunk))}


def trickled(body: bytes, every: float = 0.05) -> Iterator[bytes]:
    for i in range(len(body)):
        time.sleep(every)
        yield body[i:i + 1]


def nested(depth: int) -> tuple[int, bytes, dict]:
    return 200, b'{"choices": ' + b"[" * depth + b"]" * depth + b"}", {}


HOSTILE = {
    "spaces": lambda: (200, completion(" " * 20_000), {}),
    "padded": lambda: (200, completion("CORRECT" + " " * 5_000_000 + "x"), {}),
    "huge": lambda: streamed(200 * 1024 * 1024),
    "nested": lambda: nested(100_000),
    "nested-small": lambda: nested(30_000),
    "trickle": lambda: (200, trickled(completion("CORRECT")), {"Content-Length": str(len(completion("CORRECT")))}),
}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())
