"""DPO, side by side: Hugging Face TRL's DPOTrainer against the studio's DPO and GR-DPO runs (engine.runs.preference).

    python bench/dpo_vs_trl.py                                   # CPU: SmolLM2-135M, 8 pairs per step
    python bench/dpo_vs_trl.py --device cuda --model shape:qwen2.5-0.5b --pairs 32 --max-length 512 \
        --micro-batch 16                                          # H100 target: 32 pairs, max length 512
    python bench/dpo_vs_trl.py --model tiny --pairs 2 --micro-batch 2 --steps 1 --warmup 1

1. Correctness guard: the same tokenized pairs (the studio's tokenization, fed to TRL through TRL's own
   ``DataCollatorForPreference``) and the same reference log-probs (perturbed away from the policy so the margin is
   not zero) go through TRL's ``DPOTrainer._compute_loss`` and the engine's own update path,
   ``engine.runs.preference.update_pairs`` (``summed_logprobs`` -> ``per_pair_loss``, micro-batched, plain coefficients
   1/B from ``pair_coefficients``; SGD at learning rate 0, so the gradient norm is read before anything moves).
   Loss and gradient norm must agree within the
   stated tolerance for DPO (TRL "sigmoid") and TRL's length-normalised IPO (studio ipo_length_normalize=True).
2. Side by side: TRL, the studio's DPO run and its GR-DPO run take strict turns, step by step, in one process, on
   the same model folder, the same pairs in the same order (the studio's seeded schedule; TRL reads them
   sequentially), batch size, maximum length, beta, learning rate and precision. Reported: pairs/s, peak memory,
   the studio's phases (reference = the reference pass over pairs not yet in its cache; weights = the group-robust
   pre-pass), and GR-DPO's overhead over plain DPO.
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
    start_bench,
    trl_alternate_callback,
    trl_lora_config,
    write_json,
)

SIDES = ("trl", "dpo", "gr_dpo")


@dataclass
class GuardResult:
    name: str
    loss_trl: float
    loss_ours: float
    grad_trl: float
    grad_ours: float
    rtol: float

    @property
    def ok(self) -> bool:
        return (math.isclose(self.loss_trl, self.loss_ours, rel_tol=self.rtol, abs_tol=self.rtol * 1e-2)
                and math.isclose(self.grad_trl, self.grad_ours, rel_tol=self.rtol, abs_tol=1e-8))


def _trl_dpo_args(out_dir: str, *, device: str, pairs: int, micro_pairs: int, beta: float, lr: float,
                  max_length: int, max_steps: int, seed: int, loss_type: str = "sigmoid",
                  precompute_ref: bool = False) -> Any:
    from trl import DPOConfig

    if pairs % micro_pairs:
        raise ValueError(f"pairs per step ({pairs}) must be a multiple of the pairs per micro-batch ({micro_pairs})")
    on_gpu = device.startswith("cuda")
    return DPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=micro_pairs,
        gradient_accumulation_steps=pairs // micro_pairs,
        beta=beta,
        loss_type=[loss_type],
        learning_rate=lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_length=max_length,
        precompute_ref_log_probs=precompute_ref,
        gradient_checkpointing=False,  # the studio's default; TRL's is on, which would make TRL slower
        max_steps=max_steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not on_gpu,
        bf16=on_gpu,
        model_init_kwargs={"dtype": "bfloat16" if on_gpu else "float32"},
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def _text_dataset(tokenizer: Any, pairs: list[Any]) -> Any:
    """Pairs as TRL reads text: the prompt already in the chat format (the studio's apply_chat_template, as a
    string), the answers as plain text; TRL tokenizes them and appends EOS, as the studio does."""
    from datasets import Dataset

    rows = []
    for p in pairs:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": p.prompt}], add_generation_prompt=True,
                                               tokenize=False) if getattr(tokenizer, "chat_template", None) else p.prompt
        rows.append({"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected})
    return Dataset.from_list(rows)


def dpo_guard(model_path: str, device: str, *, seed: int = 0, pairs: int = 4, micro_pairs: int = 2,
              beta: float = 0.1, max_length: int = 256, dataset: str = "bbq_pairs", workdir: Path) -> list[GuardResult]:
    import torch
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from engine.config import DPOConfig, IPOConfig
    from engine.data.registry import load_named
    from engine.models.loading import load_policy
    from engine.runs.preference import PairBatch, pair_coefficients, summed_logprobs, tokenize_pairs, update_pairs
    from engine.models.forward import micro_batches

    on_gpu = device.startswith("cuda")
    rtol = 2e-2 if on_gpu else 1e-4
    rows = load_named(dataset, "train", seed=seed)[:pairs]
    policy = load_policy(model_path, device=device, need_reference=False)
    tok = policy.tokenizer
    pad = tok.pad_token_id
    ids = tokenize_pairs(tok, rows, max_length)
    idx = list(range(len(rows)))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        c, r = summed_logprobs(policy.model, ids, idx, pad, device)
    # reference away from the policy: a zero margin would hide a sign or scale error behind log(2)
    ref_c = (c.float().cpu() + torch.randn(len(idx), generator=gen)).to(device)
    ref_r = (r.float().cpu() + torch.randn(len(idx), generator=gen)).to(device)
    c_len = torch.tensor([len(ids.chosen[i]) for i in idx], device=device)
    r_len = torch.tensor([len(ids.rejected[i]) for i in idx], device=device)
    del policy
    b = len(idx)

    cases = [("dpo (TRL sigmoid)", DPOConfig(model=model_path, beta=beta), "sigmoid"),
             ("ipo, length-normalised (TRL ipo)", IPOConfig(model=model_path, beta=beta, ipo_length_normalize=True),
              "ipo")]
    results = []
    for name, cfg, trl_loss in cases:
        pol = load_policy(model_path, device=device, need_reference=False)
        pol.model.train()
        params = pol.trainable_parameters()
        group_ids = torch.zeros(b, dtype=torch.long)
        upd = update_pairs(cfg, pol.model, params, torch.optim.SGD(params, lr=0.0), ids,
                           PairBatch(idx, group_ids, ref_c, ref_r, c_len, r_len),
                           coefficients=lambda _: pair_coefficients("plain", group_ids, 1,
                                                                    dataset_counts=torch.ones(1)),
                           needs_losses=False, pad_id=pad, device=device, pairs_per_mb=micro_pairs, max_grad_norm=0.0)
        loss_ours, grad_ours = upd.loss, upd.grad_norm
        del pol

        args = _trl_dpo_args(str(workdir / "trl-dpo-guard"), device=device, pairs=b, micro_pairs=micro_pairs,
                             beta=beta, lr=1e-6, max_length=max_length, max_steps=1, seed=seed, loss_type=trl_loss)
        trainer = DPOTrainer(model=model_path, args=args, train_dataset=_text_dataset(tok, rows), processing_class=tok)
        trainer.precompute_ref_logps = True  # read our reference log-probs from the batch instead of its ref model
        model = trainer.model
        model.train()
        collate = DataCollatorForPreference(pad_token_id=pad)
        loss_trl = 0.0
        for a, e in micro_batches(b, micro_pairs):
            examples = [{"prompt_ids": ids.prompt[i], "chosen_ids": ids.chosen[i], "rejected_ids": ids.rejected[i],
                         "ref_chosen_logps": float(ref_c[i]), "ref_rejected_logps": float(ref_r[i])}
                        for i in idx[a:e]]
            inputs = {k: v.to(device) for k, v in collate(examples).items()}
            loss = trainer._compute_loss(model, inputs, False)
            # the Trainer divides each micro-batch's mean loss by the accumulation steps; equal micro-batches here
            loss = loss * (e - a) / b
            loss.backward()
            loss_trl += float(loss.detach())
        grad_trl = grad_norm([p for p in model.parameters() if p.requires_grad])
        del trainer, model
        results.append(GuardResult(name, loss_trl, loss_ours, grad_trl, grad_ours, rtol))
    return results


def guard_table(results: list[GuardResult]) -> str:
    return markdown_table(["loss", "loss TRL", "loss ours", "grad-norm TRL", "grad-norm ours", "rel. tol.", "match"],
                          [[r.name, f"{r.loss_trl:.6g}", f"{r.loss_ours:.6g}", f"{r.grad_trl:.6g}", f"{r.grad_ours:.6g}",
                            f"{r.rtol:g}", "ok" if r.ok else "MISMATCH"] for r in results])


# ------------------------------------------------------------------------------------------- side by side

def _studio_config(a: argparse.Namespace, model_path: str, algorithm: str) -> Any:
    from engine.config import DPOConfig, GRDPOConfig

    cls = GRDPOConfig if algorithm == "gr_dpo" else DPOConfig
    return cls(model=model_path, dataset=a.dataset, batch_size=a.pairs, max_length=a.max_length,
               micro_batch_size=2 * a.micro_batch, beta=a.beta, learning_rate=a.lr, max_grad_norm=1.0,
               eval_prompts=0, max_steps=a.warmup + a.steps, checkpoint_every=0, use_lora=a.lora, device=a.device,
               seed=a.seed, group_sampling="balanced")


def _step_pairs(cfg: Any) -> list[Any]:
    """The pairs the studio's steps 1..max_steps draw, in order (the same schedule as engine.runs.preference)."""
    from engine.data.registry import load_named
    from engine.runs.schedule import BatchSchedule

    train = load_named(cfg.dataset, "train", seed=cfg.seed, path=cfg.dataset_path)
    schedule = BatchSchedule([p.group for p in train], cfg.batch_size, cfg.seed, cfg.group_sampling)
    return [train[i] for step in range(1, cfg.max_steps + 1) for i in schedule.indices(step)]


