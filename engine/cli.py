"""`studio`: the command line of the alignment studio.

User mistakes end in one line on stderr and exit code 2, never a traceback. Heavy modules (torch, the
training code) are imported inside the commands that need them, so `studio runs` stays instant.
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import wraps
from pathlib import Path
from typing import Any, Callable, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Alignment studio: bias mitigation with BiasGRPO and group-robust preference optimization.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
reward_app = typer.Typer(no_args_is_help=True, help="The bias reward model.")
app.add_typer(db_app, name="db")
app.add_typer(reward_app, name="reward")

ROOT = Path(__file__).resolve().parent.parent
DbOpt = typer.Option(None, "--db", help="Database URL (default: sqlite file in $STUDIO_HOME).", envvar="STUDIO_DB_URL")


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from db.queue import QueueError
    from engine.config import ConfigError

    errs: list[type[BaseException]] = [CLIError, QueueError, ConfigError, FileNotFoundError, PermissionError]
    try:
        from engine.data.types import DataValidationError

        errs.append(DataValidationError)
    except ImportError:
        pass
    return tuple(errs)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _user_errors() as e:
            msg = str(e)
            if isinstance(e, FileNotFoundError) and e.filename:
                msg = f"file not found: {e.filename}"
            typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


def _store(url: Optional[str]):  # type: ignore[no-untyped-def]
    from db.session import Store

    return Store(url)


def _fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# --------------------------------------------------------------------------------------------- services
def _app_cmd(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal",
            # No reload-on-save for a served product: the watcher rescans every loaded module (torch and
            # transformers once the Playground imports them) and logs their optional imports as warnings.
            "--server.fileWatcherType", "none"]


def _check_network_safety(host: str) -> None:
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("STUDIO_PASSWORD"):
        raise CLIError(f"serving on {host} exposes the studio to the network: set STUDIO_PASSWORD to an access "
                       "password first, or keep the default --host 127.0.0.1")


@app.command()
@friendly
def up(host: str = typer.Option("127.0.0.1", help="Address to serve the web app on (localhost by default)."),
       port: int = typer.Option(8501, help="Port of the web app."), db: Optional[str] = DbOpt) -> None:
    """Start the engine and the web app together; Ctrl-C stops both (the running step finishes and the run
    resumes on the next start; a second Ctrl-C stops the step at once)."""
    from engine.supervise import Child, Supervisor, port_problem

    _check_network_safety(host)
    if problem := port_problem(host, port):
        raise CLIError(problem)
    store = _store(db)  # migrate once before either process starts
    env = {**os.environ, "STUDIO_DB_URL": store.url}
    # The engine may need its whole shutdown grace (a step finishing) before it exits.
    sup = Supervisor([Child("engine", [sys.executable, "-m", "engine.cli", "engine"], grace_s=660.0),
                      Child("web", _app_cmd(host, port))], env=env, cwd=str(ROOT))
    typer.echo(f"Alignment studio: http://{'localhost' if host == '127.0.0.1' else host}:{port}  (database {store.url})")
    raise typer.Exit(sup.run())


@app.command()
@friendly
def engine(db: Optional[str] = DbOpt,
           once: bool = typer.Option(False, help="Exit when the queue is empty."),
           recover: str = typer.Option("requeue", help="Runs of a dead engine: 'requeue' (resume) or 'fail'."),
           stale_after: float = typer.Option(60.0, help="Seconds without a heartbeat before a run counts as dead."),
           poll: float = typer.Option(1.0, help="Seconds between queue polls.")) -> None:
    """Run the engine worker: it takes queued runs one by one."""
    from engine.worker import WorkerSettings, main

    if recover not in ("requeue", "fail"):
        raise CLIError(f"--recover must be 'requeue' or 'fail', got {recover!r}")
    main(db, WorkerSettings(once=once, recover=recover, stale_after_s=stale_after, poll_interval_s=poll))  # type: ignore[arg-type]


@app.command("app")
@friendly
def app_cmd(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8501), db: Optional[str] = DbOpt) -> None:
    """Run only the web app (the engine may run elsewhere against the same database)."""
    from engine.supervise import Child, Supervisor, port_problem

    _check_network_safety(host)
    if problem := port_problem(host, port):
        raise CLIError(problem)
    store = _store(db)
    env = {**os.environ, "STUDIO_DB_URL": store.url}
    raise typer.Exit(Supervisor([Child("web", _app_cmd(host, port))], env=env, cwd=str(ROOT)).run())


# ------------------------------------------------------------------------------------------------ runs
def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs; a VALUE that parses as JSON (numbers, true, lists) is taken as JSON, else as text."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise CLIError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _load_config_file(path: Path, overrides: list[str]) -> Any:
    from engine.config import parse_config

    if not path.is_file():
        raise CLIError(f"config file {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CLIError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CLIError(f"{path} is not UTF-8 text (invalid byte at offset {e.start}): save it as UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CLIError(f"{path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise CLIError(f"{path} nests too deeply to be a run config (see examples/)") from None
    if not isinstance(data, dict):
        raise CLIError(f"{path} must hold a JSON object with an 'algorithm' field (see examples/)")
    return parse_config({**data, **_parse_overrides(overrides)})


@app.command()
@friendly
def submit(config_file: Path = typer.Argument(..., help="JSON run config (see examples/)."),
           set_: list[str] = typer.Option([], "--set", help="Override a field: --set max_steps=20"),
           db: Optional[str] = DbOpt) -> None:
    """Validate a run config and queue it (relative paths are stored resolved against this directory)."""
    from db.queue import events
    from engine.submission import submit_run

    cfg = _load_config_file(config_file, set_)
    store = _store(db)
    run_id = submit_run(store, cfg)
    typer.echo(f"queued run {run_id} ({cfg.algorithm})")
    for e in reversed(events(store, run_id)):  # e.g. malformed dataset rows that were few enough to skip
        if e.level == "warning":
            typer.secho(f"warning: {e.message}", fg=typer.colors.YELLOW, err=True)


@app.command()
@friendly
def runs(db: Optional[str] = DbOpt, status: Optional[str] = typer.Option(None, help="Only runs with this status.")) -> None:
    """List runs, newest first."""
    from db.models import RunStatus
    from db.queue import list_runs

    st = None
    if status:
        try:
            st = RunStatus(status)
        except ValueError:
            raise CLIError(f"unknown status {status!r}: use one of {', '.join(s.value for s in RunStatus)}") from None
    rows = list_runs(_store(db), st)
    if not rows:
        typer.echo("no runs yet: queue one with `studio submit CONFIG.json` or from the web app")
        return
    typer.echo(f"{'ID':>4}  {'STATUS':<10} {'ALGORITHM':<10} {'STEP':>11}  NAME")
    for r in rows:
        typer.echo(f"{r.id:>4}  {r.status.value:<10} {r.algorithm:<10} {r.last_step:>5}/{r.total_steps:<5}  {r.name}")


@app.command()
@friendly
def show(run_id: int, db: Optional[str] = DbOpt) -> None:
    """Status, progress, latest metrics and events of one run."""
    from sqlalchemy import select

    from db.models import MetricPoint
    from db.queue import events, get_run, heartbeat_age

    store = _store(db)
    r = get_run(store, run_id)
    typer.echo(f"run {r.id}: {r.name}\n  algorithm {r.algorithm}  status {r.status.value}  step {r.last_step}/"
               f"{r.total_steps}  heartbeat {_fmt_age(heartbeat_age(r))} ago")
    if r.error:
        typer.echo(f"  error: {r.error}")
    with store.read() as s:
        pts = s.scalars(select(MetricPoint).where(MetricPoint.run_id == run_id, MetricPoint.step == r.last_step)
                        .order_by(MetricPoint.key)).all()
    for p in pts:
        typer.echo(f"  {p.key:<40} {p.value}")
    for e in reversed(events(store, run_id, limit=10)):
        typer.echo(f"  [{e.time:%H:%M:%S}] {e.level}: {e.message.splitlines()[0]}")


@app.command()
@friendly
def cancel(run_id: int, db: Optional[str] = DbOpt) -> None:
    """Cancel a queued run, or stop a running one at its next step boundary (at once if its engine is gone)."""
    from db.queue import request_cancel

    typer.echo(f"run {run_id}: {request_cancel(_store(db), run_id)}")


@app.command()
@friendly
def resume(run_id: int, db: Optional[str] = DbOpt) -> None:
    """Re-queue a failed or cancelled run (or a running one whose engine is gone); it continues from its last
    checkpoint."""
    from db.queue import resume_run

    resume_run(_store(db), run_id)
    typer.echo(f"run {run_id}: queued to resume")


@app.command()
@friendly
def clone(run_id: int, set_: list[str] = typer.Option([], "--set", help="Override a field: --set seed=1"),
          db: Optional[str] = DbOpt) -> None:
    """Queue a copy of a run's config (with overrides)."""
    from engine.submission import clone_run

    typer.echo(f"queued run {clone_run(_store(db), run_id, _parse_overrides(set_))} (clone of {run_id})")


