"""The studio's named presets (examples/*.json): offered by name on the New run page, and the debiasing presets
(issue 13) run on the tiny model with only their scale shrunk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.presets import EXAMPLES_DIR, bundled_presets
from tests.app_helpers import open_page

DEBIASING = ["biasgrpo_cpu", "gr_grpo_cpu", "biasgrpo_gpu", "gr_grpo_gpu", "dpo_cpu_baseline", "gr_dpo_cpu_baseline"]


def test_every_example_is_a_named_preset():
    keys = {p.key for p in bundled_presets()}
    assert keys == {p.stem for p in Path(EXAMPLES_DIR).glob("*.json")}
    assert set(DEBIASING) <= keys


def test_cpu_presets_share_seed_budget_and_reward():
    """BiasGRPO and group-robust GRPO differ only in the group-robust fields, so a comparison of the two is fair;
    the DPO baselines likewise."""
    def load(k):
        return json.loads((EXAMPLES_DIR / f"{k}.json").read_text())

    robust = {"algorithm", "name", "eta", "chi", "robust_signal"}
    for plain, gr in (("biasgrpo_cpu", "gr_grpo_cpu"), ("biasgrpo_gpu", "gr_grpo_gpu"),
                      ("dpo_cpu_baseline", "gr_dpo_cpu_baseline")):
        a, b = load(plain), load(gr)
        assert {k: v for k, v in a.items() if k not in robust} == {k: v for k, v in b.items() if k not in robust}
    assert load("biasgrpo_cpu")["use_lora"] is True


def test_loading_a_named_preset_fills_the_form(store):
    at = open_page("views/new_run.py")
    assert not at.exception
    at.selectbox(key="new.named_preset").set_value("gr_grpo_cpu").run()
    at.button(key="new.named_preset_load").click().run()
    assert not at.exception
    assert at.selectbox(key="new.algorithm").value == "gr_grpo"
    assert at.checkbox(key="cfg.gr_grpo.use_lora").value is True
    assert at.number_input(key="cfg.gr_grpo.max_steps").value == 24
    assert at.number_input(key="cfg.gr_grpo.eta").value == 0.5
    assert any("Loaded preset" in s.value for s in at.success)


@pytest.mark.slow
@pytest.mark.parametrize("key", DEBIASING)
def test_debiasing_preset_runs_two_steps_on_the_tiny_model(key, store, tiny_model_dir):
    from tests.runs_fixtures import metrics_by_step, run_in_process

    cfg = json.loads((EXAMPLES_DIR / f"{key}.json").read_text())
    small = {"model": str(tiny_model_dir), "max_steps": 2, "eval_every": 2, "eval_prompts": 6,
             "checkpoint_every": 2, "device": "cpu", "micro_batch_size": 4}
    if cfg["algorithm"] in ("grpo", "gr_grpo"):
        small |= {"sampler": "hf", "prompts_per_step": 6, "group_size": 2, "max_new_tokens": 6}
    else:
        small |= {"batch_size": 4, "max_length": 64}
    rid = run_in_process(store, cfg | small)
    m = metrics_by_step(store, rid)
    assert {1, 2} <= set(m)
    assert m[2]["loss"] is not None
    if cfg["algorithm"] in ("grpo", "gr_grpo"):
        for term in ("bias_rm", "relevance", "refusal"):  # the preset's reward, every term logged
            assert m[2][f"reward/{term}/mean"] is not None
        assert m[2]["val/worst_group_reward"] is not None
