"""A local Hugging Face causal LM as the judge (`--wild-judge hf:PATH_OR_ID`).

Loaded as `--wild-model` is (safetensors only, the model's own code only with
`--wild-trust-remote-code`) and asked through our `Engine`, in batches: greedy, stopping at
the first ".", newline or EOS, so its reply is one short line for the strict parse. For the
paper's prompt, read byte for byte as its code reads a server's reply, it stops only at EOS,
as a server asked without stop strings does, and its reply is the text without special tokens
(a reply cut at the token limit is longer than a letter, so never a verdict either way). The grader
prompt goes through the judge's chat template when its tokenizer has one (an instruction-tuned
judge expects it), else as plain text. Verdicts are cached under the model's weights
fingerprint, so another checkpoint under the same name never reuses them."""

from __future__ import annotations

from collections.abc import Callable

from ..cases.contexts import without_second_bos
from ..generation.engine import Engine
from ..model.load import fingerprint, load_model
from .cache import VerdictCache, through_cache
from .grader import REPLY_TOKENS, Answer, Grader, Verdict


class LocalJudge:
    def __init__(self, spec: str, *, grader: Grader = Grader(), cache: VerdictCache | None = None, device: str = "auto",
                 dtype: str = "float32", trust_remote_code: bool = False, batch_size: int = 16) -> None:
        loaded = load_model(spec, device, dtype, trust_remote_code)
        self.tokenizer = loaded.tokenizer
        self.engine = Engine(loaded.model, loaded.tokenizer, "published", batch_size, max_new_tokens=REPLY_TOKENS)
        self.model = f"hf:{spec}@{fingerprint(loaded.model)}"
        self.grader, self.cache = grader, cache
        self.requests = 0  # prompts generated for
        self.asked = 0  # answers asked (not from the cache): one prompt each, never retried
        self.failed_attempts: dict[str, int] = {}
        self.retries_sent = 0
        self.batch_size = batch_size
        self.stop: Callable[[], str | None] = lambda: None  # why to generate no more (SIGTERM), or None

    def judge(self, answers: list[Answer]) -> list[Verdict]:
        """A verdict per answer, in order: from the cache, else generated in batches."""
        return through_cache(self.cache, answers, self.model, self.grader.version, self._ask_all)

    def _ask_all(self, answers: list[Answer]) -> list[Verdict]:
        """Batch after batch; when `stop()` gives a reason, the rest unjudged with it."""
        verdicts: list[Verdict] = []
        for start in range(0, len(answers), self.batch_size):
            reason = self.stop()
            if reason:
                return verdicts + [Verdict(None, f"run stopped ({reason})")] * (len(answers) - start)
            batch = answers[start : start + self.batch_size]
            self.requests += len(batch)
            self.asked += len(batch)
            prompts = [self._prompt(a) for a in batch]
            replies = self.engine.generate_until_eos(prompts) if self.grader.exact else self.engine.generate(prompts)
            verdicts += [self.grader.verdict(reply.text) for reply in replies]
        return verdicts

    def _prompt(self, answer: Answer) -> str:
        """The grader's turns through the judge's chat template, or its prompt as plain text
        when the tokenizer has no template."""
        if not getattr(self.tokenizer, "chat_template", None):
            return self.grader.prompt(answer.question, answer.gold, answer.prediction)
        chat = self.tokenizer.apply_chat_template(self.grader.messages(answer), tokenize=False,
                                                  add_generation_prompt=True)
        return without_second_bos(chat, self.tokenizer)

    def close(self) -> None:
        pass
