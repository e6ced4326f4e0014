"""Your own data (issue 17): prompts and preference pairs in JSONL, JSON, CSV, Parquet and `datasets` save_to_disk
folders, in TRL's standard and conversational layouts with a group column; bad rows refused before queueing with
the file and row; the file copied into the studio under its SHA-256, which the run records; tiny GRPO and DPO runs
on such files through the real runners; the New run form's file section."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from db import queue
from engine.config import ConfigError, parse_config
from engine.data.registry import load_named_splits
from engine.data.user_file import UserFileError, load_rows, summarize
from engine.submission import submit_run
from tests.runs_fixtures import group_rows, grpo_config, metrics_by_step, preference_config, run_in_process

GROUPS = ("north", "south", "east")


@pytest.fixture(autouse=True)
def _no_allow_list(monkeypatch):
    monkeypatch.delenv("STUDIO_DATA_DIRS", raising=False)
    monkeypatch.delenv("STUDIO_PASSWORD", raising=False)


def prompt_rows(n: int = 12, conversational: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        text = f"Tell me about neighbour number {i}."
        prompt = ([{"role": "system", "content": "Be fair."}, {"role": "user", "content": text}]
                  if conversational else text)
        rows.append({"prompt": prompt, "group": GROUPS[i % 3]})
    return rows


def pair_rows(n: int = 12, conversational: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        text, good, bad = f"Who is better at maths, case {i}?", f"It depends on the person ({i}).", f"Group {i}."
        if conversational:
            rows.append({"prompt": [{"role": "user", "content": text}],
                         "chosen": [{"role": "assistant", "content": good}],
                         "rejected": [{"role": "assistant", "content": bad}], "group": GROUPS[i % 3]})
        else:
            rows.append({"prompt": text, "chosen": good, "rejected": bad, "group": GROUPS[i % 3]})
    return rows


def write(rows: list[dict], folder: Path, fmt: str, name: str = "data") -> Path:
    """Write rows the way a user's tools would: pandas for the files, `datasets` for a save_to_disk folder."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if fmt == "jsonl":
        path = folder / f"{name}.jsonl"
        df.to_json(path, orient="records", lines=True)
    elif fmt == "json":
        path = folder / f"{name}.json"
        df.to_json(path, orient="records")
    elif fmt == "csv":
        path = folder / f"{name}.csv"
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        path = folder / f"{name}.parquet"
        df.to_parquet(path, index=False)
    elif fmt == "hf":
        import datasets

        path = folder / name
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    else:
        raise AssertionError(fmt)
    return path


FORMATS = ("jsonl", "json", "csv", "parquet", "hf")
# CSV cells are text: a conversation does not fit one
CONVERSATIONAL_FORMATS = ("jsonl", "json", "parquet", "hf")


# --------------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("fmt", FORMATS)
def test_standard_prompts_and_pairs_in_every_format(tmp_path, fmt):
    prompts = load_rows(write(prompt_rows(), tmp_path, fmt, "prompts"), "prompts")
    assert [(r.prompt, r.group) for r in prompts] == [(r["prompt"], r["group"]) for r in prompt_rows()]
    assert all("messages" not in r.meta for r in prompts)
    pairs = load_rows(write(pair_rows(), tmp_path, fmt, "pairs"), "pairs")
    assert [(p.prompt, p.chosen, p.rejected, p.group) for p in pairs] == [
        (r["prompt"], r["chosen"], r["rejected"], r["group"]) for r in pair_rows()]


@pytest.mark.parametrize("fmt", CONVERSATIONAL_FORMATS)
def test_conversational_prompts_and_pairs_keep_their_messages(tmp_path, fmt):
    prompts = load_rows(write(prompt_rows(conversational=True), tmp_path, fmt, "prompts"), "prompts")
    first = prompts[0]
    assert first.meta["messages"] == prompt_rows(conversational=True)[0]["prompt"]
    assert first.prompt == "Tell me about neighbour number 0."  # the text the reward reads: the last user turn
    pairs = load_rows(write(pair_rows(conversational=True), tmp_path, fmt, "pairs"), "pairs")
    p = pairs[1]
    assert p.meta["messages"] == [{"role": "user", "content": "Who is better at maths, case 1?"}]
    assert p.meta["chosen_messages"] == [{"role": "assistant", "content": "It depends on the person (1)."}]
    assert (p.chosen, p.rejected, p.group) == ("It depends on the person (1).", "Group 1.", "south")


def test_dataset_dict_folder_uses_its_train_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(prompt_rows(6)),
                               "test": datasets.Dataset.from_list(prompt_rows(3))})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(load_rows(tmp_path / "dd", "prompts")) == 6


