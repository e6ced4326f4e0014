"""The row layouts of forward_logprobs (shared prompt, aligned, packed, right-padded) and the chunked output layer:
the same numbers and gradients as each other and as a plain one-sequence-at-a-time forward pass."""

from __future__ import annotations

import pytest
import torch

from engine.models.forward import default_layout, forward_logprobs, padded_rows, supports_packing
from tests.model_fixtures import sequence_logprobs

# rows of very different lengths, so the padded batch carries a lot of padding and the prompts end at
# different columns
PROMPTS = [[5, 17, 230, 9, 41, 77, 8], [300, 12], [44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54], [7, 7, 7]]
COMPLETIONS = [[11, 12, 13], [900, 901, 902, 903, 904, 905], [60], [70, 71, 72, 73]]


def _tiny(model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128)
    if model_type == "gpt2":
        kw = dict(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    config = AutoConfig.for_model(model_type, **kw)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).float().eval()  # eval: GPT-2 has dropout


# GRPO-like rows: prompts repeated (G completions each, one completion of a single token)
SHARED_PROMPTS = [PROMPTS[0], PROMPTS[0], PROMPTS[2], PROMPTS[1], PROMPTS[2], PROMPTS[2]]
SHARED_COMPLETIONS = [[11, 12, 13], [14], [60, 61, 62, 63, 64], [900, 901], [65, 66], [67, 68, 69]]


def _rows(shared: bool = False):
    if shared:
        return padded_rows(SHARED_PROMPTS, SHARED_COMPLETIONS, pad_id=0)
    return padded_rows(PROMPTS, COMPLETIONS, pad_id=0)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("layout", ["shared", "aligned", "packed", "right"])
@pytest.mark.parametrize("shared", [False, True])
def test_logprobs_equal_one_sequence_at_a_time(model_type, layout, shared):
    model = _tiny(model_type)
    assert supports_packing(model) and default_layout(model) == "aligned"
    rows = _rows(shared)
    prompts, completions = (SHARED_PROMPTS, SHARED_COMPLETIONS) if shared else (PROMPTS, COMPLETIONS)
    with torch.no_grad():
        packed, ent = forward_logprobs(model, rows, with_entropy=True, temperature=0.7, layout=layout)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        expect = sequence_logprobs(model, p, c, temperature=0.7)  # (len(c),)
        got = packed[i, len(p) - 1: len(p) - 1 + len(c)]
        torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
    # nothing but the completion positions carries a value
    assert torch.all(packed[rows.target_mask == 0] == 0)
    assert torch.all(ent[rows.target_mask == 0] == 0)
    assert torch.all(ent[rows.target_mask == 1] > 0)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("shared", [False, True])
