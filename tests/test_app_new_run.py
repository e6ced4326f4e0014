"""New-run page: a form generated from the typed configs, validation next to the field, presets, queueing."""

from __future__ import annotations

import json

from db.queue import list_runs
from engine.config import CONFIG_CLASSES, field_help
from tests.app_helpers import open_page, texts


def _widget_keys(at):
    keys = set()
    for kind in ("text_input", "number_input", "checkbox", "selectbox", "multiselect", "radio"):
        keys |= {w.key for w in getattr(at, kind)}
    return keys


def test_every_field_has_a_widget_with_its_help(store):
    at = open_page("views/new_run.py")
    assert not at.exception
    for alg in ("grpo", "gr_grpo", "gr_dpo", "synthetic"):
        at.selectbox(key="new.algorithm").set_value(alg).run()
        assert not at.exception, alg
        keys = _widget_keys(at)
        helps = {w.key: w.help for kind in ("text_input", "number_input", "checkbox", "selectbox")
                 for w in getattr(at, kind)}
        if f"cfg.{alg}.use_lora" in keys:  # LoRA's settings show only with LoRA on
            at.checkbox(key=f"cfg.{alg}.use_lora").check().run()
            keys = _widget_keys(at)
            helps = {w.key: w.help for kind in ("text_input", "number_input", "checkbox", "selectbox")
                     for w in getattr(at, kind)}
        for f in field_help(CONFIG_CLASSES[alg]):
            key = f"cfg.{alg}.{f['name']}"
            assert key in keys or f"{key}.kind" in keys or f"{key}.names" in keys, (alg, f["name"])
            if key in helps:
                assert f["help"] in (helps[key] or ""), (alg, f["name"])
    # The advanced settings sit in an expander, closed when nothing in them is wrong.
    assert any(e.label == "Advanced settings" for e in at.expander)


def test_validation_message_shown_next_to_the_field_and_nothing_queued(store):
    at = open_page("views/new_run.py")
    at.number_input(key="cfg.grpo.group_size").set_value(1).run()
    at.button(key="new.submit").click().run()
    assert list_runs(store) == []
    errors = [e.value for e in at.error]
    assert any("Group size" in e and "at least 2" in e for e in errors), errors
    assert any("not queued" in e for e in errors)
    # Fixing it clears the message and queues the run.
    at.number_input(key="cfg.grpo.group_size").set_value(4).run()
    at.button(key="new.submit").click().run()
    assert not at.exception
    (run,) = list_runs(store)
    assert json.loads(run.config_json)["group_size"] == 4


def test_bad_model_path_is_explained(store, tmp_path):
    at = open_page("views/new_run.py")
    at.radio(key="cfg.grpo.model.kind").set_value("Local folder").run()
    at.text_input(key="cfg.grpo.model.text").set_value(str(tmp_path / "nope")).run()
    at.button(key="new.submit").click().run()
    assert any("Model" in e.value and "does not exist" in e.value for e in at.error)
    assert list_runs(store) == []


def test_submit_synthetic_queues_it_and_opens_its_page(store):
    at = open_page("views/new_run.py")
    at.selectbox(key="new.algorithm").set_value("synthetic").run()
    at.number_input(key="cfg.synthetic.max_steps").set_value(120).run()
    at.text_input(key="cfg.synthetic.name").set_value("my synthetic").run()
    at.button(key="new.submit").click().run()
    assert not at.exception
    (run,) = list_runs(store)
    assert run.name == "my synthetic" and run.total_steps == 120 and run.algorithm == "synthetic"
    # Now on the run page, showing the new run and waiting for its first step.
    assert at.selectbox(key="run.select").value == run.id
    assert "Waiting for the first training step" in texts(at)


def test_dataset_choices_match_the_algorithm_and_preview_shows_groups(store):
    at = open_page("views/new_run.py")
    assert "bbq_pairs" not in at.selectbox(key="cfg.grpo.dataset").options  # pairs are for DPO/IPO
    at.selectbox(key="new.algorithm").set_value("gr_dpo").run()
    assert at.selectbox(key="cfg.gr_dpo.dataset").value == "bbq_pairs"
    assert "Dataset preview: bbq_pairs" in texts(at)
    assert any(e.label.startswith("Age:") for e in at.expander)  # a few examples per group