@app.command()
@friendly
def delete(run_id: int, yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
           db: Optional[str] = DbOpt) -> None:
    """Delete a run, everything it recorded and its checkpoint files (not while its engine runs it)."""
    from db.queue import delete_run

    if not yes and not typer.confirm(f"Delete run {run_id} and all its metrics, samples and checkpoints?"):
        raise typer.Exit(1)
    left = delete_run(_store(db), run_id)
    typer.echo(f"run {run_id}: deleted")
    for path in left:
        typer.secho(f"warning: left {path} in place: it lies outside the studio home (a symlink?); remove it "
                    "yourself if it is no longer needed", fg=typer.colors.YELLOW, err=True)


@app.command()
@friendly
def wait(run_id: int, timeout: float = typer.Option(3600.0, help="Give up after this many seconds."),
         db: Optional[str] = DbOpt) -> None:
    """Block until a run finishes; exit 0 if it completed, 1 otherwise."""
    from db.queue import get_run

    store = _store(db)
    deadline = time.monotonic() + timeout
    while True:
        r = get_run(store, run_id)
        if r.status.finished:
            typer.echo(f"run {run_id}: {r.status.value}" + (f" ({r.error})" if r.error else ""))
            raise typer.Exit(0 if r.status.value == "completed" else 1)
        if time.monotonic() > deadline:
            raise CLIError(f"run {run_id} is still {r.status.value} after {timeout:.0f} s")
        time.sleep(1.0)


