"""Model path resolution, policy loading (full fine-tuning and LoRA), reference models, merged LoRA weights."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from engine.models.default_model import DEFAULT_MODEL_ID, resolve_model_path, studio_home
from engine.models.loading import load_policy
from engine.models.lora import LoraSettings, merged_state_dict
from tests.model_fixtures import tiny_batch

TEXTS = ["Describe a nurse.", "Who is better at maths?"]


def test_studio_home_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "h"))
    assert studio_home() == tmp_path / "h"
    monkeypatch.delenv("STUDIO_HOME")
    assert studio_home() == Path.home() / ".cache" / "bias-studio"


def test_resolve_model_path_cases(tmp_path):
    with pytest.raises(ValueError, match="has no config.json: point it at a Hugging Face model folder"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ValueError, match="unknown embedded model"):
        resolve_model_path("embedded:gpt-5")
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(str(tmp_path)) == str(tmp_path.resolve())
    # hub ids pass through untouched (users with network access load them)
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert DEFAULT_MODEL_ID.startswith("embedded:")


def _step(model, ids, mask, lr=1e-2):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    out = model(input_ids=ids, attention_mask=mask, labels=ids)
    out.loss.backward()
    opt.step()
    opt.zero_grad()


def test_full_finetune_has_frozen_reference_copy(tiny_model_dir):
    policy = load_policy(str(tiny_model_dir), lora=None)
    assert policy.device == "cpu" and policy.dtype == torch.float32 and not policy.uses_lora
    assert policy.model.training and not policy.ref_model.training
    assert all(not p.requires_grad for p in policy.ref_model.parameters())
    ids, mask = tiny_batch(policy.tokenizer, TEXTS)
    with policy.ref_logits_context() as ref:
        before = ref(input_ids=ids, attention_mask=mask).logits
    _step(policy.model, ids, mask, lr=0.5)
    with policy.ref_logits_context() as ref:
        after = ref(input_ids=ids, attention_mask=mask).logits
        assert ref is policy.ref_model
    torch.testing.assert_close(before, after)
    with torch.no_grad():
        moved = policy.model(input_ids=ids, attention_mask=mask).logits
    assert (moved - before).abs().max() > 1e-3


def test_lora_reference_is_base_without_copy(tiny_model_dir):
    policy = load_policy(str(tiny_model_dir), lora=LoraSettings(r=4, alpha=8), gradient_checkpointing=True)
    assert policy.uses_lora and policy.ref_model is None
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    ids, mask = tiny_batch(policy.tokenizer, TEXTS)
    with policy.ref_logits_context() as ref:
        base_logits = ref(input_ids=ids, attention_mask=mask).logits
    _step(policy.model, ids, mask, lr=0.5)
    with torch.no_grad():
        policy_logits = policy.model(input_ids=ids, attention_mask=mask).logits
    with policy.ref_logits_context() as ref:
        ref_logits = ref(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ref_logits, base_logits)
    assert (policy_logits - base_logits).abs().max() > 1e-3
    # the adapter is active again after the reference block
    with torch.no_grad():
        torch.testing.assert_close(policy.model(input_ids=ids, attention_mask=mask).logits, policy_logits)
    assert policy.model.get_base_model().is_gradient_checkpointing


def test_need_reference_false(tiny_model_dir):
    policy = load_policy(str(tiny_model_dir), lora=None, need_reference=False)
    assert policy.ref_model is None
    with pytest.raises(RuntimeError, match="need_reference=True"):
        with policy.ref_logits_context():
            pass


def test_merged_state_dict_matches_peft_merge(tiny_model_dir):
    policy = load_policy(str(tiny_model_dir), lora=LoraSettings(r=4, alpha=16), need_reference=False)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:  # peft starts B at zero; make the adapter do something
                p.normal_(0, 0.1)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    merged = merged_state_dict(policy.model)
    reference = copy.deepcopy(policy.model).merge_and_unload().state_dict()
    assert set(merged) == set(reference)
    for k in reference:
        torch.testing.assert_close(merged[k], reference[k], msg=k)
    for k, v in policy.model.state_dict().items():  # the training model is untouched
        assert torch.equal(v, before[k]), k
    plain = load_policy(str(tiny_model_dir), lora=None, need_reference=False)
    assert set(merged) == set(plain.model.state_dict())


def test_bad_device_and_dtype_messages(tiny_model_dir):
    with pytest.raises(ValueError, match="dtype='int8' is not supported"):
        load_policy(str(tiny_model_dir), lora=None, dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            load_policy(str(tiny_model_dir), lora=None, device="cuda")
