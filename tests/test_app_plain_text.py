"""User text (run names, errors, events, samples, comparison texts, model names, group labels) is shown as
written, never interpreted as markdown or HTML: an image in a run name must not make every viewer's browser
fetch it, and `**bold**`, links, headings, `:red[...]`, `:material/...:` and `$math$` stay literal."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import update

from app.charts import comparison_bar_figure, line_figure, plotly_plain
from app.widgets import plain
from db.models import Run, RunStatus
from db.queue import add_event, finish_run
from db.reads import Series
from db.writes import record_checkpoint, record_evaluation, write_comparison, write_step
from engine.config import parse_config
from tests.app_helpers import chart_specs, open_page, shown_text
from engine.submission import submit_run

IMG = "![img](http://example.invalid/x.png)"
PAYLOAD = (f"{IMG} **bold** [link](http://example.invalid) <img src=x> :red[alert] :material/home: "
           ":material_home: :smile: :streamlit: $x^2$ a -> b https://example.invalid/raw www.example.invalid "
           "me@example.invalid &amp; `code` ~~strike~~ | a | b |")
# Run names are at most 200 characters.
NAME = f"{IMG} **bold** [link](http://example.invalid) <img src=x> :red[alert] :material/home: $x^2$ # h"
MULTILINE = f"{PAYLOAD}\n# heading\n- item\n1. first\n> quote\n    indented\n\n===\n<script>alert(1)</script>"
GROUP = "<b>grp</b> <a href='http://example.invalid'>:red[g]</a>"
MODEL_A = "/models/**a**/![m](http://example.invalid/m.png)"
MODEL_B = "hub/<img src=x>:material/home:"

# What Streamlit's markdown makes of text *after* parsing (its frontend bundle, 1.67): icons, the logo,
# emoji shortcodes, GFM literal autolinks, typographic arrows. Applied to the rendered text, none may match.
STREAMLIT_TEXT_REWRITES = [re.compile(p) for p in (
    r":material_(\w+):", r":streamlit:", r":\+1:|:-1:|:[\w-]+:", r"(https?://|www(?=\.))([-.\w]+)",
    r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", r"(^|\s)(<->|->|<-|--|>=|<=|~=)(\s|$)")]
MARKDOWN_KINDS = ("markdown", "caption", "info", "warning", "error", "success", "title", "header", "subheader",
                  "toast")
LABEL_KINDS = ("selectbox", "multiselect", "expander", "tabs", "metric", "button", "checkbox", "number_input",
               "text_input", "radio", "toggle")


def _flat(text: str) -> str:
    return " ".join(text.replace("\u2060", "").replace("\xa0", " ").split())


def _markdown_values(at) -> list[str]:
    out = [str(e.value) for kind in MARKDOWN_KINDS for e in getattr(at, kind)]
    for kind in LABEL_KINDS:  # widget, expander, tab and metric labels are markdown as well
        out += [str(e.label) for e in getattr(at, kind) if getattr(e, "label", None)]
    return out


def _assert_no_live_markup(at) -> None:
    """No markdown element on the page carries the payloads in a form a renderer would interpret."""
    values = _markdown_values(at)
    assert values
    for v in values:
        assert "![" not in v and "](" not in v, v
        assert not re.search(r"(?<!\\)<(img|b>|a |script)", v), v
        assert "**bold**" not in v and ":red[alert]" not in v and ":material/home:" not in v, v
        assert not re.search(r"(?<!\\)\$x", v), v
        lines = v.split("\n")
        lines = lines[1:] if lines[0].startswith("#") else lines  # past the page's own heading line
        assert not any(re.match(r"#|- |1\. |> |===", ln) for ln in lines), v
    for el in at.get("markdown"):  # no HTML is let through anywhere near user text
        assert not el.proto.allow_html, el.proto.body


def _assert_shown(at, text: str) -> None:
    """Some markdown element shows ``text`` literally (as a markdown renderer displays it)."""
    shown = [_flat(shown_text(v)) for v in _markdown_values(at)]
    assert any(_flat(text) in s for s in shown), (text, shown)


def _seed_run(store, tmp_path) -> int:
    rid = submit_run(store, parse_config({"algorithm": "synthetic", "max_steps": 10, "name": NAME}))
    with store.write() as s:
        cfg = json.loads(s.get(Run, rid).config_json)
        cfg["model"] = MODEL_A  # what the header shows as the run's model
        s.execute(update(Run).where(Run.id == rid).values(config_json=json.dumps(cfg)))
        add_event(s, rid, MULTILINE, level="warning")
    for step in (1, 2):
        write_step(store, rid, step, {"train/loss": 1 / step},
                   [{"group": GROUP, "weight": 0.5, "loss": 0.3}, {"group": "race", "weight": 0.5, "loss": 0.2}],
                   [{"group": GROUP, "prompt": MULTILINE, "completion": PAYLOAD, "reward": 0.5, "advantage": 0.1,
                     "rewards": {"bias_rm": 0.5}}])
    ck = tmp_path / "ck ![c](c.png) **b**"
    ck.mkdir()
    record_checkpoint(store, rid, 2, str(ck))
    finish_run(store, rid, RunStatus.failed, error=MULTILINE)
    return rid


def test_runs_page_shows_user_text_literally(store, tmp_path):
    rid = _seed_run(store, tmp_path)
    queued = submit_run(store, parse_config({"algorithm": "synthetic", "max_steps": 10, "name": NAME}))
    at = open_page()
    assert not at.exception
    at.selectbox(key="runs_selected").set_value(rid).run()
    assert not at.exception
    _assert_no_live_markup(at)
    _assert_shown(at, f"#{queued} {NAME}")  # the queue row
    _assert_shown(at, f"error: {MULTILINE.splitlines()[0]}")  # the selected run's status line
    _assert_shown(at, f"Delete run #{rid} {NAME} with all")
    table = at.dataframe[0].value
    assert table[table["ID"] == rid].iloc[0]["Name"] == NAME  # a dataframe cell is plain text already


def test_run_page_shows_user_text_literally(store, tmp_path):
    rid = _seed_run(store, tmp_path)
    at = open_page("views/run.py")
    at.selectbox(key="run.select").set_value(rid).run()
    assert not at.exception
    _assert_no_live_markup(at)
    _assert_shown(at, f"#{rid} {NAME}")
    _assert_shown(at, f"model {MODEL_A}")
    _assert_shown(at, f"The run failed: {MULTILINE}")
    # The error keeps its lines: each shows as a line of text, none opens a heading, list or quote.
    err = next(e.value for e in at.error if "The run failed" in e.value)
    assert shown_text(err).split("\n")[1:4] == ["# heading", "- item", "1. first"]
    events = next(d.value for d in at.dataframe if "message" in d.value.columns)
    assert MULTILINE in list(events["message"])
    sample_df = next(d.value for d in at.dataframe if "completion" in d.value.columns)
    assert set(sample_df["prompt"]) == {MULTILINE} and set(sample_df["completion"]) == {PAYLOAD}
    ckpts = next(d.value for d in at.dataframe if "path" in d.value.columns)
    assert str(tmp_path / "ck ![c](c.png) **b**") in list(ckpts["path"])
    # Plotly reads HTML in trace names: the group label arrives as entities.
    weights = chart_specs(at)["Group weights"]
    assert plotly_plain(GROUP) in [t["name"] for t in weights["data"]]
    assert all("<b>" not in t.get("name", "") for t in weights["data"])


def test_compare_page_shows_user_text_literally(store):
    cid = submit_run(store, parse_config({"algorithm": "compare", "name": NAME}))
    rows = []
    for i, g in enumerate([GROUP, "race"]):
        for side, model, reward in (("a", MODEL_A, 0.25), ("b", MODEL_B, 0.75)):
            rows.append({"prompt_index": i, "group": g, "prompt": MULTILINE, "side": side, "model": model,
                         "completion": f"{PAYLOAD} {side}", "reward": reward})
    write_comparison(store, cid, rows)
    finish_run(store, cid, RunStatus.failed, error=MULTILINE)
    trained = submit_run(store, parse_config({"algorithm": "synthetic", "max_steps": 10, "name": NAME}))
    write_step(store, trained, 1, {"train/loss": 1.0}, [])
    record_evaluation(store, run_id=None, model=MODEL_B, benchmark="bbq", dataset_version="v1",
                      metrics={"accuracy": 0.5})
    at = open_page("views/compare.py")
    assert not at.exception
    assert at.selectbox(key="cmp.job").value == cid
    _assert_no_live_markup(at)
    _assert_shown(at, GROUP)  # the group heading
    _assert_shown(at, f"Prompt 0. {MULTILINE}")
    _assert_shown(at, f"A: {MODEL_A} · bias reward 0.25")
    _assert_shown(at, f"B: {MODEL_B} · bias reward 0.75")
    _assert_shown(at, MULTILINE.splitlines()[0])  # the failed job's error beside its status
    assert f"{PAYLOAD} a" in [t.value for t in at.text]  # completions go through st.text
    bars = chart_specs(at)["Mean bias reward per group (higher = less biased)"]
    assert [t["name"] for t in bars["data"]] == [f"A: {plotly_plain(MODEL_A)}", f"B: {plotly_plain(MODEL_B)}"]
    assert plotly_plain(GROUP) in bars["data"][0]["x"]
    at.selectbox(key="cmp.overlay_key").set_value("train/loss").run()
    overlay = chart_specs(at)["training loss across runs"]
    assert f"#{trained} {plotly_plain(NAME)}" in [t["name"] for t in overlay["data"]]
    evals = next(d.value for d in at.dataframe if "benchmark" in d.value.columns and "id" in d.value.columns)
    assert list(evals["model"]) == [MODEL_B]


def test_new_run_preset_problems_show_keys_and_values_literally(store):
    at = open_page("views/new_run.py")
    # A preset with an unknown setting named like markup, and a reward name the validator quotes back.
    reward = "![r](http://example.invalid/r.png) **b**"
    at.session_state["new.preset_pending"] = json.dumps({"algorithm": "grpo", "rewards": [{"name": reward}], IMG: 1})
    at.run()
    assert not at.exception
    _assert_no_live_markup(at)
    _assert_shown(at, f"{IMG} is not")
    _assert_shown(at, f"unknown reward '{reward}'")


# --- the helpers themselves -------------------------------------------------------------------------------

CASES = [PAYLOAD, NAME, MULTILINE, GROUP, MODEL_A, MODEL_B, "", "plain words", "a\\b\\\\c \\* \\", "  two leading",
         "\tx\n\n\n  y", "ends with a backslash \\", "1) one\n2. two\n+ plus\n* star\n***\n___",
         "| h |\n|---|\n| c |", "<!-- c -->", "&copy; &#65; &lt;", "[^1]\n\n[^1]: note", "x_y_z *a*b* __c__",
         "~~~\nfence\n~~~", "```py\ncode\n```", "<http://example.invalid>", "line\r\nwindows\rmac", ":+1: :-1:",
         "$$\nx\n$$", ":color[x]{foreground=\"red\"} :small[s] :help[h]", "WWW.EXAMPLE.INVALID/x HTTP://X.Y"]


def _expected(text: str, multiline: bool) -> list[str]:
    """The lines a reader should see: as typed, tabs in the indentation as four spaces; trailing blanks of a
    line (and trailing empty lines) are invisible anyway."""
    lines = text.splitlines() if multiline else [" ".join(text.splitlines())]
    out = [ln[:len(ln) - len(ln.lstrip(" \t"))].expandtabs(4) + ln.lstrip(" \t") for ln in lines]
    while out and not out[-1].strip():
        out.pop()
    return [ln.rstrip() for ln in out] or [""]


@pytest.mark.parametrize("text", CASES)
@pytest.mark.parametrize("multiline", [False, True])
def test_plain_round_trips_through_a_markdown_renderer(text, multiline):
    pytest.importorskip("markdown_it")
    from markdown_it import MarkdownIt

    md = plain(text, multiline=multiline)
    # Every markdown-significant character arrives backslash-escaped (the hard breaks are "\\\n" pairs too);
    # the only markup is the no-break spaces of an indentation.
    assert not re.search(r"[\\`*_{}\[\]()#+\-.!|<>~$:&=]", re.sub(r"\\[\s\S]|&nbsp;", "", md)), md
    html = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md.replace(":material/", ":material_"))
    assert set(re.findall(r"</?([a-z0-9]+)", html)) <= {"p", "br"}, html  # no image, link, heading, list, code
    raw = shown_text(md, keep_invisible=True)
    for rewrite in STREAMLIT_TEXT_REWRITES:
        assert not rewrite.search(raw), (rewrite.pattern, raw)
    assert [ln.rstrip() for ln in shown_text(md).split("\n")] == _expected(text, multiline)


def test_plain_keeps_lines_and_indentation_only_when_asked():
    assert plain("a\nb") == "a b"
    assert shown_text(plain("a\n    b", multiline=True)).replace("\xa0", " ") == "a\n    b"


def test_plotly_plain_escapes_html_plotly_reads():
    assert plotly_plain("<b>x</b> & <a href='u'>y</a>") == "&lt;b&gt;x&lt;/b&gt; &amp; &lt;a href='u'&gt;y&lt;/a&gt;"
    fig = line_figure("<i>title</i>", {"<b>g</b>": Series([1], [0.5])}, {"<b>g</b>": "#000000"})
    assert fig.layout.title.text == "&lt;i&gt;title&lt;/i&gt;"
    assert fig.data[0].name == "&lt;b&gt;g&lt;/b&gt;" and fig.data[0].line.color == "#000000"
    bars = comparison_bar_figure(["<b>g</b>"], [0.1], [0.2], "<a>", "b")
    assert list(bars.data[0].x) == ["&lt;b&gt;g&lt;/b&gt;"] and bars.data[0].name == "&lt;a&gt;"
