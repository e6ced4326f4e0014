"""GRPO, side by side: Hugging Face TRL's GRPOTrainer against the studio's GRPO step (engine.runs.grpo).

    python bench/grpo_vs_trl.py                                  # CPU: SmolLM2-135M, 32 completions x 48 tokens
    python bench/grpo_vs_trl.py --lora                           # the same with LoRA
    python bench/grpo_vs_trl.py --device cuda --model shape:qwen2.5-0.5b --prompts 8 --group-size 8 \
        --completion-len 256 --micro-batch 16                     # H100 target: 64 completions x 256 tokens
    python bench/grpo_vs_trl.py --model tiny --steps 1 --warmup 1 --prompts 2 --group-size 2 --completion-len 4

1. Correctness guard (before any timing): one identical batch (same prompt and completion token ids, same
   advantages, same old and reference log-probs, chosen so that clipping and the KL term are active) goes through
   TRL's own ``GRPOTrainer._compute_loss`` and through the engine's own update path, ``engine.runs.grpo.update_policy``
   on a ``TrainBatch`` (``forward_logprobs`` -> ``grpo_loss`` with the batch's normalizer, micro-batched, clip and
   step; the step is SGD with learning rate 0 so the gradient norm is read before anything moves). The losses and
   gradient norms must agree within the stated tolerance for every matching pair of loss definitions
   (TRL "dapo" == studio "token_mean", "grpo" == "seq_mean", "dr_grpo" == "constant", "bnpo" == "bnpo", "cispo" ==
   "cispo" with TRL's epsilon_high = 1 + the studio's, and GSPO's sequence ratio).
2. Side by side: both trainers are built in this one process on the same model folder, the same prompts in the
   same order, G, forced completion length, beta, clip range, learning rate, optimizer and precision, and take
   strict turns step by step (bench._common.Baton), so machine load hits both alike. The studio side is the
   engine's own ``execute(ctx)``; its per-phase times are the engine's own PhaseTimer metrics.
Step times are medians over the timed steps after the warm-up steps.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    Baton,
    BenchContext,
    SideRecord,
    environment,
    grad_norm,
    guard_passed,
    markdown_table,
    median,
    now,
    start_bench,
    sync,
    trl_alternate_callback,
    trl_lora_config,
    write_json,
)
from engine.algorithms.grpo import LOSS_TYPES  # noqa: E402

# (TRL loss_type, TRL importance_sampling_level) -> (studio loss_aggregation, studio ratio_level)
LOSS_PAIRS: dict[tuple[str, str], tuple[str, str]] = {
    ("dapo", "token"): ("token_mean", "token"),
    ("grpo", "token"): ("seq_mean", "token"),
    ("dr_grpo", "token"): ("constant", "token"),
    ("dapo", "sequence"): ("token_mean", "sequence"),
    ("bnpo", "token"): ("bnpo", "token"),
    ("cispo", "token"): ("cispo", "token"),
}
STUDIO_TO_TRL_LOSS = {name: kind.trl for name, kind in LOSS_TYPES.items()}


def trl_epsilon_high(trl_loss: str, eps_high: float) -> float:
    """TRL's epsilon_high for the studio's: CISPO's cap is TRL's epsilon_high itself, the studio's 1 + epsilon_high
    (engine.algorithms.grpo.cispo_surrogate); every other loss type means the same by it."""
    return 1.0 + eps_high if trl_loss == "cispo" else eps_high

H100_BF16_DENSE_TFLOPS = 989.0


# ------------------------------------------------------------------------------------------- guard

@dataclass
class GuardResult:
    trl_loss: str
    trl_level: str
    studio_loss: str
    loss_trl: float
    loss_ours: float
    grad_trl: float
    grad_ours: float
    rtol: float

    @property
    def loss_ok(self) -> bool:
        return math.isclose(self.loss_trl, self.loss_ours, rel_tol=self.rtol, abs_tol=self.rtol * 1e-2)

    @property
    def grad_ok(self) -> bool:
        return math.isclose(self.grad_trl, self.grad_ours, rel_tol=self.rtol, abs_tol=1e-8)

    @property
    def ok(self) -> bool:
        return self.loss_ok and self.grad_ok


def _trl_grpo_args(out_dir: str, *, device: str, batch: int, micro_batch: int, group_size: int, completion_len: int,
                   beta: float, lr: float, loss_type: str, level: str, eps_low: float, eps_high: float,
                   max_steps: int, seed: int, temperature: float = 1.0, top_p: float = 1.0) -> Any:
    from trl import GRPOConfig

    if batch % micro_batch:
        raise ValueError(f"completions per step ({batch}) must be a multiple of --micro-batch ({micro_batch})")
    on_gpu = device.startswith("cuda")
    return GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=batch // micro_batch,  # one optimizer step per generation batch, like ours
        num_generations=group_size,
        max_completion_length=completion_len,
        # forced length: EOS cannot end a completion before max_new_tokens (the studio side does the same)
        generation_kwargs={"min_new_tokens": completion_len},
        beta=beta,
        # TRL 1.16 multiplies the k3 KL by the importance ratio by default; the studio's loss (and the GRPO paper's)
        # does not. Same loss definition on both sides: off. (With mu = 1 the value is equal, the gradient is not.)
        use_bias_correction_kl=False,
        learning_rate=lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        loss_type=loss_type,
        importance_sampling_level=level,
        epsilon=eps_low,
        epsilon_high=eps_high,
        temperature=temperature,
        top_p=top_p,
        top_k=0,
        scale_rewards="group",
        # TRL turns gradient checkpointing on by default; the studio's default is off, so equal work means off
        gradient_checkpointing=False,
        max_steps=max_steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        shuffle_dataset=False,
        use_cpu=not on_gpu,
        bf16=on_gpu,
        model_init_kwargs={"dtype": "bfloat16" if on_gpu else "float32"},
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def _trl_prompt_dataset(prompts: list[str]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])


def grpo_guard(model_path: str, device: str, *, seed: int = 0, prompts: int = 2, group_size: int = 4,
               prompt_len: int = 12, completion_len: int = 16, micro_batch: int = 4, beta: float = 0.04,
               eps_low: float = 0.2, eps_high: float = 0.28, pairs: dict | None = None,
               workdir: Path) -> list[GuardResult]:
    """Loss and gradient norm of TRL's GRPOTrainer._compute_loss vs the studio's update path on one batch."""
    import torch
    from trl import GRPOTrainer

    from engine.algorithms.grpo import group_advantages
    from engine.models.loading import load_policy
    from engine.runs.grpo import TrainBatch, sequence_coefficients, update_policy
    from engine.models.forward import forward_logprobs, micro_batches, padded_rows

    on_gpu = device.startswith("cuda")
    rtol = 2e-2 if on_gpu else 1e-4  # bf16 autocast on the GPU; float32 on the CPU
    b = prompts * group_size
    gen = torch.Generator().manual_seed(seed)
    policy = load_policy(model_path, device=device, need_reference=False)
    vocab = policy.model.config.vocab_size
    tok = policy.tokenizer
    # Equal-length prompts: TRL left-pads prompts and does not pass position ids in its loss forward, so padded
    # prompts would shift positions on the TRL side only. Completions of different lengths (right padding) are
    # handled alike by both and are exercised here.
    low = 3  # skip the special ids at the start of the vocabulary
    hi = min(vocab, len(tok))
    prompt_ids = torch.randint(low, hi, (prompts, prompt_len), generator=gen).repeat_interleave(group_size, 0)  # (B, P)
    completion_ids = torch.randint(low, hi, (b, completion_len), generator=gen)  # (B, L)
    lengths = torch.randint(completion_len // 2, completion_len + 1, (b,), generator=gen)
    lengths[0] = completion_len
    completion_mask = (torch.arange(completion_len)[None, :] < lengths[:, None]).long()  # (B, L)
    completion_ids = torch.where(completion_mask > 0, completion_ids, torch.full_like(completion_ids, tok.pad_token_id))
    rewards = torch.rand(b, generator=gen)
    advantages = group_advantages(rewards, group_size, scale="group").advantages.float()  # (B,)
    # TRL's own formula (grpo_trainer.py, scale_rewards="group"): (r - mean_g) / (std_g + 1e-4), unbiased std
    r = rewards.view(-1, group_size)
    trl_adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).reshape(-1)
    if not torch.allclose(advantages, trl_adv, rtol=1e-5, atol=1e-6):
        raise AssertionError("group advantages differ from TRL's formula")

    rows = padded_rows(prompt_ids.tolist(), [c[: int(n)].tolist() for c, n in zip(completion_ids, lengths)],
                       tok.pad_token_id, device=device)
    with torch.no_grad():
        base_logp, _ = forward_logprobs(policy.model, rows, device=device)  # (B, W-1)
    # completion token j of every row sits at target position prompt_len - 1 + j (no prompt padding)
    base = base_logp[:, prompt_len - 1: prompt_len - 1 + completion_len].float().cpu()  # (B, L)
    # old/ref log-probs away from the current policy so that clipping (both sides) and the KL term are active
    old = base + 0.3 * torch.randn(base.shape, generator=gen)
    ref = base + 0.3 * torch.randn(base.shape, generator=gen)
    pad_t = rows.target_mask.shape[1]

    def engine_layout(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((b, pad_t), dtype=torch.float32)
        out[:, prompt_len - 1: prompt_len - 1 + completion_len] = x
        return out.to(device)

    old_e, ref_e = engine_layout(old), engine_layout(ref)
    # plain GRPO's coefficients 1/B, as the engine forms them
    batch = TrainBatch(rows, advantages, sequence_coefficients(torch.zeros(b, dtype=torch.long), 1, None),
                       old_logp=old_e, ref_logp=ref_e)
    del policy

    results = []
    for (trl_loss, level), (ours_loss, ours_level) in (pairs or LOSS_PAIRS).items():
        # --- studio: engine.runs.grpo.execute's own update call
        pol = load_policy(model_path, device=device, need_reference=False)
        pol.model.train()
        params = pol.trainable_parameters()
        upd = update_policy(pol.model, params, torch.optim.SGD(params, lr=0.0), batch, num_iterations=1,
                            micro_batch_size=micro_batch, max_grad_norm=0.0, with_entropy=False, device=device,
                            loss_kw=dict(beta=beta, eps_low=eps_low, eps_high=eps_high, ratio_level=ours_level,
                                         aggregation=ours_loss, max_len=completion_len))
        loss_ours, grad_ours = upd.loss, upd.grad_norm
        del pol

        # --- TRL: its own loss on the same tensors
        args = _trl_grpo_args(str(workdir / "trl-guard"), device=device, batch=b, micro_batch=micro_batch,
                              group_size=group_size, completion_len=completion_len, beta=beta, lr=1e-6,
                              loss_type=trl_loss, level=level, eps_low=eps_low,
                              eps_high=trl_epsilon_high(trl_loss, eps_high), max_steps=1,
                              seed=seed)
        trainer = GRPOTrainer(model=model_path, reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                              args=args, train_dataset=_trl_prompt_dataset(["guard"] * group_size),
                              processing_class=tok)
        model = trainer.model
        model.train()
        trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps
        loss_trl = 0.0
        for a, e in micro_batches(b, micro_batch):
            inputs = {
                "prompt_ids": prompt_ids[a:e].to(device), "prompt_mask": torch.ones_like(prompt_ids[a:e]).to(device),
                "completion_ids": completion_ids[a:e].to(device), "completion_mask": completion_mask[a:e].to(device),
                "advantages": advantages[a:e].to(device), "old_per_token_logps": old[a:e].to(device),
                "ref_per_token_logps": ref[a:e].to(device),
                "num_items_in_batch": torch.tensor(float(completion_mask.sum()), device=device),
            }
            loss = trainer._compute_loss(model, inputs)
            loss.backward()
            loss_trl += float(loss.detach())
        grad_trl = grad_norm([p for p in model.parameters() if p.requires_grad])
        del trainer, model
        results.append(GuardResult(trl_loss, level, f"{ours_loss}/{ours_level}", loss_trl, loss_ours, grad_trl,
                                   grad_ours, rtol))
    return results


def guard_table(results: list[GuardResult]) -> str:
    rows = [[f"{r.trl_loss} ({r.trl_level})", r.studio_loss, f"{r.loss_trl:.6g}", f"{r.loss_ours:.6g}",
             f"{r.grad_trl:.6g}", f"{r.grad_ours:.6g}", f"{r.rtol:g}", "ok" if r.ok else "MISMATCH"]
            for r in results]
    return markdown_table(["TRL loss_type", "studio aggregation/ratio", "loss TRL", "loss ours", "grad-norm TRL",
                           "grad-norm ours", "rel. tol.", "match"], rows)


# ------------------------------------------------------------------------------------------- side by side

def _studio_config(a: argparse.Namespace, model_path: str) -> Any:
    from engine.config import GRPOConfig, RewardSpec

    return GRPOConfig(
        model=model_path, dataset=a.dataset, prompts_per_step=a.prompts, group_size=a.group_size,
        max_new_tokens=a.completion_len, temperature=1.0, top_p=1.0, sampler=a.sampler,
        rewards=[RewardSpec(name=a.reward)], beta=a.beta, learning_rate=a.lr, micro_batch_size=a.micro_batch,
        loss_aggregation=a.loss, ratio_level="token", epsilon_low=0.2, epsilon_high=0.28, max_grad_norm=1.0,
        eval_prompts=0, max_steps=a.warmup + a.steps, checkpoint_every=0, use_lora=a.lora, device=a.device,
        seed=a.seed, group_sampling="balanced",
        ignore_eos=True,  # forced length, the engine's own option (TRL side: min_new_tokens)
    )


def _step_prompts(cfg: Any) -> list[str]:
    """The prompts the studio's step 1..max_steps will draw, in order (engine.runs.grpo uses the same schedule)."""
    from engine.data.registry import load_named
    from engine.runs.schedule import BatchSchedule

    train = load_named(cfg.dataset, "train", seed=cfg.seed, path=cfg.dataset_path)
    schedule = BatchSchedule([r.group for r in train], cfg.prompts_per_step, cfg.seed, cfg.group_sampling)
    return [train[i].prompt for step in range(1, cfg.max_steps + 1) for i in schedule.indices(step)]


