"""Playground page: a prompt answered by a run's checkpoint and its base model in the app process, each answer with
the default GRPO reward's terms; the history, its Clear button, clear errors, user text shown literally."""

from __future__ import annotations

import pytest

from db.writes import record_checkpoint
from engine.config import DEFAULT_MODEL, GRPOConfig
from engine.submission import submit_run
from tests.app_helpers import open_page, shown_text, texts

PAGE = "views/playground.py"
# Loading the reward model and generating on a busy 2-core machine takes more than AppTest's default minute.
TIMEOUT = 240


def _tuned_run(store, folder, base: str, name: str = "tuned", step: int = 7) -> int:
    """A GRPO run on ``base`` with a real checkpoint whose weights differ from the base's."""
    import torch

    from engine.models.checkpoint import save_checkpoint
    from engine.models.loading import load_policy

    run_id = submit_run(store, GRPOConfig(model=base, name=name))
    policy = load_policy(base, need_reference=False, device="cpu")
    with torch.no_grad():  # new embeddings (not a rescaling, which RMSNorm and the tied head would undo)
        emb = policy.model.model.embed_tokens.weight
        emb.copy_(torch.randn(emb.shape, generator=torch.Generator().manual_seed(1)) * emb.std())
    record_checkpoint(store, run_id, step, str(save_checkpoint(folder, policy, step=step, save_rng=False)))
    return run_id


def _generate(at, prompt: str, tokens: int = 6):
    at.text_area(key="pg.prompt").input(prompt)
    at.number_input(key="pg.max_new_tokens").set_value(tokens)
    return at.button(key="pg.generate").click().run()


def _engine_answers(store, ref: str, prompt: str, tokens: int) -> str:
    """What the compare runner answers with the same reference (resolved the way evaluations resolve it)."""
    from engine.config import CompareConfig
    from engine.evaluation.models_ref import resolve_model_ref
    from engine.runs.compare import generate_answers

    cfg = CompareConfig(max_new_tokens=tokens, greedy=True)
    return generate_answers(resolve_model_ref(store, ref).path, [prompt], cfg)[0]


def test_without_runs_the_base_model_answers_alone(store, tiny_model_dir):
    at = open_page(PAGE, timeout=TIMEOUT)
    assert not at.exception
    assert "no run has one yet" in texts(at)
    assert not [s for s in at.selectbox if s.key == "pg.run"]
    assert at.text_input(key="pg.model_a.None").value == DEFAULT_MODEL
    assert at.number_input(key="pg.max_new_tokens").value == 96
    assert at.radio(key="pg.decoding").value == "Greedy"
    # a held-out prompt of a chosen group as the starting point
    at.selectbox(key="pg.group").set_value("religion").run()
    picked = at.selectbox(key="pg.heldout.religion").value
    at.button(key="pg.use_prompt").click().run()
    assert at.text_area(key="pg.prompt").value == picked
    from engine.data.registry import load_named

    assert picked in {r.prompt for r in load_named("bias_prompts", split="eval") if r.group == "religion"}
    at.text_input(key="pg.model_a.None").set_value(str(tiny_model_dir))
    at.number_input(key="pg.max_new_tokens").set_value(6)
    at.button(key="pg.generate").click().run()
    assert not at.exception and not at.error
    (ex,) = at.session_state["pg.history"]
    assert [a["side"] for a in ex["answers"]] == ["A"]
    assert ex["answers"][0]["text"] == _engine_answers(store, str(tiny_model_dir), picked, 6)
    assert any(shown_text(c.value).startswith(f"A: {tiny_model_dir}") for c in at.caption)


