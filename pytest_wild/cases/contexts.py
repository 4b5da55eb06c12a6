"""How a question is put to the model.

- `question`: the bare question (the paper's default, `question-only`).
- `qa_inst`: the paper's QA instruction, "Please answer the question:\\n\\nQ: {q}\\nA:".
- `chat_temp`: the paper's chat prompt exactly as its code writes it, for every model: Llama-2's
  format with its one-sentence system prompt and the bare question, between a literal "<s>"
  and a trailing "</s>" (so a Llama-2 tokenizer sees two BOS tokens, and every model sees an
  end-of-sequence marker before it answers).
- `chat`: ours, the same system prompt (or the user's, `--wild-system-prompt`, or none when
  that is empty) and the bare question through the model's own chat template with the
  generation prompt, and neither the trailing "</s>" nor a second BOS. The answer is what
  the model generates after the template's assistant turn opens, so the stop rules apply to
  the assistant's answer alone.
"""

from __future__ import annotations

from .case import WildInputError

CONTEXTS = ("question", "qa_inst", "chat_temp", "chat")
QA_INSTRUCTION = "Please answer the question:\n\nQ: {}\nA:"
SYSTEM_PROMPT = "You are a helpful, respectful and honest assistant."
PUBLISHED_CHAT = "<s>[INST] <<SYS>>\n" + SYSTEM_PROMPT + "\n<</SYS>>\n\n{} [/INST]</s>"


def make_context(question: str, kind: str, tokenizer, system_prompt: str | None = None) -> str:
    """The text the model is given for `question` under context `kind` (`system_prompt`:
    the chat context's system turn; None for ours, "" for none)."""
    if kind == "question":
        return question
    if kind == "qa_inst":
        return QA_INSTRUCTION.format(question)
    if kind == "chat_temp":
        return PUBLISHED_CHAT.format(question)
    if kind == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise WildInputError("--wild-context chat: the model's tokenizer has no chat template (chat_temp, the "
                                 "paper's fixed Llama-2 prompt, needs none)")
        from jinja2 import TemplateError

        system = SYSTEM_PROMPT if system_prompt is None else system_prompt
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except TemplateError as exc:
            turns = "a system and a user turn" if system else "a user turn"
            raise WildInputError(f"--wild-context chat: the model's chat template refused {turns} ({exc})") from None
        return without_second_bos(text, tokenizer)
    raise WildInputError(f"--wild-context: {kind!r} is not one of {', '.join(CONTEXTS)}")


def without_second_bos(text: str, tokenizer) -> str:
    """The template's leading BOS text dropped when the tokenizer adds its BOS itself."""
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        ids = tokenizer("x")["input_ids"]
        if ids and ids[0] == tokenizer.bos_token_id:
            return text[len(bos):]
    return text
