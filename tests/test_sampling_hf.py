"""HF generate sampler: batching layout, log-probs against a recomputed forward pass, seeds, padding, EOS."""

from __future__ import annotations

import pytest
import torch

from engine.models.loading import load_policy
from engine.models.lora import LoraSettings
from engine.sampling.base import SampleBatch, apply_chat_template, make_sampler
from engine.sampling.hf import HFSampler
from tests.model_fixtures import sequence_logprobs

PROMPTS = ["Describe a nurse.", "Who is better at maths, boys or girls? Answer briefly.", "Hi"]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir), lora=None, need_reference=False)


@pytest.fixture(scope="module")
def sampler(policy):
    s = make_sampler("hf", policy.model_path, policy)
    assert isinstance(s, HFSampler)
    return s


def test_layout_groups_completions_by_prompt(sampler, policy):
    batch = sampler.generate(PROMPTS, n=3, max_new_tokens=6, temperature=1.0, seed=0, with_logprobs=True)
    assert isinstance(batch, SampleBatch) and len(batch) == 9
    assert batch.prompt_index == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for row in range(9):
        assert batch.prompt_ids[row] == apply_chat_template(policy.tokenizer, PROMPTS[batch.prompt_index[row]])
        assert 1 <= len(batch.completion_ids[row]) <= 6
        assert len(batch.logprobs[row]) == len(batch.completion_ids[row])
        assert batch.truncated[row] == (policy.tokenizer.eos_token_id not in batch.completion_ids[row])
        assert batch.texts[row] == policy.tokenizer.decode(batch.completion_ids[row], skip_special_tokens=True)
    assert policy.model.training  # the sampler restores train mode


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_recomputed_temperature_scaled(sampler, policy, temperature):
    batch = sampler.generate(PROMPTS, n=2, max_new_tokens=8, temperature=temperature, seed=3, with_logprobs=True)
    for row in range(len(batch)):
        expected = sequence_logprobs(policy.model, batch.prompt_ids[row], batch.completion_ids[row], temperature)
        torch.testing.assert_close(torch.tensor(batch.logprobs[row]), expected, atol=2e-4, rtol=1e-4)


def test_top_p_logprobs_are_of_the_truncated_distribution(sampler, policy):
    batch = sampler.generate(PROMPTS, n=2, max_new_tokens=8, temperature=1.0, top_p=0.5, seed=5, with_logprobs=True)
    for row in range(len(batch)):
        full = sequence_logprobs(policy.model, batch.prompt_ids[row], batch.completion_ids[row])
        got = torch.tensor(batch.logprobs[row])
        # renormalising over the nucleus (mass >= 0.5) raises each log-prob by at most log 2
        assert torch.all(got >= full - 1e-4)
        assert torch.all(got <= full + torch.log(torch.tensor(2.0)) + 1e-4)
    tiny = sampler.generate(PROMPTS, n=2, max_new_tokens=8, top_p=1e-6, seed=1, with_logprobs=True)
    greedy = sampler.generate(PROMPTS, n=2, max_new_tokens=8, greedy=True, with_logprobs=True)
    assert tiny.completion_ids == greedy.completion_ids  # a vanishing nucleus keeps only the argmax
    assert all(abs(lp) < 1e-5 for row in tiny.logprobs for lp in row)


def test_log_probs_only_when_asked_and_the_samples_do_not_depend_on_it(sampler):
    """Training reads no sampler log-probs, so by default none are recorded (no log-softmax per decoding step);
    asking for them changes nothing in what is sampled."""
    plain = sampler.generate(PROMPTS, n=2, max_new_tokens=6, temperature=0.8, top_p=0.9, seed=4)
    recorded = sampler.generate(PROMPTS, n=2, max_new_tokens=6, temperature=0.8, top_p=0.9, seed=4,
                                with_logprobs=True)
    assert plain.logprobs is None and recorded.logprobs is not None
    assert plain.completion_ids == recorded.completion_ids and plain.texts == recorded.texts
    greedy = sampler.generate(PROMPTS, n=1, max_new_tokens=6, greedy=True)
    assert greedy.logprobs is None
    assert greedy.completion_ids == sampler.generate(PROMPTS, n=1, max_new_tokens=6, greedy=True,
                                                     with_logprobs=True).completion_ids


def test_seeded_sampling_is_reproducible_and_leaves_global_rng(sampler):
    torch.manual_seed(123)
    a = sampler.generate(PROMPTS, n=4, max_new_tokens=6, seed=11, with_logprobs=True)
    after_a = torch.rand(3)
    torch.manual_seed(123)
    b = sampler.generate(PROMPTS, n=4, max_new_tokens=6, seed=11, with_logprobs=True)
    after_b = torch.rand(3)
    torch.manual_seed(123)
    expected_global = torch.rand(3)
    c = sampler.generate(PROMPTS, n=4, max_new_tokens=6, seed=12, with_logprobs=True)
    assert a.completion_ids == b.completion_ids and a.logprobs == b.logprobs
    assert a.completion_ids != c.completion_ids
    torch.testing.assert_close(after_a, expected_global)
    torch.testing.assert_close(after_b, expected_global)
    # G samples of one prompt are not copies of each other
    assert len({tuple(r) for r in a.completion_ids[:4]}) > 1