def _trl_reward(name: str, device: str) -> Any:
    """The studio's own reward function, called the way TRL calls reward functions."""
    from engine.rewards.base import build_reward

    reward = build_reward([{"name": name, "weight": 1.0, "params": {}}], device=device)

    def text(x: Any) -> str:
        return x[-1]["content"] if isinstance(x, list) else str(x)

    def studio_reward(prompts: list, completions: list, **_: Any) -> list[float]:
        return reward([text(p) for p in prompts], [text(c) for c in completions]).total

    studio_reward.__name__ = f"studio_{name}"
    return studio_reward


def run_trl(a: argparse.Namespace, model_path: str, prompts: list[str], baton: Baton, record: SideRecord,
            workdir: Path) -> None:
    with baton.side("trl"):
        from trl import GRPOTrainer

        from engine.models.loading import load_tokenizer

        callback = trl_alternate_callback("trl", baton, record, a.device, a.warmup,
                                          float(a.prompts * a.group_size * a.completion_len))
        callback.begin()
        peft_config = trl_lora_config() if a.lora else None
        args = _trl_grpo_args(str(workdir / "trl-run"), device=a.device, batch=a.prompts * a.group_size,
                              micro_batch=a.micro_batch, group_size=a.group_size, completion_len=a.completion_len,
                              beta=a.beta, lr=a.lr, loss_type=STUDIO_TO_TRL_LOSS[a.loss], level="token",
                              eps_low=0.2, eps_high=trl_epsilon_high(STUDIO_TO_TRL_LOSS[a.loss], 0.28),
                              max_steps=a.warmup + a.steps, seed=a.seed)
        trainer = GRPOTrainer(model=model_path, reward_funcs=_trl_reward(a.reward, a.device), args=args,
                              train_dataset=_trl_prompt_dataset(prompts), processing_class=load_tokenizer(model_path),
                              callbacks=[callback], peft_config=peft_config)
        trainer.train()


