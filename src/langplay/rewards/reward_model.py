"""A Hugging Face sequence-classification reward model as a scorer (e.g. Skywork-Reward-V2)."""

from __future__ import annotations

import torch

from langplay.errors import LangplayError, first_line
from langplay.text import encodable


class RewardModelScorer:
    """Scores each (prompt, completion) as a chat [user: prompt, assistant: completion] with the model's template.

    `prompts` may be the formatted prompt texts; pass the raw prompts through the `raw_prompt` column for a clean
    conversation (the trainers do).
    """

    def __init__(self, name_or_path: str, device: str = "auto", batch_size: int = 16, dtype: str = "auto"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from langplay.precision import resolve_device, resolve_dtype

        self.__name__ = f"reward_model:{name_or_path}"
        self.device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, self.device, frozen=True)  # auto: bf16 on CUDA, a scorer is never trained
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path, dtype=torch_dtype)
        except Exception as exc:  # OSError, ValueError, a damaged weights file
            raise LangplayError(f"cannot load reward model {name_or_path!r}: {first_line(exc)}") from None
        self.model.to(self.device).eval().requires_grad_(False)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size

    def _text(self, prompt: str, completion: str) -> str:
        if self.tokenizer.chat_template is None:
            return f"{prompt}\n{completion}"
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        return self.tokenizer.apply_chat_template(chat, tokenize=False)

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str], raw_prompt: list | None = None, **_) -> list[float]:
        users = raw_prompt if raw_prompt is not None else prompts
        texts = [self._text(p if isinstance(p, str) else p[-1]["content"], c) for p, c in zip(users, completions)]
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                [encodable(t) for t in texts[start : start + self.batch_size]], return_tensors="pt", padding=True,
                add_special_tokens=False
            ).to(self.device)
            scores += self.model(**enc).logits[:, 0].float().tolist()
        return scores
