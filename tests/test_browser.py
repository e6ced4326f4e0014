"""The studio in a real browser (Debian chromium through Playwright) against the real app and engine.

A new user's whole journey in one test (a group-robust GRPO run on the tiny model from an uploaded preset, its
live page, cancel, resume, a comparison and two evaluations queued from the browser, the before/after table), the
password on every page's address, and the pages following the store without a reload. Screenshots of each page
go to test-artifacts/ (and, with STUDIO_UPDATE_SCREENSHOTS=1, to docs/screenshots/).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
SHARED_CACHE = ROOT / "test-artifacts" / "studio_home"

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt install chromium)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(tmp_path, *, password: str | None = None, engine: bool = True):
    """`studio app` (and `studio engine`) on a temp store; yields (url, store)."""
    from db.session import Store

    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    for cache in ("models", "tokenizers", "reward_models"):  # converted once per machine, as conftest shares them
        (SHARED_CACHE / cache).mkdir(parents=True, exist_ok=True)
        if not (home / cache).exists():
            (home / cache).symlink_to(SHARED_CACHE / cache, target_is_directory=True)
    db_url = f"sqlite:///{home / 'studio.db'}"
    env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_DB_URL": db_url}
    env.pop("STUDIO_PASSWORD", None)
    if password:
        env["STUDIO_PASSWORD"] = password
    port = _free_port()
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    procs = [subprocess.Popen([sys.executable, "-m", "engine.cli", "app", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=open(logs / "app.log", "w"), stderr=subprocess.STDOUT)]
    if engine:
        procs.append(subprocess.Popen([sys.executable, "-m", "engine.cli", "engine", "--poll", "0.3"], cwd=ROOT,
                                      env=env, stdout=open(logs / "engine.log", "w"), stderr=subprocess.STDOUT))
    store = Store(db_url)

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    try:
        wait_for(up, timeout=60, what="the web app to listen")
        yield f"http://127.0.0.1:{port}", store
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        store.dispose()
        for f in logs.iterdir():
            print(f"--- {f.name}\n{f.read_text()[-3000:]}")


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _settle(page)
    page.wait_for_timeout(800)  # let plotly finish drawing
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("STUDIO_UPDATE_SCREENSHOTS") == "1":
        dest = ROOT / "docs" / "screenshots"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / path.name)


def _weight_points(page) -> int:
    """Points of the first trace of the group-weight chart, read from the live plotly graph in the page."""
    return page.evaluate("""() => {
        for (const el of document.querySelectorAll('.js-plotly-plot')) {
            const title = el.layout && el.layout.title && el.layout.title.text;
            if (title && title.includes('Group weights') && el.data && el.data.length) return el.data[0].x.length;
        }
        return 0;
    }""")


def _settle(page) -> None:
    """Wait until Streamlit has finished the current script run (no 'Running...' status, no skeletons)."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]') && "
                           "!document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=60_000)


def _select(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option).click()
    _settle(page)


def _fill_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True).first
    box.fill(str(value))
    box.press("Enter")
    _settle(page)


def _grid(page, nth: int = 0) -> list[dict[str, str]]:
    """The rows of the nth st.dataframe on the page, header -> cell text. The grid draws on a canvas; its
    accessibility table (the rows in view) carries the same text."""
    rows = page.evaluate("""(nth) => {
        const grid = document.querySelectorAll('[data-testid="stDataFrame"]')[nth];
        if (!grid) return null;
        return [...grid.querySelectorAll('table tr')].map(tr => [...tr.children].map(c => c.innerText.trim()));
    }""", nth)
    if not rows:
        return []
    head, *body = rows
    return [dict(zip(head, r)) for r in body]


def _grid_index(page, first_header: str, *wanted: str) -> int:
    """Index of the first dataframe whose header row has `first_header` and, for each of `wanted`, a column label
    that starts with it."""
    n = page.locator('[data-testid="stDataFrame"]').count()
    for i in range(n):
        rows = page.evaluate("""(i) => { const g = document.querySelectorAll('[data-testid="stDataFrame"]')[i];
            const tr = g && g.querySelector('table tr'); return tr ? [...tr.children].map(c => c.innerText.trim()) : []; }""", i)
        if first_header in rows and all(any(h.startswith(w) for h in rows) for w in wanted):
            return i
    return -1


