"""Shared model fixtures: a tiny random Llama with the real SmolLM2 tokenizer, built once per test session.

Registered for every test module by `pytest_plugins` in tests/conftest.py.
The tokenizer converted from the GGUF file is cached under test-artifacts/ (git-ignored), so only the first
session on a machine pays for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_CACHE = ROOT / "test-artifacts" / "studio_home"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.models.tiny import make_tiny_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(TEST_CACHE))
        return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def tiny_batch(tokenizer, texts: list[str]):
    """Right-padded (input_ids, attention_mask) for a few chat prompts, for forward-pass checks."""
    import torch

    from engine.sampling.base import apply_chat_template

    rows = [apply_chat_template(tokenizer, t) for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def sequence_logprobs(model, prompt_ids: list[int], completion_ids: list[int], temperature: float = 1.0):
    """log p(completion token | prefix) under softmax(logits / T), recomputed with one forward pass.  # (T,)"""
    import torch

    ids = torch.tensor([prompt_ids + completion_ids], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()  # (L, V)
    logp = torch.log_softmax(logits / temperature, dim=-1)
    start = len(prompt_ids)
    # position t predicts token t+1
    return logp[start - 1 : start - 1 + len(completion_ids)].gather(-1, torch.tensor(completion_ids).unsqueeze(-1)).squeeze(-1)
