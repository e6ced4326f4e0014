"""BiasGRPO and group-robust GRPO runs: sample G completions per prompt, score them with the bias reward,
turn rewards into group-relative advantages, update the policy, sync the sampler, log one step.

Phases of a step (each timed, each a metric): sample -> reward -> logprobs (reference, and the sampling
policy's when mu > 1 or the robust signal needs loss values) -> weights (GR-GRPO's adversary step) -> update
(``update_policy``: mu optimiser steps, micro-batched) -> sync (weights to the sampler) -> log (one transaction,
with the held-out metrics at evaluation steps).

``update_policy`` on a ``TrainBatch`` is the one update path: the engine, the TRL parity guard
(bench/grpo_vs_trl.py) and tests/test_runs_grpo.py all call it.

Group-robust GRPO (``gr_grpo``), why it is built this way
----------------------------------------------------------
The groups are the prompts' demographic groups (gender, race, ...). Each step the adversary's weights alpha
over the K groups take one exponentiated-gradient step, ``update_group_weights(alpha, L, eta, chi, present)``,
where only the groups present in the batch move. Then each sequence's per-sequence GRPO loss is weighted by its
group's mixed weight ``(1 - chi)/K + chi * alpha_g``, renormalised over the groups present in the batch and
divided by the group's sequence count: ``loss = sum_g w'_g * mean_{i in g} l_i``. With uniform alpha and a
group-balanced batch this equals plain GRPO's mean exactly, so eta -> 0 recovers BiasGRPO and the learning rate
keeps its meaning; the renormalisation keeps the loss scale when some groups are absent from a batch.

The group loss L_g that drives alpha ("robust_signal"):
- "reward_shortfall" (default): 1 - mean total reward of the group's completions this step (for the bias
  reward model, in [0, 1], the distance from an unbiased answer). It measures what we want to equalise, and it
  does not vanish when a group's completions all score the same.
- "grpo_loss": the group's mean per-sequence GRPO loss at the sampling policy. Advantages are centred within
  each prompt and the ratio is 1 before the first update, so this is close to 0 (only the KL term and token
  weighting remain) and carries little signal with mu = 1; it is offered for parity with GR-DPO/IPO, where the
  preference loss itself is the signal.
alpha is updated once per step, before the mu inner updates, from the sampling policy's batch (one adversary
step per batch of fresh samples); it is part of the checkpoint, so a resumed run continues the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from db import metric_keys as mk
from engine.runs.context import RunContext
from engine.runs.train_common import (
    BatchSchedule,
    HeldoutSet,
    PaddedRows,
    PhaseTimer,
    balanced_subset,
    batched_logprobs_no_grad,
    clip_and_step,
    derive_seed,
    eval_due,
    forward_logprobs,
    heldout_reward_eval,
    heldout_val_metrics,
    load_training_policy,
    make_optimizer,
    micro_batches,
    padded_rows,
    peak_memory_mb,
    record_heldout,
    reset_peak_memory,
    restore_train_state,
    save_train_state,
)

if TYPE_CHECKING:
    import torch

# The vLLM backend turns a step's seed into per-prompt seeds seed * 1_000_003 + offset
# (engine.sampling.vllm_backend._SEED_STRIDE); below 2**30 those stay under 2**50, well inside the 64-bit seeds
# torch's and vLLM's generators take. (Changing the modulus would change every run's sampled batches.)
_SEED_MOD = 2**30


def loss_settings(cfg: Any) -> dict[str, Any]:
    """grpo_loss's options from a run config (everything but the tensors and the normalizer)."""
    return dict(beta=cfg.beta, eps_low=cfg.epsilon_low, eps_high=cfg.epsilon_high, ratio_level=cfg.ratio_level,
                aggregation=cfg.loss_aggregation, max_len=cfg.max_new_tokens)


