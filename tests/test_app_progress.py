"""Honest progress (issue 18, items 3 and 5): ETA from the measured step time without setup, elapsed time over
all attempts of a resumed run, a time estimate before queueing, and the run page and event log during setup."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from db.models import Event, Run, RunStatus, utcnow
from db.queue import claim_next_run, finish_run, resume_run
from db.reads import runs_overview, time_estimate
from db.writes import record_checkpoint, write_step
from engine.config import parse_config
from engine.submission import submit_run
from tests.app_helpers import open_page, texts


def _synthetic(store, steps: int = 11, name: str = "s") -> int:
    return submit_run(store, parse_config({"algorithm": "synthetic", "max_steps": steps, "name": name}))


def _row(store, rid, now):
    return next(r for r in runs_overview(store, now=now) if r.id == rid)


def test_eta_counts_training_steps_only_and_never_grows_during_a_step(store):
    rid = _synthetic(store, steps=11)
    claim_next_run(store, "w")
    t0 = utcnow()
    with store.write() as s:  # ten minutes of setup (model conversion, sampler start, baseline) before step 1
        s.execute(update(Run).where(Run.id == rid).values(started_at=t0 - timedelta(seconds=600)))
    write_step(store, rid, 1, {"time/step": 60.0, "train/loss": 1.0})
    written = _row(store, rid, utcnow()).eta_s
    # 10 steps of 60 s: setup is not a step (the old estimate, elapsed / steps done, said about 100 minutes)
    assert 590 <= written <= 600
    etas = [_row(store, rid, utcnow() + timedelta(seconds=dt)).eta_s for dt in (10, 30, 59, 200, 2000)]
    assert etas == sorted(etas, reverse=True)  # goes down as the step runs, never up
    assert etas[-1] == 9 * 60  # a step running long: the steps after it still remain


def test_elapsed_sums_the_attempts_of_a_resumed_run(store):
    rid = _synthetic(store, steps=20)
    claim_next_run(store, "w")
    write_step(store, rid, 1, {"train/loss": 1.0})
    finish_run(store, rid, RunStatus.cancelled, message="cancelled at a step boundary")
    resume_run(store, rid)
    claim_next_run(store, "w")
    t = utcnow() - timedelta(hours=1)
    with store.write() as s:
        evs = list(s.scalars(select(Event).where(Event.run_id == rid).order_by(Event.id)))
        # queued, claimed (attempt 1), cancelled 100 s later, resumed after 15 minutes, claimed again 5 min later
        times = {0: t, 1: t + timedelta(seconds=10), 2: t + timedelta(seconds=110),
                 3: t + timedelta(seconds=1000), 4: t + timedelta(seconds=1300)}
        assert [e.message.split()[0] for e in evs] == ["queued", "claimed", "cancelled", "resumed:", "claimed"]
        for i, e in enumerate(evs):
            e.time = times[i]
        s.execute(update(Run).where(Run.id == rid).values(started_at=times[4]))
    now = t + timedelta(seconds=1350)
    # 100 s of the first attempt + 50 s of this one; the 19 minutes in between the run was not active
    assert abs(_row(store, rid, now).elapsed_s - 150) < 1e-6


def test_time_estimate_from_similar_finished_runs(store):
    cfg = {"algorithm": "synthetic", "max_steps": 10, "name": "x"}
    assert time_estimate(store, parse_config(cfg).model_dump(mode="json")) is None
    for step_s in (2.0, 4.0, 3.0):
        rid = _synthetic(store, steps=10)
        claim_next_run(store, "w")
        t0 = utcnow()
        with store.write() as s:
            s.execute(update(Run).where(Run.id == rid).values(started_at=t0 - timedelta(seconds=30 + step_s)))
        write_step(store, rid, 1, {"time/step": step_s})
        write_step(store, rid, 2, {"time/step": step_s})
        finish_run(store, rid, RunStatus.completed)
    other = submit_run(store, parse_config({**cfg, "method": "dpo"}))  # another objective: not similar
    claim_next_run(store, "w")
    write_step(store, other, 1, {"time/step": 100.0})
    finish_run(store, other, RunStatus.completed)
    est = time_estimate(store, parse_config(cfg).model_dump(mode="json"))
    assert est is not None and est.exact and len(est.runs) == 3
    assert est.step_s == 3.0 and 29 <= est.setup_s <= 31
    assert abs(est.total_s(10) - (est.setup_s + 30.0)) < 1e-9


def test_new_run_form_shows_the_estimate_or_says_none_is_known(store):
    at = open_page("views/new_run.py")
    at.selectbox(key="new.algorithm").set_value("synthetic").run()
    assert "Time estimate: none known yet" in texts(at)
    rid = _synthetic(store, steps=5)
    claim_next_run(store, "w")
    for step in (1, 2):
        write_step(store, rid, step, {"time/step": 120.0})
    finish_run(store, rid, RunStatus.completed)
    at.number_input(key="cfg.synthetic.max_steps").set_value(30).run()
    assert not at.exception
    shown = texts(at)
    assert "Time estimate: about 1h 00m for 30 steps" in shown and "2m 00s per step" in shown


def test_run_page_during_setup_says_what_the_engine_is_doing(store):
    from engine.runs.context import RunContext

    rid = _synthetic(store, steps=5)
    run = claim_next_run(store, "w")
    ctx = RunContext(store, rid, parse_config({"algorithm": "synthetic", "max_steps": 5}), resume=False,
                     lease=run.lease)
    ctx.setup("loading the policy embedded:smollm2-135m-instruct")
    at = open_page("views/run.py")
    assert not at.exception
    shown = texts(at)
    assert "Setting up" in shown and "loading the policy embedded" in shown.replace("\\", "")
    assert "Waiting for the first training step" not in shown
    ctx.setup_done(0)
    at.run()
    assert "Setting up" not in texts(at)


def test_setup_notice_ends_with_the_first_step_even_without_a_setup_done_event(store):
    from engine.runs.context import RunContext

    rid = _synthetic(store, steps=5)
    run = claim_next_run(store, "w")
    RunContext(store, rid, parse_config({"algorithm": "synthetic", "max_steps": 5}), resume=False,
               lease=run.lease).setup("loading the data")
    at = open_page("views/run.py")
    assert "Setting up" in texts(at)
    write_step(store, rid, 1, {"train/loss": 1.0})
    at.run()
    assert "Setting up" not in texts(at)


def test_event_log_has_checkpoints_and_evaluation_results(store, tmp_path):
    from engine.runs.context import RunContext

    rid = _synthetic(store, steps=5)
    run = claim_next_run(store, "w")
    ctx = RunContext(store, rid, parse_config({"algorithm": "synthetic", "max_steps": 5}), resume=False,
                     lease=run.lease)
    ctx.record_evaluation("heldout_reward", {"reward/mean": 0.7123, "reward/age": 0.61, "reward/race": 0.8,
                                             "reward/bias_rm/mean": 0.5, "kl": 0.0}, model="m",
                          dataset_version="d", step=0)
    record_checkpoint(store, rid, 5, str(tmp_path))
    at = open_page("views/run.py")
    events = next(d.value for d in at.dataframe if "message" in d.value.columns)
    msgs = list(events["message"])
    assert "checkpoint saved at step 5" in msgs
    assert ("evaluation heldout_reward before training: reward/mean 0.7123, kl 0, worst group age 0.61"
            in msgs), msgs


def test_the_training_loop_reports_the_end_of_setup(store):
    from engine.runs.context import RunContext
    from engine.runs.loop import StepLog, run_steps

    rid = _synthetic(store, steps=2)
    run = claim_next_run(store, "w")
    ctx = RunContext(store, rid, parse_config({"algorithm": "synthetic", "max_steps": 2}), resume=False,
                     lease=run.lease)
    run_steps(ctx, 0, lambda n: StepLog({"train/loss": 1.0 / n}), evaluate=lambda n: {}, save=lambda n: None)
    msgs = [e.message for e in runs_events(store, rid)]
    done = [m for m in msgs if m.startswith("setup done in ")]
    assert len(done) == 1 and done[0].endswith("training from step 1"), msgs


def runs_events(store, rid):
    from db.reads import run_events

    return list(reversed(run_events(store, rid)))
