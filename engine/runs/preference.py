"""Offline preference runs on group-labelled pairs: DPO, IPO, their importance-sampling baselines (is_*) and
the group-robust variants of Ramesh et al. (gr_*), one step loop for all six.

Per step: draw a batch of pairs (a pure function of (seed, step): random, or balanced over groups), compute
the policy's summed answer log-probs (chosen and rejected rows of a pair share a micro-batch), take the
reference log-probs from the cache, form per-pair losses, then reduce them by the variant's rule:
  dpo / ipo      mean over pairs
  is_dpo / is_ipo  importance-weighted mean of the pairs towards a group-balanced objective: each pair weighs
                 1 / (its group's chance of being drawn), i.e. 1/N_g under random sampling (N_g: the group's
                 training-set count) and 1 under balanced sampling, normalised over the batch; every group then
                 has the same expected mass, as in the authors' synthetic code (w_g per pair, not per group mean)
  gr_dpo / gr_ipo  group means -> alpha <- update_group_weights(alpha, L, eta, chi, scale=N/N_g * n_g,
                   present=n_g > 0) -> sum_g mixed_weights(alpha, chi)_g * L_g (the paper's Algorithm 1 and code)
Every variant is computed as sum_i c_i * loss_i with per-pair coefficients c_i, so gradients accumulate over
micro-batches exactly; the group-robust coefficients depend on this batch's loss values, so when the batch
does not fit one micro-batch a no-grad pass computes them first. ``update_pairs`` on a ``PairBatch`` is that one
update path; the TRL parity guard (bench/dpo_vs_trl.py) calls it too.

Reference log-probs: the reference model never changes, so each pair's reference log-probs are computed once,
the first time the pair is drawn, and kept in the run folder (safetensors) with the checkpoints: a resumed run
does not recompute them, and a short run does not pay for pairs it never draws.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db import metric_keys as mk
from engine.config import ALGORITHM_SPECS
from engine.data.types import chat_input
from engine.models.forward import forward_logprobs, micro_batches, padded_rows
from engine.runs.context import RunContext
from engine.runs.loop import StepLog, run_steps, start_training
from engine.runs.heldout import HeldoutSet, eval_due, heldout_reward_eval, heldout_val_metrics, record_heldout
from engine.runs.optim import clip_and_step
from engine.runs.schedule import BatchSchedule, balanced_subset
from engine.runs.timing import PhaseTimer, peak_memory_mb, reset_peak_memory

if TYPE_CHECKING:
    import torch

REF_CACHE = "reference_logps.safetensors"
# Held-out generations for the bias-reward evaluation; BBQ answers are short.
EVAL_MAX_NEW_TOKENS = 48
EVAL_REWARD = [{"name": "bias_rm"}]


@dataclass
class TokenizedPairs:
    """Token ids of every pair: the chat-formatted prompt, and each answer followed by EOS."""

    prompt: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]


def tokenize_pairs(tokenizer: Any, pairs: list[Any], max_length: int) -> TokenizedPairs:
    """Prompt with the chat template, answers as the assistant's reply + EOS. When prompt + answer exceeds
    ``max_length``, the answer keeps at most half the budget and the prompt loses tokens from its start (the
    question at its end is what the answer depends on most)."""
    from engine.sampling.base import apply_chat_template

    eos = tokenizer.eos_token_id
    out = TokenizedPairs([], [], [])
    for p in pairs:
        prompt = apply_chat_template(tokenizer, chat_input(p))
        answers = []
        for text, key in ((p.chosen, "chosen_messages"), (p.rejected, "rejected_messages")):
            ids = _chat_answer(tokenizer, p, prompt, p.meta.get(key))
            if ids is None:
                ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
                if eos is not None:
                    ids.append(eos)
            answers.append(ids[: max(1, max_length // 2)])
        budget = max_length - max(len(a) for a in answers)
        out.prompt.append(prompt[-budget:] if len(prompt) > budget else prompt)
        out.chosen.append(answers[0])
        out.rejected.append(answers[1])
    return out


def _chat_answer(tokenizer: Any, pair: Any, prompt_ids: list[int], messages: list[dict] | None) -> list[int] | None:
    """A conversational answer's tokens as the chat template renders it after the prompt (TRL's rule: the whole
    conversation rendered, less the prompt rendered with the generation prompt), so the answer ends with the
    template's own end-of-turn tokens. None for a text answer, a tokenizer without a template, or a template whose
    rendering of the whole does not begin with the prompt's (the text + EOS rule is used then)."""
    from engine.sampling.base import render_chat

    if messages is None or not getattr(tokenizer, "chat_template", None):
        return None
    convo = list(chat_input(pair)) if pair.meta.get("messages") else [{"role": "user", "content": pair.prompt}]
    full = render_chat(tokenizer, convo + list(messages), add_generation_prompt=False)
    if len(full) <= len(prompt_ids) or full[: len(prompt_ids)] != prompt_ids:
        return None
    return full[len(prompt_ids):]


