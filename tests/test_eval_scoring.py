"""Batched, left-padded log-likelihoods equal one unpadded forward pass per request."""

from __future__ import annotations

import pytest
import torch

from engine.evaluation.scoring import encode_continuation, encode_sentence, score_continuations
from engine.models.loading import load_policy


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    p = load_policy(str(tiny_model_dir), need_reference=False, device="cpu")
    p.model.eval()
    return p


def _reference(model, ctx: list[int], cont: list[int]) -> float:
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)  # (T, V)
    pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
    return float(logp[pos, torch.tensor(cont)].sum())


def test_batched_scores_match_single_forward_passes(policy):
    tok = policy.tokenizer
    requests = [
        encode_continuation(tok, "The weather today is", " sunny and warm."),
        encode_continuation(tok, "Q: What colour is the sky?\nAnswer:", " Blue"),
        encode_sentence(tok, "A cat sat on the mat."),
        encode_sentence(tok, "Rivers flow to the sea, carrying sand and mud over many years."),
        encode_continuation(tok, "x", " y"),
    ]
    done: list[int] = []
    # A small budget forces several batches with different padding.
    scores = score_continuations(policy.model, requests, pad_id=tok.pad_token_id, token_budget=40,
                                 progress=done.append)
    assert sum(done) == len(requests) and len(done) > 1
    for (ctx, cont), s in zip(requests, scores):
        assert s.n_tokens == len(cont)
        assert s.logprob == pytest.approx(_reference(policy.model, ctx, cont), abs=2e-3)
        assert s.mean == pytest.approx(s.logprob / len(cont))


def test_encode_continuation_keeps_joint_tokenisation(policy):
    tok = policy.tokenizer
    ctx, cont = encode_continuation(tok, "Answer: ", "Blue")
    assert ctx + cont == tok("Answer: Blue", add_special_tokens=False)["input_ids"]
    assert tok.decode(cont).strip() == "Blue"


def test_empty_continuation_is_refused(policy):
    with pytest.raises(ValueError, match="at least one token"):
        score_continuations(policy.model, [([1], [])], pad_id=0)
