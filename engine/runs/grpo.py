"""BiasGRPO and group-robust GRPO runs: sample G completions per prompt, score them with the bias reward,
turn rewards into group-relative advantages, update the policy, sync the sampler, log one step.

Phases of a step (each timed, each a metric ``time/<phase>``), methods of ``GRPORun`` passing typed values:
sample (-> Rollout) -> reward (-> Scores: rewards, group advantages) -> prepare (-> Prepared: rows ordered and
padded for the update) -> logprobs (reference, and the sampling policy's when mu > 1 or the robust signal needs
loss values) -> weights (-> Weights: per-sequence coefficients; GR-GRPO's adversary step, its own timed phase)
-> update (-> UpdateResult: ``update_policy``, mu optimiser steps, micro-batched) -> sync (weights to the
sampler) -> log (-> StepLog: metrics, group rows, samples). The loop around them (held-out point before training,
one write per step, checkpoint and stop) is engine.runs.loop.run_steps, shared with the preference runs.

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

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from db import metric_keys as mk
from engine.data.types import chat_input
from engine.models.forward import PaddedRows, batched_logprobs_no_grad, forward_logprobs, micro_batches, padded_rows
from engine.runs.context import RunContext
from engine.runs.loop import StepLog, run_steps, start_training
from engine.runs.heldout import HeldoutSet, eval_due, heldout_reward_eval, heldout_val_metrics, record_heldout
from engine.runs.optim import clip_and_step
from engine.runs.schedule import BatchSchedule, balanced_subset, derive_seed
from engine.runs.timing import PhaseTimer, peak_memory_mb, reset_peak_memory

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
    from engine.data.registry import dataset_args, load_named

    if cfg.eval_prompts <= 0:
        return HeldoutSet([], [], "")
    rows = load_named(cfg.dataset, "eval", seed=cfg.seed, **dataset_args(cfg))
    pick = balanced_subset([r.group for r in rows], cfg.eval_prompts)
    return HeldoutSet([rows[i].prompt for i in pick], [rows[i].group for i in pick],
                      f"{cfg.dataset}:eval:{len(pick)}", [chat_input(rows[i]) for i in pick])


# ------------------------------------------------------------------------------------------- the step's values

@dataclass
class Rollout:
    """The sample phase's output: G completions per prompt, in the sampler's order (a prompt's G side by side)."""

    batch: Any  # SampleBatch: prompt_ids, completion_ids, texts, prompt_index, truncated, each (B,)
    seq_rows: list[Any]  # (B,) the prompt row each completion answers (prompt, group)
    group_ids: torch.Tensor  # (B,) long, the completion's group index

    def __len__(self) -> int:
        return len(self.batch)


@dataclass
class Scores:
    """The reward phase's output, in rollout order."""

    scored: Any  # RewardBatch: total (B,) and per_function {name: (B,)}
    rewards: torch.Tensor  # (B,) float32, +-inf turned into NaN (missing)
    adv: Any  # GroupAdvantages: advantages (B,), zero_variance (B // G,), num_missing


@dataclass
class Prepared:
    """The prepare phase's output: the rollout in training-row order (by prompt length, a prompt's completions
    side by side), ``perm[j]`` the rollout index of row j."""

    perm: torch.Tensor  # (B,) long
    rows: PaddedRows  # input_ids (B, L), attention_mask (B, L), target_mask (B, L-1)
    advantages: torch.Tensor  # (B,) in row order
    group_ids: torch.Tensor  # (B,) in row order


@dataclass
class Weights:
    """The weights phase's output: the per-sequence coefficients (row order) and, for GR-GRPO, the group signal
    that moved alpha."""

    coeffs: torch.Tensor  # (B,) c_i, loss = sum_i c_i * l_i
    signal: torch.Tensor | None = None  # (K,) group loss signal (GR-GRPO)


class GRPORun:
    """One BiasGRPO or GR-GRPO run; ``step`` is its phases in order, each a method taking and returning the
    typed values above."""

    def __init__(self, ctx: RunContext):
        from engine.rewards.base import build_reward
        from engine.sampling.base import make_sampler, sampler_options

        cfg = self.cfg = ctx.config
        self.ctx = ctx
        self.robust = cfg.algorithm == "gr_grpo"
        self.t = t = start_training(ctx)
        self.schedule = BatchSchedule([r.group for r in t.train], cfg.prompts_per_step, cfg.seed, cfg.group_sampling)
        self.heldout = _heldout(cfg)
        ctx.setup(f"starting the sampler ({cfg.sampler}) on {t.device}")
        self.sampler = make_sampler(cfg.sampler, t.policy.model_path, t.policy,
                                    **sampler_options(cfg.sampler, t.device, static_cache=cfg.static_cache))
        ctx.setup("loading the reward: " + " + ".join(f"{r.weight:g} x {r.name}" for r in cfg.rewards))
        self.reward = build_reward(cfg.rewards, device=t.device)
        self.loss_kw = loss_settings(cfg)

    def close(self) -> None:
        self.sampler.close()
        close = getattr(self.reward, "close", None)
        if close is not None:
            close()

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out evaluation when due: recorded in the evaluations table; returns the val/* metrics."""
        if not (eval_due(step, self.cfg) and self.heldout.prompts):
            return {}
        cfg = self.cfg
        metrics = heldout_reward_eval(self.t.policy, self.sampler, self.reward, self.heldout,
                                      max_new_tokens=cfg.max_new_tokens, micro_batch_size=cfg.micro_batch_size)
        record_heldout(self.ctx, step, metrics, self.heldout)
        return heldout_val_metrics(metrics, self.heldout)

    def step(self, step: int) -> StepLog:
        timer = PhaseTimer(self.t.device)
        reset_peak_memory(self.t.device)
        with timer.phase("step"):
            with timer.phase("sample"):
                rollout = self.sample(step)
            with timer.phase("reward"):
                scores = self.score(rollout)
            with timer.phase("prepare"):
                prep = self.prepare(rollout, scores)
            with timer.phase("logprobs"):
                old_logp, ref_logp = self.logprobs(prep.rows)
            with timer.phase("weights") if self.robust else contextlib.nullcontext():  # GR-GRPO's own cost
                weights = self.weights(rollout, scores, prep, old_logp, ref_logp)
            batch = TrainBatch(prep.rows, prep.advantages, weights.coeffs, old_logp=old_logp, ref_logp=ref_logp)
            with timer.phase("update"):
                upd = self.update(batch)
                lr = self.t.lr_step()
            with timer.phase("sync"):
                self.sampler.sync_weights(self.t.policy.model)
        with timer.phase("log"):
            out = self.log(rollout, scores, prep, weights, batch, upd, lr)
        out.metrics.update(timer.metrics())
        _throughput(out.metrics, rollout.batch, timer)
        return out

    def sample(self, step: int) -> Rollout:
        cfg = self.cfg
        rows = [self.t.train[i] for i in self.schedule.indices(step)]
        batch = self.sampler.generate([chat_input(r) for r in rows], n=cfg.group_size,
                                      max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                      seed=derive_seed("sample", cfg.seed, step) % _SEED_MOD,
                                      ignore_eos=cfg.ignore_eos)
        seq_rows = [rows[i] for i in batch.prompt_index]
        return Rollout(batch, seq_rows, self.t.group_ids(seq_rows))

    def score(self, rollout: Rollout) -> Scores:
        import torch

        from engine.algorithms.grpo import group_advantages

        scored = self.reward([r.prompt for r in rollout.seq_rows], rollout.batch.texts)
        rewards = torch.tensor(scored.total, dtype=torch.float32)  # (B,)
        if rewards.shape[0] != len(rollout):
            raise RuntimeError(f"the reward returned {rewards.shape[0]} scores for {len(rollout)} completions")
        rewards = torch.where(torch.isinf(rewards), torch.full_like(rewards, float("nan")), rewards)
        return Scores(scored, rewards, group_advantages(rewards, self.cfg.group_size, scale=self.cfg.advantage_scale))

    def prepare(self, rollout: Rollout, scores: Scores) -> Prepared:
        """Rows ordered by prompt length, a prompt's G completions side by side: a micro-batch then holds prompts
        of similar length (little padding) whose G rows share one prompt pass (forward_logprobs' "shared" layout).
        The loss is a sum over rows, so the order changes nothing else."""
        import torch

        b = rollout.batch
        order = sorted(range(len(b)), key=lambda i: (len(b.prompt_ids[i]), b.prompt_index[i],
                                                     len(b.completion_ids[i])))
        perm = torch.tensor(order, dtype=torch.long)
        rows = padded_rows([b.prompt_ids[i] for i in order], [b.completion_ids[i] for i in order],
                           self.t.policy.tokenizer.pad_token_id, device=self.t.device)
        return Prepared(perm, rows, scores.adv.advantages.float()[perm], rollout.group_ids[perm])

    def logprobs(self, rows: PaddedRows) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(old, ref) log-probs (B, L-1): the reference's when beta > 0, the sampling policy's when mu > 1 or
        GR-GRPO's signal needs loss values; None where not needed."""
        cfg, policy = self.cfg, self.t.policy
        kw = dict(temperature=cfg.temperature, device=self.t.device)
        ref_logp = None
        if cfg.beta > 0:
            with policy.ref_logits_context() as ref:
                ref_logp = batched_logprobs_no_grad(ref, rows, cfg.micro_batch_size, **kw)
        need_old = cfg.num_iterations > 1 or (self.robust and cfg.robust_signal == "grpo_loss")
        old_logp = batched_logprobs_no_grad(policy.model, rows, cfg.micro_batch_size, **kw) if need_old else None
        return old_logp, ref_logp

    def weights(self, rollout: Rollout, scores: Scores, prep: Prepared, old_logp: torch.Tensor | None,
                ref_logp: torch.Tensor | None) -> Weights:
        """Plain GRPO: c_i = 1/B. GR-GRPO: one adversary step on alpha from this batch's group signal (only the
        groups present move), then c_i from the mixed weights (module docstring)."""
        import torch

        from engine.algorithms.group_robust import group_losses, mixed_weights, update_group_weights
        from engine.algorithms.grpo import grpo_loss

        k, cfg = self.t.k, self.cfg
        if not self.robust:
            return Weights(sequence_coefficients(prep.group_ids, k, None))
        if cfg.robust_signal == "reward_shortfall":
            means, _, counts = group_reward_stats(scores.rewards, rollout.group_ids, k)
            signal = torch.where(counts > 0, 1.0 - means, torch.zeros_like(means))
        else:
            with torch.no_grad():
                _, st = grpo_loss(old_logp, old_logp, prep.advantages.to(self.t.device), prep.rows.target_mask,
                                  ref_logp=ref_logp, **self.loss_kw)
            signal, counts = group_losses(st["per_sequence_loss"].float().cpu(), prep.group_ids, k)
        self.t.alpha = update_group_weights(self.t.alpha, signal.float(), cfg.eta, chi=cfg.chi, present=counts > 0)
        return Weights(sequence_coefficients(prep.group_ids, k, mixed_weights(self.t.alpha, cfg.chi)), signal)

    def update(self, batch: TrainBatch) -> UpdateResult:
        cfg = self.cfg
        return update_policy(self.t.policy.model, self.t.params, self.t.optimizer, batch,
                             num_iterations=cfg.num_iterations, micro_batch_size=cfg.micro_batch_size,
                             max_grad_norm=cfg.max_grad_norm, loss_kw=self.loss_kw, temperature=cfg.temperature,
                             device=self.t.device)

    def log(self, rollout: Rollout, scores: Scores, prep: Prepared, weights: Weights, batch: TrainBatch,
            upd: UpdateResult, lr: float) -> StepLog:
        """The step's metrics, group rows (reward, loss, count, weight per group) and stored samples."""
        import torch

        cfg, k, alpha = self.cfg, self.t.k, self.t.alpha
        per_seq = torch.zeros(len(rollout))
        per_seq[prep.perm] = upd.per_sequence_loss  # back to rollout order
        metrics = _step_metrics(scores, rollout.batch, batch.num_tokens, upd, lr, self.t.device)
        means, stds, counts = group_reward_stats(scores.rewards, rollout.group_ids, k)
        seqs = torch.zeros(k).index_add(0, rollout.group_ids, torch.ones(len(rollout)))  # (K,) sequences per group
        loss_g = torch.zeros(k).index_add(0, rollout.group_ids, per_seq) / seqs.clamp_min(1.0)
        finite = counts > 0
        metrics[mk.REWARD_WORST_GROUP] = float(means[finite].min()) if bool(finite.any()) else float("nan")
        groups = []
        for g, i in self.t.gid.items():
            if seqs[i] == 0 and not self.robust:  # a group with completions is kept even when none could be scored
                continue
            row = {mk.GROUP_REWARD_MEAN: float(means[i]), mk.GROUP_REWARD_STD: float(stds[i]),
                   mk.GROUP_COUNT: int(seqs[i]), mk.GROUP_LOSS: float(loss_g[i]) if seqs[i] > 0 else None,
                   mk.GROUP_WEIGHT: float(alpha[i]) if self.robust else None}
            if weights.signal is not None:
                row["signal"] = float(weights.signal[i])
            groups.append({"group": g, **row})
            metrics[mk.group_reward(g)] = float(means[i])
            if self.robust:
                metrics[mk.group_weight(g)] = float(alpha[i])
        samples = _samples(cfg.samples_logged, cfg.group_size, rollout.seq_rows, rollout.batch.texts, scores.rewards,
                           scores.scored, scores.adv.advantages)
        return StepLog(metrics, groups, samples)


def execute(ctx: RunContext) -> None:
    run = GRPORun(ctx)
    try:
        run_steps(ctx, run.t.start, run.step, evaluate=run.evaluate, save=run.t.save)
    finally:
        run.close()


def _step_metrics(scores: Scores, batch: Any, total_tokens: float, upd: UpdateResult, lr: float,
                  device: str) -> dict[str, float]:
    import torch

    lengths = [len(c) for c in batch.completion_ids]
    tok = max(total_tokens, 1.0)
    stats, rewards, adv = upd.token_stats, scores.rewards, scores.adv
    m: dict[str, float] = {
        mk.REWARD_MEAN: _nanmean(rewards),
        mk.REWARD_STD: _nanstd(rewards),
        mk.REWARD_NAN_COUNT: float(adv.num_missing),
        "advantage/abs_mean": float(adv.advantages.abs().mean()),
        mk.ZERO_VAR_FRAC: float(adv.zero_variance.float().mean()),
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
    for name, vals in scores.scored.per_function.items():
        m[mk.reward_term(name)] = _nanmean(torch.tensor(vals, dtype=torch.float32))
    return m


def _throughput(m: dict[str, float], batch: Any, timer: PhaseTimer) -> None:
    """Completion tokens per second of the whole step and of the sample phase."""
    tokens = sum(len(c) for c in batch.completion_ids)
    step_time = timer.times.get("step", float("nan"))
    m[mk.TOKENS_PER_S] = tokens / step_time if step_time > 0 else float("nan")
    sample_time = timer.times.get("sample", 0.0)
    m["sample/tokens_per_s"] = tokens / sample_time if sample_time > 0 else float("nan")


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