def test_layouts_give_the_same_values_entropy_and_gradients(model_type, shared):
    model = _tiny(model_type)
    rows = _rows(shared)
    weights = torch.randn(rows.target_mask.shape, generator=torch.Generator().manual_seed(1))
    out = {}
    for layout in ("aligned", "shared", "packed", "right"):
        model.zero_grad(set_to_none=True)
        logp, ent = forward_logprobs(model, rows, with_entropy=True, layout=layout)
        (logp * weights * rows.target_mask).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        out[layout] = (logp.detach(), ent, grads)
    for layout in ("shared", "packed", "right"):
        torch.testing.assert_close(out[layout][0], out["aligned"][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[layout][1], out["aligned"][1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[layout][2], out["aligned"][2], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="layout"):
        forward_logprobs(model, rows, layout="sideways")


def test_packed_logprobs_through_a_lora_wrapper():
    from peft import get_peft_model

    from engine.models.lora import LoraSettings, to_peft_config

    settings = LoraSettings(r=4, alpha=8.0, dropout=0.0, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(_tiny("llama"), to_peft_config(settings))
    assert supports_packing(model)
    rows = _rows()
    rows = _rows(shared=True)
    with torch.no_grad():
        padded, _ = forward_logprobs(model, rows, layout="right")
        for layout in ("packed", "aligned", "shared"):
            other, _ = forward_logprobs(model, rows, layout=layout)
            torch.testing.assert_close(other, padded, rtol=1e-5, atol=1e-5)
        with model.disable_adapter():  # the LoRA reference: the base model through the same layouts
            base_right, _ = forward_logprobs(model, rows, layout="right")
            base_shared, _ = forward_logprobs(model, rows, layout="shared")
    torch.testing.assert_close(base_shared, base_right, rtol=1e-5, atol=1e-5)


def test_families_without_packed_masks_take_aligned_rows():
    model = _tiny("gpt2")
    assert not supports_packing(model) and default_layout(model) == "aligned"
    rows = _rows()
    with torch.no_grad():
        logp, _ = forward_logprobs(model, rows)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS)):
        torch.testing.assert_close(logp[i, len(p) - 1: len(p) - 1 + len(c)], sequence_logprobs(model, p, c),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("layout", ["aligned", "packed", "shared"])
def test_chunked_head_gives_the_same_values_entropy_and_gradients(model_type, temperature, layout):
    from engine.models.forward import chunked_head_of

    model = _tiny(model_type)
    assert chunked_head_of(model) is not None
    rows = _rows(shared=layout == "shared")
    weights = torch.randn(rows.target_mask.shape, generator=torch.Generator().manual_seed(2))
    out = {}
    for chunked in (True, False):
        model.zero_grad(set_to_none=True)
        logp, ent = forward_logprobs(model, rows, with_entropy=True, temperature=temperature, layout=layout,
                                     chunked_head=chunked)
        (logp * weights * rows.target_mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out[chunked] = (logp.detach(), ent, grads)
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-5, atol=1e-5)
    assert out[True][2].keys() == out[False][2].keys()
    for name, g in out[False][2].items():
        torch.testing.assert_close(out[True][2][name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_head_logprobs_small_chunks_match_a_full_log_softmax():
    from engine.algorithms.lm_head import head_logprobs

    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(7, 16, generator=gen, requires_grad=True)
    weight = torch.randn(50, 16, generator=gen, requires_grad=True)
    targets = torch.randint(0, 50, (7,), generator=gen)
    logp, ent = head_logprobs(hidden, weight, targets, temperature=0.5, with_entropy=True, chunk_rows=3)
    full = torch.log_softmax(hidden @ weight.T / 0.5, -1)
    torch.testing.assert_close(logp, full.gather(-1, targets[:, None]).squeeze(-1))
    torch.testing.assert_close(ent, -(full.exp() * full).sum(-1))
    g = torch.randn(7, generator=gen)
    gh, gw = torch.autograd.grad((logp * g).sum(), (hidden, weight))
    eh, ew = torch.autograd.grad((full.gather(-1, targets[:, None]).squeeze(-1) * g).sum(), (hidden, weight))
    torch.testing.assert_close(gh, eh)
    torch.testing.assert_close(gw, ew)
    with pytest.raises(ValueError, match="weight"):
        head_logprobs(hidden, weight[:, :8], targets)


def test_models_with_scaled_or_capped_logits_keep_their_own_head():
    from engine.models.forward import chunked_head_of

    model = _tiny("llama")
    model.config.final_logit_softcapping = 30.0
    assert chunked_head_of(model) is None
    assert chunked_head_of(_tiny("gpt2")) is None  # no decoder attribute named "model"


def test_shared_prompts_are_computed_once_by_default(monkeypatch):
    import engine.models.forward as tc

    model = _tiny("llama")
    calls = []
    real = tc._forward_logprobs_shared
    monkeypatch.setattr(tc, "_forward_logprobs_shared", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        forward_logprobs(model, _rows(shared=True))
        assert calls == [1]
        forward_logprobs(model, _rows(shared=False))  # nothing to share: aligned rows
        assert calls == [1]
        model.gradient_checkpointing_enable()  # no KV cache under checkpointing: aligned rows
        forward_logprobs(model, _rows(shared=True))
        assert calls == [1]


def test_rows_are_packed_by_default_only_where_attention_skips_across_sequences():
    model = _tiny("llama")
    assert default_layout(model) == "aligned"  # SDPA: one long packed row would get a dense mask
    model.config._attn_implementation = "flash_attention_2"
    assert default_layout(model) == "packed"
    gpt2 = _tiny("gpt2")
    gpt2.config._attn_implementation = "flash_attention_2"
    assert default_layout(gpt2) == "aligned"  # no packed-sequence masks in that family