def test_column_names_come_from_the_config(tmp_path):
    rows = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"], "cohort": r["group"]}
            for r in pair_rows()]
    path = write(rows, tmp_path, "parquet")
    with pytest.raises(UserFileError, match="has no column 'prompt', 'chosen', 'rejected', 'group'.*prompt_column"):
        load_rows(path, "pairs")
    cols = {"prompt": "question", "chosen": "good", "rejected": "bad", "group": "cohort"}
    assert {p.group for p in load_rows(path, "pairs", cols)} == set(GROUPS)
    cfg = parse_config({"algorithm": "gr_dpo", "dataset": "pairs_file", "dataset_path": str(path),
                        "prompt_column": "question", "chosen_column": "good", "rejected_column": "bad",
                        "group_column": "cohort"})
    splits = load_named_splits(cfg.dataset, path=cfg.dataset_path, columns=cols)
    assert sum(len(v) for v in splits.values()) == 12


def test_splits_keep_a_prompt_in_one_split_and_the_eval_split_fixed(tmp_path):
    rows = pair_rows(30)
    rows += [{**r, "chosen": r["chosen"] + " Truly."} for r in rows]  # every prompt in two pairs
    path = write(rows, tmp_path, "jsonl")
    a = load_named_splits("pairs_file", seed=0, path=path)
    b = load_named_splits("pairs_file", seed=5, path=path)
    prompts = {s: {p.prompt for p in v} for s, v in a.items()}
    assert not prompts["train"] & prompts["eval"] and not prompts["train"] & prompts["validation"]
    assert sum(len(v) for v in a.values()) == 60
    assert {p.prompt for p in a["eval"]} == {p.prompt for p in b["eval"]}


# ------------------------------------------------------------------------------------------------ bad rows


def _bad_pairs() -> list[dict]:
    rows = pair_rows(12)
    rows[2]["group"] = None  # no group
    rows[4]["prompt"] = "  "  # empty prompt
    rows[6]["rejected"] = rows[6]["chosen"]  # chosen equal to rejected
    return rows


def test_every_bad_row_is_named_with_file_and_line_in_jsonl(tmp_path):
    rows = _bad_pairs()
    rows[8]["group"] = 7  # a number where the group must be text
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(UserFileError) as e:
        load_rows(path, "pairs")
    msg = str(e.value)
    assert msg.startswith(str(path))
    assert "line 3: no group (column 'group' is missing or empty)" in msg
    assert "line 5: empty prompt (column 'prompt')" in msg
    assert "line 7: 'chosen' equals 'rejected'" in msg
    assert "line 9: group (column 'group') must be text, got 7" in msg
    assert e.value.problems == [(3, e.value.problems[0][1]), (5, e.value.problems[1][1]),
                                (7, e.value.problems[2][1]), (9, e.value.problems[3][1])]


@pytest.mark.parametrize("fmt", ("csv", "parquet", "hf"))
def test_bad_rows_are_named_by_row_in_tabular_formats(tmp_path, fmt):
    path = write(_bad_pairs(), tmp_path, fmt)
    with pytest.raises(UserFileError) as e:
        load_rows(path, "pairs")
    msg = str(e.value)
    assert str(path) in msg and "row 3: no group" in msg and "row 5: empty prompt" in msg
    assert "row 7: 'chosen' equals 'rejected'" in msg


@pytest.mark.parametrize(("row", "words"), [
    ({"prompt": 12, "group": "a"}, "'prompt' must be text or a list of {role, content} messages, got 12"),
    ({"prompt": [{"role": "user"}], "group": "a"}, "'prompt'[0] must be a message"),
    ({"prompt": [{"role": "robot", "content": "hi"}], "group": "a"}, "has the role 'robot'"),
    ({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "group": "a"},
     "must end with a user message"),
    ({"prompt": [], "group": "a"}, "'prompt' is an empty list of messages"),
    ({"prompt": "hi", "group": ["a"]}, "must be text, got a list of 1 item(s)"),
    ({"prompt": "hi"}, "no group"),
    ("just text", "must be an object with named columns"),
])
def test_wrong_types_in_a_prompt_file(tmp_path, row, words):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "fine", "group": "a"}) + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(UserFileError) as e:
        load_rows(path, "prompts")
    assert f"{path} line 3: " in str(e.value) and words in str(e.value), str(e.value)


