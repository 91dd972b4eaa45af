"""W&B sweeps, with or without the W&B service.

A sweep file (`sweeps/*.yaml`) is what `wandb sweep` uploads. Without the service, the search runs here:
W&B's own search engine (the `sweeps` package: `next_run`, `stop_runs`) proposes each trial, the trial runs as
the exact command line `wandb agent` would run, and its per-epoch metric goes back to the engine.

    python -m distillscope.sweep sweeps/kd_temperature_weights.yaml --count 4 [extra overrides ...]

(`make sweep-local`). Trials log to W&B offline, outside any W&B sweep (there is none on the server);
`wandb sync outputs/sweeps/local/<run id>/wandb/offline-run-*` uploads one as a plain run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import yaml

# Every sweep file's command carries this override: a trial's run directory is named after the W&B sweep and
# run ids the agent sets (`local` in place of the sweep id here), and the local runner finds outputs there.
SWEEP_ROOT = "outputs/sweeps"
LOCAL_DIR = f"{SWEEP_ROOT}/local"
RUN_DIR_OVERRIDE = f"hydra.run.dir={SWEEP_ROOT}/${{oc.env:WANDB_SWEEP_ID,local}}/${{oc.env:WANDB_RUN_ID}}"
POLL_SECONDS = 2.0
# `sweeps` 0.3 still declares a pydantic-1 config key; pydantic 2 warns about it on every import.
warnings.filterwarnings("ignore", message="Valid config keys have changed in V2", category=UserWarning)


def load_sweep(path: str | Path):
    """The sweep file as W&B's engine sees it; a file that breaks the W&B sweep schema raises ValidationError."""
    from sweeps import SweepConfig

    return SweepConfig(yaml.safe_load(Path(path).read_text()))


