"""Bad inputs at submit time (issue 16): each is refused with one line that says what is wrong and what to change,
through the real doors: parse_config, engine.submission.submit_run (the submit-time checks), the web form, `studio submit`.
Good configs (examples/*.json) still validate, round-trip and queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from db import queue
from db.models import Checkpoint
from engine.config import ConfigError, DPOConfig, SyntheticConfig, config_to_json, parse_config
from engine.data._rows import BUNDLED_DIR
from tests.helpers import ROOT, assert_user_error, run_cli
from engine.submission import submit_run

EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
BBQ_AGE = BUNDLED_DIR / "bbq" / "data" / "Age.jsonl"  # 300 valid BBQ rows


@pytest.fixture(autouse=True)
def _no_allow_list(monkeypatch):
    monkeypatch.delenv("STUDIO_DATA_DIRS", raising=False)
    monkeypatch.delenv("STUDIO_PASSWORD", raising=False)


def refused(data) -> dict[str, str]:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    return e.value.problems


def refused_at_submit(store, cfg, **kw) -> dict[str, str]:
    before = len(queue.list_runs(store))
    with pytest.raises(ConfigError) as e:
        submit_run(store, cfg, **kw)
    assert len(queue.list_runs(store)) == before  # nothing queued
    return e.value.problems


def one_line(msg: str) -> None:
    assert "\n" not in msg and len(msg) < 600, msg


# --------------------------------------------------------------------------------------- parse_config
G, S, D = {"algorithm": "grpo"}, {"algorithm": "synthetic"}, {"algorithm": "dpo"}
NAN, INF = float("nan"), float("inf")

BAD_CONFIGS = [
    # strict types: no text for numbers, no true for 1, no 1e3 for an integer
    ({**G, "group_size": "1000000"}, "group_size", "without quotes"),
    ({**G, "learning_rate": "1e-5"}, "learning_rate", "without quotes"),
    ({**G, "max_steps": True}, "max_steps", "true/false"),
    ({**G, "max_steps": False}, "max_steps", "true/false"),
    ({**G, "use_lora": 1}, "use_lora", "true or false"),
    ({**G, "name": 7}, "name", "must be text"),
    ({**S, "n_train": 1e10}, "n_train", "whole number"),
    ({**S, "n_train": 1e10}, "n_train", "allowed: 10 to 1000000"),
    # finite numbers only
    ({**G, "rewards": [{"name": "bias_rm", "weight": NAN}]}, "rewards.0.weight", "finite number"),
    ({**G, "learning_rate": INF}, "learning_rate", "finite number"),
    ({**S, "beta": NAN}, "beta", "finite number"),
    ({**G, "max_grad_norm": INF}, "max_grad_norm", "finite number"),
    # seeds within numpy's / torch's range
    ({**G, "seed": 2**63}, "seed", "at most 4294967295"),
    ({**G, "seed": 2**32}, "seed", "at most 4294967295"),
    ({**G, "seed": -1}, "seed", "at least 0"),
    # upper bounds on every size, the bound in the message
    ({**S, "n_train": 10**10}, "n_train", "at most 1000000"),
    ({**S, "n_val": 10**10}, "n_val", "at most 1000000"),
    ({**S, "n_test_states": 10**10}, "n_test_states", "at most 1000000"),
    ({**S, "batch_size": 10**6}, "batch_size", "at most 65536"),
    ({**D, "batch_size": 10**6}, "batch_size", "at most 65536"),
    ({**D, "micro_batch_size": 10**6}, "micro_batch_size", "at most 65536"),
    ({**G, "micro_batch_size": 10**6}, "micro_batch_size", "at most 65536"),
    ({**G, "prompts_per_step": 10**6}, "prompts_per_step", "at most 4096"),
    ({**G, "group_size": 10**6}, "group_size", "at most 1024"),
    ({**G, "eval_prompts": 10**9}, "eval_prompts", "at most 100000"),
    ({"algorithm": "eval", "limit": 10**9}, "limit", "at most 1000000"),
    ({"algorithm": "compare", "num_prompts": 10**9}, "num_prompts", "at most 10000"),
    ({**G, "max_new_tokens": 10**9}, "max_new_tokens", "at most 32768"),
    ({**D, "max_length": 10**9}, "max_length", "at most 32768"),
    ({**G, "checkpoint_every": 10**9}, "checkpoint_every", "at most 1000000"),
    ({**G, "warmup_steps": 10**9}, "warmup_steps", "at most 1000000"),
    ({**G, "name": "x" * 300}, "name", "at most 200 characters"),
    ({**G, "rewards": [{"name": "format"}] * 20}, "rewards", "at most 16"),
    # rewards: registered names, parameters each function has, of the right type and value
    ({**G, "rewards": [{"name": "toxicity"}]}, "rewards.0.name", "unknown reward 'toxicity'"),
    ({"algorithm": "compare", "reward": "toxicity"}, "reward", "unknown reward 'toxicity'"),
    ({**G, "rewards": [{"name": "length", "params": {"target": 40}}]}, "rewards.0.params", "has no parameter"),
    ({**G, "rewards": [{"name": "bias_rm", "params": {"batch_sz": 8}}]}, "rewards.0.params", "has no parameter"),
    ({**G, "rewards": [{"name": "length", "params": {"min_words": "8"}}]}, "rewards.0.params", "a whole number"),
    ({**G, "rewards": [{"name": "length", "params": {"softness": NAN}}]}, "rewards.0.params", "finite number"),
    ({**G, "rewards": [{"name": "refusal", "params": {"partial": True}}]}, "rewards.0.params", "must be a number"),
    ({**G, "rewards": [{"name": "length", "params": {"min_words": 50, "max_words": 5}}]}, "rewards.0.params",
     "band [50, 5] is empty"),
    ({**G, "rewards": [{"name": "refusal", "params": {"extra_patterns": ["("]}}]}, "rewards.0.params",
     "not a valid regular expression"),
    ({**G, "rewards": [{"name": "bias_rm", "params": {"batch_size": 0}}]}, "rewards.0.params", "at most 65536"),
    ({**G, "rewards": [{"name": "bias_rm", "params": {"sign": 2}}]}, "rewards.0.params", "sign must be 1 or -1"),
    ({**G, "rewards": [{"name": "bias_rm", "params": {"path": "/no/such/reward-model"}}]}, "rewards.0.params",
     "no config.json"),
    # run references that are not even shaped like one
    ({"algorithm": "compare", "model_a": "run:²"}, "model_a", "run:ID"),
    ({"algorithm": "eval", "model": "run:1e3"}, "model", "run:ID"),
]


@pytest.mark.parametrize("data, field, words", BAD_CONFIGS, ids=[f"{c[1]}:{c[2]}" for c in BAD_CONFIGS])
def test_bad_config_values_are_refused_with_one_line(data, field, words):
    found = refused(data)
    assert field in found, found
    assert words in found[field], found[field]
    one_line(str(ConfigError(found)))


def test_non_utf8_config_text_is_refused():
    found = refused(b'{"algorithm": "grpo", "name": "\xff"}')
    assert "not UTF-8" in found["config"]


def test_json_numbers_stay_accepted_for_float_fields_and_round_trip():
    # JSON has one number type: an integer for a float field is that float, and round-trips exactly.
    cfg = parse_config({**G, "learning_rate": 1, "beta": 0, "rewards": [{"name": "bias_rm", "weight": 2}]})
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float) and cfg.rewards[0].weight == 2.0
    assert parse_config(config_to_json(cfg)) == cfg


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_round_trip_and_queue(path, store):
    cfg = parse_config(path.read_text())
    text = config_to_json(cfg)
    assert parse_config(text) == cfg and config_to_json(parse_config(text)) == text
    run_id = submit_run(store, cfg)
    assert parse_config(queue.get_run(store, run_id).config_json) == cfg


# --------------------------------------------------------------------------------- submit-time checks
def _training_run(store, *, checkpoint: bool) -> int:
    run_id = submit_run(store, DPOConfig(max_steps=2))
    if checkpoint:
        with store.write() as s:
            s.add(Checkpoint(run_id=run_id, step=2, path="/elsewhere/ckpt"))  # the engine's disk, not ours
    return run_id


def test_run_references_must_name_a_training_run_with_a_checkpoint(store):
    synthetic = submit_run(store, SyntheticConfig(max_steps=3))
    fresh = _training_run(store, checkpoint=False)
    trained = _training_run(store, checkpoint=True)
    cases = [
        ({"algorithm": "compare", "model_a": "run:999"}, "model_a", "run 999 does not exist"),
        ({"algorithm": "eval", "model": "run:999"}, "model", "run 999 does not exist"),
        ({"algorithm": "compare", "model_b": f"run:{synthetic}"}, "model_b", "synthetic experiment and has no model"),
        ({"algorithm": "eval", "model": f"run:{fresh}"}, "model", "has no checkpoint yet"),
    ]
    for data, field, words in cases:
        found = refused_at_submit(store, parse_config(data))
        assert words in found[field], (data, found)
        one_line(found[field])
    # A checkpoint recorded by the engine is enough: its folder may live on the engine's machine.
    ok = submit_run(store, parse_config({"algorithm": "compare", "model_b": f"run:{trained}"}))
    assert json.loads(queue.get_run(store, ok).config_json)["model_b"] == f"run:{trained}"


def _bbq_file(tmp_path: Path, bad_lines: dict[int, str], name: str = "bbq.jsonl") -> Path:
    lines = BBQ_AGE.read_text().splitlines()
    for i, text in bad_lines.items():
        lines[i] = text
    out = tmp_path / name
    out.write_text("\n".join(lines) + "\n")
    return out


def test_dataset_with_too_many_bad_rows_is_refused_listing_the_first(store, tmp_path):
    bad = {i: '{"example_id": "seven"}' for i in range(1, 300, 10)}  # 30 of 300 rows: 10 %
    path = _bbq_file(tmp_path, bad)
    found = refused_at_submit(store, DPOConfig(dataset_path=str(path)))["dataset_path"]
    one_line(found)
    assert "30 of 300 rows are malformed" in found and "at most 5%" in found
    assert f"{path} lines 2, 12, 22, 32, 42: field 'example_id' must be an integer" in found
    assert "and 25 more" in found


def test_dataset_with_no_valid_rows_is_refused(store, tmp_path):
    path = tmp_path / "all_bad.jsonl"
    path.write_text("this is not json\n[1, 2]\n{}\n")
    found = refused_at_submit(store, DPOConfig(dataset_path=str(path)))["dataset_path"]
    assert "has no valid rows (3 malformed of 3)" in found and "line 1: not valid JSON" in found


def test_dataset_that_is_not_utf8_is_refused(store, tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(BBQ_AGE.read_bytes()[:2000] + b"\xff\xfe\n")
    found = refused_at_submit(store, DPOConfig(dataset_path=str(path)))["dataset_path"]
    assert "not UTF-8" in found


def test_a_few_bad_rows_are_accepted_and_become_a_warning_event(store, tmp_path):
    path = _bbq_file(tmp_path, {4: "{broken"})  # 1 of 300
    run_id = submit_run(store, DPOConfig(dataset_path=str(path)))
    warnings = [e.message for e in queue.events(store, run_id) if e.level == "warning"]
    assert len(warnings) == 1 and "skipped 1 malformed row(s) of 300" in warnings[0] and "line 5" in warnings[0]


def test_csv_header_is_not_echoed_into_the_error(store, tmp_path):
    secret = tmp_path / "passwords.csv"
    secret.write_text("root:x:0:0:hunter2,admin-token-abc123\nalice,bob\n")
    found = refused_at_submit(store, parse_config({"algorithm": "dpo", "dataset": "goqa_pairs",
                                                   "dataset_path": str(secret)}))["dataset_path"]
    assert "expected columns question, selections, options" in found, found
    assert "hunter2" not in found and "abc123" not in found and "alice" not in found


def test_long_field_values_are_described_not_quoted(store, tmp_path):
    secret = "sk-live-0123456789abcdef0123456789"
    path = tmp_path / "keys.jsonl"
    path.write_text("\n".join(json.dumps({"example_id": secret, "api": secret}) for _ in range(3)) + "\n")
    found = refused_at_submit(store, DPOConfig(dataset_path=str(path)))["dataset_path"]
    assert "field 'example_id' must be an integer, got text of 34 characters" in found, found
    assert secret[:8] not in found


def test_relative_paths_are_stored_absolute(store, tmp_path, monkeypatch, tiny_model_dir):
    data = _bbq_file(tmp_path, {})
    monkeypatch.chdir(tmp_path)
    run_id = submit_run(store, DPOConfig(dataset_path="bbq.jsonl"))
    assert json.loads(queue.get_run(store, run_id).config_json)["dataset_path"] == str(data.resolve())
    link = tmp_path / "model-link"
    link.symlink_to(tiny_model_dir, target_is_directory=True)
    run_id = submit_run(store, parse_config({"algorithm": "grpo", "model": "./model-link"}))
    assert json.loads(queue.get_run(store, run_id).config_json)["model"] == str(Path(tiny_model_dir).resolve())


def test_run_start_records_skipped_rows_as_an_event_and_refuses_a_spoilt_file(tmp_path):
    from engine.data.quality import load_training_rows

    path = _bbq_file(tmp_path, {4: "{broken"})
    events: list[tuple[str, str]] = []
    cfg = DPOConfig(dataset_path=str(path))
    rows = load_training_rows(cfg, lambda message, level: events.append((message, level)))
    assert rows and len(events) == 1 and events[0][1] == "warning" and "line 5" in events[0][0]
    _bbq_file(tmp_path, {i: "{broken" for i in range(0, 300, 2)})  # edited after the submit: half spoilt
    with pytest.raises(ConfigError, match="150 of 300 rows are malformed"):
        load_training_rows(cfg, lambda *_: None)


# ------------------------------------------------------------------------------------ STUDIO_DATA_DIRS
@pytest.fixture
def allowed(tmp_path, monkeypatch):
    inside = tmp_path / "allowed"
    inside.mkdir()
    monkeypatch.setenv("STUDIO_DATA_DIRS", os.pathsep.join([str(tmp_path / "other"), str(inside)]))
    return inside


def test_allow_list_refuses_paths_outside_it(store, tmp_path, allowed, tiny_model_dir):
    outside = _bbq_file(tmp_path, {})
    found = refused_at_submit(store, DPOConfig(dataset_path=str(outside)))["dataset_path"]
    assert "outside the directories allowed by STUDIO_DATA_DIRS" in found
    found = refused_at_submit(store, parse_config({"algorithm": "grpo", "model": str(tiny_model_dir)}))["model"]
    assert "STUDIO_DATA_DIRS" in found
    # A symlink inside an allowed directory that leads out of it is judged by where it leads.
    (allowed / "sneaky.jsonl").symlink_to(outside)
    found = refused_at_submit(store, DPOConfig(dataset_path=str(allowed / "sneaky.jsonl")))["dataset_path"]
    assert "after following symlinks" in found
    inside = _bbq_file(allowed, {})
    assert submit_run(store, DPOConfig(dataset_path=str(inside)))
    # Hub ids and the embedded model are not paths on this machine.
    assert submit_run(store, parse_config({"algorithm": "grpo", "model": "HuggingFaceTB/SmolLM2-135M"}))


def test_password_protected_web_app_takes_no_server_path_without_the_allow_list(store, tmp_path, monkeypatch):
    from app import forms

    monkeypatch.setenv("STUDIO_PASSWORD", "pw")
    existing = _bbq_file(tmp_path, {})
    answers = []
    for path in (existing, tmp_path / "missing.jsonl"):
        run_id, problems = forms.submit(store, {"algorithm": "dpo", "dataset_path": str(path)})
        assert run_id is None
        answers.append(problems["dataset_path"].replace(str(path), "PATH"))
        assert "STUDIO_DATA_DIRS" in answers[-1] and "password-protected" in answers[-1]
    assert answers[0] == answers[1]  # a refused path's existence is not revealed
    run_id, problems = forms.submit(store, {"algorithm": "grpo", "rewards": [
        {"name": "bias_rm", "weight": 1.0, "params": {"path": "/srv/reward-model"}}]})
    assert run_id is None and "password-protected" in problems["rewards.0.params"]
    # The CLI is the operator's door: no allow-list set, no limit.
    assert submit_run(store, DPOConfig(dataset_path=str(existing)))
    # With the allow-list, the web app takes paths inside it.
    monkeypatch.setenv("STUDIO_DATA_DIRS", str(tmp_path))
    run_id, problems = forms.submit(store, {"algorithm": "dpo", "dataset_path": str(existing)})
    assert problems == {} and run_id is not None


def test_web_form_refuses_a_missing_run_reference(store):
    from app import forms

    run_id, problems = forms.submit(store, {"algorithm": "compare", "model_b": "run:999"})
    assert run_id is None and "run 999 does not exist" in problems["model_b"]


# ------------------------------------------------------------------------------------------ the CLI

def test_cli_refuses_bad_files_and_values_in_one_line(db_url, tmp_path):
    env = {"STUDIO_DB_URL": db_url, "STUDIO_DATA_DIRS": "", "STUDIO_PASSWORD": ""}
    latin = tmp_path / "latin1.json"
    latin.write_bytes(b'{"algorithm": "grpo", "name": "caf\xe9"}')
    assert_user_error(run_cli("submit", str(latin), env=env), "not UTF-8")
    cfg = tmp_path / "cmp.json"
    cfg.write_text(json.dumps({"algorithm": "compare", "model_b": "run:999"}))
    assert_user_error(run_cli("submit", str(cfg), env=env), "model_b", "run 999 does not exist")
    cfg.write_text(json.dumps({"algorithm": "grpo", "group_size": "1000000", "seed": 2**63}))
    assert_user_error(run_cli("submit", str(cfg), env=env), "group_size", "without quotes", "seed", "at most")
    assert_user_error(run_cli("submit", str(cfg), "--set", "group_size=4", "--set", "max_steps=true", env=env),
                      "max_steps", "true/false")


def test_cli_unreadable_config_is_one_line(db_url, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from engine import cli

    cfg = tmp_path / "secret.json"
    cfg.write_text("{}")
    real = Path.read_bytes

    def denied(self):  # as chmod 000 would, also when the tests run as root
        if self == cfg:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    out = CliRunner().invoke(cli.app, ["submit", str(cfg), "--db", db_url])
    assert out.exit_code == 2, out.output
    assert "cannot read config file" in out.output and "Permission denied" in out.output
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output


def test_submit_time_checks_import_no_heavy_ml_packages(tmp_path):
    data = _bbq_file(tmp_path, {3: "{broken"})
    code = ("import sys\nfrom db.session import Store\nfrom engine.submission import submit_run\n"
            "from engine.config import parse_config\n"
            f"store = Store('sqlite:///{tmp_path / 'x.db'}')\n"
            "submit_run(store, parse_config({'algorithm': 'dpo', 'dataset_path': %r}))\n"
            "submit_run(store, parse_config({'algorithm': 'grpo', 'rewards': [{'name': 'bias_rm', 'params': "
            "{'batch_size': 8, 'sign': -1}}, {'name': 'refusal', 'params': {'extra_patterns': ['x+']}}]}))\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules)\n"
            "print(heavy); sys.exit(1 if heavy else 0)\n") % str(data)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "STUDIO_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stdout + out.stderr
