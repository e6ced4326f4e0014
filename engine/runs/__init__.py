"""One runner module per kind of run; each exposes ``execute(ctx: RunContext) -> None``.

Looked up by name and imported lazily, so choosing a runner never imports torch for the others. The table
derives from engine.config.ALGORITHMS (one AlgorithmSpec per algorithm names its runner module).
"""

from engine.config import ALGORITHMS

RUNNERS: dict[str, str] = {spec.name: spec.runner for spec in ALGORITHMS}
