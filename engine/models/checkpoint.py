"""Checkpoints without pickle, and export to a standard HF folder.

A checkpoint folder:
    meta.json                       format, step, base model, LoRA settings, caller's extra scalars
    model.safetensors               full fine-tuning: the policy's weights
    adapter/                        LoRA: peft's adapter folder (adapter_config.json + adapter_model.safetensors)
    optimizer.json + .safetensors   optimizer state: tensors in safetensors, the rest as JSON
    scheduler.json (+ .safetensors) LR scheduler state, same encoding
    rng.json + rng.safetensors      python, numpy and torch (CPU + CUDA) generator states

Nested states are flattened by `flatten_state`: every tensor becomes a safetensors entry named by its path and
is replaced in the JSON by {"__tensor__": key}; tuples and non-string dict keys are tagged so they come back
with their original types (optimizers index their state by int parameter ids).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from engine.models.loading import LoadedPolicy

FORMAT_VERSION = 1
META = "meta.json"
MODEL_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"


# ---------------------------------------------------------------- pickle-free state encoding

def flatten_state(obj: Any, prefix: str = "s") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state into a JSON-able structure and a flat {key: tensor} dict."""
    import torch

    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            # safetensors wants contiguous, non-shared storage
            tensors[path] = x.detach().cpu().contiguous().clone()
            return {"__tensor__": path}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {"__dict__": [[k, walk(v, f"{path}.{k}")] for k, v in x.items()]}
            return {"__dict__": [[{"__key__": _encode_key(k)}, walk(v, f"{path}.{k}")] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if hasattr(x, "tolist") and hasattr(x, "dtype"):  # numpy arrays and scalars
            return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
        raise TypeError(f"cannot store a {type(x).__name__} at {path} without pickle: convert it to tensors/scalars")

    return walk(obj, prefix), tensors


def _encode_key(k: Any) -> Any:
    if isinstance(k, (int, float, bool)) or k is None:
        return k
    raise TypeError(f"dict key {k!r} of type {type(k).__name__} cannot be stored: use str or int keys")


def unflatten_state(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten_state`."""
    if isinstance(data, list):
        return [unflatten_state(v, tensors) for v in data]
    if isinstance(data, dict):
        if "__tensor__" in data:
            return tensors[data["__tensor__"]]
        if "__tuple__" in data:
            return tuple(unflatten_state(v, tensors) for v in data["__tuple__"])
        if "__ndarray__" in data:
            import numpy as np

            return np.asarray(data["__ndarray__"], dtype=data["dtype"])
        if "__dict__" in data:
            out = {}
            for k, v in data["__dict__"]:
                key = k["__key__"] if isinstance(k, dict) else k
                out[key] = unflatten_state(v, tensors)
            return out
        raise ValueError(f"unrecognised encoded state node with keys {sorted(data)}")
    return data


def save_state(obj: Any, folder: Path, name: str) -> None:
    """Write `obj` as <name>.json (+ <name>.safetensors when it holds tensors)."""
    from safetensors.torch import save_file

    encoded, tensors = flatten_state(obj, prefix=name)
    (Path(folder) / f"{name}.json").write_text(json.dumps(encoded))
    if tensors:
        save_file(tensors, str(Path(folder) / f"{name}.safetensors"))


def load_state(folder: Path, name: str, device: str | None = None) -> Any:
    from safetensors.torch import load_file

    tensor_file = Path(folder) / f"{name}.safetensors"
    tensors = load_file(str(tensor_file), device=device or "cpu") if tensor_file.is_file() else {}
    return unflatten_state(json.loads((Path(folder) / f"{name}.json").read_text()), tensors)


# ---------------------------------------------------------------- RNG states

def capture_rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# ---------------------------------------------------------------- training checkpoints

def _settings_to_json(settings: Any) -> Any:
    if settings is None:
        return None
    if is_dataclass(settings):
        return asdict(settings)
    if hasattr(settings, "model_dump"):  # pydantic
        return settings.model_dump()
    return {k: getattr(settings, k) for k in ("r", "alpha", "dropout", "target_modules")}


def save_checkpoint(
    folder: Path,
    policy: LoadedPolicy,
    *,
    step: int,
    optimizer: Any | None = None,
    scheduler: Any | None = None,
    lora_settings: Any | None = None,
    extra: dict[str, Any] | None = None,
    save_rng: bool = True,
) -> Path:
    """Write a checkpoint atomically (a temp folder renamed into place), so a crash never leaves half of one."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        if policy.uses_lora:
            policy.model.save_pretrained(str(tmp / ADAPTER_DIR), safe_serialization=True)
        else:
            # save_model drops tied duplicates (lm_head = embeddings) that save_file would refuse.
            save_model(policy.model, str(tmp / MODEL_FILE))
        if optimizer is not None:
            save_state(optimizer.state_dict(), tmp, "optimizer")
        if scheduler is not None:
            save_state(scheduler.state_dict(), tmp, "scheduler")
        if save_rng:
            save_state(capture_rng_state(), tmp, "rng")
        meta = {
            "format": FORMAT_VERSION,
            "step": step,
            "base_model": policy.model_path,
            "uses_lora": policy.uses_lora,
            "lora": _settings_to_json(lora_settings),
            "extra": extra or {},
        }
        (tmp / META).write_text(json.dumps(meta, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_checkpoint_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / META
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a studio checkpoint (no {META}): point it at a checkpoint folder")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"checkpoint format {meta.get('format')} in {folder} is not supported (expected {FORMAT_VERSION})")
    return meta


def load_checkpoint(
    folder: Path,
    policy: LoadedPolicy,
    *,
    optimizer: Any | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load weights (and optimizer/scheduler/RNG states when given) into live objects; returns meta.json."""
    from safetensors.torch import load_model

    folder = Path(folder)
    meta = read_checkpoint_meta(folder)
    if meta["uses_lora"] != policy.uses_lora:
        raise ValueError(f"checkpoint {folder} was saved {'with' if meta['uses_lora'] else 'without'} LoRA but the "
                         f"policy was loaded {'with' if policy.uses_lora else 'without'}: load it the same way")
    if policy.uses_lora:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = load_file(str(folder / ADAPTER_DIR / "adapter_model.safetensors"), device=str(policy.device))
        result = set_peft_model_state_dict(policy.model, adapter)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"adapter in {folder} does not fit this model: unexpected keys {unexpected[:5]}")
    else:
        load_model(policy.model, str(folder / MODEL_FILE), strict=True, device=str(policy.device))
    if optimizer is not None:
        optimizer.load_state_dict(load_state(folder, "optimizer"))
    if scheduler is not None:
        scheduler.load_state_dict(load_state(folder, "scheduler"))
    if restore_rng and (folder / "rng.json").is_file():
        restore_rng_state(load_state(folder, "rng"))
    return meta


# ---------------------------------------------------------------- export

def export_model(policy_or_checkpoint_dir: LoadedPolicy | Path | str, out_dir: Path | str, merge_lora: bool = True) -> Path:
    """Write a standard HF folder that transformers and vLLM load.

    LoRA policies: merge_lora=True folds the adapter into the base weights (a full model folder);
    merge_lora=False writes the adapter alone (peft folder, pointing at its base model).
    A checkpoint folder is first loaded onto the CPU from its recorded base model.
    """
    from engine.models.loading import LoadedPolicy, load_policy

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(policy_or_checkpoint_dir, LoadedPolicy):
        policy = policy_or_checkpoint_dir
    else:
        ckpt = Path(policy_or_checkpoint_dir)
        meta = read_checkpoint_meta(ckpt)
        if meta["uses_lora"] and not meta.get("lora"):
            raise ValueError(f"checkpoint {ckpt} uses LoRA but has no LoRA settings in {META}: "
                             "save it with save_checkpoint(..., lora_settings=...)")
        lora = _LoraFromMeta(**meta["lora"]) if meta["uses_lora"] else None
        policy = load_policy(meta["base_model"], lora=lora, device="cpu", dtype="float32", need_reference=False)
        load_checkpoint(ckpt, policy, restore_rng=False)

    if policy.uses_lora and not merge_lora:
        policy.model.save_pretrained(str(out), safe_serialization=True)
    else:
        from engine.models.lora import merged_state_dict
        from engine.models.loading import unwrap_base_model

        base = unwrap_base_model(policy.model)
        # Save the merged weights through the base model's own save_pretrained so config, generation config
        # and tied-weight handling match what transformers expects; the training model is left untouched.
        state = merged_state_dict(policy.model)
        base.save_pretrained(str(out), state_dict=state, safe_serialization=True)
        _drop_peft_leftovers(out)
    policy.tokenizer.save_pretrained(str(out))
    return out


class _LoraFromMeta:
    def __init__(self, r: int, alpha: float, dropout: float, target_modules: Any, **_: Any) -> None:
        self.r, self.alpha, self.dropout, self.target_modules = r, alpha, dropout, target_modules


def _drop_peft_leftovers(out: Path) -> None:
    # A config saved from a peft-wrapped base can carry no adapter files, but stale ones from an earlier
    # export into the same folder would make loaders think it is an adapter folder.
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if (out / name).exists():
            (out / name).unlink()