def agent_command(sweep: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """The argv `wandb agent` runs for a trial with `params` ({swept key: value}).

    W&B's own helpers format the arguments; the macro expansion mirrors `wandb.wandb_agent.Agent._command_run`
    (which keeps it inside a method): `${env}` is /usr/bin/env, `${interpreter}` python, `${program}` the
    sweep's program, and a macro with nothing to expand disappears.
    """
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    sweep_vars = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    sweep_vars.update(env=["/usr/bin/env"], interpreter=["python"], program=[sweep.get("program")])
    argv: list[str] = []
    for chunk in create_sweep_command(list(sweep["command"])):  # copy: wandb edits the list in place
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += [str(c) for c in sweep_vars.get(chunk[2:-1]) or [] if c is not None]
        else:
            argv.append(chunk)
    return argv


def proposal_params(run) -> dict[str, Any]:
    """{swept key: value} of a run proposed by `sweeps.next_run`."""
    return {key: entry["value"] for key, entry in run.config.items()}


def metric_history(run_dir: Path) -> list[dict[str, float]]:
    """The trial's logged rows (CSV logger, flushed by Lightning after every log call), numbers only."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in rows]


def epoch_history(run_dir: Path, metric: str) -> list[dict[str, float]]:
    """One row per logged value of `metric`: what W&B's history holds for it (hyperband counts these)."""
    return [{metric: row[metric]} for row in metric_history(run_dir) if metric in row and math.isfinite(row[metric])]


def run_trial(sweep, runs: list, cwd: Path, extra: list[str], log_dir: Path) -> None:
    """Run the last of `runs` as its agent command; stop it early when W&B's hyperband rule, which
    compares it with the earlier runs, says so.

    Updates `run` in place (state, history, summary_metrics) as the W&B service would from the run's logs.
    """
    from sweeps import RunState, stop_runs

    run = runs[-1]
    metric = sweep["metric"]["name"]
    argv = agent_command(sweep, proposal_params(run)) + list(extra)
    # `wandb agent` sets the run id (and a sweep id, which has no meaning without the server: left unset).
    env = {**os.environ, "WANDB_RUN_ID": run.name, "WANDB_MODE": "offline"}
    env.pop("WANDB_SWEEP_ID", None)
    # The command says `python`: make it this interpreter (the project's venv), as `make agent` does.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    run_dir = cwd / LOCAL_DIR / run.name
    log_path = log_dir / f"{run.name}.log"
    print(f"[{run.name}] {' '.join(argv)}", flush=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        run.state = RunState.running
        while proc.poll() is None:
            time.sleep(POLL_SECONDS)
            run.history = epoch_history(run_dir, metric)
            if "early_terminate" in sweep and any(r.name == run.name for r in stop_runs(sweep, runs)):
                print(f"[{run.name}] stopped early by hyperband after {len(run.history)} epochs", flush=True)
                run.stopped = True
                proc.terminate()
                proc.wait()
    run.history = epoch_history(run_dir, metric)
    record = run_dir / "run.json"
    final = (json.loads(record.read_text()).get("metrics") or {}) if record.is_file() else {}
    run.summary_metrics = {k: v for k, v in final.items() if isinstance(v, (int, float))}
    run.exitcode = proc.returncode
    run.state = RunState.killed if run.stopped else RunState.finished if proc.returncode == 0 else RunState.failed
    if run.state == RunState.failed:
        print(f"[{run.name}] failed (exit {proc.returncode}); log: {log_path}", flush=True)


def best_value(run, metric: str, goal: str) -> float | None:
    try:
        return float(run.metric_extremum(metric, "maximum" if goal == "maximize" else "minimum"))
    except (ValueError, KeyError):
        return None


def run_local_sweep(sweep_path: str | Path, count: int, extra: list[str] = (), cwd: Path | None = None) -> list:
    """Search on this machine: propose, run, feed back, `count` times (a grid stops when exhausted)."""
    from sweeps import next_run

    sweep = load_sweep(sweep_path)
    cwd = Path(cwd or Path.cwd()).resolve()
    sweep_id = f"{sweep.get('name') or Path(sweep_path).stem}-{datetime.now():%Y%m%d-%H%M%S}"
    log_dir = cwd / LOCAL_DIR / sweep_id
    log_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sweep_path, log_dir / "sweep.yaml")
    print(f"local sweep {sweep_id}: {sweep_path}, {count} trials, {sweep['method']} search", flush=True)
    runs: list = []
    for _ in range(count):
        run = next_run(sweep, runs)
        if run is None:
            break  # grid exhausted
        run.name = secrets.token_hex(4)  # a W&B-style run id, unique within the project
        runs.append(run)
        run_trial(sweep, runs, cwd, list(extra), log_dir)
    table = summary_table(sweep, runs)
    (log_dir / "summary.md").write_text(table + "\n")
    print(f"{table}\ntrial logs and this summary: {log_dir.relative_to(cwd)}", flush=True)
    return runs


def summary_table(sweep, runs: list) -> str:
    from sweeps import RunState

    metric, goal = sweep["metric"]["name"], sweep["metric"]["goal"]
    keys = list(sweep["parameters"])
    lines = [f"| run | state | epochs | best {metric} | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 4)]
    scored = []
    for run in runs:
        value = best_value(run, metric, goal)
        params = proposal_params(run)
        shown = " | ".join(f"{params[k]:.4g}" if isinstance(params[k], float) else str(params[k]) for k in keys)
        lines.append(f"| {run.name} | {RunState(run.state).value} | {len(run.history)} | {'-' if value is None else f'{value:.4f}'} | {shown} |")
        if value is not None:
            scored.append((value, run))
    if scored:
        value, best = (max if goal == "maximize" else min)(scored, key=lambda pair: pair[0])
        lines.append(f"\nbest {metric} = {value:.4f}: {' '.join(f'{k}={v}' for k, v in proposal_params(best).items())}")
    lines.append(f"run directories: {LOCAL_DIR}/<run>")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m distillscope.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="a W&B sweep file, e.g. sweeps/kd_temperature_weights.yaml")
    parser.add_argument("--count", type=int, default=4, help="number of trials (default 4)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides added to every trial, e.g. trainer.max_epochs=3")
    args = parser.parse_intermixed_args(argv)
    runs = run_local_sweep(args.sweep, args.count, args.overrides)
    if not runs or all(r.state == "failed" for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