def run_trl(a: argparse.Namespace, model_path: str, pairs: list[Any], baton: Baton, record: SideRecord,
            workdir: Path) -> None:
    with baton.side("trl"):
        from torch.utils.data import SequentialSampler
        from trl import DPOTrainer

        from engine.models.loading import load_tokenizer

        class InOrderDPOTrainer(DPOTrainer):
            # the pairs are already in the studio's step order; the default sampler would shuffle them
            def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
                return SequentialSampler(self.train_dataset)

        callback = trl_alternate_callback("trl", baton, record, a.device, a.warmup, float(a.pairs))
        callback.begin()
        peft_config = trl_lora_config() if a.lora else None
        tok = load_tokenizer(model_path)
        args = _trl_dpo_args(str(workdir / "trl-dpo-run"), device=a.device, pairs=a.pairs, micro_pairs=a.micro_batch,
                             beta=a.beta, lr=a.lr, max_length=a.max_length, max_steps=a.warmup + a.steps, seed=a.seed,
                             precompute_ref=a.trl_precompute_ref)
        trainer = InOrderDPOTrainer(model=model_path, args=args, train_dataset=_text_dataset(tok, pairs),
                                    processing_class=tok, callbacks=[callback], peft_config=peft_config)
        trainer.train()


def run_studio(name: str, a: argparse.Namespace, cfg: Any, baton: Baton, record: SideRecord, workdir: Path) -> None:
    from engine.runs import preference

    with baton.side(name):
        ctx = BenchContext(name, cfg, baton, record, a.device, a.warmup, workdir / f"studio-{name}",
                           work=lambda m: float(cfg.batch_size))
        preference.execute(ctx)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="default", help="default | tiny | shape:smollm2-135m | shape:qwen2.5-0.5b | folder")
    p.add_argument("--pairs", type=int, default=8, help="preference pairs per step")
    p.add_argument("--micro-batch", type=int, default=8, help="pairs per forward/backward on every side")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=5e-6)
    p.add_argument("--lora", action="store_true")
    p.add_argument("--dataset", default="bbq_pairs")
    p.add_argument("--trl-precompute-ref", action="store_true",
                   help="TRL's precompute_ref_log_probs=True (its reference pass then runs before training)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-guard", action="store_true")
    p.add_argument("--guard-only", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--workdir", type=Path)
    a = p.parse_args(argv)
    workdir, model_path, out = start_bench(a, "bench-dpo-")

    if not a.skip_guard:
        guard = dpo_guard(model_path, a.device, seed=a.seed, dataset=a.dataset, workdir=workdir,
                          micro_pairs=min(2, a.micro_batch))
        if not guard_passed(out, guard, "Correctness guard (same pairs and reference log-probs, TRL "
                            "DPOTrainer._compute_loss vs studio):", guard_table(guard)):
            write_json(a.json, out)
            return 2
    if a.guard_only:
        write_json(a.json, out)
        return 0

    cfgs = {name: _studio_config(a, model_path, name) for name in ("dpo", "gr_dpo")}
    pairs = _step_pairs(cfgs["dpo"])
    import trl.trainer.dpo_trainer  # noqa: F401  (import once, before the threads start)

    baton = Baton(list(SIDES))
    records = {name: SideRecord() for name in SIDES}
    threads = [threading.Thread(target=run_trl, args=(a, model_path, pairs, baton, records["trl"], workdir),
                                name="trl", daemon=True)]
    threads += [threading.Thread(target=run_studio, args=(name, a, cfgs[name], baton, records[name], workdir),
                                 name=name, daemon=True) for name in ("dpo", "gr_dpo")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if baton.error is not None:
        raise RuntimeError("a benchmark side failed") from baton.error

    table, summary = side_by_side_table(a, records)
    env_after = environment(a.device)
    print(f"\nDPO side by side ({a.pairs} pairs per step, max length {a.max_length}, "
          f"{'LoRA' if a.lora else 'full fine-tuning'}, {a.device}, median of {a.steps} steps after {a.warmup} warm-up; "
          f"load after: {env_after['load (1/5/15 min)']}):")
    print(table, flush=True)
    out.update(summary=summary, records={k: vars(v) for k, v in records.items()}, env_after=env_after)
    write_json(a.json, out)
    return 0


def side_by_side_table(a: argparse.Namespace, records: dict[str, SideRecord]) -> tuple[str, dict[str, float]]:
    t = {k: median(r.step_s) for k, r in records.items()}
    rows = []
    labels = {"trl": "TRL DPOTrainer", "dpo": "studio DPO", "gr_dpo": "studio GR-DPO"}
    for k, r in records.items():
        phases = {name: median(v) for name, v in r.phases.items()}
        no_ref = t[k] - phases["reference"] if "reference" in phases else float("nan")
        rows.append([labels[k], t[k], a.pairs / t[k] if t[k] > 0 else float("nan"),
                     a.pairs / no_ref if not math.isnan(no_ref) and no_ref > 0 else float("nan"),
                     " / ".join(f"{n} {phases[n]:.2f}" for n in ("reference", "weights", "update") if n in phases) or "-",
                     median(r.resident_mb), median(r.peak_rise_mb)])
    table = markdown_table(["side", "median step s", "pairs/s", "pairs/s, reference cached",
                            "phases s (reference / weights / update)", "resident MiB at step start",
                            "peak rise MiB in step"], rows)
    summary = {f"{k}_step_s": v for k, v in t.items()}
    summary["dpo_speedup"] = t["trl"] / t["dpo"]
    summary["gr_dpo_speedup"] = t["trl"] / t["gr_dpo"]
    summary["gr_overhead"] = t["gr_dpo"] / t["dpo"] - 1.0
    table += (f"\n\nspeed-up over TRL (step time ratio): DPO **{summary['dpo_speedup']:.2f}x**, GR-DPO "
              f"**{summary['gr_dpo_speedup']:.2f}x**; group-robust weighting overhead over plain DPO: "
              f"**{100 * summary['gr_overhead']:+.1f}%**")
    return table, summary


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