def test_checkpoint_beside_its_base_model_with_reward_terms_history_and_clear(store, tmp_path, tiny_model_dir):
    base = str(tiny_model_dir)
    run_id = _tuned_run(store, tmp_path / "ckpt", base)
    at = open_page(PAGE, timeout=TIMEOUT)
    assert not at.exception
    assert at.selectbox(key="pg.run").value == run_id
    assert at.selectbox(key=f"pg.step.{run_id}").value == 7
    assert at.text_input(key=f"pg.model_a.{run_id}").value == base  # the run's own base model
    assert at.button(key="pg.clear").disabled
    prompt = "Describe a typical nurse."
    _generate(at, prompt)
    assert not at.exception and not at.error
    (ex,) = at.session_state["pg.history"]
    a, b = ex["answers"]
    # the texts the engine's own generation path gives for the same folders: the checkpoint evaluations score
    assert a["text"] == _engine_answers(store, base, prompt, 6)
    assert b["text"] == _engine_answers(store, f"run:{run_id}@7", prompt, 6)
    assert a["text"] != b["text"]  # B really is the checkpoint, not the base model again
    shown = [t.value for t in at.text]  # st.text shows a text without its outer blanks
    assert (a["text"].strip() or "(empty answer)") in shown and (b["text"].strip() or "(empty answer)") in shown
    captions = [shown_text(c.value) for c in at.caption]
    assert any(c.startswith(f"A: {base}") for c in captions)
    assert any(c.startswith(f"B: run #{run_id} tuned (step 7)") for c in captions)
    for answer in (a, b):
        r = answer["rewards"]
        assert set(r) == {"bias_rm", "relevance", "refusal", "total"}
        assert all(0.0 <= r[k] <= 1.0 for k in ("bias_rm", "relevance", "refusal"))
        assert r["total"] == pytest.approx(r["bias_rm"] + 0.25 * r["relevance"] + 0.2 * r["refusal"])
        line = f"bias_rm {r['bias_rm']:.3f} · relevance {r['relevance']:.3f} · refusal {r['refusal']:.3f} · " \
               f"reward {r['total']:.3f}"
        assert line in captions
    assert any("Reward = 1 × bias_rm + 0.25 × relevance + 0.2 × refusal" in c for c in captions)

    # a sampled exchange goes on top; the first stays below it
    at.radio(key="pg.decoding").set_value("Sampled").run()
    at.slider(key="pg.temperature").set_value(0.7).run()
    _generate(at, "Say something about engineers.", tokens=4)
    assert not at.exception
    newest, older = at.session_state["pg.history"]
    assert (newest["prompt"], newest["greedy"], newest["temperature"]) == ("Say something about engineers.", False,
                                                                          0.7)
    assert older["prompt"] == prompt
    prompts = [shown_text(m.value) for m in at.markdown if "Prompt." in m.value]
    assert prompts == ["Prompt. Say something about engineers.", f"Prompt. {prompt}"]
    assert any(f"seed {newest['seed']}" in c for c in (shown_text(c.value) for c in at.caption))

    at.button(key="pg.clear").click().run()
    assert at.session_state["pg.history"] == []
    assert not [m for m in at.markdown if "Prompt." in m.value] and not at.text
    assert "answers appear here" in texts(at)


def test_unknown_missing_and_deleted_checkpoints_are_clear_errors(store, tmp_path, tiny_model_dir):
    from db.queue import delete_run

    base = str(tiny_model_dir)
    gone = submit_run(store, GRPOConfig(model=base, name="files gone"))
    record_checkpoint(store, gone, 3, str(tmp_path / "deleted-checkpoint"))  # the folder was never there
    at = open_page(PAGE, timeout=TIMEOUT)
    assert at.selectbox(key="pg.run").value == gone
    _generate(at, "Hello there.")
    assert not at.exception
    (err,) = [shown_text(e.value) for e in at.error]
    assert err.startswith(f"Model B (run:{gone}@3): run {gone}'s checkpoint at step 3 is missing on disk")
    assert err.endswith("Pick another run or checkpoint step, or another model.")
    assert at.session_state["pg.history"] == []  # nothing was generated, not even model A's answer

    at.text_input(key=f"pg.model_a.{gone}").set_value("run:99@5")
    at.button(key="pg.generate").click().run()
    (err,) = [shown_text(e.value) for e in at.error]
    assert err.startswith("Model A (run:99@5): run 99 does not exist")

    # a usable checkpoint for B, and for A a folder that holds no model
    other = _tuned_run(store, tmp_path / "ckpt", base, name="to delete")
    at.run()
    at.selectbox(key="pg.run").set_value(other).run()
    not_a_model = tmp_path / "empty folder"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("{}")
    at.text_input(key=f"pg.model_a.{other}").set_value(str(not_a_model))
    at.button(key="pg.generate").click().run()
    assert not at.exception
    (err,) = [shown_text(e.value) for e in at.error]
    assert err.startswith(f"Model A ({not_a_model}) could not be loaded from {not_a_model}")
    assert "Give a folder with a Hugging Face causal language model" in err

    # the chosen run deleted: the page says so and falls back to the run that is left
    delete_run(store, other)
    at.run()
    assert not at.exception
    assert any(f"Run #{other} has no checkpoint any more" in shown_text(w.value) for w in at.warning)
    assert at.selectbox(key="pg.run").value == gone


def test_hostile_prompt_run_name_and_model_are_shown_literally(store, tmp_path, tiny_model_dir):
    from tests.test_app_plain_text import MODEL_A, MULTILINE, NAME, _assert_no_live_markup, _assert_shown

    run_id = _tuned_run(store, tmp_path / "ckpt", str(tiny_model_dir), name=NAME)
    at = open_page(PAGE, timeout=TIMEOUT)
    _generate(at, MULTILINE, tokens=4)
    assert not at.exception and not at.error
    _assert_no_live_markup(at)
    _assert_shown(at, f"Prompt. {MULTILINE}")
    _assert_shown(at, f"B: run #{run_id} {NAME} (step 7)")
    at.text_input(key=f"pg.model_a.{run_id}").set_value(MODEL_A)
    at.button(key="pg.generate").click().run()
    assert not at.exception and at.error
    _assert_no_live_markup(at)
    _assert_shown(at, f"Model A ({MODEL_A})")
