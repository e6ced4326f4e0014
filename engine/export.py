"""`studio export`: a run's checkpoint as a standard Hugging Face model folder.

Full fine-tuning checkpoints, and LoRA checkpoints with merge_lora=True, become a plain model folder
(config, safetensors weights, tokenizer with its chat template) that transformers' AutoModelForCausalLM and
vLLM load. merge_lora=False writes a LoRA run's adapter alone (a peft folder pointing at its base model).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from db.queue import QueueError, get_run
from db.session import Store
from engine.evaluation.models_ref import run_checkpoint


class ExportError(QueueError):
    """An export that cannot be done as asked; the message says what to change."""


def export_run(store: Store, run_id: int, out: Path | str, step: int | None = None, merge_lora: bool = True) -> Path:
    """Export run `run_id`'s checkpoint (the latest, or `step`) to `out`; returns the folder."""
    from engine.models.checkpoint import export_model, read_checkpoint_meta

    step, ckpt = run_checkpoint(store, run_id, step)
    meta = read_checkpoint_meta(ckpt)
    if not merge_lora and not meta["uses_lora"]:
        raise ExportError(f"run {run_id} trained all weights, not a LoRA adapter: --adapter-only applies to LoRA "
                            "runs; export without it to get the full model")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not an empty folder: choose a new --out folder")
    tmp = out.with_name(out.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        export_model(ckpt, tmp, merge_lora=merge_lora)
        run = get_run(store, run_id)
        (tmp / "studio_export.json").write_text(json.dumps({
            "run_id": run_id, "run_name": run.name, "algorithm": run.algorithm, "step": step,
            "checkpoint": str(ckpt), "base_model": meta["base_model"], "lora": meta["uses_lora"],
            "merged": bool(meta["uses_lora"] and merge_lora)}, indent=2))
        if out.exists():
            out.rmdir()
        tmp.replace(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
