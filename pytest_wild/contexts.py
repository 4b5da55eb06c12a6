"""How a question is put to the model: as is (the paper's default), inside a QA instruction,
or through the tokenizer's chat template."""

from __future__ import annotations

from .cases import WildInputError

QA_INSTRUCTION = "Please answer the question:\n\nQ: {}\nA:"
SYSTEM_PROMPT = "You are a helpful, respectful and honest assistant."


def make_context(question: str, kind: str, tokenizer) -> str:
    if kind == "question":
        return question
    if kind == "qa_inst":
        return QA_INSTRUCTION.format(question)
    if kind == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise WildInputError("--wild-context chat: the model's tokenizer has no chat template")
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": QA_INSTRUCTION.format(question)}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise WildInputError(f"--wild-context: {kind!r} is not one of question, qa_inst, chat")
