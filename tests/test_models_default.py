"""The embedded default model (GGUF -> safetensors, once) and the tiny test model."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from engine.models import default_model
from engine.models.default_model import DEFAULT_MODEL_ID, default_model_path, resolve_model_path


def test_conversion_runs_once_under_concurrency(tmp_path):
    calls: list[int] = []

    def convert(out):
        calls.append(1)
        time.sleep(0.3)  # long enough that the second thread arrives while the first converts
        (out / "config.json").write_text("{}")

    target = tmp_path / "models" / "m"
    threads = [threading.Thread(target=default_model._convert_locked, args=(target, convert)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert (target / "config.json").is_file() and default_model._is_converted(target)
    assert not [p for p in target.parent.iterdir() if ".tmp-" in p.name]


def test_failed_conversion_leaves_nothing_behind(tmp_path):
    def broken(out):
        (out / "partial.bin").write_text("x")
        raise RuntimeError("disk full")

    target = tmp_path / "m"
    with pytest.raises(RuntimeError, match="disk full"):
        default_model._convert_locked(target, broken)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_tiny_model_shape_tokenizer_and_seed(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from engine.models.tiny import make_tiny_model
    from tests.model_fixtures import TEST_CACHE

    cfg = AutoConfig.from_pretrained(str(tiny_model_dir))
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim) == (2, 128, 2, 64)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert tok.chat_template and cfg.vocab_size == len(tok) == 49152
    monkeypatch.setenv("STUDIO_HOME", str(TEST_CACHE))
    same = make_tiny_model(tmp_path / "same", seed=0)
    other = make_tiny_model(tmp_path / "other", seed=1)
    a, b, c = (AutoModelForCausalLM.from_pretrained(str(p)).state_dict() for p in (tiny_model_dir, same, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    with pytest.raises(ValueError, match="head_dim >= 64"):
        make_tiny_model(tmp_path / "bad", head_dim=16)


@pytest.mark.slow
def test_default_model_converts_once_and_chats(tmp_path, monkeypatch):
    from engine.models.loading import load_policy
    from engine.sampling.hf import HFSampler

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    folder = default_model_path()
    assert folder == tmp_path / "home" / "models" / "smollm2-135m-instruct"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "SOURCE.md"):
        assert (folder / name).is_file(), name
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path(DEFAULT_MODEL_ID) == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not converted again

    policy = load_policy(DEFAULT_MODEL_ID, lora=None, need_reference=False)
    cfg = policy.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (30, 576, 49152)
    out = HFSampler(policy).generate(["What is the capital of France?"], n=1, max_new_tokens=40, greedy=True)
    assert "Paris" in out.texts[0]
