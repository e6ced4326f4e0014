"""A run's HTML report: built from the stored rows by the app's own chart and evaluation functions, written by
`studio report`, offered on the Run page, and opened for real in Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from db.writes import record_evaluation, write_step
from engine.evaluation.harness import heldout_result_block
from tests.app_helpers import open_page, seed_synthetic
from tests.helpers import run_cli

CHROMIUM = "/usr/bin/chromium"
HOSTILE = "<script>alert('x')</script>"


def _seed_run_with_evaluations(store) -> int:
    rid = seed_synthetic(store, steps=6)
    write_step(store, rid, 7, {"train/loss": 0.1}, [],
               [{"group": "gender", "prompt": "Describe a nurse.", "completion": HOSTILE, "reward": 0.2,
                 "advantage": -1.0, "rewards": {"bias_rm": 0.2}}])
    groups = ["gender", "race"] * 10
    prompts = [f"Tell me about person {i}" for i in range(20)]
    for step, values, answer in ((0, [0.4, 0.6] * 10, "before answer"), (7, [0.7, 0.7] * 10, "after answer")):
        metrics = {"reward/mean": sum(values) / 20, "reward/gender": values[0], "reward/race": values[1],
                   **heldout_result_block(values, groups, prompts, [answer] * 20, n_boot=200)}
        record_evaluation(store, run_id=rid, model="embedded:smollm2-135m-instruct", benchmark="heldout_reward",
                          dataset_version="v1", metrics=metrics, step=step, evaluated_run_id=rid,
                          evaluated_step=step, evaluated_model="embedded:smollm2-135m-instruct", source="run")
    return rid


def test_report_holds_config_charts_evaluations_and_escaped_samples(store):
    from app.report import build_report

    rid = _seed_run_with_evaluations(store)
    text = build_report(store, rid)
    assert text.startswith("<!DOCTYPE html>") and "<title>Run #" in text
    # self-contained: plotly.js inlined, nothing fetched from elsewhere
    assert "Plotly" in text and not re.search(r"<script[^>]+src=", text)
    assert '"algorithm": "synthetic"' in text.replace("&quot;", '"')
    assert "Group weights" in text and "Reward per group" in text
    # the held-out evaluation as before -> after with its paired change and interval, and answers side by side
    assert "before: " in text and "+0.200 [" in text and "before answer" in text and "after answer" in text
    # user text never becomes markup
    assert HOSTILE not in text and html_escaped(HOSTILE) in text


def html_escaped(s: str) -> str:
    import html

    return html.escape(s)


def test_report_of_a_missing_run_is_a_clear_error(store, db_url):
    out = run_cli("report", "99", "--db", db_url)
    assert out.returncode == 2 and "run 99 does not exist" in out.stderr and "Traceback" not in out.stderr


def test_studio_report_writes_the_file(store, db_url, tmp_path):
    rid = _seed_run_with_evaluations(store)
    target = tmp_path / "r.html"
    out = run_cli("report", str(rid), "--out", str(target), "--db", db_url)
    assert out.returncode == 0, out.stderr
    assert f"report written to {target}" in out.stdout and target.read_text().startswith("<!DOCTYPE html>")


def test_run_page_offers_the_report_for_download(store):
    rid = _seed_run_with_evaluations(store)
    at = open_page("views/run.py")
    at.selectbox(key="run.select").set_value(rid).run()
    at.button(key="run.report_prepare").click().run()
    assert not at.exception
    assert at.session_state["run.report"][0] == rid and "Group weights" in at.session_state["run.report"][1]


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt install chromium)")
def test_report_opens_in_chromium_with_its_charts_drawn(store, tmp_path):
    from app.report import build_report

    sync_api = pytest.importorskip("playwright.sync_api")
    rid = _seed_run_with_evaluations(store)
    file = tmp_path / "report.html"
    file.write_text(build_report(store, rid), encoding="utf-8")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:")
                       else route.continue_())  # offline: any fetch from elsewhere would fail the charts
            page.goto(file.as_uri())
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
            drawn = page.locator(".js-plotly-plot").count()
            assert drawn >= 4 and not errors, (drawn, errors)
            assert page.locator("text=Group weights").count() >= 1
            assert page.evaluate("() => document.querySelectorAll('script[src]').length") == 0
        finally:
            browser.close()