@dataclass
class TrainBatch:
    """One step's completions as the policy update takes them (like tiny-grpo's Experience). Every per-row
    tensor is in the same row order, the order of ``rows``; the loss is a sum over rows, so that order only
    decides which rows share a micro-batch."""

    rows: PaddedRows  # input_ids (B, L), attention_mask (B, L), target_mask (B, L-1): 1 on completion tokens
    advantages: torch.Tensor  # (B,) float32
    coeffs: torch.Tensor  # (B,) c_i, loss = sum_i c_i * l_i: 1/B for plain GRPO (sequence_coefficients)
    old_logp: torch.Tensor | None = None  # (B, L-1) sampling policy; None: mu = 1, the detached current log-probs
    ref_logp: torch.Tensor | None = None  # (B, L-1) reference model; None when beta = 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def num_tokens(self) -> float:
        return float(self.rows.target_mask.sum())

    @property
    def normalizer(self) -> float:
        """grpo_loss's ``normalizer``: the whole batch's completion tokens per sequence, so that token_mean over
        micro-batches divides by the batch's token count (TRL's num_items_in_batch) and not each micro-batch's."""
        return max(self.num_tokens, 1.0) / max(len(self), 1)


@dataclass
class UpdateResult:
    loss: float  # the last inner update's objective sum_i c_i * l_i
    grad_norm: float  # pre-clip gradient norm of the last optimiser step
    per_sequence_loss: torch.Tensor  # (B,) l_i of the last inner update, rows in TrainBatch order, on the CPU
    token_stats: dict[str, float]  # kl, clip_low, clip_high, clip, ratio_mean: completion-token-weighted sums
    entropy_sum: float  # per-token entropy summed over the completion tokens (first inner update)


STAT_KEYS = ("kl", "clip_low", "clip_high", "clip", "ratio_mean")


def update_policy(model: Any, params: list[Any], optimizer: Any, batch: TrainBatch, *, num_iterations: int,
                  micro_batch_size: int, max_grad_norm: float, loss_kw: dict[str, Any], temperature: float = 1.0,
                  device: str = "cpu", with_entropy: bool = True) -> UpdateResult:
    """``num_iterations`` optimiser steps on one batch, each accumulating the gradient of sum_i c_i * l_i over
    micro-batches of ``micro_batch_size`` rows (equal to the full-batch loss for every aggregation: the
    normalizer is the whole batch's), then clipping and stepping. ``loss_kw``: ``loss_settings(cfg)``."""
    import torch

    from engine.algorithms.grpo import grpo_loss

    n = len(batch)
    coeffs = batch.coeffs.to(device)
    stats = dict.fromkeys(STAT_KEYS, 0.0)
    entropy_sum, loss_value, grad_norm = 0.0, 0.0, 0.0
    per_seq_values = torch.zeros(n)
    for it in range(num_iterations):
        first, last = it == 0, it == num_iterations - 1
        loss_it = 0.0
        for a, b in micro_batches(n, micro_batch_size):
            mb = batch.rows.slice(a, b)
            t = mb.target_mask.shape[1]
            logp, ent = forward_logprobs(model, mb, temperature=temperature, with_entropy=first and with_entropy,
                                         device=device)
            old = batch.old_logp[a:b, :t] if batch.old_logp is not None else logp.detach()
            ref_mb = batch.ref_logp[a:b, :t] if batch.ref_logp is not None else None
            _, st = grpo_loss(logp, old, batch.advantages[a:b].to(device), mb.target_mask, ref_logp=ref_mb,
                              normalizer=batch.normalizer, **loss_kw)
            per_seq = st["per_sequence_loss"]
            loss = (coeffs[a:b] * per_seq).sum()
            loss.backward()
            loss_it += float(loss.detach())
            if last:
                tok = float(mb.target_mask.sum())
                per_seq_values[a:b] = per_seq.detach().float().cpu()
                for key in stats:
                    stats[key] += float(st[key]) * tok
            if first and ent is not None:
                entropy_sum += float((ent * mb.target_mask).sum())
        grad_norm = clip_and_step(params, optimizer, max_grad_norm)
        loss_value = loss_it
    return UpdateResult(loss_value, grad_norm, per_seq_values, stats, entropy_sum)