@app.command()
@friendly
def export(run_id: int, out: Path = typer.Option(..., "--out", help="Folder to write the Hugging Face model to."),
           adapter_only: bool = typer.Option(False, help="For LoRA runs: write the adapter alone, not merged."),
           step: Optional[int] = typer.Option(None, help="Checkpoint step (default: the latest)."),
           db: Optional[str] = DbOpt) -> None:
    """Write a run's checkpoint as a standard Hugging Face model folder."""
    from engine.export import export_run

    path = export_run(_store(db), run_id, out, step=step, merge_lora=not adapter_only)
    typer.echo(f"run {run_id}: exported to {path}")


@app.command()
@friendly
def report(run_id: int, out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default: "
                                                            "run-ID-report.html in this directory)."),
           db: Optional[str] = DbOpt) -> None:
    """Write a run's report as one self-contained HTML file: config, data, reward model, charts, evaluations
    before/after with intervals, samples."""
    from app.report import build_report

    text = build_report(_store(db), run_id)
    path = out or Path(f"run-{run_id}-report.html")
    path.write_text(text, encoding="utf-8")
    typer.echo(f"run {run_id}: report written to {path} ({len(text) // 1024} KB; opens offline in any browser)")


@app.command("eval")
@friendly
def eval_cmd(model_or_run: str = typer.Argument(..., help="A model path / hub id / 'embedded:...', or a run id."),
             benchmarks: str = typer.Option(
                 "bbq,crows_pairs,stereoset,reward,perplexity",
                 help="Comma-separated. Also 'counterfactual' (opt-in, not in the default: held-out prompts with the "
                      "demographic descriptor swapped within an axis, up to 4 greedy answers per prompt, about 620 "
                      "on the full set; slow on a CPU, use --limit for a quick look)."),
             limit: int = typer.Option(0, help="Items per benchmark, balanced over groups (0: the full sets)."),
             seed: int = typer.Option(0, help="Chooses the items under --limit and seeds the bootstrap."),
             bbq_format: str = typer.Option("studio", help="BBQ scoring: 'studio' (3 options, per-token) or "
                                            "'lm_eval' (lm-evaluation-harness's bbq task)."),
             n_boot: int = typer.Option(1000, help="Bootstrap resamples per 95% interval (0: no intervals)."),
             against: Optional[str] = typer.Option(None, help="A model or run evaluated before on the same items: "
                                                   "also print and store the paired change of every metric."),
             db: Optional[str] = DbOpt) -> None:
    """Run the bias benchmarks on a model or a run's latest checkpoint and store the results with intervals."""
    from engine.evaluation.harness import evaluate_cli

    evaluate_cli(_store(db), model_or_run, [b.strip() for b in benchmarks.split(",") if b.strip()], limit=limit,
                 seed=seed, against=against, bbq_format=bbq_format, n_boot=n_boot)


