"""The studio in a real browser (Debian chromium through Playwright) against the real app and engine.

A new user's path: open the studio, create a synthetic run from the form, watch the group-weight chart gain
points without reloading, cancel the run, open the comparison page and see both columns. Screenshots of
each page go to test-artifacts/ (and, with STUDIO_UPDATE_SCREENSHOTS=1, to docs/screenshots/).
"""

from __future__ import annotations

import contextlib
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
def studio(tmp_path):
    """`studio app` and `studio engine` on a temp store, no password; yields (url, store)."""
    with _serve(tmp_path) as served:
        yield served


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1500})
    pg.set_default_timeout(30_000)
    yield pg


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


def test_new_user_flow(studio, page):
    url, store = studio
    page.goto(url)
    page.get_by_text("No runs yet").wait_for()
    _shot(page, "runs-empty")

    # Create a synthetic run from the form.
    page.get_by_role("link", name="New run").first.click()
    page.get_by_text("Dataset preview").first.wait_for()
    _shot(page, "new-run")
    _select(page, "Algorithm", "Synthetic (group-robust paper)")
    page.get_by_label("Max steps", exact=True).first.wait_for()
    # Long enough that it cannot finish before the cancel below, however busy the machine.
    _fill_number(page, "Max steps", 50000)
    page.get_by_label("Name", exact=True).first.fill("browser synthetic")
    page.get_by_label("Name", exact=True).first.press("Enter")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Queue run").click()

    # The run page opens and its headline chart grows while we watch, without a reload.
    page.get_by_text("browser synthetic").first.wait_for()
    try:
        wait_for(lambda: _weight_points(page) > 0, timeout=90, what="the group-weight chart to appear")
    except AssertionError:
        _shot(page, "failure-run-page")
        raise
    first = _weight_points(page)
    url_before = page.url
    grown = wait_for(lambda: _weight_points(page) > first and _weight_points(page), timeout=60,
                     what="the group-weight chart to gain points")
    assert grown > first and page.url == url_before
    _shot(page, "run-live")

    # Cancel it from its page; the engine stops it at a step boundary.
    from db.queue import list_runs

    (run,) = list_runs(store)
    page.get_by_role("button", name="Cancel").first.click()
    wait_for(lambda: list_runs(store)[0].status.value == "cancelled", timeout=60, what="the run to be cancelled")
    page.get_by_text("cancelled").first.wait_for()
    # The page's last rerun (the one that noticed the end) streams its header before its charts, so the chart may
    # still take in the final steps just after "cancelled" shows: wait for it to settle, then it must stay put.
    def settled() -> int | None:
        before = _weight_points(page)
        page.wait_for_timeout(1000)
        return before if before and _weight_points(page) == before else None
    stopped = wait_for(settled, timeout=30, interval=0.0, what="the chart to take in the run's last steps")
    page.wait_for_timeout(3000)
    assert _weight_points(page) == stopped  # no more refreshes once the run ended
    _shot(page, "run-cancelled")

    page.get_by_role("link", name="Runs").first.click()
    page.get_by_role("heading", name="Actions").wait_for()
    # The table is drawn on a canvas; the action picker below it names the run.
    assert "browser synthetic" in page.get_by_role("combobox", name="Run").input_value()
    _shot(page, "runs")

    # A finished comparison job (its rows inserted directly: the compare runner is the engine's business).
    from db.models import Run, RunStatus
    from engine.submission import submit_run
    from db.writes import write_comparison
    from engine.config import parse_config

    cid = submit_run(store, parse_config({"algorithm": "compare", "name": "base vs tuned"}))
    with store.write() as s:
        s.get(Run, cid).status = RunStatus.completed
    write_comparison(store, cid, [
        {"prompt_index": i, "group": g, "prompt": f"Describe a {g} person number {i}.", "side": side, "model": model,
         "completion": f"{side.upper()} answer {i}: ...", "reward": r}
        for i, g in enumerate(["gender", "religion", "race", "gender"])
        for side, model, r in (("a", "embedded:smollm2-135m-instruct", 0.3 + 0.05 * i), ("b", f"run:{run.id}", 0.7))])
    page.get_by_role("link", name="Compare").first.click()
    page.get_by_text("Summary per group").wait_for()
    page.get_by_text("A answer 0: ...").wait_for()
    page.get_by_text("B answer 0: ...").wait_for()
    assert page.get_by_text("A: embedded:smollm2-135m-instruct", exact=False).count() > 0
    assert page.get_by_text(f"B: run #{run.id} browser synthetic (step", exact=False).count() > 0  # not "run:1"
    _shot(page, "compare")


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
