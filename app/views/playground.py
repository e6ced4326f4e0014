"""Playground: one prompt answered by a run's checkpoint and by its base model, side by side, each answer with the
terms of the default GRPO reward, generated here in the app process.

The models load only when Generate is clicked (torch and transformers are imported then, not when the page
opens), through the same path evaluations take (engine.evaluation.models_ref.resolve_model_ref: a run's
checkpoint merged and exported once), and answer through the engine's HF sampler, which renders the prompt with
the chat template exactly as training and evaluation do. What the page shows is the model those score.
"""

from __future__ import annotations

import json
import random
import threading
import time

import streamlit as st

from app.auth import require_access
from app.state import get_store
from app.widgets import plain
from db.queue import QueueError, get_run
from db.reads import checkpoints, runs_with_checkpoints
from engine.config import DEFAULT_MODEL, GRPOConfig

# Every page checks access itself, so a page opened by its address never skips the password.
require_access()

HISTORY_KEY = "pg.history"
RUN_KEY = "pg.run"
PROMPT_KEY = "pg.prompt"
HISTORY_MAX = 10
PROMPT_SET = "bias_prompts"
# The reward a GRPO run optimises unless told otherwise: what the studio trains for is what the page reads out.
REWARD_SPECS = GRPOConfig.model_fields["rewards"].default

store = get_store()
ss = st.session_state
ss.setdefault(HISTORY_KEY, [])
st.title("Playground")
st.caption("Ask one question of two models: a run's checkpoint and, by default, the base model it was trained "
           "from. Both answers are generated here, on this machine, and read by the default GRPO reward, so you "
           "see what training made of the model and how the reward scores it.")


class PlaygroundError(Exception):
    """Something the user can change (a model reference, a missing checkpoint, a model that cannot load); the
    message says what, in one line, and becomes the page's error instead of a traceback."""


@st.cache_data(show_spinner=False, max_entries=1)
def _held_out_prompts() -> dict[str, list[str]]:
    """The prompt set's fixed eval split by group: the prompts no run trains on."""
    from engine.data.registry import load_named

    out: dict[str, list[str]] = {}
    for row in load_named(PROMPT_SET, split="eval"):
        out.setdefault(row.group, []).append(row.prompt)
    return dict(sorted(out.items()))


@st.cache_resource(show_spinner=False, max_entries=3)
def _sampler(path: str, device: str):  # type: ignore[no-untyped-def]
    """One loaded model per resolved folder, shared by every session. The lock: the HF sampler swaps the
    module's generation config and train/eval mode while it decodes, so two sessions must take turns."""
    from engine.models.loading import load_policy
    from engine.sampling.base import make_sampler

    policy = load_policy(path, need_reference=False, device=device)
    policy.model.eval()
    return make_sampler("hf", policy.model_path, policy), threading.Lock()


@st.cache_resource(show_spinner=False, max_entries=1)
def _reward(device: str):  # type: ignore[no-untyped-def]
    from engine.rewards.base import build_reward

    return build_reward(REWARD_SPECS, device=device), threading.Lock()


def _device() -> str:
    from engine.models.loading import resolve_device

    return resolve_device("auto")


def _resolve(side: str, ref: str) -> tuple[str, str]:
    """(folder, shown label) of one side's model, or a PlaygroundError that says what to pick instead."""
    from engine.evaluation.models_ref import resolve_model_ref

    if not ref.strip():
        raise PlaygroundError(f"Model {side} is empty: give a model (for example {DEFAULT_MODEL}), a local model "
                              "folder, or a run's checkpoint as run:ID@STEP.")
    try:
        got = resolve_model_ref(store, ref.strip())
    except QueueError as e:  # no such run, no checkpoint at that step, checkpoint files gone (ModelRefError)
        raise PlaygroundError(f"Model {side} ({ref.strip()}): {e}. Pick another run or checkpoint step, or "
                              "another model.") from None
    except Exception as e:  # noqa: BLE001 - a checkpoint that cannot be exported is the user's to replace
        raise PlaygroundError(f"Model {side} ({ref.strip()}) could not be prepared: {type(e).__name__}: {e}. "
                              "Pick another checkpoint step or model.") from None
    return got.path, got.label


