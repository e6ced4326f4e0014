"""Run-config forms generated from engine.config's typed configs.

Every field of the algorithm's pydantic model becomes a widget with its help text; basic fields are shown,
advanced ones sit in an expander, both grouped by the field's section. Widget state lives in
st.session_state under ``form_key(algorithm, field)``, so the same function can render the form, collect
its values in a button callback, and prefill it from a clone or a preset file.

Widgets carry no min/max limits on purpose: the config's validators decide, and their message is shown
under the field, so a user learns why a value is refused instead of being silently clamped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import streamlit as st

from app.widgets import plain
from engine.config import (ALGORITHM_LABELS, DEFAULT_MODEL, EMBEDDED_MODELS, CONFIG_CLASSES, ConfigError,
                           BaseRunConfig, field_help, parse_config)

REWARD_CHOICES = {
    "bias_rm": "Bias reward model (higher = less biased)",
    "relevance": "Relevance (model): answers the prompt, on topic",
    "length": "Length (rule): prefers answers near a target length",
    "refusal": "Refusal (rule): penalises refusing harmless questions",
    "format": "Format (rule): well-formed, complete answers",
}
MODEL_KINDS = ("Embedded default", "Local folder", "Hub id")
RUN_KIND = "A run's checkpoint"  # compare/eval only: "run:ID"
SECTION_ORDER = ("basic", "model", "data", "reward", "sampling", "loss", "group robust", "optimizer",
                 "evaluation", "checkpoints", "logging")


def form_key(algorithm: str, name: str) -> str:
    return f"cfg.{algorithm}.{name}"


# Words a label writes as their proper name, and fields whose label is not their name.
_WORDS = {"lora": "LoRA", "kl": "KL", "eos": "EOS", "dpo": "DPO", "ipo": "IPO", "grpo": "GRPO", "hf": "HF",
          "id": "ID", "ids": "IDs", "rm": "RM", "vllm": "vLLM"}
_LABELS = {"use_lora": "Use LoRA", "lora_r": "LoRA rank", "model_a": "Model A", "model_b": "Model B"}
# Fields that only mean something while another field is on: hidden while it is off.
DEPENDS_ON = {"lora_r": "use_lora", "lora_alpha": "use_lora", "lora_dropout": "use_lora",
              "lora_target_modules": "use_lora"}


def label(name: str) -> str:
    """A field's label: "use_lora" -> "Use LoRA", "model_b" -> "Model B", "max_new_tokens" -> "Max new tokens"."""
    if name in _LABELS:
        return _LABELS[name]
    words = name.split("_")
    out = [_WORDS.get(w, w) for w in words]
    first = out[0]
    out[0] = first if first in _WORDS.values() else first.capitalize()
    return " ".join(out)


def _schema_kind(schema: Mapping[str, Any]) -> str:
    """bool | int | float | enum | list_str | rewards | opt_str | str, from a field's JSON schema."""
    if "enum" in schema:
        return "enum"
    t = schema.get("type")
    if t is None and "anyOf" in schema:
        types = {x.get("type") for x in schema["anyOf"]}
        return "opt_str" if types <= {"string", "null"} else "str"
    if t == "boolean":
        return "bool"
    if t == "integer":
        return "int"
    if t == "number":
        return "float"
    if t == "array":
        items = schema.get("items", {})
        if "$ref" in items or items.get("type") == "object":
            return "rewards"
        if "enum" in items:
            return "list_enum"
        return "list_str"
    return "str"


def _fields(algorithm: str) -> list[dict[str, Any]]:
    return field_help(CONFIG_CLASSES[algorithm])


def _model_kind(value: str) -> str:
    if value.startswith("run:"):
        return RUN_KIND
    if value.startswith("embedded:"):
        return MODEL_KINDS[0]
    if value.startswith(("/", ".", "~")):
        return MODEL_KINDS[1]
    return MODEL_KINDS[2]