def _wait_status(store, run_id: int, status: str, timeout: float = 600) -> None:
    from db.queue import get_run

    def done():
        run = get_run(store, run_id)
        ended = run.status.value in ("failed", "cancelled", "completed") and run.status.value != status
        assert not ended, (f"run {run_id} ended {run.status.value} (wanted {status}; if completed before a cancel, "
                           f"raise JOURNEY_STEPS)", run.error)
        return run.status.value == status

    wait_for(done, timeout=timeout, interval=0.5, what=f"run {run_id} to be {status}")


# Small steps (a few seconds each on a fast machine): the cancel comes at step 1-3, and the rest runs after resume.
JOURNEY_STEPS = 12


def test_the_whole_journey(tmp_path, browser, tiny_model_dir):
    """Issue 18's journey in one go, as a new user makes it, all in the browser: a group-robust GRPO run from an
    uploaded preset -> its live charts, samples and events while it trains -> cancel -> resume to the end -> a
    comparison of the base model with the run -> an evaluation of each from the browser -> the before/after table
    shows both columns with the values the store holds."""
    from app import eval_view
    from db.queue import get_run, list_runs
    from db.reads import evaluations
    from tests.runs_fixtures import metrics_by_step

    tiny = str(tiny_model_dir)
    preset = tmp_path / "journey.json"
    preset.write_text(json.dumps({
        "algorithm": "gr_grpo", "name": "journey gr-grpo", "model": tiny, "dataset": "bias_prompts",
        "max_steps": JOURNEY_STEPS, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8, "sampler": "hf",
        "checkpoint_every": 1, "eval_every": JOURNEY_STEPS, "eval_prompts": 8, "eta": 0.5}))
    with _serve(tmp_path) as (url, store):
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.get_by_text("No runs yet").wait_for()
        _shot(page, "runs-empty")

        # New run: load the preset file the user saved, queue it.
        page.get_by_role("link", name="New run").first.click()
        page.get_by_text("Dataset preview").first.wait_for()
        _shot(page, "new-run")
        presets = page.locator('[data-testid="stExpander"]', has_text="Presets")
        presets.get_by_text("Presets").first.click()
        presets.locator('input[type="file"]').set_input_files(str(preset))
        page.get_by_text("Loaded preset journey.json").wait_for()
        _settle(page)
        assert page.get_by_text("The run was not queued").count() == 0
        page.get_by_role("button", name="Queue run").click()

        # Its page opens and draws the training as it comes; cancel as soon as the first step shows.
        page.locator("h3", has_text="journey gr-grpo").wait_for(timeout=60_000)
        (run,) = list_runs(store)
        try:
            wait_for(lambda: _weight_points(page) > 0, timeout=300, what="the group-weight chart to appear")
        except AssertionError:
            _shot(page, "failure-run-page")
            raise
        url_before = page.url
        page.get_by_role("button", name="Cancel").first.click()
        _wait_status(store, run.id, "cancelled", timeout=300)
        stopped_at = get_run(store, run.id).last_step
        assert stopped_at < JOURNEY_STEPS, "the run ended before the cancel took: raise JOURNEY_STEPS"
        page.get_by_text("cancelled").first.wait_for()

        def settled() -> int | None:
            before = _weight_points(page)
            page.wait_for_timeout(1000)
            return before if before and _weight_points(page) == before else None
        still = wait_for(settled, timeout=30, interval=0.0, what="the chart to take in the run's last steps")
        page.wait_for_timeout(3000)
        assert _weight_points(page) == still and page.url == url_before  # no more refreshes once the run ended
        # What the run did so far is on its page: samples, and in the event log the checkpoints and the cancel
        # (the log is a dataframe: its text lives in the grid's accessibility cells, attached but not shown).
        assert page.get_by_text("No samples logged yet").count() == 0
        page.get_by_text("checkpoint saved at step").first.wait_for(state="attached")
        _shot(page, "run-cancelled")

        # Resume from the same page: the chart follows the rest of the run live, from its checkpoint to the last
        # step, every step once.
        page.get_by_role("button", name="Resume").first.click()
        grown = wait_for(lambda: _weight_points(page) > still and _weight_points(page), timeout=600,
                         what="the chart to gain the resumed run's steps without a reload")
        assert grown > still
        _shot(page, "run-live")
        _wait_status(store, run.id, "completed", timeout=900)
        page.get_by_text("completed").first.wait_for()
        # the held-out point before training (step 0), then every step once: none lost or written twice
        assert sorted(metrics_by_step(store, run.id)) == list(range(JOURNEY_STEPS + 1))
        wait_for(lambda: _weight_points(page) == JOURNEY_STEPS, timeout=60, what="the chart to show every step")
        _shot(page, "run-completed")

        page.get_by_role("link", name="Runs").first.click()
        page.get_by_role("heading", name="Actions").wait_for()
        assert "journey gr-grpo" in page.get_by_role("combobox", name="Run").input_value()
        _shot(page, "runs")

        # Compare: the base model (a local folder) against the run's latest checkpoint, queued from the page.
        page.get_by_role("link", name="Compare").first.click()
        page.get_by_role("button", name="Queue comparison").wait_for()
        page.get_by_role("radiogroup", name="Model A").get_by_text("Local folder").click()
        _settle(page)
        page.get_by_placeholder("/path/to/model-folder").first.fill(tiny)
        page.get_by_placeholder("/path/to/model-folder").first.press("Enter")
        _settle(page)
        _fill_number(page, "Num prompts", 4)
        _fill_number(page, "Max new tokens", 8)
        def queued(algorithm: str, after: int) -> int | None:
            return next((r.id for r in list_runs(store) if r.algorithm == algorithm and r.id > after), None)

        page.get_by_role("button", name="Queue comparison").click()
        cmp_id = wait_for(lambda: queued("compare", run.id), timeout=30, what="the comparison to be queued")
        _wait_status(store, cmp_id, "completed")
        page.get_by_text("Summary per group").wait_for(timeout=60_000)
        assert page.get_by_text(f"B: run #{run.id} journey gr-grpo (step {JOURNEY_STEPS}", exact=False).count() > 0
        _shot(page, "compare")

        # Evaluations from the browser: the base model, then the run's checkpoint, on the held-out bias reward.
        page.get_by_role("tab", name="Evaluations").click()
        page.locator('[data-testid="stExpander"]', has_text="New evaluation").locator("summary").click()
        other = page.get_by_role("textbox", name="Or another model")
        other.fill(tiny)
        other.press("Enter")
        _settle(page)
        bench = page.locator('[data-testid="stMultiSelect"]', has_text="Benchmarks")
        bench.get_by_role("button", name="Clear all").click()
        _settle(page)
        bench.get_by_role("combobox").click()
        page.get_by_role("option", name="Held-out bias reward").click()
        page.keyboard.press("Escape")
        _settle(page)
        _fill_number(page, "Limit (items per benchmark, 0 = all)", 8)
        jobs = []
        for kind in ("A base model", "A run's checkpoint"):
            # (still on the Evaluations tab with the form open: the first job's end must not move the page)
            page.get_by_role("radiogroup", name="Evaluate").get_by_text(kind).click()
            _settle(page)
            page.get_by_role("button", name="Queue evaluation").click()
            jobs.append(wait_for(lambda: queued("eval", jobs[-1] if jobs else cmp_id), timeout=30,
                                 what=f"the evaluation of {kind} to be queued"))
            _wait_status(store, jobs[-1], "completed")
        stored = [ev for ev in evaluations(store) if ev.benchmark == "reward"]
        assert len(stored) == 2
        by_model = {ev.model: ev for ev in stored}
        base, tuned = by_model[tiny], next(ev for m, ev in by_model.items() if m != tiny)
        assert base.metrics["mean"] != tuned.metrics["mean"]

        # The before/after table: one column per evaluated model, each holding its own stored value.
        def cell(ev) -> str:
            lo, hi = (ev.metrics.get("ci") or {}).get("mean", [None, None])[:2]
            n = eval_view.digits("reward")
            return f"{ev.metrics['mean']:.{n}f}" + (f" [{lo:.{n}f}, {hi:.{n}f}]" if lo is not None else "")

        def table():
            # the before/after table, not the finished job's own results panel (which has its column only)
            i = _grid_index(page, "metric", *(f"eval job #{j}:" for j in jobs))
            if i < 0:
                return None
            rows = [r for r in _grid(page, i) if r.get("group") == "all" and r.get("metric") == "mean"]
            return rows[0] if rows else None
        row = wait_for(table, timeout=60, what="the before/after table to show both evaluations")
        base_col = next((k for k in row if k.startswith(f"eval job #{jobs[0]}:")), None)
        tuned_col = next((k for k in row if k.startswith(f"eval job #{jobs[1]}:")), None)
        assert base_col and tuned_col, f"no column of job {jobs}: {list(row.items())}"
        assert f"run #{run.id} journey gr-grpo step {JOURNEY_STEPS}" in tuned_col
        assert row[base_col] == cell(base) and row[tuned_col] == cell(tuned), (row, cell(base), cell(tuned))
        _shot(page, "compare-evaluations")


