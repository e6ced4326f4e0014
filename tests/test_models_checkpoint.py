"""Checkpoints (pickle-free), resume-equals-uninterrupted, RNG restore, and export to HF folders."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from engine.models.checkpoint import (
    export_model,
    flatten_state,
    load_checkpoint,
    load_state,
    save_checkpoint,
    save_state,
    unflatten_state,
)
from engine.models.loading import load_policy
from engine.models.lora import LoraSettings
from tests.model_fixtures import tiny_batch

TEXTS = ["Describe a nurse.", "Who is better at maths?"]


def _train(policy, opt, sched, steps: int) -> None:
    ids, mask = tiny_batch(policy.tokenizer, TEXTS)
    for _ in range(steps):
        loss = policy.model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def _make_opt(policy):
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return opt, sched


def _assert_nested_equal(a, b, path="s"):
    assert type(a) is type(b), f"{path}: {type(a)} vs {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _assert_nested_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_nested_equal(x, y, f"{path}.{i}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    else:
        assert a == b, path


def test_flatten_round_trips_optimizer_state(tiny_model_dir, tmp_path):
    policy = load_policy(str(tiny_model_dir), lora=None, need_reference=False)
    opt, sched = _make_opt(policy)
    _train(policy, opt, sched, 1)
    state = opt.state_dict()
    encoded, tensors = flatten_state(state)
    _assert_nested_equal(unflatten_state(encoded, tensors), state)
    save_state(state, tmp_path, "optimizer")
    _assert_nested_equal(load_state(tmp_path, "optimizer"), state)
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))
    with pytest.raises(TypeError, match="without pickle"):
        flatten_state({"x": object()})


@pytest.mark.parametrize("lora", [None, LoraSettings(r=4, alpha=8)], ids=["full", "lora"])
def test_resume_equals_uninterrupted(tiny_model_dir, tmp_path, lora):
    torch.manual_seed(0)
    straight = load_policy(str(tiny_model_dir), lora=lora, need_reference=False)
    opt, sched = _make_opt(straight)
    _train(straight, opt, sched, 2)
    save_checkpoint(tmp_path / "ckpt", straight, step=2, optimizer=opt, scheduler=sched, lora_settings=lora,
                    extra={"note": "mid-run"})
    random.random(), np.random.rand(), torch.rand(1)  # draws that the restore must rewind
    _train(straight, opt, sched, 2)

    resumed = load_policy(str(tiny_model_dir), lora=lora, need_reference=False)
    opt2, sched2 = _make_opt(resumed)
    meta = load_checkpoint(tmp_path / "ckpt", resumed, optimizer=opt2, scheduler=sched2)
    assert meta["step"] == 2 and meta["extra"] == {"note": "mid-run"} and meta["uses_lora"] == (lora is not None)
    expected_draws = (random.random(), float(np.random.rand()), torch.rand(1))
    load_checkpoint(tmp_path / "ckpt", resumed, optimizer=opt2, scheduler=sched2)  # rewinds again
    _train(resumed, opt2, sched2, 2)
    for (n, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n, rtol=1e-6, atol=1e-7)
    assert sched2.last_epoch == sched.last_epoch
    load_checkpoint(tmp_path / "ckpt", resumed)
    assert (random.random(), float(np.random.rand()), torch.rand(1)) == expected_draws


def test_checkpoint_lora_mismatch_message(tiny_model_dir, tmp_path):
    plain = load_policy(str(tiny_model_dir), lora=None, need_reference=False)
    save_checkpoint(tmp_path / "c", plain, step=0)
    lora = load_policy(str(tiny_model_dir), lora=LoraSettings(r=2), need_reference=False)
    with pytest.raises(ValueError, match="saved without LoRA"):
        load_checkpoint(tmp_path / "c", lora)
    with pytest.raises(FileNotFoundError, match="not a studio checkpoint"):
        load_checkpoint(tmp_path, plain)


def _logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_export_merged_and_adapter_only(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = LoraSettings(r=4, alpha=8)
    policy = load_policy(str(tiny_model_dir), lora=settings, need_reference=False)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    ids, mask = tiny_batch(policy.tokenizer, TEXTS)
    policy.model.eval()
    want = _logits(policy.model, ids, mask)

    merged_dir = export_model(policy, tmp_path / "merged", merge_lora=True)
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32)
    assert not (merged_dir / "adapter_config.json").exists()
    torch.testing.assert_close(_logits(merged, ids, mask), want, atol=1e-4, rtol=1e-4)
    assert AutoTokenizer.from_pretrained(str(merged_dir)).chat_template == policy.tokenizer.chat_template

    adapter_dir = export_model(policy, tmp_path / "adapter", merge_lora=False)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, str(adapter_dir))
    torch.testing.assert_close(_logits(with_adapter, ids, mask), want, atol=1e-5, rtol=1e-5)

    # from a checkpoint folder: base model path and LoRA settings come from meta.json
    save_checkpoint(tmp_path / "ckpt", policy, step=5, lora_settings=settings)
    from_ckpt = export_model(tmp_path / "ckpt", tmp_path / "from_ckpt")
    again = AutoModelForCausalLM.from_pretrained(str(from_ckpt), dtype=torch.float32)
    torch.testing.assert_close(_logits(again, ids, mask), want, atol=1e-4, rtol=1e-4)


def test_export_full_finetune(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    policy = load_policy(str(tiny_model_dir), lora=None, need_reference=False)
    opt, sched = _make_opt(policy)
    _train(policy, opt, sched, 1)
    ids, mask = tiny_batch(policy.tokenizer, TEXTS)
    policy.model.eval()
    out = export_model(policy, tmp_path / "full")
    loaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    torch.testing.assert_close(_logits(loaded, ids, mask), _logits(policy.model, ids, mask))
