"""The yes/no question every generative VLM is scored with, in the model's own chat format.

The score is the log-odds of the answer "Yes" against "No" at the position after the prompt, so the
prompt must end exactly where the answer starts, and the caption's characters must be findable in it.
"""
from __future__ import annotations

from dataclasses import dataclass

QUESTION = "Does this caption describe the image? Caption: {caption}\nAnswer yes or no."
_SLOT = "FUSIONAUDITCAPTIONSLOT"  # stands for the caption while a chat template is rendered


@dataclass(frozen=True)
class YesNoPrompt:
    """The prompt around the caption, and the two answers as they continue it."""

    prefix: str                    # up to the caption, image placeholder included
    suffix: str                    # after the caption, ending where the answer starts
    yes: str
    no: str

    @classmethod
    def from_rendered(cls, rendered: str) -> YesNoPrompt:
        """Split a rendered conversation at the caption slot; the answer follows the generation prompt."""
        if rendered.count(_SLOT) != 1:
            raise ValueError(f"the rendered prompt must hold the caption slot once, got: {rendered!r}")
        prefix, suffix = rendered.split(_SLOT)
        sep = "" if suffix[-1:].isspace() else " "  # "ASSISTANT:" + " Yes", "assistant\n" + "Yes"
        return cls(prefix, suffix, sep + "Yes", sep + "No")

    @classmethod
    def from_format(cls, fmt: str) -> YesNoPrompt:
        """From a hand-written format with a ``{question}`` field (the architecture's chat format)."""
        return cls.from_rendered(fmt.format(question=QUESTION.format(caption=_SLOT)))

    def render(self, caption: str) -> tuple[str, tuple[int, int]]:
        """(prompt text, [start, stop) characters of the caption in it)."""
        caption = " ".join(caption.split())  # a newline inside a caption would read as a new turn
        return self.prefix + caption + self.suffix, (len(self.prefix), len(self.prefix) + len(caption))


def chat_prompt(processor, fallback_format: str) -> YesNoPrompt:
    """The checkpoint's own chat template when it has one, else the architecture's documented format."""
    if not getattr(processor, "chat_template", None):
        return YesNoPrompt.from_format(fallback_format)
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": QUESTION.format(caption=_SLOT)}]}]
    prompt = YesNoPrompt.from_rendered(
        processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    tok = processor.tokenizer
    bos = tok.bos_token
    # Templates that write BOS themselves would get a second one from the tokenizer.
    if bos and prompt.prefix.startswith(bos) and tok("x")["input_ids"][:1] == [tok.bos_token_id]:
        prompt = YesNoPrompt(prompt.prefix[len(bos):], prompt.suffix, prompt.yes, prompt.no)
    return prompt


def answer_token_id(tokenizer, context: str, answer: str) -> int:
    """The first token ``answer`` adds when it continues ``context`` (tokenised together, as generated)."""
    base = tokenizer(context, add_special_tokens=False)["input_ids"]
    full = tokenizer(context + answer, add_special_tokens=False)["input_ids"]
    i = next((k for k, (a, b) in enumerate(zip(base, full)) if a != b), len(base))
    if i >= len(full):
        raise ValueError(f"the tokenizer adds no token for answer {answer!r} after {context[-30:]!r}")
    return full[i]