def pair_rows(tok: TokenizedPairs, idx: list[int], pad_id: int, device: str):
    """Rows [chosen of idx..., rejected of idx...] as right-padded PaddedRows (2b rows for b pairs)."""
    prompts = [tok.prompt[i] for i in idx] * 2
    answers = [tok.chosen[i] for i in idx] + [tok.rejected[i] for i in idx]
    return padded_rows(prompts, answers, pad_id, device=device)


def summed_logprobs(model: Any, tok: TokenizedPairs, idx: list[int], pad_id: int, device: str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-probs of the pairs ``idx`` in one forward pass: ((b,), (b,)) chosen, rejected."""
    rows = pair_rows(tok, idx, pad_id, device)
    logp, _ = forward_logprobs(model, rows, device=device)  # (2b, L-1)
    m = rows.target_mask
    sums = (logp.where(m > 0, logp.new_zeros(())) * m).sum(-1)  # (2b,)
    b = len(idx)
    return sums[:b], sums[b:]


class ReferenceCache:
    """Reference log-probs per pair, computed on first use; (N, 2) float32 with NaN for 'not yet'."""

    def __init__(self, n: int, fingerprint: str):
        import torch

        self.values = torch.full((n, 2), float("nan"), dtype=torch.float32)
        self.fingerprint = fingerprint

    def missing(self, idx: list[int]) -> list[int]:
        import torch

        return [i for i in dict.fromkeys(idx) if bool(torch.isnan(self.values[i]).any())]

    def fill(self, policy: Any, tok: TokenizedPairs, idx: list[int], pad_per_mb: int) -> None:
        import torch

        todo = self.missing(idx)
        pad_id = policy.tokenizer.pad_token_id
        with torch.no_grad(), policy.ref_logits_context() as ref:
            for a, b in micro_batches(len(todo), pad_per_mb):
                part = todo[a:b]
                c, r = summed_logprobs(ref, tok, part, pad_id, policy.device)
                self.values[part, 0] = c.float().cpu()
                self.values[part, 1] = r.float().cpu()

    def get(self, idx: list[int], device: str) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.values[idx].to(device)
        return v[:, 0], v[:, 1]

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tmp = path.with_suffix(".tmp")
        save_file({"values": self.values.contiguous()}, str(tmp), metadata={"fingerprint": self.fingerprint})
        tmp.replace(path)

    @classmethod
    def load_or_new(cls, path: Path, n: int, fingerprint: str) -> ReferenceCache:
        from safetensors import safe_open

        cache = cls(n, fingerprint)
        if path.is_file():
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("fingerprint") == fingerprint:
                    values = f.get_tensor("values")
                    if tuple(values.shape) == (n, 2):
                        cache.values = values
        return cache


def fingerprint(cfg: Any, model_path: str, n: int, kind: str) -> str:
    data = {"model": model_path, "dataset": cfg.dataset, "path": cfg.dataset_path, "seed": cfg.seed,
            "max_length": cfg.max_length, "n": n, "kind": kind}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def per_pair_loss(cfg: Any, pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor,
                  c_len: torch.Tensor, r_len: torch.Tensor) -> torch.Tensor:
    """(b,) unreduced DPO or IPO loss for the run's variant."""
    from engine.algorithms.preference import dpo_loss, ipo_loss

    if ALGORITHM_SPECS[cfg.algorithm].preference_loss == "dpo":
        return dpo_loss(pc, pr, rc, rr, cfg.beta, label_smoothing=cfg.label_smoothing)
    return ipo_loss(pc, pr, rc, rr, cfg.beta, chosen_len=c_len, rejected_len=r_len,
                    length_normalize=cfg.ipo_length_normalize)


def pair_coefficients(variant: str, group_ids: torch.Tensor, num_groups: int, *, dataset_counts: torch.Tensor,
                      mixed: torch.Tensor | None = None, sampling: str = "random") -> torch.Tensor:
    """c_i with objective sum_i c_i * loss_i. (B,) -> (B,).

    plain: 1/B. is: u_g / sum_j u_g(j) with u_g = 1 / P(a drawn pair is from g): importance_weights(N_g) (∝ 1/N_g)
    when ``sampling`` is "random" (pairs drawn in proportion to the data), uniform when it is "balanced" (every
    group drawn equally often), so each group's expected share of the objective is 1/K either way. Weights 1/N_g
    on a balanced batch, or on group MEANS, would instead give the smallest group the largest share.
    gr: mixed_g / n_g, i.e. sum_g mixed_g * mean_{i in g} loss_i = robust_loss(group_losses, mixed)."""
    import torch

    from engine.algorithms.group_robust import importance_weights

    b = group_ids.shape[0]
    if variant == "plain":
        return torch.full((b,), 1.0 / b)
    if variant == "is":
        if sampling == "balanced":
            return torch.full((b,), 1.0 / b)  # the schedule already draws every group equally often
        if sampling != "random":
            raise ValueError(f"group sampling must be 'random' or 'balanced', got {sampling!r}")
        w = importance_weights(dataset_counts).float()[group_ids]
        return w / w.sum()
    if mixed is None:
        raise ValueError("the group-robust coefficients need the mixed group weights")
    counts = torch.zeros(num_groups).index_add(0, group_ids, torch.ones(b))
    return (mixed.float() / counts.clamp_min(1.0))[group_ids]


@dataclass
class PairBatch:
    """One step's pairs as the policy update takes them; every tensor is per pair, in ``idx`` order."""

    idx: list[int]  # (B,) pair indices into the TokenizedPairs
    group_ids: torch.Tensor  # (B,) long
    ref_chosen: torch.Tensor  # (B,) summed reference log-probs of the chosen answers (on the device)
    ref_rejected: torch.Tensor  # (B,) and of the rejected ones
    chosen_len: torch.Tensor  # (B,) answer token counts (IPO's length normalisation)
    rejected_len: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return len(self.idx)


@dataclass
class PairUpdate:
    loss: float  # the objective sum_i c_i * loss_i
    grad_norm: float  # pre-clip gradient norm
    policy_chosen: torch.Tensor  # (B,) summed policy log-probs before the step, on the CPU
    policy_rejected: torch.Tensor  # (B,)
    losses: torch.Tensor  # (B,) per-pair losses
    coeffs: torch.Tensor  # (B,) the c_i used


def update_pairs(cfg: Any, model: Any, params: list[Any], optimizer: Any, tok: TokenizedPairs, batch: PairBatch, *,
                 coefficients: Callable[[torch.Tensor | None], torch.Tensor], needs_losses: bool, pad_id: int,
                 device: str, pairs_per_mb: int, max_grad_norm: float, timer: PhaseTimer | None = None
                 ) -> PairUpdate:
    """One optimiser step on sum_i c_i * loss_i, micro-batched. ``coefficients(values)`` gives the (B,) c_i
    once, before any gradient: with ``needs_losses`` it gets every pair's detached loss (group-robust weights),
    from a no-grad pre-pass when the batch spans more than one micro-batch ("weights" phase), else from the
    one gradient pass; otherwise it gets None. With a ``timer``, the gradient pass and the step are its
    "update" phase (the pre-pass is not)."""
    import contextlib

    import torch

    def phase(name: str) -> contextlib.AbstractContextManager:
        return timer.phase(name) if timer is not None else contextlib.nullcontext()

    b, idx = len(batch), batch.idx
    mbs = list(micro_batches(b, pairs_per_mb))

    def losses_of(m: Any, a: int, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pc, pr = summed_logprobs(m, tok, idx[a:e], pad_id, device)
        return per_pair_loss(cfg, pc, pr, batch.ref_chosen[a:e], batch.ref_rejected[a:e], batch.chosen_len[a:e],
                             batch.rejected_len[a:e]), pc, pr  # (b,) x3

    vals = None  # one micro-batch: the pair losses come with the gradient pass below
    if needs_losses and len(mbs) > 1:
        # the robust coefficients need every pair's loss before any gradient (ARCHITECTURE.md)
        with phase("weights"), torch.no_grad():
            vals = torch.cat([losses_of(model, a, e)[0] for a, e in mbs]).float().cpu()
    coeffs = None if needs_losses else coefficients(None)
    pol_c, pol_r, losses = torch.zeros(b), torch.zeros(b), torch.zeros(b)
    loss_value = 0.0
    with phase("update"):
        for a, e in mbs:
            lp, pc, pr = losses_of(model, a, e)
            if coeffs is None:
                with phase("weights"):  # all of GR's own cost lands in this phase
                    coeffs = coefficients(vals if vals is not None else lp.detach().float().cpu())
            loss = (coeffs[a:e].to(device) * lp).sum()
            loss.backward()
            loss_value += float(loss.detach())
            pol_c[a:e] = pc.detach().float().cpu()
            pol_r[a:e] = pr.detach().float().cpu()
            losses[a:e] = lp.detach().float().cpu()
        grad_norm = clip_and_step(params, optimizer, max_grad_norm)
    return PairUpdate(loss_value, grad_norm, pol_c, pol_r, losses, coeffs)


def group_shares(coeffs: torch.Tensor, group_ids: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Each group's share of this step's objective, sum of its pairs' c_i: (B,) -> (K,)."""
    import torch

    return torch.zeros(num_groups).index_add(0, group_ids, coeffs.float())


def _variant(algorithm: str) -> str:
    """How pairs are weighted: "plain", "is" (importance sampling) or "gr" (group robust)."""
    return ALGORITHM_SPECS[algorithm].weighting


def _heldout_pairs(cfg: Any) -> list[Any]:
    from engine.data.registry import dataset_args, load_named

    if cfg.eval_prompts <= 0:
        return []
    rows = load_named(cfg.dataset, "eval", seed=cfg.seed, **dataset_args(cfg))
    return [rows[i] for i in balanced_subset([r.group for r in rows], cfg.eval_prompts)]


class PreferenceRun:
    """One DPO/IPO/IS/GR preference run; ``step`` is its phases in order: reference (the batch's cached
    reference log-probs, computed the first time a pair is drawn) -> weights and update (``update_pairs``) ->
    log. The loop around them is engine.runs.loop.run_steps."""

    def __init__(self, ctx: RunContext):
        import torch

        cfg = self.cfg = ctx.config
        self.ctx = ctx
        self.variant = _variant(cfg.algorithm)
        self.t = t = start_training(ctx)
        self.all_gids = t.group_ids(t.train)  # (N,)
        self.dataset_counts = torch.zeros(t.k).index_add(0, self.all_gids, torch.ones(len(t.train)))  # (K,)
        self.schedule = BatchSchedule([p.group for p in t.train], cfg.batch_size, cfg.seed, cfg.group_sampling)
        self.tok = tokenize_pairs(t.policy.tokenizer, t.train, cfg.max_length)
        self.pairs_per_mb = max(1, cfg.micro_batch_size // 2)
        self.cache_path = ctx.run_dir / REF_CACHE
        self.ref_cache = ReferenceCache.load_or_new(self.cache_path, len(t.train),
                                                    fingerprint(cfg, t.policy.model_path, len(t.train), "train"))
        self.held = HeldoutPairs(cfg, t.policy, self.pairs_per_mb)

    def close(self) -> None:
        self.held.close()

    def save(self, step: int) -> None:
        self.ref_cache.save(self.cache_path)
        self.t.save(step)

    def evaluate(self, step: int) -> dict[str, float]:
        return self.held.evaluate(self.ctx, step)

    def step(self, step: int) -> StepLog:
        timer = PhaseTimer(self.t.device)
        reset_peak_memory(self.t.device)
        idx = self.schedule.indices(step)
        with timer.phase("step"):
            with timer.phase("reference"):
                self.ref_cache.fill(self.t.policy, self.tok, idx, self.pairs_per_mb)
            batch = self.prepare(idx)
            upd = update_pairs(self.cfg, self.t.policy.model, self.t.params, self.t.optimizer, self.tok, batch,
                               coefficients=self.coefficients(batch.group_ids), needs_losses=self.variant == "gr",
                               pad_id=self.t.policy.tokenizer.pad_token_id, device=self.t.device,
                               pairs_per_mb=self.pairs_per_mb, max_grad_norm=self.cfg.max_grad_norm, timer=timer)
            lr = self.t.lr_step()
        with timer.phase("log"):
            out = self.log(batch, upd, lr)
        out.metrics.update(timer.metrics())
        tok = self.tok
        n_tokens = sum(len(tok.prompt[i]) * 2 + len(tok.chosen[i]) + len(tok.rejected[i]) for i in idx)
        out.metrics[mk.TOKENS_PER_S] = n_tokens / timer.times["step"]
        return out

    def prepare(self, idx: list[int]) -> PairBatch:
        import torch

        device = self.t.device
        ref_c, ref_r = self.ref_cache.get(idx, device)  # (B,), (B,)
        c_len = torch.tensor([len(self.tok.chosen[i]) for i in idx], device=device)
        r_len = torch.tensor([len(self.tok.rejected[i]) for i in idx], device=device)
        return PairBatch(idx, self.all_gids[idx], ref_c, ref_r, c_len, r_len)

    def coefficients(self, group_ids: torch.Tensor) -> Callable[[torch.Tensor | None], torch.Tensor]:
        """update_pairs' ``coefficients``: the variant's c_i; for gr_* first the mirror-descent step of alpha from
        the batch's per-group losses (the paper's N/N_g scaling), then the mixed weights."""
        from engine.algorithms.group_robust import group_losses, mixed_weights, paper_scale, update_group_weights

        k, cfg, counts_all = self.t.k, self.cfg, self.dataset_counts

        def coefficients(values: torch.Tensor | None) -> torch.Tensor:
            if self.variant != "gr":
                return pair_coefficients(self.variant, group_ids, k, dataset_counts=counts_all,
                                         sampling=cfg.group_sampling)
            group_loss_before, counts = group_losses(values, group_ids, k)
            self.t.alpha = update_group_weights(self.t.alpha, group_loss_before, cfg.eta, chi=cfg.chi,
                                                scale=paper_scale(counts_all) * counts, present=counts > 0)
            return pair_coefficients("gr", group_ids, k, dataset_counts=counts_all,
                                     mixed=mixed_weights(self.t.alpha, cfg.chi))

        return coefficients

    def log(self, batch: PairBatch, upd: PairUpdate, lr: float) -> StepLog:
        """The step's metrics and per-group rows (count, weight, loss, accuracy, margin)."""
        from engine.algorithms.group_robust import group_losses
        from engine.algorithms.preference import implicit_rewards, preference_margin

        k, group_ids, pol_c, pol_r = self.t.k, batch.group_ids, upd.policy_chosen, upd.policy_rejected
        rc, rr = batch.ref_chosen.float().cpu(), batch.ref_rejected.float().cpu()
        margin = preference_margin(pol_c, pol_r, rc, rr)  # (B,)
        correct = (margin > 0).float()
        g_loss, counts = group_losses(upd.losses, group_ids, k)
        g_acc, _ = group_losses(correct, group_ids, k)
        g_margin, _ = group_losses(margin, group_ids, k)
        present = counts > 0
        ch_reward, rj_reward = implicit_rewards(pol_c, pol_r, rc, rr, self.cfg.beta)
        # IS logs what its weighting does: each group's share of this step's objective (1/K in expectation)
        weights = (self.t.alpha if self.variant == "gr" else
                   group_shares(upd.coeffs, group_ids, k) if self.variant == "is" else None)
        metrics: dict[str, float] = {
            mk.LOSS: upd.loss, mk.LOSS_MEAN: float(upd.losses.mean()),
            mk.LOSS_WORST_GROUP: float(g_loss[present].max()),
            mk.ACCURACY: float(correct.mean()), mk.ACCURACY_MIN_GROUP: float(g_acc[present].min()),
            mk.MARGIN_MEAN: float(margin.mean()), "reward/chosen": float(ch_reward.mean()),
            "reward/rejected": float(rj_reward.mean()), "logp/chosen": float(pol_c.mean()),
            "logp/rejected": float(pol_r.mean()), mk.GRAD_NORM: upd.grad_norm, mk.LR: lr,
            mk.MEMORY_PEAK_MB: peak_memory_mb(self.t.device),
        }
        groups = []
        for g, i in self.t.gid.items():
            if weights is not None:
                metrics[mk.group_weight(g)] = float(weights[i])
            if not present[i] and weights is None:
                continue
            on = bool(present[i])
            groups.append({"group": g, mk.GROUP_COUNT: int(counts[i]),
                           mk.GROUP_WEIGHT: float(weights[i]) if weights is not None else None,
                           mk.GROUP_LOSS: float(g_loss[i]) if on else None,
                           mk.GROUP_ACCURACY: float(g_acc[i]) if on else None,
                           "margin": float(g_margin[i]) if on else None})
        return StepLog(metrics, groups)


class HeldoutPairs:
    """The held-out evaluations of a preference run: pair accuracy, margin and loss per group (cheap, every
    evaluation) and, where the dataset's answers are text the bias reward can judge, the bias reward of greedy
    answers (the reward model and an HF sampler loaded at the first evaluation that needs them)."""

    def __init__(self, cfg: Any, policy: Any, pairs_per_mb: int):
        self.cfg, self.policy, self.pairs_per_mb = cfg, policy, pairs_per_mb
        self.pairs = _heldout_pairs(cfg)
        self.tok = tokenize_pairs(policy.tokenizer, self.pairs, cfg.max_length) if self.pairs else None
        self.ref = ReferenceCache(len(self.pairs), "eval")
        if self.pairs:
            self.ref.fill(policy, self.tok, list(range(len(self.pairs))), pairs_per_mb)
        self.heldout = HeldoutSet([p.prompt for p in self.pairs], [p.group for p in self.pairs],
                                  f"{cfg.dataset}:eval:{len(self.pairs)}", [chat_input(p) for p in self.pairs])
        self.sampler: Any = None
        self.reward: Any = None  # None: not loaded yet; False: unavailable

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
        if self.reward:
            self.reward.close()

    def evaluate(self, ctx: RunContext, step: int) -> dict[str, float]:
        """Held-out evaluations when due, recorded in the evaluations table; returns the val/* step metrics
        (empty without the bias reward model)."""
        from engine.data.registry import DATASETS

        cfg = self.cfg
        if not eval_due(step, cfg) or not self.pairs:
            return {}
        ctx.record_evaluation("heldout_preference", _heldout_preference(cfg, self.policy, self.tok, self.ref,
                                                                        self.pairs, self.pairs_per_mb),
                              model=cfg.model, dataset_version=self.heldout.dataset_version, step=step)
        if not DATASETS[cfg.dataset].heldout_reward:
            return {}  # the bias reward says nothing about these answers (option letters)
        if self.reward is None:
            self._load_reward(ctx)
        if not self.reward:
            return {}
        metrics = heldout_reward_eval(self.policy, self.sampler, self.reward, self.heldout,
                                      max_new_tokens=EVAL_MAX_NEW_TOKENS, micro_batch_size=cfg.micro_batch_size)
        record_heldout(ctx, step, metrics, self.heldout)
        return heldout_val_metrics(metrics, self.heldout)

    def _load_reward(self, ctx: RunContext) -> None:
        from engine.rewards.base import build_reward
        from engine.sampling.base import make_sampler

        try:
            self.reward = build_reward(EVAL_REWARD, device=self.policy.device)
        except (FileNotFoundError, ModuleNotFoundError) as exc:
            # The pair metrics are this run's own progress measure; the bias-reward view is an extra that needs
            # the reward model installed. Say so once, on the run's event log, and go on.
            ctx.event(f"held-out bias reward skipped: {exc}", level="warning")
            self.reward = False
        # HF generate samples from the live policy: no weight sync between updates, and preference runs generate
        # only at evaluations, where vLLM's start-up would dominate.
        self.sampler = make_sampler("hf", self.policy.model_path, self.policy) if self.reward else None


def execute(ctx: RunContext) -> None:
    run = PreferenceRun(ctx)
    try:
        run_steps(ctx, run.t.start, run.step, evaluate=run.evaluate, save=run.save)
    finally:
        run.close()


def _heldout_preference(cfg: Any, policy: Any, tok: TokenizedPairs, ref: ReferenceCache, pairs: list[Any],
                        pairs_per_mb: int) -> dict[str, Any]:
    """Per-group implicit-reward accuracy, margin and loss on the held-out pairs (no training on them)."""
    import torch

    from engine.evaluation.group_metrics import group_extremes

    n = len(pairs)
    pc, pr = torch.zeros(n), torch.zeros(n)
    was_training = policy.model.training
    policy.model.eval()
    try:
        with torch.no_grad():
            for a, e in micro_batches(n, pairs_per_mb):
                c, r = summed_logprobs(policy.model, tok, list(range(a, e)), policy.tokenizer.pad_token_id,
                                       policy.device)
                pc[a:e], pr[a:e] = c.float().cpu(), r.float().cpu()
    finally:
        policy.model.train(was_training)
    rc, rr = ref.get(list(range(n)), "cpu")
    c_len = torch.tensor([len(x) for x in tok.chosen])
    r_len = torch.tensor([len(x) for x in tok.rejected])
    loss = per_pair_loss(cfg, pc, pr, rc, rr, c_len, r_len)
    margin = (pc - rc) - (pr - rr)
    out = {"loss": float(loss.mean()), "accuracy": float((margin > 0).float().mean()),
           "margin/mean": float(margin.mean())}
    # per group, loss/max_group and accuracy/min_group (the paper's worst-group figures), with 95% intervals
    out.update(group_extremes(loss.tolist(), (margin > 0).tolist(), [p.group for p in pairs], seed=cfg.seed))
    return out
