"""Mean and standard deviation over seeds, written when a Hydra multirun ends.

    python -m distillscope.train -m experiment=digits_kd seed=1,2,3

Jobs that differ only in `seed` form one group; for each group and each model row of the jobs'
`report.json`, `seeds_summary.json` and `seeds_summary.md` in the multirun directory hold the mean,
the sample standard deviation and the number of seeds.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from distillscope.report import COLUMNS

SEED_KEY = "seed"


def group_key(run_dir: Path) -> str:
    """The run's command-line overrides without the seed: runs sharing it differ only by seed."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != SEED_KEY]
    return " ".join(kept) or "(defaults)"


def summarize(reports: list[Path]) -> dict[str, dict[str, dict[str, float]]]:
    """model -> metric -> {mean, std, n} over the given report.json files."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in reports:
        for model, row in json.loads(path.read_text())["models"].items():
            for key, value in row.items():
                values[model][key].append(float(value))
    return {
        model: {
            key: {"mean": statistics.fmean(vs), "std": statistics.stdev(vs) if len(vs) > 1 else 0.0, "n": len(vs)}
            for key, vs in metrics.items()
        }
        for model, metrics in values.items()
    }


def format_summary(groups: dict[str, dict]) -> str:
    keys = [(key, title) for key, title, _ in COLUMNS if key.startswith("test/")]
    lines = []
    for group, summary in groups.items():
        n = max(stat["n"] for metrics in summary.values() for stat in metrics.values())
        lines += [f"### {group} ({n} seeds, mean ± std)", "", "| Model | " + " | ".join(t for _, t in keys) + " |",
                  "|" + "---|" * (len(keys) + 1)]
        for model, metrics in summary.items():
            cells = [f"{metrics[k]['mean']:.4f} ± {metrics[k]['std']:.4f}" if k in metrics else "-" for k, _ in keys]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_seed_summary(run_dirs: list[Path], out_dir: Path) -> str | None:
    """Group runs, summarise each group, write seeds_summary.{json,md} into `out_dir`; None if no reports."""
    grouped: dict[str, list[Path]] = defaultdict(list)
    for run_dir in sorted(run_dirs):
        if (run_dir / "report.json").is_file():
            grouped[group_key(run_dir)].append(run_dir / "report.json")
    if not grouped:
        return None
    summaries = {group: summarize(reports) for group, reports in grouped.items()}
    (out_dir / "seeds_summary.json").write_text(json.dumps(summaries, indent=2))
    text = format_summary(summaries)
    (out_dir / "seeds_summary.md").write_text("# Mean and standard deviation over seeds\n\n" + text)
    return text


class SeedSummary(Callback):
    """Hydra callback: collects each job's output directory, summarises them when the multirun ends."""

    def __init__(self) -> None:
        self.run_dirs: list[Path] = []

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self.run_dirs.append(Path(job_return.hydra_cfg.hydra.runtime.output_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # Jobs run by a remote launcher (SLURM) report their ends elsewhere: fall back to the sweep dir.
        run_dirs = self.run_dirs or [p.parent for p in Path(config.hydra.sweep.dir).rglob("report.json")]
        if not run_dirs:
            return
        # The jobs' common folder is the multirun directory, however hydra.sweep.subdir nests them.
        out_dir = Path(os.path.commonpath(run_dirs)) if len(run_dirs) > 1 else run_dirs[0].parent
        text = write_seed_summary(run_dirs, out_dir)
        if text:
            print(f"\n{text}\nseed summary: {out_dir / 'seeds_summary.md'}\n", flush=True)
