"""The held-out evaluation hook the training runs call before training, every ``eval_every`` steps and at the
end: greedy generations on held-out prompts, the reward overall and per group, the exact KL to the reference,
and the val/* step metrics (average and worst-group reward) of the metric contract."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.models.forward import autocast, full_kl_per_token, micro_batches, padded_rows

if TYPE_CHECKING:
    from engine.models.loading import LoadedPolicy
    from engine.runs.context import RunContext


@dataclass
class HeldoutSet:
    prompts: list[str]  # the text the reward reads
    groups: list[str]
    dataset_version: str
    # What the model is given: the text, or a conversational row's messages (engine.data.types.chat_input); None:
    # the prompts themselves.
    inputs: list[Any] | None = None

    @property
    def model_inputs(self) -> list[Any]:
        return self.prompts if self.inputs is None else self.inputs


def eval_due(step: int, cfg: Any) -> bool:
    """Before training (step 0), every eval_every steps, and at the last step."""
    if cfg.eval_prompts <= 0:
        return False
    return step == 0 or step == cfg.max_steps or (cfg.eval_every > 0 and step % cfg.eval_every == 0)


def heldout_reward_eval(policy: LoadedPolicy, sampler: Any, reward: Any, heldout: HeldoutSet, *,
                        max_new_tokens: int, micro_batch_size: int) -> dict[str, Any]:
    """Greedy completions of the held-out prompts scored by ``reward``: mean reward overall and per group, and
    the exact per-token KL(policy || reference) along those completions. Greedy decoding keeps successive
    evaluations comparable: the numbers move only when the model does."""
    import torch

    from engine.sampling.base import encode_prompts

    if not heldout.prompts:
        return {}
    batch = sampler.generate(heldout.model_inputs, n=1, max_new_tokens=max_new_tokens, greedy=True)
    scored = reward(heldout.prompts, batch.texts)
    values = torch.tensor(scored.total, dtype=torch.float64)  # (N,)
    out: dict[str, float] = {}
    finite = ~torch.isnan(values)
    out["reward/mean"] = float(values[finite].mean()) if bool(finite.any()) else float("nan")
    out["reward/nan_count"] = float((~finite).sum())
    for g in sorted(set(heldout.groups)):
        sel = torch.tensor([x == g for x in heldout.groups]) & finite
        out[f"reward/{g}"] = float(values[sel].mean()) if bool(sel.any()) else float("nan")
    for name, vals in scored.per_function.items():
        v = torch.tensor(vals, dtype=torch.float64)
        ok = ~torch.isnan(v)
        out[f"reward/{name}/mean"] = float(v[ok].mean()) if bool(ok.any()) else float("nan")

    prompt_ids = encode_prompts(policy.tokenizer, heldout.model_inputs)
    rows = padded_rows(prompt_ids, batch.completion_ids, policy.tokenizer.pad_token_id, device=policy.device)
    kl_sum, tokens = 0.0, 0.0
    with torch.no_grad():
        was_training = policy.model.training
        policy.model.eval()
        try:
            for a, b in micro_batches(len(rows), micro_batch_size):
                mb = rows.slice(a, b)
                with autocast(policy.device):
                    pl = policy.model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits[:, :-1]
                    with policy.ref_logits_context() as ref:
                        rl = ref(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits[:, :-1]
                kl = full_kl_per_token(pl, rl)  # (b, L-1)
                kl_sum += float((kl * mb.target_mask).sum())
                tokens += float(mb.target_mask.sum())
        finally:
            policy.model.train(was_training)
    out["kl"] = kl_sum / max(tokens, 1.0)
    out["completion/len_mean"] = sum(len(c) for c in batch.completion_ids) / len(batch.completion_ids)
    # per-prompt outcomes, 95% intervals and a sample of the answers, stored with the evaluation (not logged as
    # step metrics): the Results page pairs step 0 with the last step item by item and shows answers side by side
    from engine.evaluation.harness import heldout_result_block

    out.update(heldout_result_block(values.tolist(), heldout.groups, heldout.prompts, batch.texts))
    return out


def record_heldout(ctx: RunContext, step: int, metrics: dict[str, float], heldout: HeldoutSet,
                   benchmark: str = "heldout_reward") -> None:
    if metrics:
        ctx.record_evaluation(benchmark, metrics, model=ctx.config.model, dataset_version=heldout.dataset_version,
                              step=step)


def heldout_val_metrics(metrics: dict[str, float], heldout: HeldoutSet) -> dict[str, float]:
    """The step metrics of one held-out evaluation (``heldout_reward_eval``'s result): the average reward and the
    worst group's mean reward (groups with no scorable completion left out), under the metric contract's keys."""
    from db import metric_keys as mk

    if not metrics:
        return {}
    per_group = [metrics.get(f"reward/{g}", float("nan")) for g in sorted(set(heldout.groups))]
    finite = [v for v in per_group if not math.isnan(v)]
    return {mk.VAL_AVG_REWARD: metrics.get("reward/mean", float("nan")),
            mk.VAL_WORST_GROUP_REWARD: min(finite) if finite else float("nan")}
