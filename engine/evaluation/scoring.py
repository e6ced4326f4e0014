"""Batched log-likelihoods of continuations under a causal LM: the one model call every scored benchmark uses.

Requests are (context ids, continuation ids). Rows are left-padded with explicit position ids, so every
continuation ends at the last position and the model only has to return logits for the last K+1 positions
(`logits_to_keep`): a (B, K, V) tensor instead of (B, T, V), which is what keeps a 49k vocabulary cheap.
Batches are filled longest-first up to a token budget, so similar lengths share a batch and padding is small.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SeqScore:
    logprob: float  # sum of log p(token | prefix) over the continuation
    n_tokens: int

    @property
    def mean(self) -> float:
        """Per-token log-likelihood: compares options of different lengths without favouring short ones."""
        return self.logprob / self.n_tokens


def start_token_id(tokenizer: Any) -> int:
    """The token a whole sentence is conditioned on, so its first word is scored too (BOS, else EOS)."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token: cannot score whole sentences with it")


def encode_continuation(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, split where the joint encoding splits.

    Encoding the joint text (not the parts) keeps the tokenizer's merges at the boundary; trailing spaces move
    from the context to the continuation because BPE vocabularies attach a space to the following word.
    """
    stripped = context.rstrip(" ")
    continuation = context[len(stripped):] + continuation
    ctx = tokenizer(stripped, add_special_tokens=False)["input_ids"]
    whole = tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"]
    if whole[: len(ctx)] != ctx:  # the boundary merged across: fall back to encoding the parts separately
        return list(ctx), list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    return list(ctx), list(whole[len(ctx):])


def encode_sentence(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """A whole sentence as a request: conditioned on the start token only."""
    return [start_token_id(tokenizer)], list(tokenizer(text, add_special_tokens=False)["input_ids"])


def plan_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, each with (rows * longest row) <= token_budget.

    A row longer than the budget gets a batch of its own rather than an error.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]  # longest-first: the first row is the widest
        if current and (len(current) + 1) * width > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def score_continuations(model: Any, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *, pad_id: int,
                        token_budget: int = 4096, progress: Callable[[int], None] | None = None) -> list[SeqScore]:
    """log p(continuation | context) for every request, in the requests' order.

    progress(n) is called after each batch with the number of requests it scored.
    """
    import torch

    for i, (ctx, cont) in enumerate(requests):
        if len(ctx) < 1 or len(cont) < 1:
            raise ValueError(f"request {i}: context and continuation need at least one token each "
                             f"(got {len(ctx)} and {len(cont)}); use encode_sentence for whole sentences")
    device = next(model.parameters()).device
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    out: list[SeqScore | None] = [None] * len(requests)
    lengths = [len(c) + len(x) for c, x in requests]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in plan_batches(lengths, token_budget):
                rows = [list(requests[i][0]) + list(requests[i][1]) for i in batch]
                conts = [len(requests[i][1]) for i in batch]
                width, k = max(len(r) for r in rows), max(conts)
                ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, row in enumerate(rows):
                    ids[r, width - len(row):] = torch.tensor(row)
                    mask[r, width - len(row):] = 1
                # Left padding shifts absolute positions; explicit ids keep every row's positions from 0.
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                kwargs: dict[str, Any] = {"logits_to_keep": k + 1} if keeps_logits else {}
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                               **kwargs).logits  # (B, K+1, V) or (B, T, V)
                logits = logits[:, -(k + 1):-1].float()  # (B, K, V): position j predicts the token after it
                logp = torch.log_softmax(logits, dim=-1)  # (B, K, V)
                targets = ids[:, width - k:].to(device)  # (B, K): the last K tokens of every row
                tok_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, K)
                for r, i in enumerate(batch):
                    c = conts[r]
                    out[i] = SeqScore(float(tok_lp[r, k - c:].sum()), c)
                if progress is not None:
                    progress(len(batch))
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]