@app.command("eval-show")
@friendly
def eval_show(ids: list[int] = typer.Argument(..., help="Evaluation ids (as `studio eval` printed them)."),
              against: Optional[int] = typer.Option(None, help="An evaluation id on the same items: also print the "
                                                    "paired change of every metric from it."),
              db: Optional[str] = DbOpt) -> None:
    """Print stored evaluation results with their intervals, as `studio eval` printed them."""
    from engine.evaluation.harness import show_cli

    show_cli(_store(db), ids, against=against)


@reward_app.command("train")
@friendly
def reward_train(out: Optional[Path] = typer.Option(None, help="Output folder (default: the studio's reward model)."),
                 epochs: int = typer.Option(2, help="Training epochs."), seed: int = typer.Option(0),
                 layers: int = typer.Option(3, help="Top encoder layers to fine-tune (the rest stay frozen)."),
                 max_train: Optional[int] = typer.Option(None, help="Cap on training examples (quick runs)."),
                 ship: bool = typer.Option(False, help="Also refresh the tensors shipped in engine/rewards/shipped/.")
                 ) -> None:
    """Train the studio's bias reward model (MiniLM cross-encoder over prompt + completion, top layers + two heads:
    unbiased for bias_rm, on_topic for relevance) on a CPU; the same seed gives the same weights."""
    from engine.rewards.train import train_cli

    train_cli(out=out, epochs=epochs, seed=seed, ship=ship, layers=layers, max_train=max_train)


@reward_app.command("check")
@friendly
def reward_check(path: Optional[Path] = typer.Argument(None, help="Reward model folder (default: the shipped model)."),
                 out: Optional[Path] = typer.Option(None, "--out", help="JSON file to write (default: "
                                                    "validation.json next to the model)."),
                 limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most N items per part "
                                                     "(quick runs; the card says the numbers are partial)."),
                 device: str = typer.Option("cpu", help="Device for the reward model.")) -> None:
    """Validate a reward model on text it never saw, alone and inside the default GRPO reward: the direction
    suite, BBQ eval answers, held-out StereoSet, neutral sentences; updates the model card's Validation section."""
    from engine.rewards.check import format_tables, run_check

    report = run_check(path, out=out, limit=limit, device=device)
    typer.echo(format_tables(report))
    typer.echo(f"\nwrote {report['written']['json']} and the Validation section of {report['written']['card']}")


@app.command()
@friendly
def prepare(db: Optional[str] = DbOpt) -> None:
    """One-time set-up of the embedded defaults: database, default model and bias reward model (offline)."""
    from engine.models.default_model import default_model_path
    from engine.rewards.bias_model import default_reward_model_path

    store = _store(db)
    typer.echo(f"database      {store.url}")
    typer.echo(f"default model {default_model_path()}")
    typer.echo(f"reward model  {default_reward_model_path()}")


@app.command()
@friendly
def health(max_age: float = typer.Option(60.0, help="Newest engine heartbeat must be younger than this (s)."),
           db: Optional[str] = DbOpt) -> None:
    """Exit 0 if an engine worker has a fresh heartbeat (for container health checks), 1 otherwise.

    An engine of this machine whose process is gone never counts, however fresh its last heartbeat."""
    from db.queue import live_workers

    workers = live_workers(_store(db), within_s=max_age)
    if not workers:
        typer.echo(f"no engine heartbeat in the last {max_age:.0f} s", err=True)
        raise typer.Exit(1)
    typer.echo(f"{len(workers)} engine worker(s) alive: " + ", ".join(w.id for w in workers))


@db_app.command("upgrade")
@friendly
def db_upgrade(db: Optional[str] = DbOpt) -> None:
    """Apply schema migrations (also done automatically on every start)."""
    from db.migrate import current_revision

    store = _store(db)
    typer.echo(f"database {store.url} at revision {current_revision(store)}")


def main() -> None:
    app(prog_name="studio")


if __name__ == "__main__":
    main()