def test_preset_round_trip_and_bad_presets():
    from app.forms import parse_preset, preset_text
    from engine.config import SyntheticConfig

    text = preset_text({"algorithm": "synthetic", "eta": 0.25, "max_steps": 77, "method": "gr_ipo"})
    data, problems = parse_preset(text.encode(), allowed=("synthetic", "grpo"))
    assert problems == {} and data["eta"] == 0.25 and data["method"] == "gr_ipo"
    assert SyntheticConfig(**{k: v for k, v in data.items() if k != "algorithm"}).max_steps == 77
    # An invalid but well-formed preset still loads, with the problems to show next to the fields.
    data, problems = parse_preset(b'{"algorithm": "synthetic", "eta": -1}', allowed=("synthetic",))
    assert data["eta"] == -1 and "eta" in problems
    for raw, msg in [(b"not json", "not a JSON preset"), (b'{"algorithm": "compare"}', "training algorithm"),
                     (b"[1, 2]", "training algorithm")]:
        data, problems = parse_preset(raw, allowed=("synthetic",))
        assert data is None and msg in problems["config"]


def test_loading_a_preset_fills_the_form(store):
    from app.forms import preset_text

    at = open_page("views/new_run.py")
    at.session_state["new.preset_pending"] = preset_text({"algorithm": "gr_dpo", "eta": 0.05, "max_steps": 33})
    at.run()
    assert not at.exception
    assert at.selectbox(key="new.algorithm").value == "gr_dpo"
    assert at.number_input(key="cfg.gr_dpo.eta").value == 0.05
    assert at.number_input(key="cfg.gr_dpo.max_steps").value == 33


def test_reward_terms_come_with_the_reward_models_card_and_validation_table(store):
    """Next to the reward terms: what the active bias reward measures and where it falls short (issue 11)."""
    from engine.config import GRPOConfig
    from engine.rewards.info import reward_model_info

    at = open_page("views/new_run.py")
    assert not at.exception
    assert at.multiselect(key="cfg.grpo.rewards.names").value == [s.name for s in GRPOConfig().rewards]
    (box,) = [e for e in at.expander if e.label.startswith("Bias reward: what it measures")]
    info = reward_model_info(None)
    shown = " ".join(m.value for m in box.markdown)
    assert "What it measures" in shown  # the shipped model card
    if info.validation is not None and not info.stale:
        (table,) = box.dataframe
        assert "suite overall" in set(table.value["kind"])
        assert {"bias_rm alone", "default GRPO reward"} <= set(table.value["reward"])
    else:
        assert any("studio reward check" in w.value for w in box.warning)


def _in_order(node):
    """Every element of the page in the order it is drawn."""
    yield node
    for k in sorted(getattr(node, "children", {}) or {}):
        yield from _in_order(node.children[k])


def test_form_defaults_labels_sections_and_lora_fields(store):
    """Issue 18 item 8: the form's reward terms are GRPOConfig's defaults; proper labels; the advanced settings
    open with no section called "Basic"; LoRA's settings show only while LoRA is on."""
    from engine.config import GRPOConfig

    at = open_page("views/new_run.py")
    names = at.multiselect(key="cfg.grpo.rewards.names").value
    defaults = GRPOConfig().rewards
    assert names == [r.name for r in defaults] and "refusal" in names
    assert [at.number_input(key=f"cfg.grpo.rewards.w.{r.name}").value for r in defaults] == [r.weight for r in defaults]
    assert at.checkbox(key="cfg.grpo.use_lora").label == "Use LoRA"
    assert not any(w.key.startswith("cfg.grpo.lora_") for w in at.number_input) and not any(
        w.key.startswith("cfg.grpo.lora_") for w in at.text_input)
    at.checkbox(key="cfg.grpo.use_lora").check().run()
    assert at.number_input(key="cfg.grpo.lora_r").label == "LoRA rank"
    (adv,) = [e for e in at.expander if e.label == "Advanced settings"]
    headers = [m.value for m in adv.markdown if m.value.startswith("**")]
    assert headers and "**Basic**" not in headers and headers[0] == "**General**", headers
    cmp = open_page("views/compare.py")
    assert "Model B" in [r.label for r in cmp.radio]


def test_dataset_preview_sits_above_the_queue_button_with_a_plain_caption(store):
    at = open_page("views/new_run.py")
    order = [e for e in _in_order(at.main) if getattr(e, "type", None) in ("subheader", "button")]
    kinds = [("preview" if e.type == "subheader" and "Dataset preview" in str(e.value) else
              "queue" if e.type == "button" and e.key == "new.submit" else None) for e in order]
    assert kinds.index("preview") < kinds.index("queue")
    caption = next(c.value for c in at.caption if c.value.startswith("License:"))
    assert "training split" not in caption and " training rows" in caption and "train:" not in caption


def test_a_loaded_presets_problems_are_not_called_a_refused_queueing(store):
    at = open_page("views/new_run.py")
    at.session_state["new.preset_pending"] = '{"algorithm": "synthetic", "eta": -1}'
    at.run()
    assert not at.exception
    assert not any("not queued" in e.value for e in at.error)
    assert any("preset has 1 setting(s) to change" in w.value for w in at.warning)
    at.button(key="new.submit").click().run()  # now the user tried: it was refused
    assert any("not queued" in e.value for e in at.error) and list_runs(store) == []