def test_left_padding_does_not_change_greedy_output(sampler):
    together = sampler.generate(PROMPTS, n=1, max_new_tokens=8, greedy=True, with_logprobs=True)
    for i, prompt in enumerate(PROMPTS):
        alone = sampler.generate([prompt], n=1, max_new_tokens=8, greedy=True, with_logprobs=True)
        assert alone.completion_ids[0] == together.completion_ids[i]
        torch.testing.assert_close(torch.tensor(alone.logprobs[0]), torch.tensor(together.logprobs[i]), atol=1e-4, rtol=1e-4)
    twice = sampler.generate(PROMPTS, n=2, max_new_tokens=8, greedy=True, with_logprobs=True)
    assert twice.completion_ids[0::2] == twice.completion_ids[1::2] == together.completion_ids


def test_stops_at_eos_and_keeps_it(tiny_model_dir):
    policy = load_policy(str(tiny_model_dir), lora=None, need_reference=False)
    free = HFSampler(policy).generate(PROMPTS[:1], n=1, max_new_tokens=8, greedy=True, with_logprobs=True)
    assert free.truncated == [True]
    stop_token = free.completion_ids[0][2]
    policy.model.generation_config.eos_token_id = [policy.tokenizer.eos_token_id, stop_token]
    stopped = HFSampler(policy).generate(PROMPTS[:1], n=1, max_new_tokens=8, greedy=True, with_logprobs=True)
    cut = free.completion_ids[0].index(stop_token) + 1
    assert stopped.completion_ids[0] == free.completion_ids[0][:cut]
    assert stopped.truncated == [False] and len(stopped.logprobs[0]) == cut


def test_token_id_prompts_and_argument_errors(sampler, policy):
    ids = [apply_chat_template(policy.tokenizer, p) for p in PROMPTS[:2]]
    by_ids = sampler.generate(ids, n=1, max_new_tokens=5, greedy=True, with_logprobs=True)
    by_text = sampler.generate(PROMPTS[:2], n=1, max_new_tokens=5, greedy=True, with_logprobs=True)
    assert by_ids.completion_ids == by_text.completion_ids
    with pytest.raises(ValueError, match="temperature"):
        sampler.generate(PROMPTS, n=1, max_new_tokens=5, temperature=0.0, with_logprobs=True)
    with pytest.raises(ValueError, match="at least one completion"):
        sampler.generate(PROMPTS, n=0, max_new_tokens=5, with_logprobs=True)
    with pytest.raises(TypeError, match="not a mix"):
        sampler.generate(["a", [1, 2]], n=1, max_new_tokens=5, with_logprobs=True)  # type: ignore[list-item]


def test_lora_policy_samples_with_adapter(tiny_model_dir):
    policy = load_policy(str(tiny_model_dir), lora=None, need_reference=False)
    lora_policy = load_policy(str(tiny_model_dir), lora=LoraSettings(r=4), need_reference=False)
    base_out = HFSampler(policy).generate(PROMPTS, n=1, max_new_tokens=6, greedy=True, with_logprobs=True)
    # B = 0 at start: the adapter is a no-op, so outputs match the plain model
    assert HFSampler(lora_policy).generate(PROMPTS, n=1, max_new_tokens=6, greedy=True, with_logprobs=True).completion_ids == base_out.completion_ids
    with torch.no_grad():
        for n, p in lora_policy.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    moved = HFSampler(lora_policy).generate(PROMPTS, n=1, max_new_tokens=6, greedy=True, with_logprobs=True)
    assert moved.completion_ids != base_out.completion_ids


def test_static_cache_option_gives_the_same_greedy_output(policy, sampler):
    static = HFSampler(policy, static_cache=True).generate(PROMPTS, n=1, max_new_tokens=6, greedy=True, with_logprobs=True)
    dynamic = sampler.generate(PROMPTS, n=1, max_new_tokens=6, greedy=True, with_logprobs=True)
    assert static.completion_ids == dynamic.completion_ids
    for a, b in zip(static.logprobs, dynamic.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=1e-4)


@pytest.fixture
def eos_loving_policy(tiny_model_dir):
    """The tiny model with +30 on the EOS logit (a hook on the output layer): it ends almost every completion
    with EOS at once, so an ignore_eos sampler has something to ignore."""
    fresh = load_policy(str(tiny_model_dir), lora=None, need_reference=False)
    eos = fresh.tokenizer.eos_token_id

    def boost(_module, _inputs, out):
        out = out.clone()
        out[..., eos] += 30.0
        return out

    handle = fresh.model.get_output_embeddings().register_forward_hook(boost)
    yield fresh
    handle.remove()


