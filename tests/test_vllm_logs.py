"""vLLM's "RotaryEmbedding: Failed to load weights" on every weight sync is explained once (issue 18, item 9)."""

from __future__ import annotations

import logging

from engine.sampling.vllm_logs import EXPLANATION, explain_rotary_reload_warning


def test_the_rotary_reload_warning_becomes_one_explanation_and_others_pass(caplog):
    name = "test.vllm.layerwise"
    note = explain_rotary_reload_warning(name)
    assert explain_rotary_reload_warning(name) is note  # installed once per process
    log = logging.getLogger(name)
    with caplog.at_level(logging.DEBUG, logger=name):
        for _ in range(3):  # vLLM's own call: logger.warning("%s: Failed to load weights", layer.__class__.__name__)
            log.warning("%s: Failed to load weights", "RotaryEmbedding")
        log.warning("%s: Failed to load weights", "QKVParallelLinear")  # a real failure stays a warning
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert records[0] == (logging.INFO, EXPLANATION % "RotaryEmbedding")
    assert records[1:] == [(logging.WARNING, "QKVParallelLinear: Failed to load weights")]
