"""Run configs: every bad input is refused with a message naming the field and the fix; JSON round trips exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.config import (CONFIG_CLASSES, ConfigError, GRPOConfig, config_to_json, default_config, field_help,
                           parse_config)
from tests.helpers import ROOT


def problems(data: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    return e.value.problems


@pytest.mark.parametrize("algorithm", sorted(CONFIG_CLASSES))
def test_defaults_validate_and_round_trip(algorithm):
    cfg = default_config(algorithm)
    text = config_to_json(cfg)
    back = parse_config(text)
    assert back == cfg
    assert config_to_json(back) == text
    assert json.loads(text)["algorithm"] == algorithm


def test_round_trip_keeps_awkward_floats_and_nested_rewards():
    cfg = parse_config({"algorithm": "gr_grpo", "learning_rate": 3.0000000000000004e-7, "eta": 0.1 + 0.2,
                        "chi": 1 / 3, "rewards": [{"name": "bias_rm", "weight": 0.7},
                                                  {"name": "length", "weight": 0.3, "params": {"min_words": 40}}]})
    back = parse_config(config_to_json(cfg))
    assert back == cfg
    assert back.learning_rate == 3.0000000000000004e-7 and back.eta == 0.1 + 0.2 and back.chi == 1 / 3
    assert back.rewards[1].params == {"min_words": 40}


def test_every_field_has_help_and_a_section():
    for algorithm, cls in CONFIG_CLASSES.items():
        for f in field_help(cls):
            assert f["help"], f"{algorithm}.{f['name']} has no help text"
            assert f["section"], f"{algorithm}.{f['name']} has no section"


@pytest.mark.parametrize("data, field, words", [
    ({"algorithm": "grpo", "group_size": 1}, "group_size", "at least 2"),
    ({"algorithm": "gr_grpo", "group_size": 0}, "group_size", "at least 2"),
    ({"algorithm": "grpo", "learning_rate": -1e-5}, "learning_rate", "positive"),
    ({"algorithm": "dpo", "learning_rate": 0}, "learning_rate", "positive"),
    ({"algorithm": "grpo", "model": "/no/such/model/folder"}, "model", "does not exist"),
    ({"algorithm": "grpo", "model": "not a model!"}, "model", "unknown model path"),
    ({"algorithm": "grpo", "model": "embedded:gpt-9"}, "model", "unknown embedded model"),
    ({"algorithm": "grpo", "dataset": ""}, "dataset", "is empty"),
    ({"algorithm": "grpo", "dataset": "no_such_dataset"}, "dataset", "unknown dataset"),
    ({"algorithm": "grpo", "dataset": "bbq_pairs"}, "dataset", "needs prompts"),
    ({"algorithm": "gr_dpo", "dataset": "bias_prompts"}, "dataset", "needs pairs"),
    ({"algorithm": "gr_ipo", "eta": 0}, "eta", "step size out of range"),
    ({"algorithm": "gr_dpo", "eta": 50}, "eta", "step size out of range"),
    ({"algorithm": "gr_dpo", "chi": 1.5}, "chi", "at most 1"),
    ({"algorithm": "dpo", "beta": 0}, "beta", "must be positive"),
    ({"algorithm": "grpo", "max_steps": 0}, "max_steps", "at least 1"),
    ({"algorithm": "grpo", "rewards": []}, "rewards", "at least one reward"),
    ({"algorithm": "grpo", "grop_size": 4}, "grop_size", "not a setting"),
    ({"algorithm": "sft"}, "algorithm", "must be one of"),
    ({"max_steps": 3}, "algorithm", "is missing"),
    ({"algorithm": "compare", "model_a": "run:abc"}, "model_a", "run:ID"),
])
def test_bad_values_are_refused_with_field_and_fix(data, field, words):
    found = problems(data)
    assert field in found, found
    assert words in found[field], found[field]


def test_empty_dataset_file_is_refused(tmp_path):
    empty = tmp_path / "prompts.jsonl"
    empty.write_text("")
    found = problems({"algorithm": "grpo", "dataset_path": str(empty)})
    assert "empty file" in found["dataset_path"]


def test_model_folder_without_config_is_refused(tmp_path):
    found = problems({"algorithm": "grpo", "model": str(tmp_path)})
    assert "no config.json" in found["model"]


def test_local_model_folder_and_hub_id_are_accepted(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert parse_config({"algorithm": "grpo", "model": str(tmp_path)}).model == str(tmp_path)
    assert parse_config({"algorithm": "grpo", "model": "HuggingFaceTB/SmolLM2-135M-Instruct"}).model


def test_invalid_json_text_is_refused():
    with pytest.raises(ConfigError) as e:
        parse_config('{"algorithm": "grpo",')
    assert "not valid JSON" in str(e.value)


def test_validation_never_rewrites_values():
    cfg = GRPOConfig(group_size=3, learning_rate=2e-6)
    assert (cfg.group_size, cfg.learning_rate) == (3, 2e-6)
    with pytest.raises(Exception):
        cfg.group_size = 1  # assignment is validated too


def test_config_and_app_import_no_heavy_ml_packages():
    code = ("import sys, engine.config, engine.data.catalog, db.queue, db.writes\n"
            "import importlib, pkgutil, app\n"
            "for m in pkgutil.walk_packages(app.__path__, 'app.'):\n"
            "    if not m.name.endswith('main') and '.views.' not in m.name: importlib.import_module(m.name)\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules)\n"
            "print(heavy); sys.exit(1 if heavy else 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_one_algorithm_spec_per_algorithm_derives_every_table():
    """engine.config.ALGORITHMS is the one list: the config union parses each spec's algorithm into its class,
    and CONFIG_CLASSES, ALGORITHM_LABELS, TRAINING_ALGORITHMS and engine.runs.RUNNERS list exactly the specs, each
    runner a module with execute() (checked by file, so no torch is imported here)."""
    import importlib.util

    from engine.config import ALGORITHM_LABELS, ALGORITHM_SPECS, ALGORITHMS, TRAINING_ALGORITHMS
    from engine.runs import RUNNERS

    names = [spec.name for spec in ALGORITHMS]
    assert len(set(names)) == len(names) == 11
    assert list(CONFIG_CLASSES) == list(ALGORITHM_LABELS) == list(RUNNERS) == list(ALGORITHM_SPECS) == names
    assert set(TRAINING_ALGORITHMS) == set(names) - {"compare", "eval"}
    for spec in ALGORITHMS:
        assert type(parse_config({"algorithm": spec.name})) is spec.config
        source = importlib.util.find_spec(RUNNERS[spec.name]).origin
        assert "\ndef execute(" in open(source).read(), spec.runner
    prefs = {s.name: (s.preference_loss, s.weighting) for s in ALGORITHMS if s.preference_loss}
    assert prefs == {"dpo": ("dpo", "plain"), "ipo": ("ipo", "plain"), "is_dpo": ("dpo", "is"),
                     "is_ipo": ("ipo", "is"), "gr_dpo": ("dpo", "gr"), "gr_ipo": ("ipo", "gr")}
