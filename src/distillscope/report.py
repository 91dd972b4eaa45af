"""Teacher vs student report: quality, fidelity and cost side by side (report.json, report.md, W&B table)."""

from __future__ import annotations

import io
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from distillscope.metrics import FidelityMetrics
from distillscope.models.factory import count_parameters

# (report.json key, column title, format)
COLUMNS = [
    ("params", "Params", "{:,.0f}"),
    ("checkpoint_mb", "Size MB", "{:.2f}"),
    ("latency_ms_b1", "CPU ms/img b1", "{:.2f}"),
    ("latency_ms_b64", "CPU ms/img b64", "{:.3f}"),
    ("test/acc", "Test acc", "{:.4f}"),
    ("test/f1", "Test F1", "{:.4f}"),
    ("test/ece", "Test ECE", "{:.4f}"),
    ("test/agreement", "Agreement", "{:.4f}"),
    ("test/kl", "KL(T||S)", "{:.4f}"),
]


def checkpoint_mb(model: nn.Module) -> float:
    """Size of the model's weights as torch.save writes them."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 2**20


@torch.inference_mode()
def cpu_latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, repeats: int) -> float:
    """Median CPU wall time per image (ms) of an eval-mode forward at `batch_size`, warm-up excluded."""
    model = model.to("cpu").eval()
    x = torch.randn(batch_size, *input_shape)
    for _ in range(3):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / batch_size


def model_cost(model: nn.Module, input_shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    device = next(model.parameters()).device
    cost = {
        "params": count_parameters(model),
        "checkpoint_mb": checkpoint_mb(model),
        "latency_ms_b1": cpu_latency_ms(model, input_shape, 1, repeats),
        "latency_ms_b64": cpu_latency_ms(model, input_shape, 64, max(3, repeats // 4)),
    }
    model.to(device)
    return cost


@torch.inference_mode()
def evaluate(student: nn.Module, teacher: nn.Module | None, loader: DataLoader, num_classes: int) -> dict[str, float]:
    """Test metrics of `student` (and its fidelity to `teacher`) with the same torchmetrics as training."""
    metrics = FidelityMetrics(num_classes, "test", teacher is not None)
    student.eval()
    for x, y, _ in loader:
        metrics.update(student(x), y, teacher(x) if teacher is not None else None)
    return {k: float(m.compute()) for k, m in metrics.metric_objects().items()}


def teacher_row(test_metrics: dict[str, float]) -> dict[str, float]:
    """The teacher's own label metrics, renamed from test/teacher_* to test/*."""
    return {k.replace("test/teacher_", "test/"): v for k, v in test_metrics.items() if k.startswith("test/teacher_")}


def student_row(test_metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in test_metrics.items() if k.startswith("test/") and "teacher_" not in k and "loss" not in k}


def format_table(rows: dict[str, dict[str, float]]) -> str:
    used = [c for c in COLUMNS if any(c[0] in r for r in rows.values())]
    header = "| Model | " + " | ".join(title for _, title, _ in used) + " |"
    lines = [header, "|" + "---|" * (len(used) + 1)]
    for name, row in rows.items():
        cells = [fmt.format(row[key]) if key in row else "-" for key, _, fmt in used]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(run_dir: Path, title: str, rows: dict[str, dict[str, float]], notes: list[str]) -> str:
    """Write report.json and report.md into the run directory; return the markdown table."""
    table = format_table(rows)
    pair = {k: v for k, v in rows.get("student (KD)", {}).items() if k in ("test/agreement", "test/kl")}
    (run_dir / "report.json").write_text(json.dumps({"title": title, "models": rows, "pair": pair}, indent=2))
    body = [f"# {title}", "", table, "", *[f"- {n}" for n in notes], ""]
    (run_dir / "report.md").write_text("\n".join(body))
    return table


def log_report(loggers: list, rows: dict[str, dict[str, float]]) -> None:
    """The same table to W&B (a wandb.Table) when a W&B logger is attached."""
    from lightning.pytorch.loggers import WandbLogger

    keys = [c[0] for c in COLUMNS]
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            data = [[name, *[row.get(k) for k in keys]] for name, row in rows.items()]
            logger.log_table(key="report", columns=["model", *keys], data=data)
            for name, row in rows.items():
                for k, v in row.items():
                    logger.experiment.summary[f"report/{name}/{k}"] = v