def run_studio(a: argparse.Namespace, cfg: Any, baton: Baton, record: SideRecord, workdir: Path) -> None:
    from engine.runs import grpo

    with baton.side("studio"):
        ctx = BenchContext("studio", cfg, baton, record, a.device, a.warmup, workdir / "studio-run",
                           work=lambda m: m["completion/len_mean"] * cfg.prompts_per_step * cfg.group_size)
        grpo.execute(ctx)


def _train_flops_per_token(model_path: str) -> float:
    """2 * N matmul FLOPs per token for a forward pass (N: parameters, the tied LM head counted once); attention
    score FLOPs are left out (a few % at these lengths)."""
    import json as _json

    cfg = _json.loads((Path(model_path) / "config.json").read_text())
    h, layers, inter, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or h // heads
    per_layer = h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * inter
    return 2.0 * (layers * per_layer + h * vocab)


LAYOUTS = ("right", "aligned", "packed", "shared")


def layout_ab(model_path: str, device: str, *, prompts: list[str], completion_len: int, micro_batch: int,
              group_size: int, repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """Forward + backward of one GRPO micro-batch (micro_batch / G step prompts, G random completions of the
    forced length each) through each row layout of the engine's ``forward_logprobs``, taking turns, medians; and
    the largest difference of the scored log-probs from the "right" layout."""
    import torch

    from engine.models.loading import load_policy
    from engine.models.forward import forward_logprobs, padded_rows
    from engine.sampling.base import apply_chat_template

    pol = load_policy(model_path, device=device, need_reference=False)
    tok = pol.tokenizer
    gen = torch.Generator().manual_seed(seed)
    n_prompts = max(1, micro_batch // group_size)
    p_ids = [apply_chat_template(tok, q) for q in prompts[:n_prompts] for _ in range(group_size)][:micro_batch]
    c_ids = torch.randint(3, len(tok), (len(p_ids), completion_len), generator=gen).tolist()
    rows = padded_rows(p_ids, c_ids, tok.pad_token_id, device=device)
    m = rows.target_mask > 0
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    diff = 0.0
    for _ in range(repeats):
        for name in LAYOUTS:
            pol.model.zero_grad(set_to_none=True)
            sync(device)
            t0 = now()
            logp, _ = forward_logprobs(pol.model, rows, device=device, layout=name)
            (logp * rows.target_mask).sum().backward()
            sync(device)
            times[name].append(now() - t0)
            if name == "right":
                ref = logp.detach()
            else:
                diff = max(diff, float((logp.detach() - ref)[m].abs().max()))
    out = {f"{name}_s": median(times[name]) for name in LAYOUTS}
    prompt_lens = [len(p) for p in p_ids]
    out.update(max_abs_diff=diff, rows=len(p_ids), prompt_tokens_min=min(prompt_lens),
               prompt_tokens_max=max(prompt_lens), completion_len=completion_len)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="default", help="default | tiny | shape:smollm2-135m | shape:qwen2.5-0.5b | folder")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--group-size", type=int, default=4, help="G, completions per prompt")
    p.add_argument("--completion-len", type=int, default=48, help="forced completion length in tokens")
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per forward/backward on both sides")
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--loss", default="token_mean", choices=list(STUDIO_TO_TRL_LOSS))
    p.add_argument("--lora", action="store_true")
    p.add_argument("--sampler", default="auto", choices=["auto", "hf", "vllm"])
    p.add_argument("--reward", default="length", help="studio reward name used by both sides")
    p.add_argument("--dataset", default="bias_prompts")
    p.add_argument("--steps", type=int, default=3, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-guard", action="store_true")
    p.add_argument("--guard-only", action="store_true")
    p.add_argument("--layout-ab", action="store_true",
                   help="only time one micro-batch's forward+backward through each row layout of forward_logprobs")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--workdir", type=Path, help="scratch folder (random models are cached here)")
    a = p.parse_args(argv)
    workdir, model_path, out = start_bench(a, "bench-grpo-")

    if a.layout_ab:
        cfg = _studio_config(a, model_path)
        res = layout_ab(model_path, a.device, prompts=_step_prompts(cfg), completion_len=a.completion_len,
                        micro_batch=a.micro_batch, group_size=a.group_size)
        print("\nforward+backward of one micro-batch through each row layout of engine forward_logprobs:")
        print(markdown_table(list(res), [list(res.values())]))
        out["layout_ab"] = res
        write_json(a.json, out)
        return 0
    if not a.skip_guard:
        guard = grpo_guard(model_path, a.device, seed=a.seed, workdir=workdir)
        if not guard_passed(out, guard, "Correctness guard (one identical batch, TRL GRPOTrainer._compute_loss vs "
                            "studio update path):", guard_table(guard)):
            write_json(a.json, out)
            return 2
    if a.guard_only:
        write_json(a.json, out)
        return 0

    cfg = _studio_config(a, model_path)
    prompts = _step_prompts(cfg)
    import trl.trainer.grpo_trainer  # noqa: F401  (import before the threads start and before any patching)
    baton = Baton(["trl", "studio"])
    trl_rec, ours_rec = SideRecord(), SideRecord()
    trl_thread = threading.Thread(target=run_trl, args=(a, model_path, prompts, baton, trl_rec, workdir),
                                  name="trl", daemon=True)
    trl_thread.start()
    # the studio runs in the main thread: vLLM's in-process engine expects it
    run_studio(a, cfg, baton, ours_rec, workdir)
    trl_thread.join()
    if baton.error is not None:
        raise RuntimeError("a benchmark side failed") from baton.error

    from engine.models.loading import load_tokenizer
    from engine.sampling.base import apply_chat_template

    tok = load_tokenizer(model_path)
    prompt_tokens = sum(len(apply_chat_template(tok, q)) for q in prompts) / len(prompts)
    table, summary = side_by_side_table(a, model_path, trl_rec, ours_rec, prompt_tokens)
    env_after = environment(a.device)
    print(f"\nGRPO side by side ({a.prompts * a.group_size} completions x {a.completion_len} tokens, "
          f"{'LoRA' if a.lora else 'full fine-tuning'}, {a.device}, median of {a.steps} steps after {a.warmup} warm-up; "
          f"load after: {env_after['load (1/5/15 min)']}):")
    print(table, flush=True)
    out.update(summary=summary, trl=vars(trl_rec), studio=vars(ours_rec), env_after=env_after)
    write_json(a.json, out)
    return 0


def side_by_side_table(a: argparse.Namespace, model_path: str, trl: SideRecord, ours: SideRecord,
                       prompt_tokens: float) -> tuple[str, dict[str, float]]:
    t_trl, t_ours = median(trl.step_s), median(ours.step_s)
    tok_trl = median(trl.work) / t_trl if t_trl > 0 else float("nan")
    tok_ours = median(ours.work) / t_ours if t_ours > 0 else float("nan")
    phases = {k: median(v) for k, v in ours.phases.items()}
    rows = [
        ["TRL GRPOTrainer", t_trl, 1.0 / t_trl, tok_trl, "-", median(trl.resident_mb), median(trl.peak_rise_mb)],
        ["studio (engine.runs.grpo)", t_ours, 1.0 / t_ours, tok_ours,
         " / ".join(f"{k} {phases[k]:.2f}" for k in ("sample", "reward", "logprobs", "update", "sync") if k in phases),
         median(ours.resident_mb), median(ours.peak_rise_mb)],
    ]
    table = markdown_table(["side", "median step s", "steps/s", "completion tok/s",
                            "phases s (sample / reward / logprobs / update / sync)", "resident MiB at step start",
                            "peak rise MiB in step"], rows)
    trl_len = trl.logged.get("completions/mean_length", [])
    if trl_len and any(abs(x - a.completion_len) > 1e-6 for x in trl_len):
        table += (f"\n\nWARNING: TRL's completions were not all {a.completion_len} tokens long (mean lengths {trl_len}): "
                  "the two sides did not do the same work")
    ratio = t_trl / t_ours if t_ours > 0 else float("nan")
    table += f"\n\nspeed-up (TRL step time / studio step time): **{ratio:.2f}x**"
    summary = {"trl_step_s": t_trl, "studio_step_s": t_ours, "ratio": ratio, **{f"phase_{k}": v for k, v in phases.items()}}
    if a.device == "cuda" and "update" in phases:
        # model FLOPs of the training phase: forward + backward (3x forward) over the tokens the engine runs: each
        # prompt once (shared by its G completions), every completion token
        tokens = a.prompts * prompt_tokens + a.prompts * a.group_size * a.completion_len
        flops = 3 * _train_flops_per_token(model_path) * tokens
        if a.beta > 0:
            flops_lp = _train_flops_per_token(model_path) * tokens  # the reference forward
        else:
            flops_lp = 0.0
        mfu = (flops + flops_lp) / ((phases["update"] + phases.get("logprobs", 0.0)) * H100_BF16_DENSE_TFLOPS * 1e12)
        table += f"\n\ntraining-phase MFU (logprobs + update, bf16 dense peak {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s): {100 * mfu:.1f}%"
        summary["mfu"] = mfu
    return table, summary


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