def seed_state(algorithm: str, values: Mapping[str, Any] | None = None, *, overwrite: bool = False) -> None:
    """Put the form's starting values (defaults, or a clone's / preset's config) into session_state."""
    values = values or {}
    ss = st.session_state
    for f in _fields(algorithm):
        name, kind = f["name"], _schema_kind(f["schema"])
        value = values.get(name, f["default"])
        key = form_key(algorithm, name)
        if name in ("model", "model_a", "model_b"):
            pairs = {f"{key}.kind": _model_kind(str(value)), f"{key}.text": "" if str(value).startswith("embedded:")
                     else str(value), f"{key}.embedded": str(value) if str(value) in EMBEDDED_MODELS else DEFAULT_MODEL}
        elif kind == "rewards":
            specs = [dict(x) if isinstance(x, Mapping) else x.model_dump() for x in (value or [])]
            pairs = {f"{key}.names": [s["name"] for s in specs], f"{key}.params": {s["name"]: s.get("params", {})
                                                                                  for s in specs}}
            pairs.update({f"{key}.w.{s['name']}": float(s.get("weight", 1.0)) for s in specs})
        elif kind == "list_str":
            pairs = {key: ", ".join(value or [])}
        elif kind == "opt_str":
            pairs = {key: value or ""}
        elif kind == "float":
            pairs = {key: float(value)}
        else:
            pairs = {key: value}
        for k, v in pairs.items():
            if overwrite or k not in ss:
                ss[k] = v


def collect(algorithm: str) -> dict[str, Any]:
    """The form's current values as a config dict (not yet validated)."""
    ss = st.session_state
    out: dict[str, Any] = {"algorithm": algorithm}
    for f in _fields(algorithm):
        name, kind = f["name"], _schema_kind(f["schema"])
        key = form_key(algorithm, name)
        if name in ("model", "model_a", "model_b"):
            kind_v = ss.get(f"{key}.kind", MODEL_KINDS[0])
            out[name] = ss.get(f"{key}.embedded", DEFAULT_MODEL) if kind_v == MODEL_KINDS[0] else \
                str(ss.get(f"{key}.text", "")).strip()
        elif kind == "rewards":
            params = ss.get(f"{key}.params", {})
            out[name] = [{"name": n, "weight": float(ss.get(f"{key}.w.{n}", 1.0)), "params": params.get(n, {})}
                         for n in ss.get(f"{key}.names", [])]
        elif kind == "list_str":
            out[name] = [x.strip() for x in str(ss.get(key, "")).split(",") if x.strip()]
        elif kind == "opt_str":
            out[name] = str(ss.get(key, "")).strip() or None
        elif kind == "str":
            out[name] = str(ss.get(key, ""))
        else:
            out[name] = ss.get(key, f["default"])
    return out


def validate(data: Mapping[str, Any]) -> tuple[BaseRunConfig | None, dict[str, str]]:
    """(config, {}) when valid, else (None, {field: message}).

    Server paths the web app may not read (STUDIO_DATA_DIRS; none at all behind STUDIO_PASSWORD without it) are
    refused first and left out of the rest of the validation, so not even their existence is reported."""
    from engine.submission import path_problems, without_paths

    refused = path_problems(data, web=True)
    try:
        cfg = parse_config(without_paths(data, refused))
    except ConfigError as e:
        return None, {**e.problems, **refused}
    return (None, refused) if refused else (cfg, {})


def submit(store: Any, data: Mapping[str, Any], *, parent_id: int | None = None) -> tuple[int | None, dict[str, str]]:
    """Validate the form's values and queue the run: (run id, {}) or (None, problems). The submit-time checks
    (run references, dataset file contents, absolute paths) run here too, as for `studio submit`."""
    from engine.submission import submit_run

    cfg, problems = validate(data)
    if cfg is None:
        return None, problems
    try:
        return submit_run(store, cfg, parent_id=parent_id, web=True), {}
    except ConfigError as e:
        return None, dict(e.problems)


