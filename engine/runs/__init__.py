"""One runner module per kind of run; each exposes ``execute(ctx: RunContext) -> None``.

Looked up by name and imported lazily, so choosing a runner never imports torch for the others.
"""

RUNNERS: dict[str, str] = {
    "synthetic": "engine.runs.synthetic",
    "grpo": "engine.runs.grpo",
    "gr_grpo": "engine.runs.grpo",
    "dpo": "engine.runs.preference",
    "ipo": "engine.runs.preference",
    "is_dpo": "engine.runs.preference",
    "is_ipo": "engine.runs.preference",
    "gr_dpo": "engine.runs.preference",
    "gr_ipo": "engine.runs.preference",
    "compare": "engine.runs.compare",
    "eval": "engine.runs.evaluate",
}
