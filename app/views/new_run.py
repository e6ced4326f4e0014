"""New run: a form generated from the algorithm's typed config, a dataset preview, presets, and the queue button."""

from __future__ import annotations


import pandas as pd
import streamlit as st

from app import charts, forms
from app.auth import require_access
from app.palette import group_colours
from app.state import CLONE_KEY, get_store, open_run
from app.widgets import fmt_duration, plain
from engine.config import CONFIG_CLASSES, TRAINING_ALGORITHMS

# Every page checks access itself, so a page opened by its address never skips the password.
require_access()

ALGO_KEY = "new.algorithm"
PROBLEMS_KEY = "new.problems"
SUBMITTED_KEY = "new.submitted"
PARENT_KEY = "new.parent_id"
PRESET_MSG_KEY = "new.preset_message"
PRESET_PENDING_KEY = "new.preset_pending"
PROBLEMS_FROM_KEY = "new.problems_from"  # "preset" (loaded, not yet queued) or "submit" (the Queue button)
# The product's order: the two GRPO variants, the preference methods, then the synthetic experiment.
ALGORITHMS = [a for a in ("grpo", "gr_grpo", "dpo", "ipo", "gr_dpo", "gr_ipo", "is_dpo", "is_ipo", "synthetic")
              if a in TRAINING_ALGORITHMS]

store = get_store()
ss = st.session_state

if SUBMITTED_KEY in ss:  # queued in the button's callback: go to the new run's live page
    open_run(ss.pop(SUBMITTED_KEY))


def _load_into_form(cfg: dict, parent_id: int | None = None) -> None:
    alg = cfg["algorithm"]
    ss[ALGO_KEY] = alg
    forms.seed_state(alg, cfg, overwrite=True)
    ss[PROBLEMS_KEY] = {}
    ss[PARENT_KEY] = parent_id


if CLONE_KEY in ss:
    clone = ss.pop(CLONE_KEY)
    if clone["config"].get("algorithm") in ALGORITHMS:
        _load_into_form(clone["config"], clone.get("parent_id"))
        st.info(f"Cloned from run #{clone.get('parent_id')}: change what you like, then queue it.",
                icon=":material/content_copy:")


def _apply_preset(raw: bytes, name: str) -> None:
    data, problems = forms.parse_preset(raw, tuple(ALGORITHMS))
    if data is None:
        ss[PRESET_MSG_KEY] = ("error", f"{plain(name)}: {plain(problems['config'])}")
        return
    _load_into_form(data)
    if problems:
        ss[PROBLEMS_KEY] = {data["algorithm"]: problems}
        ss[PROBLEMS_FROM_KEY] = "preset"
        ss[PRESET_MSG_KEY] = ("warning", f"Loaded {plain(name)}; fix the settings marked below before queueing.")
    else:
        ss[PRESET_MSG_KEY] = ("success", f"Loaded preset {plain(name)}.")


def _on_preset_upload() -> None:
    file = ss.get("new.preset_file")
    if file is not None:
        _apply_preset(file.getvalue(), file.name)


if PRESET_PENDING_KEY in ss:  # a preset handed over as text (tests and links use this door)
    _apply_preset(str(ss.pop(PRESET_PENDING_KEY)).encode("utf-8"), "preset")


def _on_submit() -> None:
    alg = ss[ALGO_KEY]
    run_id, problems = forms.submit(store, forms.collect(alg), parent_id=ss.get(PARENT_KEY))
    ss[PROBLEMS_KEY] = {alg: problems}
    ss[PROBLEMS_FROM_KEY] = "submit"
    if run_id is not None:
        ss.pop(PARENT_KEY, None)
        ss[SUBMITTED_KEY] = run_id


st.title("New run")
if ALGO_KEY not in ss:
    ss[ALGO_KEY] = "grpo"
algorithm = st.selectbox("Algorithm", ALGORITHMS, key=ALGO_KEY, format_func=forms.algorithm_label,
                         help="BiasGRPO samples answers and rewards the less biased ones; DPO/IPO learn from "
                              "preference pairs; the GR-variants up-weight the demographic group that is worst off.")
