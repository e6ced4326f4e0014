"""BiasGRPO and group-robust GRPO runs: sample G completions per prompt, score them with the bias reward,
turn rewards into group-relative advantages, update the policy, sync the sampler, log one step.

Phases of a step (each timed, each a metric): sample -> reward -> logprobs (reference, and the sampling
policy's when mu > 1 or the robust signal needs loss values) -> update (mu optimiser steps, micro-batched)
-> sync (weights to the sampler) -> log (one transaction).

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
from typing import TYPE_CHECKING, Any

from engine.runs.context import RunContext
from engine.runs.train_common import (
    BatchSchedule,
    HeldoutSet,
    PhaseTimer,
    balanced_subset,
    batched_logprobs_no_grad,
    clip_and_step,
    derive_seed,
    eval_due,
    forward_logprobs,
    heldout_reward_eval,
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

# vLLM spaces per-prompt seeds by ~1e6 (engine.sampling.vllm_backend); 2**30 keeps seed + offsets in int32 range.
_SEED_MOD = 2**30


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


def to_global_scale(per_seq: torch.Tensor, mask: torch.Tensor, aggregation: str, batch_size: int,
                    total_tokens: float) -> torch.Tensor:
    """Rescale a micro-batch's ``per_sequence_loss`` (grpo_loss scales token_mean by the micro-batch's own token
    count) so that ``mean`` over the FULL batch equals grpo_loss on the full batch. (b,) -> (b,)"""
    if aggregation != "token_mean":
        return per_seq  # seq_mean and constant (with a fixed max_len) do not depend on the other rows
    b = per_seq.shape[0]
    token_sums = per_seq * (mask.sum().clamp_min(1.0) / b)
    return token_sums * (batch_size / max(total_tokens, 1.0))


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

    from engine.algorithms.group_robust import GroupWeightState, mixed_weights, update_group_weights
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

    def evaluate(step: int) -> None:
        if eval_due(step, cfg) and heldout.prompts:
            metrics = heldout_reward_eval(policy, sampler, reward, heldout, max_new_tokens=cfg.max_new_tokens,
                                          micro_batch_size=cfg.micro_batch_size)
            record_heldout(ctx, step, metrics, heldout)

    try:
        if start == 0:
            evaluate(0)
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
                total_tokens = float(padded.target_mask.sum())
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

                loss_kw = dict(beta=cfg.beta, eps_low=cfg.epsilon_low, eps_high=cfg.epsilon_high,
                               ratio_level=cfg.ratio_level, aggregation=cfg.loss_aggregation,
                               max_len=cfg.max_new_tokens)
                group_loss_signal = None
                if robust:
                    if cfg.robust_signal == "reward_shortfall":
                        means, _, counts = group_reward_stats(rewards, group_ids, k)
                        group_loss_signal = torch.where(counts > 0, 1.0 - means, torch.zeros_like(means))
                        present = counts > 0
                    else:
                        with torch.no_grad():
                            _, st = grpo_loss(old_logp, old_logp, adv_o.to(device), padded.target_mask,
                                              ref_logp=ref_logp, **loss_kw)
                        from engine.algorithms.group_robust import group_losses

                        group_loss_signal, counts = group_losses(st["per_sequence_loss"].float().cpu(), gid_o, k)
                        present = counts > 0
                    alpha = update_group_weights(alpha, group_loss_signal.float(), cfg.eta, chi=cfg.chi,
                                                 present=present)
                    coeffs = sequence_coefficients(gid_o, k, mixed_weights(alpha, cfg.chi))
                else:
                    coeffs = sequence_coefficients(gid_o, k, None)
                coeffs = coeffs.to(device)

                stats_acc = {"kl": 0.0, "clip_low": 0.0, "clip_high": 0.0, "clip": 0.0, "ratio_mean": 0.0}
                entropy_sum, loss_value, grad_norm = 0.0, 0.0, 0.0
                per_seq_values = torch.zeros(n_seq)
                with timer.phase("update"):
                    for it in range(cfg.num_iterations):
                        first = it == 0
                        loss_it = 0.0
                        for a, b in micro_batches(n_seq, cfg.micro_batch_size):
                            mb = padded.slice(a, b)
                            t = mb.target_mask.shape[1]
                            logp, ent = forward_logprobs(policy.model, mb, temperature=cfg.temperature,
                                                         with_entropy=first, device=device)
                            old = old_logp[a:b, :t] if old_logp is not None else logp.detach()
                            ref_mb = ref_logp[a:b, :t] if ref_logp is not None else None
                            _, st = grpo_loss(logp, old, adv_o[a:b].to(device), mb.target_mask,
                                              ref_logp=ref_mb, **loss_kw)
                            per_seq = to_global_scale(st["per_sequence_loss"], mb.target_mask, cfg.loss_aggregation,
                                                      n_seq, total_tokens)
                            loss = (coeffs[a:b] * per_seq).sum()
                            loss.backward()
                            loss_it += float(loss.detach())
                            tok = float(mb.target_mask.sum())
                            if it == cfg.num_iterations - 1:
                                per_seq_values[perm[a:b]] = per_seq.detach().float().cpu()  # batch order
                                for key in stats_acc:
                                    stats_acc[key] += float(st[key]) * tok
                            if first and ent is not None:
                                entropy_sum += float((ent * mb.target_mask).sum())
                        grad_norm = clip_and_step(params, optimizer, cfg.max_grad_norm)
                        loss_value = loss_it
                    lr = scheduler.get_last_lr()[0]
                    scheduler.step()
                with timer.phase("sync"):
                    sampler.sync_weights(policy.model)

            metrics = _step_metrics(cfg, rewards, scored, adv_out, batch, total_tokens, stats_acc, entropy_sum,
                                    loss_value, grad_norm, lr, timer, device)
            means, stds, counts = group_reward_stats(rewards, group_ids, k)
            loss_g = torch.zeros(k).index_add(0, group_ids, per_seq_values) / counts.float().clamp_min(1.0)
            groups = []
            for g, i in gid.items():
                if counts[i] == 0 and not robust:
                    continue
                row = {"group": g, "reward_mean": float(means[i]), "reward_std": float(stds[i]),
                       "count": int((group_ids == i).sum()),
                       "loss": float(loss_g[i]) if counts[i] > 0 else None,
                       "weight": float(alpha[i]) if robust else None}
                if robust and group_loss_signal is not None:
                    row["signal"] = float(group_loss_signal[i])
                groups.append(row)
                metrics[f"reward/group/{g}/mean"] = float(means[i])
                if robust:
                    metrics[f"weight/{g}"] = float(alpha[i])
            samples = _samples(cfg.samples_logged, g_size, seq_rows, batch.texts, rewards, scored, advantages)
            ctx.log_step(step, metrics, groups, samples)
            evaluate(step)
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
                  stats_acc: dict[str, float], entropy_sum: float, loss_value: float, grad_norm: float, lr: float,
                  timer: PhaseTimer, device: str) -> dict[str, float]:
    import torch

    lengths = [len(c) for c in batch.completion_ids]
    tok = max(total_tokens, 1.0)
    m: dict[str, float] = {
        "reward/mean": _nanmean(rewards),
        "reward/std": _nanstd(rewards),
        "reward/nan_count": float(adv_out.num_missing),
        "advantage/abs_mean": float(adv_out.advantages.abs().mean()),
        "zero_var_frac": float(adv_out.zero_variance.float().mean()),
        "kl": stats_acc["kl"] / tok,
        "clip/low": stats_acc["clip_low"] / tok,
        "clip/high": stats_acc["clip_high"] / tok,
        "clip/total": stats_acc["clip"] / tok,
        "ratio/mean": stats_acc["ratio_mean"] / tok,
        "entropy": entropy_sum / tok,
        "completion/len_mean": sum(lengths) / max(len(lengths), 1),
        "completion/len_max": float(max(lengths, default=0)),
        "completion/truncated_frac": sum(batch.truncated) / max(len(batch.truncated), 1),
        "completion/empty_frac": sum(1 for n in lengths if n == 0) / max(len(lengths), 1),
        "loss": loss_value,
        "lr": lr,
        "grad_norm": grad_norm,
        "memory/peak_mb": peak_memory_mb(device),
    }
    for name, vals in scored.per_function.items():
        m[f"reward/{name}/mean"] = _nanmean(torch.tensor(vals, dtype=torch.float32))
    m.update(timer.metrics())
    step_time = timer.times.get("step", float("nan"))
    m["tokens_per_s"] = sum(lengths) / step_time if step_time > 0 else float("nan")
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