def test_a_pairs_answer_must_be_assistant_messages_or_text(tmp_path):
    rows = pair_rows(3, conversational=True)
    rows[1]["chosen"] = [{"role": "user", "content": "I'm the user"}]
    rows[2]["rejected"] = 3.5
    path = tmp_path / "p.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(UserFileError) as e:
        load_rows(path, "pairs")
    assert "row 2: 'chosen'[0] has the role 'user': use one of assistant" in str(e.value)
    assert "row 3: 'rejected' must be text or a list of assistant messages, got 3.5" in str(e.value)


def test_many_bad_rows_list_the_first_five_and_count_the_rest(tmp_path):
    rows = [{"prompt": "", "group": "a"}] * 9 + [{"prompt": "ok", "group": "a"}]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(UserFileError, match=r"line 5: empty prompt \(column 'prompt'\); and 4 more bad line\(s\)$"):
        load_rows(path, "prompts")


@pytest.mark.parametrize(("name", "content", "words"), [
    ("p.jsonl", '{"prompt": "a", "group": "g"}\n{"prompt": "b", "gr\n', "line 2: not valid JSON"),
    ("p.json", '{"prompt": "a", "group": "g"}', "must hold a JSON list of row objects"),
    ("p.json", '[{"prompt": "a",', "is not valid JSON"),
    ("p.txt", "prompt,group\na,g\n", "has the extension '.txt'"),
    ("p.csv", b"prompt,group\n\xff\xfe,g\n", "cannot be read as CSV"),
])
def test_unreadable_files_are_refused_with_a_reason(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserFileError, match=words):
        load_rows(path, "prompts")


def test_a_folder_not_written_by_datasets_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl").write_text('{"prompt": "a", "group": "g"}\n')
    with pytest.raises(UserFileError, match="not one written by `datasets`' save_to_disk"):
        load_rows(tmp_path / "d", "prompts")


# ------------------------------------------------------------------------------------------- submit time


def _cfg(path: Path, algorithm: str = "dpo", **over):
    dataset = "prompts_file" if algorithm in ("grpo", "gr_grpo") else "pairs_file"
    return parse_config({"algorithm": algorithm, "dataset": dataset, "dataset_path": str(path), **over})


def _datasets_dir(studio_home: Path) -> list[Path]:
    return sorted(p for p in (studio_home / "datasets").rglob("*") if p.is_file()) if (
        studio_home / "datasets").exists() else []


def test_a_bad_file_is_refused_before_it_is_queued_and_nothing_is_stored(store, studio_home, tmp_path):
    path = write(_bad_pairs(), tmp_path, "parquet")
    with pytest.raises(ConfigError) as e:
        submit_run(store, _cfg(path, "gr_ipo"))
    msg = e.value.problems["dataset_path"]
    assert str(path) in msg and "row 3: no group" in msg and "row 7: 'chosen' equals 'rejected'" in msg
    assert queue.list_runs(store) == [] and _datasets_dir(studio_home) == []


def test_a_file_dataset_needs_its_path():
    with pytest.raises(ConfigError) as e:
        parse_config({"algorithm": "grpo", "dataset": "prompts_file"})
    assert set(e.value.problems) == {"dataset_path"} and "read from your own file" in e.value.problems["dataset_path"]
    with pytest.raises(ConfigError) as e:
        parse_config({"algorithm": "compare", "dataset": "prompts_file"})
    assert "is for training runs" in e.value.problems["dataset"]


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(store, tmp_path, monkeypatch):
    import engine.data.user_file as uf

    path = write(pair_rows(), tmp_path, "jsonl")
    monkeypatch.setattr(uf, "MAX_BYTES", 100)
    monkeypatch.setattr(uf, "read_records", lambda *a: pytest.fail("read a file over the limit"))
    with pytest.raises(ConfigError) as e:
        submit_run(store, _cfg(path))
    assert "over the 0 MiB limit for a dataset file" in e.value.problems["dataset_path"]
    assert queue.list_runs(store) == []


def test_submit_copies_the_file_under_its_hash_and_the_run_records_it(store, studio_home, tmp_path):
    path = write(pair_rows(), tmp_path, "jsonl")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    rid = submit_run(store, _cfg(path))
    stored = json.loads(queue.get_run(store, rid).config_json)
    assert stored["dataset_sha256"] == digest
    copy = Path(stored["dataset_path"])
    assert copy == studio_home / "datasets" / digest / "data.jsonl" and copy.read_bytes() == path.read_bytes()
    # The original can change afterwards: the queued run still reads what was checked.
    path.write_text("")
    assert len(load_rows(copy, "pairs")) == 12
    # A clone points at the same copy, and the same content is stored once.
    from engine.submission import clone_run

    again = json.loads(queue.get_run(store, clone_run(store, rid)).config_json)
    assert (again["dataset_path"], again["dataset_sha256"]) == (str(copy), digest)
    assert _datasets_dir(studio_home) == [copy]