cls = CONFIG_CLASSES[algorithm]
forms.seed_state(algorithm)
st.caption((cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")

def _on_named_preset() -> None:
    from app.presets import bundled_presets

    chosen = {p.key: p for p in bundled_presets()}.get(ss.get("new.named_preset"))
    if chosen is not None:
        _apply_preset(chosen.path.read_bytes(), chosen.label)


with st.expander("Presets: the studio's, or save and load your own", icon=":material/save:"):
    from app.presets import bundled_presets

    named = {p.key: p for p in bundled_presets()}
    pick, load = st.columns([4, 1], vertical_alignment="bottom")
    pick.selectbox("Studio presets", list(named), key="new.named_preset",
                   format_func=lambda k: f"{forms.algorithm_label(named[k].algorithm)}: {named[k].label}",
                   help="Tested starting points, the same files as examples/*.json for `studio submit`. The CPU "
                        "presets are sized for about an hour on an idle 2-core CPU (the BiasGRPO one took 95 "
                        "minutes on a shared one); what they did to the default model, with intervals, is in "
                        "DEBIASING.md.")
    load.button("Load", key="new.named_preset_load", on_click=_on_named_preset)
    st.file_uploader("Load a preset (JSON)", type=["json"], key="new.preset_file", on_change=_on_preset_upload)
    msg = ss.pop(PRESET_MSG_KEY, None)
    if msg:
        getattr(st, msg[0])(msg[1])
    st.download_button("Save this form as a preset", forms.preset_json(algorithm),
                       file_name=f"{algorithm}-preset.json", mime="application/json", key="new.preset_save")

problems = ss.get(PROBLEMS_KEY, {}).get(algorithm, {})
dataset_choices = None
kind = None
if "dataset" in cls.model_fields:
    kind = cls.model_construct().expected_dataset_kind()  # type: ignore[attr-defined]
    from engine.data.registry import DATASETS

    dataset_choices = [n for n, spec in DATASETS.items() if spec.kind == kind]
# The settings of your own file are drawn with its validation summary below, not among the advanced ones.
FILE_FIELDS = ("dataset_path", "prompt_column", "chosen_column", "rejected_column", "group_column")
own_file = bool(dataset_choices) and ss.get(forms.form_key(algorithm, "dataset")) in ("prompts_file", "pairs_file")
forms.render_form(algorithm, problems, dataset_choices=dataset_choices,
                  skip=tuple(n for n in FILE_FIELDS if n in cls.model_fields) if own_file else ())


def estimate_text(data: dict) -> str:
    """How long the run would take here, from similar runs that finished on this engine, or that none is known."""
    from db.reads import time_estimate

    cfg, _ = forms.validate(data)
    config = cfg.model_dump(mode="json") if cfg is not None else dict(data)
    steps = int(config.get("max_steps") or 0)
    est = time_estimate(store, config)
    if est is None:
        return (f"Time estimate: none known yet. No run like this one ({forms.algorithm_label(algorithm)} on "
                f"{plain(config.get('model', 'no model'))} with these batch settings) has finished on this engine; "
                f"its first steps will tell (the Runs page shows an ETA after the first step).")
    setup = f" + about {fmt_duration(est.setup_s)} of setup" if est.setup_s else ""
    like = "identical settings" if est.exact else "the same algorithm and model, other batch settings"
    return (f"Time estimate: about {fmt_duration(est.total_s(steps))} for {steps} steps "
            f"({fmt_duration(est.step_s)} per step{setup}), measured on {len(est.runs)} finished run(s) of "
            f"{like} on this engine.")


SPLIT_NAMES = {"train": "training", "validation": "validation", "val": "validation", "eval": "held-out evaluation",
               "test": "test"}


def preview_caption(p: dict) -> str:
    """License, groups and rows: the training rows once, then the other splits by name (if the set has them)."""
    spec = p["spec"]
    others = [f"{v:,} {SPLIT_NAMES.get(k, k)}" for k, v in p["split_rows"].items() if k != p.get("split", "train")]
    rows = f"{p['rows']:,} training rows" + (f" (and {', '.join(others)})" if others else "")
    return f"License: {spec['license']} · groups: {spec['groups']} · {rows}"


@st.cache_data(show_spinner="Loading the dataset preview...", max_entries=16)
def _preview(name: str) -> dict:
    from engine.data.registry import preview

    return preview(name, per_group=3)


@st.cache_data(show_spinner="Checking the dataset file...", max_entries=8)
def _file_summary(path: str, kind: str, columns: tuple[tuple[str, str], ...], stamp: tuple[float, int]) -> dict:
    """Cached per path, columns and the file's (mtime, size): an edited file is checked again."""
    from engine.data.user_file import summarize

    return summarize(path, kind, dict(columns), per_group=2)


def _on_data_upload() -> None:
    from engine.data.user_file import UserFileError, save_upload

    file = ss.get("new.data_upload")
    if file is None:
        return
    try:
        ss[forms.form_key(ss[ALGO_KEY], "dataset_path")] = str(save_upload(file.name, file.getvalue()))
    except UserFileError as e:
        ss["new.data_upload_error"] = str(e)


def _stamp(path: str) -> tuple[float, int] | None:
    import os

    try:
        st_ = os.stat(path)
    except OSError:
        return None
    if os.path.isdir(path):  # a save_to_disk folder: its newest file and total size
        from pathlib import Path

        files = [p.stat() for p in Path(path).rglob("*") if p.is_file()]
        return (max((s.st_mtime for s in files), default=st_.st_mtime), sum(s.st_size for s in files))
    return (st_.st_mtime, st_.st_size)


def render_own_file(alg: str, kind: str) -> None:
    """Your own dataset file: its path (or an upload), its columns, and what the studio reads from it: rows per
    group and two example rows of each, or the bad rows that would refuse the run."""
    from engine.config import field_help
    from engine.data.user_file import SUFFIXES, UserFileError
    from engine.submission import path_problems

    helps = {f["name"]: f["help"] for f in field_help(cls)}
    st.subheader("Your dataset file")
    st.caption("JSONL, JSON, CSV or Parquet, or a folder written by `datasets`' save_to_disk, in TRL's standard or "
               "conversational layout with a group column. When the run is queued the file is copied into the "
               "studio (its SHA-256 is recorded with the run).")
    st.text_input("Dataset file on the engine machine", key=forms.form_key(alg, "dataset_path"),
                  placeholder="/path/to/data.jsonl", help=helps["dataset_path"])
    st.file_uploader("Or upload it", type=[s.lstrip(".") for s in SUFFIXES], key="new.data_upload",
                     on_change=_on_data_upload, help="Saved under the studio's datasets folder; its path is put in "
                     "the field above.")
    upload_error = ss.pop("new.data_upload_error", None)
    if upload_error:
        st.error(plain(upload_error), icon=":material/error:")
    names = [n for n in FILE_FIELDS[1:] if n in cls.model_fields]
    for col, n in zip(st.columns(len(names)), names):
        col.text_input(forms.label(n), key=forms.form_key(alg, n), help=helps[n])
    for n in FILE_FIELDS:
        msg = forms.field_problem(problems, n)
        if msg:
            st.error(f"**{forms.label(n)}** {plain(msg)}", icon=":material/error:")
    path = str(ss.get(forms.form_key(alg, "dataset_path")) or "").strip()
    if not path:
        st.info("Give the file's path or upload it to see its rows per group.", icon=":material/info:")
        return
    if path_problems({"dataset_path": path}, web=True):
        st.info("This path is outside the directories the web app may read: nothing is shown about it.",
                icon=":material/info:")
        return
    stamp = _stamp(path)
    if stamp is None:
        st.error(f"{plain(path)} does not exist on this machine.", icon=":material/error:")
        return
    columns = tuple((n.removesuffix("_column"), str(ss.get(forms.form_key(alg, n), "")).strip()) for n in names)
    try:
        s = _file_summary(path, kind, columns, stamp)
    except UserFileError as e:
        st.error(f"The run would be refused: {plain(e)}", icon=":material/error:")
        return
    layout = "conversational" if s["conversational"] else "standard"
    st.success(f"{s['rows']:,} rows in {len(s['group_counts'])} groups ({layout} layout) · SHA-256 "
               f"{s['sha256'][:16]}…", icon=":material/check_circle:")
    st.dataframe(pd.DataFrame({"group": list(s["group_counts"]), "rows": list(s["group_counts"].values())}),
                 hide_index=True, key="new.file_counts")
    for group, rows in s["examples"].items():
        with st.expander(f"{plain(group)}: {s['group_counts'][group]} rows, {len(rows)} examples"):
            st.dataframe(pd.DataFrame(rows), hide_index=True)


if own_file:
    render_own_file(algorithm, kind)
elif dataset_choices:
    name = ss.get(forms.form_key(algorithm, "dataset"))
    st.subheader(f"Dataset preview: {name}")
    try:
        p = _preview(name)
    except (ValueError, FileNotFoundError, KeyError) as e:
        st.info(f"No preview for {name}: {plain(e)}", icon=":material/info:")
    else:
        spec = p["spec"]
        st.write(spec["description"])
        st.caption(preview_caption(p))
        colours = group_colours(p["group_counts"])
        counts = pd.DataFrame({"group": list(p["group_counts"]), "rows": list(p["group_counts"].values())})
        import plotly.graph_objects as go

        fig = go.Figure(go.Bar(x=[charts.plotly_plain(g) for g in counts["group"]], y=counts["rows"],
                               marker_color=[colours[g] for g in counts["group"]]))
        fig.update_layout(title={"text": "Rows per group", "x": 0}, height=260, template="plotly_white",
                          margin={"l": 40, "r": 10, "t": 40, "b": 40})
        st.plotly_chart(fig, key="new.preview_counts")
        for group, texts in p["examples"].items():
            with st.expander(f"{plain(group)}: {p['group_counts'].get(group, 0)} rows"):
                for t in texts:
                    st.text(t)


st.caption(estimate_text(forms.collect(algorithm)), help="From the measured step time (time/step) of finished runs "
           "in this studio's store; setup is the time from the engine's claim to the first step.")
if problems and ss.get(PROBLEMS_FROM_KEY) == "preset":  # nobody pressed Queue yet: nothing was refused
    st.warning(f"The loaded preset has {len(problems)} setting(s) to change before it can be queued (marked above).",
               icon=":material/warning:")
elif problems:
    st.error(f"The run was not queued: {len(problems)} setting(s) need a change (marked above).",
             icon=":material/error:")
st.button("Queue run", type="primary", key="new.submit", on_click=_on_submit, icon=":material/play_arrow:")