def _generate(side: str, label: str, path: str, prompt: str, *, max_new_tokens: int, greedy: bool,
              temperature: float, seed: int) -> dict:
    device = _device()
    with st.spinner(f"Loading model {side} ({plain(label)})..."):
        try:
            sampler, lock = _sampler(path, device)
        except Exception as e:  # noqa: BLE001 - a folder that is no causal LM must not end the page
            raise PlaygroundError(f"Model {side} ({label}) could not be loaded from {path}: {type(e).__name__}: "
                                  f"{e}. Give a folder with a Hugging Face causal language model (config.json, "
                                  "weights, tokenizer) or pick another run.") from None
    with st.spinner(f"Model {side} ({plain(label)}) is answering..."):
        start = time.perf_counter()
        try:
            with lock:
                batch = sampler.generate([prompt], n=1, max_new_tokens=max_new_tokens, greedy=greedy,
                                         temperature=temperature, seed=seed)
        except Exception as e:  # noqa: BLE001 - e.g. a prompt longer than the model's context
            raise PlaygroundError(f"Model {side} ({label}) could not answer: {type(e).__name__}: {e}. Shorten "
                                  "the prompt or lower Max new tokens.") from None
    return {"side": side, "label": label, "text": batch.texts[0], "truncated": batch.truncated[0],
            "tokens": len(batch.completion_ids[0]), "seconds": time.perf_counter() - start, "rewards": None}


def _score(prompt: str, answers: list[dict]) -> str | None:
    """Fill each answer's reward terms in place; the reason when the reward cannot be built or run."""
    with st.spinner("Scoring the answers with the reward..."):
        try:
            reward, lock = _reward(_device())
            with lock:
                out = reward([prompt] * len(answers), [a["text"] for a in answers])
        except Exception as e:  # noqa: BLE001 - the answers are still worth showing without their scores
            return f"{type(e).__name__}: {e}"
    for i, a in enumerate(answers):
        a["rewards"] = {key: scores[i] for key, scores in out.per_function.items()} | {"total": out.total[i]}
    return None