def test_a_save_to_disk_folder_is_copied_whole_and_hashed(store, studio_home, tmp_path):
    path = write(prompt_rows(conversational=True), tmp_path, "hf", "convo")
    rid = submit_run(store, _cfg(path, "grpo"))
    stored = json.loads(queue.get_run(store, rid).config_json)
    from engine.data.user_file import content_hash

    assert stored["dataset_sha256"] == content_hash(path) == content_hash(stored["dataset_path"])
    assert Path(stored["dataset_path"]).parent.name == stored["dataset_sha256"]
    assert len(load_rows(stored["dataset_path"], "prompts")) == 12


def test_a_recorded_hash_that_does_not_match_refuses_the_submit_and_the_run_start(store, tmp_path):
    from engine.data.quality import load_training_rows

    path = write(pair_rows(), tmp_path, "jsonl")
    with pytest.raises(ConfigError) as e:
        submit_run(store, _cfg(path, dataset_sha256="0" * 64))
    assert "clear dataset_sha256" in e.value.problems["dataset_sha256"] and queue.list_runs(store) == []
    rid = submit_run(store, _cfg(path))
    cfg = parse_config(queue.get_run(store, rid).config_json)
    assert len(load_training_rows(cfg, lambda *_: None)) > 0
    Path(cfg.dataset_path).write_text(path.read_text().replace("maths", "chess"))  # the copy edited by hand
    with pytest.raises(ConfigError, match="recorded when the run was queued: it was changed"):
        load_training_rows(cfg, lambda *_: None)


def test_the_studio_copy_is_readable_under_the_allow_list(store, tmp_path, monkeypatch):
    inside = tmp_path / "allowed"
    inside.mkdir()
    path = write(pair_rows(), inside, "csv")
    monkeypatch.setenv("STUDIO_DATA_DIRS", str(inside))
    rid = submit_run(store, _cfg(path))
    from engine.submission import clone_run

    assert clone_run(store, rid) != rid  # the copy lies in the studio home, outside STUDIO_DATA_DIRS
    monkeypatch.setenv("STUDIO_DATA_DIRS", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="outside the directories allowed"):
        submit_run(store, _cfg(path))


def test_summary_counts_rows_per_group_with_two_examples(tmp_path):
    s = summarize(write(pair_rows(12), tmp_path, "parquet"), "pairs")
    assert s["rows"] == 12 and s["group_counts"] == {"east": 4, "north": 4, "south": 4}
    assert [len(v) for v in s["examples"].values()] == [2, 2, 2]
    assert s["examples"]["north"][0] == {"prompt": "Who is better at maths, case 0?",
                                         "chosen": "It depends on the person (0).", "rejected": "Group 0."}


# --------------------------------------------------------------------------------------- chat templates