def field_problem(problems: Mapping[str, str], name: str) -> str | None:
    """The message for a field, including nested ones such as 'rewards.0.weight'."""
    msgs = [f"{k.split('.', 1)[1] + ': ' if '.' in k else ''}{v}" for k, v in problems.items()
            if k == name or k.startswith(name + ".")]
    return "; ".join(msgs) or None


def _float_step(default: float) -> float:
    if not default:
        return 0.01
    return 10 ** math.floor(math.log10(abs(default)))


def _render_model(key: str, f: dict[str, Any], allow_runs: list[tuple[int, str, int]] | None = None) -> None:
    kinds = list(MODEL_KINDS) + ([RUN_KIND] if allow_runs else [])
    if st.session_state.get(f"{key}.kind") not in kinds:  # e.g. a cloned "run:ID" whose run has gone
        st.session_state[f"{key}.kind"] = MODEL_KINDS[0]
    st.radio(label(f["name"]), kinds, key=f"{key}.kind", horizontal=True, help=f["help"])
    kind = st.session_state.get(f"{key}.kind")
    if kind == MODEL_KINDS[0]:
        st.selectbox("Embedded model", list(EMBEDDED_MODELS), key=f"{key}.embedded",
                     format_func=lambda m: EMBEDDED_MODELS[m], label_visibility="collapsed")
    elif kind == RUN_KIND and allow_runs:
        options = [f"run:{rid}" for rid, _, _ in allow_runs]
        names = {f"run:{rid}": f"run {rid}: {name} (step {step})" for rid, name, step in allow_runs}
        if st.session_state.get(f"{key}.text") not in options:
            st.session_state[f"{key}.text"] = options[0]
        st.selectbox("Run", options, key=f"{key}.text", format_func=lambda o: names[o],
                     label_visibility="collapsed")
    else:
        placeholder = "/path/to/model-folder" if kind == MODEL_KINDS[1] else "HuggingFaceTB/SmolLM2-135M-Instruct"
        st.text_input("Model path or hub id", key=f"{key}.text", placeholder=placeholder,
                      label_visibility="collapsed")


def _render_rewards(key: str, f: dict[str, Any]) -> None:
    st.multiselect(label(f["name"]), list(REWARD_CHOICES), key=f"{key}.names", help=f["help"],
                   format_func=lambda n: REWARD_CHOICES.get(n, n))
    names = st.session_state.get(f"{key}.names", [])
    if names:
        cols = st.columns(len(names))
        for col, n in zip(cols, names):
            wkey = f"{key}.w.{n}"
            if wkey not in st.session_state:
                st.session_state[wkey] = 1.0
            col.number_input(f"Weight of {plain(n)}", key=wkey, step=0.1, format="%g")  # n can come from a preset
    if "bias_rm" in names:
        _render_reward_card(st.session_state.get(f"{key}.params", {}).get("bias_rm", {}).get("path"))


def _render_trackers(algorithm: str, key: str, help_: str) -> None:
    """The trackers installed on this machine to choose from (a clone's choice stays listed, and submitting it says
    what to install); the ones missing with their install command; the trackio dashboard's command once chosen."""
    from engine.runs.trackers import TRACKERS, available_trackers, dashboard_command, install_hint

    chosen = [n for n in st.session_state.get(key) or [] if n in TRACKERS]
    st.session_state[key] = chosen
    options = available_trackers()
    options += [n for n in chosen if n not in options]
    missing = [n for n in TRACKERS if n not in options]
    note = (" Not installed here: " + "; ".join(f"{n} (`{install_hint(n)}`)" for n in missing) + ".") if missing else ""
    st.multiselect(label("trackers"), options, key=key, help=help_ + note, disabled=not options,
                   placeholder="Choose trackers" if options else "None installed")
    if "trackio" in chosen:
        project = str(st.session_state.get(form_key(algorithm, "tracker_project")) or "bias-studio")
        st.caption("Watch it in trackio, once it runs:")
        st.code(dashboard_command(project), language="bash")