def _fmt(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"  # x != x: NaN, a completion the term could not score


def _reward_line(rewards: dict[str, float]) -> str:
    terms = " · ".join(f"{plain(k)} {_fmt(v)}" for k, v in rewards.items() if k != "total")
    return f"{terms} · **reward {_fmt(rewards.get('total'))}**"


def _on_use_prompt(text: str) -> None:
    ss[PROMPT_KEY] = text


def _on_clear() -> None:
    ss[HISTORY_KEY] = []


# ---------------------------------------------------------------------------------------------- the models
trained = runs_with_checkpoints(store)
names = {rid: name for rid, name, _ in trained}
if ss.get(RUN_KEY) is not None and ss[RUN_KEY] not in names:
    st.warning(f"Run #{ss[RUN_KEY]} has no checkpoint any more (it was deleted): pick another run for model B.",
               icon=":material/warning:")
    del ss[RUN_KEY]

col_a, col_b = st.columns(2)
ref_b = label_b = None
base_of_run = DEFAULT_MODEL
with col_b:
    if not trained:
        st.info("Model B is a training run's checkpoint, and no run has one yet: queue a run on the New run page "
                "(it saves checkpoints as it trains). Until then the playground answers with model A alone.",
                icon=":material/info:")
        run_id = None
    else:
        # Option labels are plain text, so run names need no escaping there.
        run_id = st.selectbox("Model B: run", list(names), key=RUN_KEY, format_func=lambda i: f"#{i} {names[i]}",
                              help="A training run with a saved checkpoint (newest run first).")
        steps = [c.step for c in checkpoints(store, run_id)]
        step = st.selectbox("Checkpoint step", steps, key=f"pg.step.{run_id}",
                            format_func=lambda s: f"step {s}" + (" (latest)" if s == steps[0] else ""),
                            help="The latest is the one an evaluation of this run scores unless told a step; "
                                 "earlier ones show how the answers changed while it trained.")
        ref_b, label_b = f"run:{run_id}@{step}", f"run #{run_id} {names[run_id]} (step {step})"
        try:
            model = json.loads(get_run(store, run_id).config_json).get("model")
            base_of_run = model if isinstance(model, str) and model else DEFAULT_MODEL
        except (QueueError, ValueError, AttributeError):  # deleted meanwhile: Generate says so
            pass
with col_a:
    # One field per run, so picking another run for B offers that run's own base model for A.
    ref_a = st.text_input("Model A", value=base_of_run, key=f"pg.model_a.{run_id}",
                          help="The model to set beside B; by default the base model B was trained from. Any "
                               f"model reference works: {DEFAULT_MODEL}, a local folder, a hub id, or another "
                               "checkpoint as run:ID@STEP.")

# ---------------------------------------------------------------------------------------------- the prompt
with st.expander("Start from a held-out prompt", icon=":material/format_quote:"):
    try:
        held_out = _held_out_prompts()
    except Exception as e:  # noqa: BLE001 - typing a prompt still works without the bundled set
        held_out = {}
        st.caption(f"The held-out prompts could not be read ({plain(e)}); type a prompt instead.")
    if held_out:
        st.caption("Prompts of the bias prompt set's held-out split, which no run trains on, by demographic group.")
        g1, g2 = st.columns([1, 3])
        group = g1.selectbox("Group", list(held_out), key="pg.group")
        picked = g2.selectbox("Held-out prompt", held_out[group], key=f"pg.heldout.{group}")
        st.button("Use this prompt", key="pg.use_prompt", on_click=_on_use_prompt, args=(picked,),
                  icon=":material/arrow_downward:")
prompt = st.text_area("Prompt", key=PROMPT_KEY, height=100, placeholder="Ask something about people...",
                      help="Sent as a user turn through the model's chat template, as in training.")

c1, c2, c3 = st.columns(3)
max_new_tokens = int(c1.number_input("Max new tokens", min_value=1, max_value=1024, value=96, step=16,
                                     key="pg.max_new_tokens"))
decoding = c2.radio("Decoding", ["Greedy", "Sampled"], key="pg.decoding", horizontal=True,
                    help="Greedy takes the most likely token each time (what evaluations do); Sampled draws from "
                         "the model's distribution at the temperature, the same seed for both models.")
temperature = c3.slider("Temperature", 0.05, 2.0, 1.0, 0.05, key="pg.temperature", disabled=decoding == "Greedy",
                        help="1.0 is the distribution training samples from; lower is more deterministic.")

b1, b2, _ = st.columns([1, 1, 4])
generate = b1.button("Generate", type="primary", key="pg.generate", icon=":material/play_arrow:")
b2.button("Clear", key="pg.clear", on_click=_on_clear, icon=":material/delete_sweep:",
          disabled=not ss[HISTORY_KEY], help="Forget the exchanges below.")

if generate:
    if not prompt.strip():
        st.warning("Type a prompt first (or pick a held-out one above).", icon=":material/edit:")
    else:
        greedy = decoding == "Greedy"
        seed = random.randrange(2**31)
        try:
            # Both references first: a bad model B is reported before model A spends a minute answering.
            sides = [("A", *_resolve("A", ref_a))]
            if ref_b is not None:
                sides.append(("B", _resolve("B", ref_b)[0], label_b))
            answers = [_generate(side, label, path, prompt, max_new_tokens=max_new_tokens, greedy=greedy,
                                 temperature=temperature, seed=seed)
                       for side, path, label in sides]
        except PlaygroundError as e:
            st.error(plain(e), icon=":material/error:")
        else:
            reward_error = _score(prompt, answers)
            ss[HISTORY_KEY] = [{"prompt": prompt, "answers": answers, "reward_error": reward_error,
                                "max_new_tokens": max_new_tokens, "greedy": greedy, "temperature": temperature,
                                "seed": seed}] + ss[HISTORY_KEY][:HISTORY_MAX - 1]

# ---------------------------------------------------------------------------------------------- the exchanges
history = ss[HISTORY_KEY]
if not history:
    st.caption("Type a prompt and click Generate: the answers appear here, newest first.")
else:
    formula = " + ".join(f"{s.weight:g} × {s.name}" for s in REWARD_SPECS)
    st.caption(f"Reward = {formula}, the default GRPO reward. bias_rm: how unbiased the answer reads in its "
               "prompt's context (0 to 1, higher = less biased); relevance: whether it answers the prompt (0 to 1); "
               f"refusal: 0 for refusal boilerplate, 1 otherwise. The last {HISTORY_MAX} exchanges are kept.")
    for n, ex in enumerate(history):
        with st.container(border=True):
            how = "greedy" if ex["greedy"] else f"sampled at temperature {ex['temperature']:g}, seed {ex['seed']}"
            st.markdown(f"**Prompt.** {plain(ex['prompt'], multiline=True)}")
            st.caption(f"{how}, at most {ex['max_new_tokens']} new tokens" + (" · latest" if n == 0 else ""))
            if ex["reward_error"]:
                st.caption(f"Not scored: the reward could not run ({plain(ex['reward_error'])}).")
            for col, a in zip(st.columns(2), ex["answers"]):
                col.caption(f"{a['side']}: {plain(a['label'])} · {a['tokens']} tokens in {a['seconds']:.1f} s"
                            + (" · stopped at Max new tokens" if a["truncated"] else ""))
                col.text(a["text"] or "(empty answer)")
                if a["rewards"] is not None:
                    col.caption(_reward_line(a["rewards"]))