def test_ignore_eos_samples_exactly_max_new_tokens_from_the_same_distribution(eos_loving_policy):
    policy = eos_loving_policy
    eos = policy.tokenizer.eos_token_id
    sampler = HFSampler(policy)
    stopped = sampler.generate(PROMPTS, n=2, max_new_tokens=7, seed=0, with_logprobs=True)
    assert all(ids == [eos] for ids in stopped.completion_ids)  # without the option: EOS ends every completion
    batch = sampler.generate(PROMPTS, n=2, max_new_tokens=7, seed=0, ignore_eos=True, with_logprobs=True)
    assert all(len(ids) == 7 for ids in batch.completion_ids)
    assert all(batch.truncated)
    assert sum(ids.count(eos) for ids in batch.completion_ids) > len(batch)  # EOS is still sampled, not banned
    for row in range(len(batch)):
        expected = sequence_logprobs(policy.model, batch.prompt_ids[row], batch.completion_ids[row])
        torch.testing.assert_close(torch.tensor(batch.logprobs[row]), expected, atol=2e-4, rtol=1e-4)


def test_static_cache_rounds_prompt_width_up_and_keeps_the_prompts(policy):
    from engine.sampling import hf as hf_mod

    batch = HFSampler(policy, static_cache=True).generate(PROMPTS, n=1, max_new_tokens=4, greedy=True, with_logprobs=True)
    for row, prompt in enumerate(PROMPTS):
        assert batch.prompt_ids[row] == apply_chat_template(policy.tokenizer, prompt)
    dynamic = HFSampler(policy).generate(PROMPTS, n=1, max_new_tokens=4, greedy=True, with_logprobs=True)
    assert batch.completion_ids == dynamic.completion_ids  # the extra left padding is masked out
    assert hf_mod._STATIC_WIDTH_BUCKET > max(len(p) for p in batch.prompt_ids)


def test_sampler_options_turn_the_static_cache_on_for_the_gpu_only():
    from engine.sampling.base import sampler_options

    assert sampler_options("hf", "cuda", static_cache="auto") == {"static_cache": True}
    assert sampler_options("hf", "cpu", static_cache="auto") == {"static_cache": False}
    assert sampler_options("hf", "cpu", static_cache="on") == {"static_cache": True}
    assert sampler_options("hf", "cuda", static_cache="off") == {"static_cache": False}
    assert sampler_options("vllm", "cuda", static_cache="on") == {}
    with pytest.raises(ValueError, match="static_cache"):
        sampler_options("hf", "cpu", static_cache="yes")


def test_static_cache_failure_falls_back_to_the_dynamic_cache(policy, monkeypatch, caplog):
    sampler = HFSampler(policy, static_cache=True)
    real = policy.model.generate
    asked = []

    def generate(*args, generation_config, **kw):
        asked.append(generation_config.cache_implementation)
        if generation_config.cache_implementation == "static":
            raise RuntimeError("graph capture failed")
        return real(*args, generation_config=generation_config, **kw)

    monkeypatch.setattr(policy.model, "generate", generate)
    with caplog.at_level("WARNING"):
        batch = sampler.generate(PROMPTS, n=1, max_new_tokens=4, greedy=True, with_logprobs=True)
    assert asked == ["static", None] and not sampler.static_cache
    assert "graph capture failed" in caplog.text
    dynamic = HFSampler(policy).generate(PROMPTS, n=1, max_new_tokens=4, greedy=True, with_logprobs=True)
    assert batch.completion_ids == dynamic.completion_ids
    asked.clear()
    sampler.generate(PROMPTS, n=1, max_new_tokens=4, greedy=True, with_logprobs=True)
    assert asked == [None]  # later calls go straight to the dynamic cache


def test_sampler_registry_drives_auto_the_errors_and_the_config_choices(monkeypatch):
    import dataclasses

    from engine.config import GRPOConfig, field_help
    from engine.sampling import base

    field = next(f for f in field_help(GRPOConfig) if f["name"] == "sampler")
    assert field["schema"]["enum"] == ["auto", *base.SAMPLERS] and set(base.SAMPLERS) == {"vllm", "hf"}
    for name, entry in base.SAMPLERS.items():
        assert f"{name}: {entry.help}" in field["help"]
    monkeypatch.setitem(base.SAMPLERS, "vllm", dataclasses.replace(base.SAMPLERS["vllm"], available=lambda: False))
    assert base.resolve_backend("auto") == "hf"  # the first available, in the table's order
    with pytest.raises(RuntimeError, match="'vllm' was asked for but is not installed: pip install vllm"):
        base.make_sampler("vllm", "unused", None)
    with pytest.raises(ValueError, match="unknown sampler backend 'tpu'"):
        base.resolve_backend("tpu")
