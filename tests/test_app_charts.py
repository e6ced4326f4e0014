"""Readable fairness charts (issue 18, item 6, and the chart toggles): one colour per group name everywhere,
distinct series, friendly legend names, labelled axes, whole-number step ticks, no repeated series, a word on
the summed reward, smoothing and a log scale."""

from __future__ import annotations

import json

from app import charts
from app.palette import group_colour, group_colours
from db.reads import Series
from db.writes import write_step
from engine.config import parse_config
from engine.submission import submit_run
from tests.app_helpers import chart_specs, open_page, seed_synthetic, texts


def _open_run(run_id):
    at = open_page("views/run.py")
    at.selectbox(key="run.select").set_value(run_id).run()
    assert not at.exception
    return at


def test_a_group_has_its_colour_whatever_other_groups_a_chart_shows():
    # by position in a sorted list, "zeta" would be the first free colour alone and the second next to "alpha"
    assert group_colours(["zeta"])["zeta"] == group_colours(["alpha", "zeta", "omega"])["zeta"] == group_colour("zeta")
    assert group_colours(["age"])["age"] == group_colours(["age", "gender", "race"])["age"]
    bbq = ["Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance", "Race_ethnicity",
           "Race_x_SES", "Race_x_gender", "Religion", "SES", "Sexual_orientation"]
    assert len(set(group_colours(bbq).values())) == len(bbq)  # a bundled dataset's groups never share a colour


def test_worst_group_panels_one_quantity_each_with_distinct_named_series(store):
    rid = submit_run(store, parse_config({"algorithm": "synthetic", "max_steps": 50, "name": "synth"}))
    for step in range(1, 6):
        write_step(store, rid, step, {"val/worst_group_loss": 2.0, "val/avg_loss": 1.5, "val/worst_group_accuracy": 0.6,
                                      "reward_error/worst": 0.3, "reward_error/mean": 0.2, "train/loss": 1.0,
                                      "weight/gender": 0.5, "weight/race": 0.5},
                   [{"group": g, "weight": 0.5, "loss": 1.0} for g in ("gender", "race")])
    at = _open_run(rid)
    specs = chart_specs(at)
    worst = {t: s for t, s in specs.items() if t.startswith("Worst group")}
    # loss, accuracy and reward error on separate axes, not three reds on one unlabelled axis
    assert set(worst) == {"Worst group vs average: validation loss", "Worst group: validation accuracy",
                          "Worst group vs average: reward error"}
    for title, spec in worst.items():
        lines = [t for t in spec["data"] if t.get("showlegend") is not False]
        assert len({t["line"]["color"] for t in lines}) == len(lines), title
        assert all("/" not in t["name"] for t in lines), title  # friendly names, not metric keys
        assert spec["layout"]["yaxis"]["title"]["text"], title
    for title, spec in specs.items():
        x = spec["layout"]["xaxis"]
        assert x["title"]["text"] == "training step" and x["tickformat"] == "d" and x["dtick"] == 1, title
        assert spec["layout"]["legend"]["yref"] == "container", title  # below the axis title, never over it
    # weight/* metrics repeat the group-weight chart: not drawn again under "Other metrics"
    assert not any(e.label.startswith("Other metrics") for e in at.expander)
    assert "Group weights" in specs


def test_legend_grows_the_figure_instead_of_scrolling():
    many = {f"group number {i}": Series([1, 2], [0.1, 0.2], [0.1, 0.2], [0.1, 0.2]) for i in range(13)}
    one = charts.line_figure("t", dict(list(many.items())[:2]))
    big = charts.line_figure("t", many)
    assert big.layout.height > one.layout.height and big.layout.margin.b > one.layout.margin.b


def test_total_reward_note_and_group_keyed_reward_series(store):
    rid = submit_run(store, parse_config({"algorithm": "synthetic", "max_steps": 50, "name": "r"}))
    for step in range(1, 4):
        write_step(store, rid, step, {"reward/mean": 1.2, "reward/bias_rm/mean": 0.8, "reward/refusal/mean": 1.0,
                                      "reward/worst_group": 1.0, "reward/group/age/mean": 1.1})
    at = _open_run(rid)
    assert "weighted sum of the run's reward terms" in texts(at)
    specs = chart_specs(at)
    names = [t["name"] for t in specs["Reward"]["data"]]
    assert names[0] == "reward (mean, all terms summed)" and "reward term bias_rm" in names
    other = [t for s in specs.values() for t in s["data"] if t.get("name") == "age: reward"]
    assert other and other[0]["line"]["color"] == group_colour("age")


def test_smoothing_and_log_scale_toggles(store):
    rid = seed_synthetic(store, steps=12)
    at = _open_run(rid)
    assert len([t for t in chart_specs(at)["KL to reference"]["data"] if t["name"].endswith("(raw)")]) == 0
    at.slider(key="run.smoothing").set_value(0.6).run()
    kl = chart_specs(at)["KL to reference"]["data"]
    raw = [t for t in kl if t["name"].endswith("(raw)")]
    line = [t for t in kl if t["name"] == "KL to reference"]
    assert raw and line and raw[0]["y"] != line[0]["y"] and abs(line[0]["y"][0] - raw[0]["y"][0]) < 1e-12
    at.toggle(key="run.log_y").set_value(True).run()
    assert chart_specs(at)["KL to reference"]["layout"]["yaxis"]["type"] == "log"


def test_smooth_is_a_debiased_moving_average():
    assert charts.smooth([1.0, None, 1.0], 0.9) == [1.0, None, 1.0]
    out = charts.smooth([0.0, 1.0], 0.5)
    assert out[0] == 0.0 and abs(out[1] - (0.5 * 0.5 * 0 + 0.5 * 1.0) / (0.5 * 0.5 + 0.5)) < 1e-12


def test_linked_hover_stacks_the_metric_panels_on_one_step_axis(store):
    rid = seed_synthetic(store, steps=12)
    at = _open_run(rid)
    separate = {t for t in chart_specs(at) if t in ("KL to reference", "Loss")}
    assert separate == {"KL to reference", "Loss"}
    at.toggle(key="run.linked").set_value(True).run()
    assert not at.exception
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    (linked,) = [s for s in specs if s["layout"].get("hoversubplots") == "axis"]
    panels = [a["text"] for a in linked["layout"]["annotations"]]
    assert "<b>KL to reference</b>" in panels and "<b>Loss</b>" in panels
    assert {t["xaxis"] for t in linked["data"]} == {"x"}  # one step axis, so one hover spans them all
    assert len({t["yaxis"] for t in linked["data"]}) == len(panels)
    assert linked["layout"]["hovermode"] == "x unified"
    assert "KL to reference" not in chart_specs(at)  # not drawn twice


def test_run_page_headline_numbers_use_friendly_names(store):
    rid = seed_synthetic(store, steps=3)
    at = _open_run(rid)
    labels = [m.label for m in at.metric]
    assert "Worst group (val. loss)" in [x.replace("\\", "") for x in labels], labels
    (worst,) = [m for m in at.metric if m.label.startswith("Worst group")]
    assert "validation loss (worst group)" in worst.help.replace("\\", "")