@st.cache_data(show_spinner=False, max_entries=8, ttl=60)
def _reward_info(path: str | None) -> Any:
    from engine.rewards.info import reward_model_info

    return reward_model_info(path)


def _render_reward_card(path: Any) -> None:
    """The active bias reward's validation table and model card, so a user sees what it measures and where it
    is weak before queueing a run."""
    import pandas as pd

    from engine.rewards.info import card_summary, validation_rows
    from engine.submission import path_problems

    if path is not None and (not isinstance(path, str) or
                             path_problems({"rewards": [{"name": "bias_rm", "params": {"path": path}}]}, web=True)):
        return  # a server path the web app may not read: not even its card
    try:
        info = _reward_info(path)
    except (OSError, ValueError) as e:
        st.caption(f"Bias reward model: no card ({plain(e)})")
        return
    with st.expander(f"Bias reward: what it measures and how it was validated ({plain(info.label)})",
                     icon=":material/fact_check:"):
        for note in info.notes:
            st.warning(plain(note))
        if info.validation:
            st.caption(f"`studio reward check` of {plain(str(info.validation.get('created', '?'))[:10])}: "
                       "(a) hand-written direction suite, (b) BBQ eval answers, (c) held-out StereoSet AUC, "
                       "(d) neutral sentences about groups.")
            st.dataframe(pd.DataFrame(validation_rows(info.validation)), hide_index=True)
        if info.card:
            if info.shipped:  # the studio's own card: its markdown is ours
                st.markdown(card_summary(info.card))
            else:  # a user's folder: its card is their text
                st.text(card_summary(info.card))


def render_field(algorithm: str, f: dict[str, Any], problems: Mapping[str, str], *,
                 dataset_choices: list[str] | None = None, run_choices: list[tuple[int, str, int]] | None = None
                 ) -> None:
    name, kind, help_ = f["name"], _schema_kind(f["schema"]), f["help"]
    key = form_key(algorithm, name)
    if name in ("model", "model_a", "model_b"):
        _render_model(key, f, run_choices)
    elif name == "dataset" and dataset_choices:
        if st.session_state.get(key) not in dataset_choices:
            st.session_state[key] = dataset_choices[0]
        st.selectbox(label(name), dataset_choices, key=key, help=help_)
    elif kind == "rewards":
        _render_rewards(key, f)
    elif name == "trackers":
        _render_trackers(algorithm, key, help_)
    elif name == "reward" and kind == "str":
        if st.session_state.get(key) not in REWARD_CHOICES:
            st.session_state[key] = next(iter(REWARD_CHOICES))
        st.selectbox(label(name), list(REWARD_CHOICES), key=key, help=help_,
                     format_func=lambda n: REWARD_CHOICES.get(n, n))
    elif kind == "bool":
        st.checkbox(label(name), key=key, help=help_)
    elif kind == "enum":
        st.selectbox(label(name), f["schema"]["enum"], key=key, help=help_)
    elif kind == "list_enum":
        st.multiselect(label(name), f["schema"]["items"]["enum"], key=key, help=help_)
    elif kind == "int":
        st.number_input(label(name), key=key, step=1, help=help_)
    elif kind == "float":
        st.number_input(label(name), key=key, step=_float_step(float(f["default"] or 0)), format="%g", help=help_)
    elif kind == "list_str":
        st.text_input(label(name), key=key, help=help_ + " Comma-separated.")
    else:
        st.text_input(label(name), key=key, help=help_)
    msg = field_problem(problems, name)
    if msg:
        st.error(f"**{label(name)}** {plain(msg)}", icon=":material/error:")  # messages quote the typed value


