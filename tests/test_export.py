"""`studio export`: checkpoints become HF folders that transformers (and vLLM) load with the trained weights."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from db.writes import record_checkpoint
from engine.config import GRPOConfig, SyntheticConfig
from engine.export import ExportError, export_run
from engine.evaluation.models_ref import ModelRefError
from engine.models.checkpoint import save_checkpoint
from engine.models.loading import load_policy
from engine.models.lora import LoraSettings
from engine.submission import submit_run

PROBE = [[1, 2, 3, 4, 5, 6]]


def _perturb(params) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor(PROBE)).logits


def _run_with_checkpoint(store, tmp: Path, model_dir: Path, *, lora: bool, step: int = 3):
    run_id = submit_run(store, GRPOConfig(model=str(model_dir), use_lora=lora))
    settings = LoraSettings(r=4, alpha=8.0, target_modules=["q_proj", "v_proj"]) if lora else None
    policy = load_policy(str(model_dir), lora=settings, need_reference=False, device="cpu")
    _perturb(policy.trainable_parameters())  # a "trained" policy that differs from its base
    policy.model.eval()
    ckpt = save_checkpoint(tmp / f"ckpt-{run_id}-{step}", policy, step=step, lora_settings=settings, save_rng=False)
    record_checkpoint(store, run_id, step, str(ckpt))
    return run_id, policy


def test_full_model_export_loads_with_the_trained_weights(store, tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_id, policy = _run_with_checkpoint(store, tmp_path, tiny_model_dir, lora=False)
    out = export_run(store, run_id, tmp_path / "exported")
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    torch.testing.assert_close(_logits(model), _logits(policy.model), atol=1e-4, rtol=1e-4)
    assert AutoTokenizer.from_pretrained(str(out)).chat_template
    info = json.loads((out / "studio_export.json").read_text())
    assert info["run_id"] == run_id and info["step"] == 3 and info["lora"] is False
    with pytest.raises(ExportError, match="already exists"):
        export_run(store, run_id, out)
    with pytest.raises(ExportError, match="--adapter-only applies to LoRA"):
        export_run(store, run_id, tmp_path / "adapter", merge_lora=False)


def test_lora_export_merged_and_adapter_only(store, tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    run_id, policy = _run_with_checkpoint(store, tmp_path, tiny_model_dir, lora=True)
    merged = export_run(store, run_id, tmp_path / "merged")
    assert not (merged / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(str(merged)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    torch.testing.assert_close(_logits(model), _logits(policy.model), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(_logits(model), _logits(base), atol=1e-3)  # the adapter was really merged in
    adapter = export_run(store, run_id, tmp_path / "adapter", merge_lora=False)
    assert (adapter / "adapter_config.json").is_file()


def test_step_choice_and_clear_errors(store, tmp_path, tiny_model_dir):
    run_id, _ = _run_with_checkpoint(store, tmp_path, tiny_model_dir, lora=False, step=2)
    with pytest.raises(ModelRefError, match=f"run {run_id} has no checkpoint at step 5: it has steps 2"):
        export_run(store, run_id, tmp_path / "x", step=5)
    fresh = submit_run(store, GRPOConfig(model=str(tiny_model_dir)))
    with pytest.raises(ModelRefError, match=f"run {fresh} has no checkpoint yet"):
        export_run(store, fresh, tmp_path / "y")
    synthetic = submit_run(store, SyntheticConfig(max_steps=5))
    with pytest.raises(ModelRefError, match=f"run {synthetic} is a synthetic experiment: it has no language model"):
        export_run(store, synthetic, tmp_path / "z")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_loads_the_export(store, tmp_path, tiny_model_dir):
    from engine.sampling.base import vllm_available

    if not vllm_available():
        pytest.skip("vllm is not installed")
    import subprocess
    import sys

    run_id, _ = _run_with_checkpoint(store, tmp_path, tiny_model_dir, lora=True)
    out = export_run(store, run_id, tmp_path / "for_vllm")
    # vLLM spawns processes and needs a __main__ guard: run it as a script, as a user would.
    script = tmp_path / "load.py"
    script.write_text(
        "import sys\n"
        "if __name__ == '__main__':\n"
        "    from vllm import LLM, SamplingParams\n"
        "    llm = LLM(model=sys.argv[1], dtype='float32', enforce_eager=True, \n"
        "              kv_cache_memory_bytes=256 * 2**20,\n"
        "              max_model_len=256)\n"
        "    out = llm.generate(['Hello'], SamplingParams(max_tokens=4, temperature=0))\n"
        "    print('TOKENS', len(out[0].outputs[0].token_ids))\n")
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    found = re.search(r"TOKENS (\d+)", proc.stdout)
    assert proc.returncode == 0 and found, proc.stderr[-3000:]
    assert 1 <= int(found.group(1)) <= 4
