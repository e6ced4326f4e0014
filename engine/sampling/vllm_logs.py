"""vLLM's one alarming log line during weight syncs, explained once instead of repeated.

Every ``sync_weights`` (engine/sampling/vllm_backend.py) pushes the policy's state dict through vLLM's layerwise
``reload_weights``. vLLM counts every tensor of a layer as loadable, buffers included, and a rotary embedding's
only tensor is ``cos_sin_cache``: a non-persistent buffer vLLM computes from the model config (rope theta, head
size), which no Hugging Face state dict carries. Finding nothing for it, vLLM warns "RotaryEmbedding: Failed to
load weights" and puts its own cache back, which holds exactly the right values. So the warning is expected and
harmless; this filter turns the first one into an explanation at INFO level and drops the repeats (one per
rotary layer per step). Standard library only, so it is tested without vLLM.
"""

from __future__ import annotations

import logging

LAYERWISE_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"
EXPLANATION = ("%s has no weights in the pushed state dict: its cos/sin cache is computed from the model config and "
               "vLLM keeps its own copy, with the right values (vLLM calls this \"Failed to load weights\"; expected "
               "on every weight sync, harmless, said once)")


class RotaryReloadNote(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.said = False

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "Failed to load weights" not in msg or "Rotary" not in msg.split(":", 1)[0]:
            return True
        if self.said:
            return False
        self.said = True
        record.msg, record.args = EXPLANATION, (msg.split(":", 1)[0],)
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


def explain_rotary_reload_warning(logger_name: str = LAYERWISE_LOGGER) -> RotaryReloadNote:
    """Install the filter on vLLM's layerwise-reload logger (once per process); returns it."""
    logger = logging.getLogger(logger_name)
    for f in logger.filters:
        if isinstance(f, RotaryReloadNote):
            return f
    note = RotaryReloadNote()
    logger.addFilter(note)
    return note