def sequence_coefficients(group_ids: torch.Tensor, num_groups: int, weights: torch.Tensor | None) -> torch.Tensor:
    """Per-sequence coefficients c_i with loss = sum_i c_i * l_i.

    ``weights`` None: plain GRPO, c_i = 1/B. Otherwise (K,) group weights: c_i = w'_g(i) / n_g(i), with w'
    the weights renormalised over the groups present in the batch (n_g > 0). (B,) -> (B,)
    """
    import torch

    b = group_ids.shape[0]
    if weights is None:
        return torch.full((b,), 1.0 / b, dtype=torch.float32)
    counts = torch.zeros(num_groups, dtype=torch.float32).index_add(0, group_ids, torch.ones(b))  # (K,)
    present = counts > 0
    w = torch.where(present, weights.float(), torch.zeros_like(weights.float()))
    w = w / w.sum().clamp_min(1e-12)
    return (w / counts.clamp_min(1.0))[group_ids]  # (B,)


def group_reward_stats(rewards: torch.Tensor, group_ids: torch.Tensor, num_groups: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, std (population) and count of the finite rewards of each group: (B,) -> (K,) x3 (NaN mean and
    std where a group has no finite reward)."""
    import torch

    ok = ~torch.isnan(rewards)
    r = torch.where(ok, rewards, torch.zeros_like(rewards)).double()
    n = torch.zeros(num_groups, dtype=torch.float64).index_add(0, group_ids, ok.double())
    s = torch.zeros(num_groups, dtype=torch.float64).index_add(0, group_ids, r)
    mean = s / n.clamp_min(1.0)
    sq = torch.zeros(num_groups, dtype=torch.float64).index_add(0, group_ids, torch.where(ok, (r - mean[group_ids]) ** 2,
                                                                                           torch.zeros_like(r)))
    std = (sq / n.clamp_min(1.0)).sqrt()
    nan = torch.full_like(mean, float("nan"))
    return torch.where(n > 0, mean, nan), torch.where(n > 0, std, nan), n


def _nanmean(x: torch.Tensor) -> float:
    import torch

    ok = ~torch.isnan(x)
    return float(x[ok].mean()) if bool(ok.any()) else float("nan")


def _nanstd(x: torch.Tensor) -> float:
    import torch

    ok = ~torch.isnan(x)
    return float(x[ok].double().std(unbiased=False)) if int(ok.sum()) > 0 else float("nan")


def _heldout(cfg: Any) -> HeldoutSet:
    from engine.data.registry import load_named

    if cfg.eval_prompts <= 0:
        return HeldoutSet([], [], "")
    rows = load_named(cfg.dataset, "eval", seed=cfg.seed, path=cfg.dataset_path)
    pick = balanced_subset([r.group for r in rows], cfg.eval_prompts)
    return HeldoutSet([rows[i].prompt for i in pick], [rows[i].group for i in pick],
                      f"{cfg.dataset}:eval:{len(pick)}")


def execute(ctx: RunContext) -> None:
    import torch

    from engine.algorithms.group_robust import GroupWeightState, group_losses, mixed_weights, update_group_weights
    from engine.algorithms.grpo import group_advantages, grpo_loss
    from engine.data.quality import load_training_rows
    from engine.rewards.base import build_reward
    from engine.sampling.base import make_sampler, sampler_options

    cfg = ctx.config
    robust = cfg.algorithm == "gr_grpo"
    torch.manual_seed(cfg.seed)
    train = load_training_rows(cfg, ctx.event)
    group_names = sorted({r.group for r in train})
    gid = {g: i for i, g in enumerate(group_names)}
    k = len(group_names)
    schedule = BatchSchedule([r.group for r in train], cfg.prompts_per_step, cfg.seed, cfg.group_sampling)
    heldout = _heldout(cfg)

    policy = load_training_policy(cfg)
    params = policy.trainable_parameters()
    optimizer, scheduler = make_optimizer(params, cfg)
    start = ctx.start_step()
    extra = restore_train_state(ctx, start, policy, optimizer, scheduler)
    alpha = (GroupWeightState.from_dict(extra["group_weights"]) if "group_weights" in extra
             else GroupWeightState.uniform(k)).to_tensor()
    if alpha.shape[0] != k:
        raise RuntimeError(f"the checkpoint has {alpha.shape[0]} group weights but the dataset has {k} groups: "
                           "resume with the same dataset")

    sampler = make_sampler(cfg.sampler, policy.model_path, policy,
                           **sampler_options(cfg.sampler, policy.device, static_cache=cfg.static_cache))
    reward = build_reward(cfg.rewards, device=policy.device)
    device = policy.device
    pad_id = policy.tokenizer.pad_token_id
    g_size = cfg.group_size

    def save(step: int) -> None:
        save_train_state(ctx, step, policy, optimizer, scheduler,
                         extra={"group_weights": GroupWeightState.from_tensor(alpha).to_dict()})

    def evaluate(step: int) -> dict[str, float]:
        """Held-out evaluation when due: recorded in the evaluations table; returns the val/* metrics."""
        if not (eval_due(step, cfg) and heldout.prompts):
            return {}
        metrics = heldout_reward_eval(policy, sampler, reward, heldout, max_new_tokens=cfg.max_new_tokens,
                                      micro_batch_size=cfg.micro_batch_size)
        record_heldout(ctx, step, metrics, heldout)
        return heldout_val_metrics(metrics, heldout)

    loss_kw = loss_settings(cfg)
    try:
        if start == 0:
            val = evaluate(0)
            if val:
                ctx.log_step(0, val)  # the before-training point of the held-out curves
        for step in range(start + 1, cfg.max_steps + 1):
            timer = PhaseTimer(device)
            reset_peak_memory(device)
            with timer.phase("step"):
                rows = [train[i] for i in schedule.indices(step)]
                prompts = [r.prompt for r in rows]
                with timer.phase("sample"):
                    batch = sampler.generate(prompts, n=g_size, max_new_tokens=cfg.max_new_tokens,
                                             temperature=cfg.temperature, top_p=cfg.top_p,
                                             seed=derive_seed("sample", cfg.seed, step) % _SEED_MOD,
                                             ignore_eos=cfg.ignore_eos)
                n_seq = len(batch)
                seq_rows = [rows[i] for i in batch.prompt_index]
                with timer.phase("reward"):
                    scored = reward([r.prompt for r in seq_rows], batch.texts)
                rewards = torch.tensor(scored.total, dtype=torch.float32)  # (B,)
                if rewards.shape[0] != n_seq:
                    raise RuntimeError(f"the reward returned {rewards.shape[0]} scores for {n_seq} completions")
                rewards = torch.where(torch.isinf(rewards), torch.full_like(rewards, float("nan")), rewards)
                adv_out = group_advantages(rewards, g_size, scale=cfg.advantage_scale)
                advantages = adv_out.advantages.float()  # (B,)
                group_ids = torch.tensor([gid[r.group] for r in seq_rows], dtype=torch.long)  # (B,)

                # rows ordered by prompt length, a prompt's G completions side by side: a micro-batch then holds
                # prompts of similar length (little padding) whose G rows share one prompt pass
                # (forward_logprobs' "shared" layout). Every per-row tensor below is in this order; the loss is a
                # sum over rows, so the order changes nothing else.
                order = sorted(range(n_seq), key=lambda i: (len(batch.prompt_ids[i]), batch.prompt_index[i],
                                                            len(batch.completion_ids[i])))
                perm = torch.tensor(order, dtype=torch.long)
                adv_o, gid_o = advantages[perm], group_ids[perm]  # (B,) in row order
                padded = padded_rows([batch.prompt_ids[i] for i in order], [batch.completion_ids[i] for i in order],
                                     pad_id, device=device)
                with timer.phase("logprobs"):
                    ref_logp = None
                    if cfg.beta > 0:
                        with policy.ref_logits_context() as ref:
                            ref_logp = batched_logprobs_no_grad(ref, padded, cfg.micro_batch_size,
                                                                temperature=cfg.temperature, device=device)
                    need_old = cfg.num_iterations > 1 or (robust and cfg.robust_signal == "grpo_loss")
                    old_logp = (batched_logprobs_no_grad(policy.model, padded, cfg.micro_batch_size,
                                                         temperature=cfg.temperature, device=device)
                                if need_old else None)

                group_loss_signal = None
                if robust:
                    with timer.phase("weights"):  # all of GR-GRPO's own cost lands in this phase
                        if cfg.robust_signal == "reward_shortfall":
                            means, _, counts = group_reward_stats(rewards, group_ids, k)
                            group_loss_signal = torch.where(counts > 0, 1.0 - means, torch.zeros_like(means))
                            present = counts > 0
                        else:
                            with torch.no_grad():
                                _, st = grpo_loss(old_logp, old_logp, adv_o.to(device), padded.target_mask,
                                                  ref_logp=ref_logp, **loss_kw)
                            group_loss_signal, counts = group_losses(st["per_sequence_loss"].float().cpu(), gid_o, k)
                            present = counts > 0
                        alpha = update_group_weights(alpha, group_loss_signal.float(), cfg.eta, chi=cfg.chi,
                                                     present=present)
                        coeffs = sequence_coefficients(gid_o, k, mixed_weights(alpha, cfg.chi))
                else:
                    coeffs = sequence_coefficients(gid_o, k, None)
                train_batch = TrainBatch(padded, adv_o, coeffs, old_logp=old_logp, ref_logp=ref_logp)

                with timer.phase("update"):
                    upd = update_policy(policy.model, params, optimizer, train_batch,
                                        num_iterations=cfg.num_iterations, micro_batch_size=cfg.micro_batch_size,
                                        max_grad_norm=cfg.max_grad_norm, loss_kw=loss_kw,
                                        temperature=cfg.temperature, device=device)
                    lr = scheduler.get_last_lr()[0]
                    scheduler.step()
                with timer.phase("sync"):
                    sampler.sync_weights(policy.model)

            per_seq_values = torch.zeros(n_seq)
            per_seq_values[perm] = upd.per_sequence_loss  # back to batch order
            metrics = _step_metrics(cfg, rewards, scored, adv_out, batch, train_batch.num_tokens, upd, lr, timer,
                                    device)
            means, stds, counts = group_reward_stats(rewards, group_ids, k)
            seqs = torch.zeros(k).index_add(0, group_ids, torch.ones(n_seq))  # (K,) sequences per group
            loss_g = torch.zeros(k).index_add(0, group_ids, per_seq_values) / seqs.clamp_min(1.0)
            finite = counts > 0
            metrics[mk.REWARD_WORST_GROUP] = float(means[finite].min()) if bool(finite.any()) else float("nan")
            groups = []
            for g, i in gid.items():
                if seqs[i] == 0 and not robust:  # a group with completions is kept even when none could be scored
                    continue
                row = {mk.GROUP_REWARD_MEAN: float(means[i]), mk.GROUP_REWARD_STD: float(stds[i]),
                       mk.GROUP_COUNT: int(seqs[i]),
                       mk.GROUP_LOSS: float(loss_g[i]) if seqs[i] > 0 else None,
                       mk.GROUP_WEIGHT: float(alpha[i]) if robust else None}
                if robust and group_loss_signal is not None:
                    row["signal"] = float(group_loss_signal[i])
                groups.append({"group": g, **row})
                metrics[mk.group_reward(g)] = float(means[i])
                if robust:
                    metrics[mk.group_weight(g)] = float(alpha[i])
            samples = _samples(cfg.samples_logged, g_size, seq_rows, batch.texts, rewards, scored, advantages)
            # evaluated before the step is logged, so its val/* metrics go into the step's one transaction
            metrics.update(evaluate(step))
            ctx.log_step(step, metrics, groups, samples)
            saved = ctx.checkpoint_due(step)
            if saved:
                save(step)
            if ctx.should_stop():
                if not saved:
                    save(step)
                return
    finally:
        sampler.close()
        close = getattr(reward, "close", None)
        if close is not None:
            close()


def _step_metrics(cfg: Any, rewards: torch.Tensor, scored: Any, adv_out: Any, batch: Any, total_tokens: float,
                  upd: UpdateResult, lr: float, timer: PhaseTimer, device: str) -> dict[str, float]:
    import torch

    lengths = [len(c) for c in batch.completion_ids]
    tok = max(total_tokens, 1.0)
    stats = upd.token_stats
    m: dict[str, float] = {
        mk.REWARD_MEAN: _nanmean(rewards),
        mk.REWARD_STD: _nanstd(rewards),
        mk.REWARD_NAN_COUNT: float(adv_out.num_missing),
        "advantage/abs_mean": float(adv_out.advantages.abs().mean()),
        mk.ZERO_VAR_FRAC: float(adv_out.zero_variance.float().mean()),
        mk.KL: stats["kl"] / tok,
        mk.CLIP_LOW: stats["clip_low"] / tok,
        mk.CLIP_HIGH: stats["clip_high"] / tok,
        mk.CLIP_TOTAL: stats["clip"] / tok,
        "ratio/mean": stats["ratio_mean"] / tok,
        mk.ENTROPY: upd.entropy_sum / tok,
        mk.COMPLETION_LEN_MEAN: sum(lengths) / max(len(lengths), 1),
        mk.COMPLETION_LEN_MAX: float(max(lengths, default=0)),
        mk.COMPLETION_TRUNCATED_FRAC: sum(batch.truncated) / max(len(batch.truncated), 1),
        "completion/empty_frac": sum(1 for n in lengths if n == 0) / max(len(lengths), 1),
        mk.LOSS: upd.loss,
        mk.LR: lr,
        mk.GRAD_NORM: upd.grad_norm,
        mk.MEMORY_PEAK_MB: peak_memory_mb(device),
    }
    for name, vals in scored.per_function.items():
        m[mk.reward_term(name)] = _nanmean(torch.tensor(vals, dtype=torch.float32))
    m.update(timer.metrics())
    step_time = timer.times.get("step", float("nan"))
    m[mk.TOKENS_PER_S] = sum(lengths) / step_time if step_time > 0 else float("nan")
    sample_time = timer.times.get("sample", 0.0)
    m["sample/tokens_per_s"] = sum(lengths) / sample_time if sample_time > 0 else float("nan")
    return m


def _samples(limit: int, g_size: int, seq_rows: list[Any], texts: list[str], rewards: torch.Tensor, scored: Any,
             advantages: torch.Tensor) -> list[dict[str, Any]]:
    """Up to ``limit`` completions, one per prompt first, so the table shows as many prompts as it can."""
    n = len(texts)
    order = sorted(range(n), key=lambda i: (i % g_size, i // g_size))[:limit]
    out = []
    for i in order:
        r = float(rewards[i])
        out.append({"group": seq_rows[i].group, "prompt": seq_rows[i].prompt, "completion": texts[i],
                    "reward": None if math.isnan(r) else r,
                    "rewards": {name: vals[i] for name, vals in scored.per_function.items()},
                    "advantage": float(advantages[i])})
    return out