# Each page's own address, and what only that page shows once the studio is open.
PAGE_URLS = {"": "Actions", "runs": "Actions", "new_run": "Dataset preview", "run?run=1": "Group weights",
             "compare": "Summary per group", "playground": "Start from a held-out prompt",
             "results": "Held-out reward (in-run)"}


def _fresh_page(browser, url: str):
    """A new browser context per address: no cookie or session of an earlier visit helps."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1200})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(url)
    _settle(pg)
    return ctx, pg


def _seed_for_every_page(store) -> None:
    from tests.app_helpers import seed_comparison, seed_synthetic

    from db.writes import record_evaluation

    seed_synthetic(store)  # run 1: the runs table, the run page's charts
    seed_comparison(store)
    for step, mean in ((0, 0.5), (20, 0.7)):  # run 1's own held-out evaluations: the results page's report
        record_evaluation(store, run_id=1, model="synthetic", benchmark="heldout_reward", dataset_version="v",
                          metrics={"reward/mean": mean, "reward/gender": mean, "reward/race": mean + 0.1}, step=step,
                          evaluated_model="synthetic", evaluated_run_id=1, evaluated_step=step, source="run")


def test_every_page_url_needs_the_password(tmp_path, browser):
    password = "correct horse battery staple"
    with _serve(tmp_path, password=password, engine=False) as (url, store):
        _seed_for_every_page(store)
        for path, content in PAGE_URLS.items():
            ctx, pg = _fresh_page(browser, f"{url}/{path}")
            pg.get_by_text("This studio is password protected").wait_for()
            pg.wait_for_timeout(1500)  # give a page that slipped through the time to draw
            body = pg.inner_text("body")
            assert content not in body, (path, body[:500])
            assert "synth" not in body and "base vs tuned" not in body, (path, body[:500])
            # Nothing in the sidebar leads to a page before the password.
            assert pg.get_by_role("link", name="New run").count() == 0, path
            if path == "new_run":
                # The right password opens the page the address named.
                pg.get_by_label("Access password").fill(password)
                pg.get_by_role("button", name="Unlock").click()
                pg.get_by_text(content).first.wait_for()
                assert pg.url.endswith("/new_run")
            ctx.close()


def test_every_page_url_opens_without_a_password_on_localhost(tmp_path, browser):
    with _serve(tmp_path, engine=False) as (url, store):
        _seed_for_every_page(store)
        for path, content in PAGE_URLS.items():
            ctx, pg = _fresh_page(browser, f"{url}/{path}")
            pg.get_by_text(content).first.wait_for()
            assert "password protected" not in pg.inner_text("body")
            ctx.close()


def test_run_and_runs_pages_follow_the_store_without_a_reload(tmp_path, browser):
    """Issue 18 items 3 and 4, where only a browser sees them: the run page's header, setup notice, samples,
    checkpoints and event log follow the run while it trains; the Runs page follows a cancel to its end; a click
    on a row of the Runs table opens that run. The store is driven directly, so every change is ours to time."""
    from db.models import RunStatus
    from db.queue import claim_next_run, finish_run, request_cancel
    from db.writes import record_checkpoint, write_step
    from engine.config import parse_config
    from engine.runs.context import RunContext
    from engine.submission import submit_run

    with _serve(tmp_path, engine=False) as (url, store):
        rid = submit_run(store, parse_config({"algorithm": "synthetic", "max_steps": 100, "name": "live run"}))
        ctx_b = browser.new_context(viewport={"width": 1400, "height": 1500})
        pg = ctx_b.new_page()
        pg.set_default_timeout(30_000)
        pg.goto(f"{url}/run?run={rid}")
        pg.get_by_text("the engine has not taken the run yet").wait_for()
        header = pg.locator('[data-testid="stMarkdownContainer"]', has=pg.locator("h3", has_text="live run"))
        assert "queued" in header.inner_text()
        run = claim_next_run(store, "w")
        ctx = RunContext(store, rid, parse_config({"algorithm": "synthetic", "max_steps": 100}), resume=False,
                         lease=run.lease)
        ctx.setup("loading the policy before the first step")
        pg.get_by_text("Setting up").first.wait_for()
        wait_for(lambda: "running" in header.inner_text(), timeout=30, what="the header to say running")
        assert pg.get_by_text("No samples logged yet").count() == 1
        assert pg.get_by_text("No checkpoints yet").count() == 1
        for step in (1, 2):
            write_step(store, rid, step, {"train/loss": 1.0 / step}, [{"group": "gender", "weight": 0.5}],
                       [{"group": "gender", "prompt": f"p{step}", "completion": f"c{step}", "reward": 0.5}])
        ck = tmp_path / "ck"
        ck.mkdir()
        record_checkpoint(store, rid, 2, str(ck), lease=run.lease)
        wait_for(lambda: pg.get_by_text("No samples logged yet").count() == 0, timeout=30,
                 what="the samples table to appear while the run trains")
        wait_for(lambda: pg.get_by_text("No checkpoints yet").count() == 0, timeout=30,
                 what="the checkpoints to appear while the run trains")
        wait_for(lambda: pg.get_by_text("Setting up").count() == 0, timeout=30, what="the setup notice to go")
        _shot(pg, "run-live-samples")

        # The Runs page: a cancel is followed to its end without a reload.
        pg.get_by_role("link", name="Runs").first.click()
        pg.get_by_role("heading", name="Actions").wait_for()
        status = pg.locator('[data-testid="stMarkdownContainer"]', has_text="Status:").first
        assert "running" in status.inner_text()
        request_cancel(store, rid)
        wait_for(lambda: pg.get_by_role("button", name="Cancel").first.is_disabled(), timeout=30,
                 what="the Runs page to see the cancel request")
        finish_run(store, rid, RunStatus.cancelled, message="cancelled at a step boundary", lease=run.lease)
        wait_for(lambda: "cancelled" in status.inner_text(), timeout=30, what="the Runs page to show the cancel's end")
        assert "live run" in pg.get_by_role("combobox", name="Run").input_value()
        _shot(pg, "runs-live")
        # The table fits the window: no horizontal scroll bar hides its last columns.
        _settle(pg)
        pg.wait_for_timeout(1000)
        grid = pg.locator('[data-testid="stDataFrame"]').first
        box = grid.bounding_box()
        widths = pg.evaluate("""() => { const s = document.querySelector('[data-testid="stDataFrame"] .dvn-scroller');
            return s ? [s.scrollWidth, s.clientWidth] : null; }""")
        assert widths and widths[0] <= widths[1] + 1, widths
        # Ticking the run's row (the table is a canvas: its first row's box, left of the ID) opens it.
        pg.mouse.click(box["x"] + 12, box["y"] + 35 + 17)
        pg.wait_for_url(f"**/run?run={rid}", timeout=30_000)  # (pg.url only moves while playwright is called)
        pg.locator("h3", has_text=f"#{rid} live run").wait_for()
        # Back on the Runs page, the old selection does not open the run again.
        pg.get_by_role("link", name="Runs").first.click()
        pg.get_by_role("heading", name="Actions").wait_for()
        pg.wait_for_timeout(4000)
        assert pg.get_by_role("heading", name="Actions").count() == 1 and "/run" not in pg.url
        ctx_b.close()