def test_conversational_rows_are_rendered_with_the_chat_template(tiny_model_dir):
    from engine.data.user_file import parse_row, DEFAULT_COLUMNS
    from engine.models.loading import load_tokenizer
    from engine.runs.preference import tokenize_pairs
    from engine.sampling.base import encode_prompts

    tok = load_tokenizer(str(tiny_model_dir))
    messages = [{"role": "system", "content": "Be fair."}, {"role": "user", "content": "Who is better at maths?"}]
    row = {"prompt": messages, "chosen": [{"role": "assistant", "content": "Nobody by birth."}],
           "rejected": "Boys.", "group": "gender"}
    pair = parse_row(row, "pairs", DEFAULT_COLUMNS)
    out = tokenize_pairs(tok, [pair], max_length=256)
    want_prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert tok.decode(out.prompt[0]) == want_prompt and "Be fair." in want_prompt
    whole = tok.apply_chat_template(messages + row["chosen"], tokenize=False)
    assert tok.decode(out.prompt[0] + out.chosen[0]) == whole  # the template's own end of turn, as TRL renders it
    assert out.rejected[0] == tok("Boys.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert encode_prompts(tok, [messages]) == [out.prompt[0]]


# ------------------------------------------------------------------------------------------ tiny runs


def test_tiny_grpo_run_on_a_conversational_prompt_file(store, tmp_path, tiny_model_dir):
    path = write(prompt_rows(15, conversational=True), tmp_path, "jsonl")
    cfg = grpo_config(str(tiny_model_dir), algorithm="gr_grpo", dataset="prompts_file", dataset_path=str(path),
                      eval_prompts=2)
    rid = run_in_process(store, cfg)
    stored = json.loads(queue.get_run(store, rid).config_json)
    assert stored["dataset_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    m = metrics_by_step(store, rid)
    assert sorted(m) == [0, 1, 2] and m[2]["loss"] is not None
    assert set(group_rows(store, rid)[1]) <= set(GROUPS)


def test_tiny_dpo_run_on_a_parquet_pair_file_with_own_columns(store, tmp_path, tiny_model_dir):
    rows = [{"q": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "who": r["group"]}
            for r in pair_rows(15, conversational=True)]
    path = write(rows, tmp_path, "parquet")
    cfg = preference_config(str(tiny_model_dir), "dpo", dataset="pairs_file", dataset_path=str(path),
                            prompt_column="q", group_column="who", batch_size=3, group_sampling="balanced")
    rid = run_in_process(store, cfg)
    assert json.loads(queue.get_run(store, rid).config_json)["dataset_sha256"] == hashlib.sha256(
        path.read_bytes()).hexdigest()
    m = metrics_by_step(store, rid)
    assert m[1]["margin/mean"] == pytest.approx(0.0, abs=1e-4)  # step 1 starts from the reference
    assert m[2]["loss"] is not None
    assert set(group_rows(store, rid)[2]) == set(GROUPS)


# ---------------------------------------------------------------------------------------------- the form


def test_new_run_form_checks_the_file_and_queues_the_run_with_its_hash(store, tmp_path):
    from tests.app_helpers import open_page, shown_text, texts

    good = write(pair_rows(12), tmp_path, "jsonl", "good")
    bad = write(_bad_pairs(), tmp_path, "jsonl", "bad")
    at = open_page("views/new_run.py")
    at.selectbox(key="new.algorithm").set_value("gr_dpo").run()
    at.selectbox(key="cfg.gr_dpo.dataset").set_value("pairs_file").run()
    assert not at.exception
    assert "Your dataset file" in texts(at)
    at.text_input(key="cfg.gr_dpo.dataset_path").set_value(str(bad)).run()
    errors = " ".join(shown_text(e.value) for e in at.error)
    assert "The run would be refused" in errors and "line 3: no group" in errors, errors
    at.button(key="new.submit").click().run()
    assert queue.list_runs(store) == []
    assert any("line 3: no group" in shown_text(e.value) for e in at.error)

    at.text_input(key="cfg.gr_dpo.dataset_path").set_value(str(good)).run()
    assert not at.exception
    assert "12 rows in 3 groups (standard layout)" in texts(at)
    counts = at.dataframe[0].value
    assert dict(zip(counts["group"], counts["rows"])) == {"east": 4, "north": 4, "south": 4}
    at.button(key="new.submit").click().run()
    assert not at.exception
    (run,) = queue.list_runs(store)
    stored = json.loads(run.config_json)
    assert stored["dataset"] == "pairs_file"
    assert stored["dataset_sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()


def test_new_run_form_takes_an_upload_into_the_studio(store, studio_home):
    from tests.app_helpers import open_page, texts

    data = "\n".join(json.dumps(r) for r in prompt_rows(9)).encode()
    at = open_page("views/new_run.py")
    at.selectbox(key="cfg.grpo.dataset").set_value("prompts_file").run()
    (uploader,) = [u for u in at.file_uploader if u.key == "new.data_upload"]
    uploader.set_value(("mine.jsonl", data, "application/json")).run()
    assert not at.exception
    path = Path(at.text_input(key="cfg.grpo.dataset_path").value)
    assert path.parent.parent == studio_home / "datasets" / "uploads" and path.read_bytes() == data
    assert "9 rows in 3 groups" in texts(at)
    at.button(key="new.submit").click().run()
    (run,) = queue.list_runs(store)
    assert json.loads(run.config_json)["dataset_sha256"] == hashlib.sha256(data).hexdigest()


def test_an_upload_name_cannot_leave_the_uploads_folder(studio_home):
    from engine.data.user_file import save_upload

    path = save_upload("../../mine.jsonl", b'{"prompt": "a", "group": "g"}')
    assert path.parent.parent == studio_home / "datasets" / "uploads" and path.name == "mine.jsonl"
    with pytest.raises(UserFileError, match="must be a file ending in"):
        save_upload("notes.txt", b"x")


def test_a_damaged_save_to_disk_folder_is_refused_with_a_reason(tmp_path):
    from engine.data.types import DataValidationError

    path = write(prompt_rows(), tmp_path, "hf")
    for arrow in path.glob("*.arrow"):
        arrow.write_bytes(b"not arrow")
    with pytest.raises(DataValidationError, match="cannot be read as a `datasets` folder"):
        load_rows(path, "prompts")
