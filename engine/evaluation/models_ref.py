"""Turn what a user typed as "the model" into a folder transformers can load.

Accepted: "embedded:smollm2-135m-instruct", a local HF folder, a hub id, "run:ID" or a bare run id (that run's
latest checkpoint), or "run:ID@STEP" (the checkpoint of that step). A run's checkpoint is exported once, merged, to
$STUDIO_HOME/exports/run-ID-TOKEN/step-N (db.paths.run_export_cache) and reused, so evaluating or
comparing a run twice costs one export.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from db.queue import QueueError, get_run
from db.session import Store
from db.paths import run_export_cache

_DONE = ".export-complete"
NO_MODEL_ALGORITHMS = {"synthetic": "a synthetic experiment", "compare": "a comparison job", "eval": "an evaluation job"}


class ModelRefError(QueueError):
    """A run reference that names no usable model (no checkpoint, wrong kind of run); one line for the CLI."""


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # what load_policy / from_pretrained take
    label: str  # what the user asked for, stored as Evaluation.model
    run_id: int | None = None  # the run whose checkpoint this is
    step: int | None = None
    checkpoint: str | None = None  # the checkpoint folder
    base: str | None = None  # the base model id: the run's own `model` for a run reference, else the label

    def subject(self, source: str) -> dict[str, object]:
        """What was evaluated, as the evaluations table records it (db.writes.record_evaluation)."""
        return {"evaluated_model": self.base or self.label, "evaluated_run_id": self.run_id,
                "evaluated_step": self.step, "model_path": self.path, "source": source}


def parse_run_step(ref: str) -> tuple[int, int | None] | None:
    """(run id, checkpoint step or None = the latest) of "run:ID", "run:ID@STEP" or a bare "ID"; None otherwise."""
    text = ref.strip()
    if text.startswith("run:"):
        ident, sep, at = text[4:].partition("@")
        if not ident.isdigit() or (sep and not at.isdigit()):
            raise ModelRefError(f"{ref!r} is not a run reference: write run:ID with the run's number, e.g. run:3, "
                                "or run:ID@STEP for a given checkpoint step, e.g. run:3@40")
        return int(ident), (int(at) if sep else None)
    return (int(text), None) if text.isdigit() else None


def parse_run_ref(ref: str) -> int | None:
    """The run id in "run:ID", "run:ID@STEP" or a bare "ID"; None for anything else."""
    got = parse_run_step(ref)
    return got[0] if got is not None else None


def run_checkpoint(store: Store, run_id: int, step: int | None = None) -> tuple[int, Path]:
    """(step, folder) of a run's checkpoint: the latest, or the given step; clear errors otherwise."""
    from sqlalchemy import select

    from db.models import Checkpoint

    run = get_run(store, run_id)
    if run.algorithm in NO_MODEL_ALGORITHMS:
        raise ModelRefError(f"run {run_id} is {NO_MODEL_ALGORITHMS[run.algorithm]}: it has no language model to "
                            "export or evaluate; pick a training run (`studio runs` lists them)")
    with store.read() as s:
        q = select(Checkpoint).where(Checkpoint.run_id == run_id)
        rows = list(s.scalars(q.order_by(Checkpoint.step)))
    if not rows:
        raise ModelRefError(f"run {run_id} has no checkpoint yet: wait for its first checkpoint (every "
                            "checkpoint_every steps, and at the end) or evaluate the base model instead")
    if step is None:
        ckpt = rows[-1]
    else:
        match = [c for c in rows if c.step == step]
        if not match:
            raise ModelRefError(f"run {run_id} has no checkpoint at step {step}: it has steps "
                                f"{', '.join(str(c.step) for c in rows)}")
        ckpt = match[0]
    folder = Path(ckpt.path)
    if not folder.is_dir():
        raise ModelRefError(f"run {run_id}'s checkpoint at step {ckpt.step} is missing on disk ({folder}): "
                            "it was deleted or the run ran on another machine")
    return ckpt.step, folder


def export_cache_dir(run_id: int, step: int, folder_token: str | None = None) -> Path:
    return run_export_cache(run_id, folder_token) / f"step-{step:07d}"


def materialise_run_model(store: Store, run_id: int, step: int | None = None) -> ResolvedModel:
    """Export (merged, once) a run's checkpoint to the studio's export cache and return that folder."""
    from engine.models.checkpoint import export_model

    import json

    asked = step
    step, ckpt = run_checkpoint(store, run_id, step)
    run = get_run(store, run_id)
    # The run's folder token in the path: a later run that reuses a deleted run's id never gets its export.
    out = export_cache_dir(run_id, step, run.folder_token)
    if not (out / _DONE).is_file():
        if out.exists():  # a half-finished export from a crash
            shutil.rmtree(out)
        export_model(ckpt, out, merge_lora=True)
        (out / _DONE).write_text(str(ckpt))
    try:
        base = json.loads(run.config_json).get("model")
    except (TypeError, ValueError, AttributeError):
        base = None
    return ResolvedModel(path=str(out), label=f"run:{run_id}" + (f"@{step}" if asked is not None else ""),
                         run_id=run_id, step=step, checkpoint=str(ckpt), base=base if isinstance(base, str) else None)


def resolve_model_ref(store: Store | None, ref: str) -> ResolvedModel:
    """A model reference as a loadable path; run references need the store."""
    got = parse_run_step(ref)
    if got is not None:
        if store is None:
            raise ModelRefError(f"{ref!r} names a run, but no store was given to look it up")
        return materialise_run_model(store, *got)
    from engine.models.default_model import resolve_model_path

    try:
        return ResolvedModel(path=resolve_model_path(ref), label=ref)
    except ValueError as e:
        raise ModelRefError(str(e)) from None