def _shown(algorithm: str, fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fields to draw: those that depend on a switch (LoRA's settings) only while it is on."""
    names = {f["name"] for f in fields}
    ss = st.session_state
    return [f for f in fields if DEPENDS_ON.get(f["name"]) not in names
            or ss.get(form_key(algorithm, DEPENDS_ON[f["name"]]))]


def _section_title(section: str) -> str:
    return "General" if section == "basic" else section.capitalize()


def _by_section(fields: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for f in fields:
        groups.setdefault(f["section"], []).append(f)
    order = {s: i for i, s in enumerate(SECTION_ORDER)}
    return sorted(groups.items(), key=lambda kv: order.get(kv[0], len(order)))


def _rows(fields: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Two fields a row, in order; a pair such as model_a / model_b always shares a row, A on the left."""
    rows: list[list[dict[str, Any]]] = []
    row: list[dict[str, Any]] = []
    names = {f["name"] for f in fields}
    for f in fields:
        pair_start = f["name"].endswith("_a") and f["name"][:-2] + "_b" in names
        if row and (len(row) == 2 or pair_start):
            rows.append(row)
            row = []
        row.append(f)
    if row:
        rows.append(row)
    return rows


def _render_rows(algorithm: str, fields: list[dict[str, Any]], problems: Mapping[str, str],
                 kw: dict[str, Any]) -> None:
    for row in _rows(fields):
        cols = st.columns(2)
        for col, f in zip(cols, row):
            with col:
                render_field(algorithm, f, problems, **kw)


def render_form(algorithm: str, problems: Mapping[str, str], *, dataset_choices: list[str] | None = None,
                run_choices: list[tuple[int, str, int]] | None = None, skip: tuple[str, ...] = ()) -> None:
    """Basic fields by section, then the advanced ones in an expander. Problems show under their field."""
    seed_state(algorithm)
    fields = _shown(algorithm, [f for f in _fields(algorithm) if f["name"] not in skip])
    basic = [f for f in fields if not f["advanced"]]
    advanced = [f for f in fields if f["advanced"]]
    kw = {"dataset_choices": dataset_choices, "run_choices": run_choices}
    for section, fs in _by_section(basic):
        if section != "basic":
            st.markdown(f"**{section.capitalize()}**")
        _render_rows(algorithm, fs, problems, kw)
    bad_advanced = any(field_problem(problems, f["name"]) for f in advanced)
    with st.expander("Advanced settings", expanded=bad_advanced):
        for section, fs in _by_section(advanced):
            st.markdown(f"**{_section_title(section)}**")
            _render_rows(algorithm, fs, problems, kw)
    known = {f["name"] for f in _fields(algorithm)} | {"algorithm", "config"}
    for k, v in problems.items():  # problems no field shows (e.g. a preset with a removed setting)
        if k.split(".", 1)[0] not in known:
            st.error(f"**{plain(label(k))}** {plain(v)}")
    if "config" in problems:
        st.error(plain(problems["config"]))


def preset_text(data: Mapping[str, Any]) -> str:
    """A config dict as a preset file: the full validated config when it is valid, else the values as typed
    (a half-finished preset can still be saved)."""
    cfg, _ = validate(data)
    return cfg.model_dump_json(indent=2) if cfg is not None else json.dumps(dict(data), indent=2)


def preset_json(algorithm: str) -> str:
    return preset_text(collect(algorithm))


def parse_preset(raw: bytes, allowed: tuple[str, ...]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """(config dict, problems) from a preset file. A dict with problems is still loaded into the form so the
    user sees what to fix; None means the file is not a preset at all (problems["config"] says why)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, {"config": f"the file is not a JSON preset ({e})"}
    if not isinstance(data, dict) or data.get("algorithm") not in allowed:
        return None, {"config": f"the preset names no training algorithm: its 'algorithm' must be one of "
                                f"{', '.join(allowed)}"}
    return data, validate(data)[1]


def algorithm_label(algorithm: str) -> str:
    return ALGORITHM_LABELS.get(algorithm, algorithm)
