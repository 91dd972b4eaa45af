"""`make bench`: what distillation costs next to training the student alone, and next to torchdistill.

In one process, on the same data (scikit-learn digits at 32x32x3, random crop 4 + flip applied as one
batched op), the same models, batch size, optimizer and thread count, it times:
  student_only  distillscope training the student on labels (CE),
  kd_live       distillscope KD (0.1 CE + 0.9 T^2 KL, T=4) with the teacher run every step,
  kd_cached     the same KD reading the teacher's outputs from the teacher cache,
  torchdistill  the same KD run by torchdistill's DistillationBox with its KDLoss.
Each repetition: `warmup` untimed steps, then `steps` timed ones; the rows take turns repetition by
repetition (load changes on a shared machine hit all alike); images/s is the median over repetitions. Peak memory: CUDA max allocated on a GPU, else the resident-set peak above
the row's starting point. Results: bench/results.json and a printed table.

    python bench/bench.py                 # CPU pairs
    python bench/bench.py --device cuda   # GPU mode (bf16, channels_last, bigger batches)
    python bench/bench.py --profile       # also the top ops of kd_live / kd_cached (bench/profile.txt)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from torch.utils.data import RandomSampler

from distillscope.cache import enable_batch_augmentation, setup_teacher_cache
from distillscope.train import build_module

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "bench"
TEMPERATURE, CE_WEIGHT, KD_WEIGHT = 4.0, 0.1, 0.9
SGD = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


@dataclass
class Pair:
    teacher: str
    student: str
    steps: int  # batches per repetition
    reps: int
    train_fraction: float = 0.65  # of the 1,797 digits; smaller for the heavy pair keeps the cache build short
    batch_size: int | None = None  # None: --batch-size
    draws: int | None = None  # augmentation draws cached per sample; None: --draws

    @property
    def name(self) -> str:
        return f"{self.teacher} -> {self.student}"


PAIRS = {
    "cpu": [Pair("resnet18", "mobilenetv3_small_050", steps=6, reps=5),
            # ~1 GFLOP/image teacher on 1 shared core: a smaller batch and set keep `make bench` near 10 minutes.
            Pair("cifar_resnet32x4", "cifar_resnet8x4", steps=2, reps=3, train_fraction=0.12, batch_size=32, draws=1)],
    "cuda": [Pair("resnet18", "mobilenetv3_small_050", steps=6, reps=5),
             Pair("cifar_resnet32x4", "cifar_resnet8x4", steps=8, reps=5)],
}


class PeakMemory:
    """Peak memory during a block: CUDA's allocator peak, or the sampled resident set size on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, 0.0

    @staticmethod
    def rss_mb() -> float:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * 4096 / 2**20

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.base, self.peak, self.running = self.rss_mb(), self.rss_mb(), True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss_mb())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.running = False
            self.thread.join()
            self.peak_mb = self.peak - self.base


class StepTimer(Callback):
    """Wall time and images of the steps after the first `warmup` of each fit (data loading included)."""

    def __init__(self, device: torch.device, warmup: int):
        self.device, self.warmup, self.reps = device, warmup, []

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def step_start(self, step: int) -> None:
        if step == self.warmup:
            self._t0, self._images = self._now(), 0

    def step_end(self, step: int, images: int) -> None:
        if step >= self.warmup:
            self._images += images
            self._t1 = self._now()

    def close_rep(self) -> None:
        self.reps.append(self._images / (self._t1 - self._t0))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.step_start(batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.step_end(batch_idx, len(batch[0]))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.close_rep()


def compose_cfg(pair: Pair, args, row: str, cache_dir: Path):
    overrides = [
        f"paths.root_dir={ROOT}", f"paths.output_dir={cache_dir}/run",
        "data=digits", "data.in_chans=3", "data.crop_padding=4", "data.hflip=true", f"data.batch_size={pair.batch_size or args.batch_size}",
        f"data.val_fraction={(1 - pair.train_fraction) / 2}", f"data.test_fraction={(1 - pair.train_fraction) / 2}",
        f"seed={args.seed}", "optimizer=sgd", *(f"optimizer.{k}={v}" for k, v in SGD.items()), "scheduler=none",
        f"student.name={pair.student}", "student=timm",
        "speed.device_augment=true", f"speed.channels_last={args.device == 'cuda'}",
        f"teacher_cache.dir={cache_dir}", f"teacher_cache.num_draws={pair.draws or args.draws}",
    ]
    if row == "student_only":
        overrides += ["teacher=none", "distill=none", "distill.ce.weight=1.0"]
    else:
        overrides += ["teacher=timm", f"teacher.name={pair.teacher}", "distill=kd", f"distill.ce.weight={CE_WEIGHT}", f"distill.kd.weight={KD_WEIGHT}",
                      f"distill.kd.temperature={TEMPERATURE}", f"teacher_cache.enabled={row == 'kd_cached'}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


class DistillscopeRow:
    """The real pipeline of `python -m distillscope.train`: datamodule, module, teacher cache, Lightning fit."""

    def __init__(self, pair: Pair, args, row: str, cache_dir: Path, device: torch.device):
        from hydra.utils import instantiate

        cfg = compose_cfg(pair, args, row, cache_dir)
        L.seed_everything(args.seed, workers=True)
        self.datamodule = instantiate(cfg.data)
        enable_batch_augmentation(cfg, self.datamodule)
        self.module = build_module(cfg, self.datamodule).to(device)
        start = time.perf_counter()
        self.cache = setup_teacher_cache(cfg, self.module, self.datamodule)
        self.cache_build_s = time.perf_counter() - start
        self.pair, self.device = pair, device
        self.timer = StepTimer(device, args.warmup)

    def rep(self) -> None:
        """One fit of warm-up + timed steps (module and optimizer state carry over between fits)."""
        trainer = L.Trainer(
            accelerator="gpu" if self.device.type == "cuda" else "cpu", devices=1,
            precision="bf16-mixed" if self.device.type == "cuda" else "32-true",
            max_epochs=1, limit_train_batches=self.timer.warmup + self.pair.steps, limit_val_batches=0,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, callbacks=[self.timer],
        )
        trainer.fit(self.module, datamodule=self.datamodule)

    def extra(self) -> dict:
        if self.cache is None:
            return {}
        size = sum(p.stat().st_size for p in self.cache.path.glob("*.npy"))
        return {"cache_build_s": round(self.cache_build_s, 2), "cache_mb": round(size / 2**20, 3),
                "cache_draws": self.cache.augmentation.num_draws}


class TorchdistillRow:
    """The same KD through torchdistill: DistillationBox from a train_config dict (what its YAML holds),
    its KDLoss inside WeightedSumLoss, its pre-epoch/forward/post-forward processes, driven by the loop of its
    example scripts. Same dataset and the same batched augmentation, applied before forward_process."""

    def __init__(self, pair: Pair, args, cache_dir: Path, device: torch.device):
        from hydra.utils import instantiate
        from torchdistill.core.distillation import get_distillation_box
        from torchdistill.datasets.registry import DATASET_WRAPPER_DICT, register_dataset_wrapper
        from torchdistill.datasets.wrapper import BaseDatasetWrapper

        if "IndexedSuppWrapper" not in DATASET_WRAPPER_DICT:
            @register_dataset_wrapper
            class IndexedSuppWrapper(BaseDatasetWrapper):
                """torchdistill's base wrapper, with the sample index in supp_dict for the replayable augmentation."""

                def __getitem__(self, index):
                    x, y, _ = self.org_dataset[index]
                    return x, y, {"index": index}

        cfg = compose_cfg(pair, args, "kd_live", cache_dir)
        L.seed_everything(args.seed, workers=True)
        datamodule = instantiate(cfg.data)
        self.augmentation = enable_batch_augmentation(cfg, datamodule)
        datamodule.setup("fit")
        teacher, student = instantiate(cfg.teacher).to(device), instantiate(cfg.student).to(device)
        if device.type == "cuda":
            teacher, student = teacher.to(memory_format=torch.channels_last), student.to(memory_format=torch.channels_last)
        io = {"student_module_path": ".", "student_module_io": "output", "teacher_module_path": ".", "teacher_module_io": "output"}
        train_config = {
            "num_epochs": 1,
            "train_data_loader": {
                "dataset_id": "train", "sampler": {"class_or_func": RandomSampler, "kwargs": {}},
                "kwargs": {"batch_size": pair.batch_size or args.batch_size, "num_workers": 0, "pin_memory": device.type == "cuda"},
                "dataset_wrapper": {"key": "IndexedSuppWrapper"},
            },
            "teacher": {"forward_proc": "forward_batch_only", "requires_grad": False},
            "student": {"forward_proc": "forward_batch_only", "requires_grad": True},
            "optimizer": {"key": "SGD", "kwargs": dict(SGD)},
            "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {
                "criterion": {"key": "KDLoss", "kwargs": {**io, "temperature": TEMPERATURE, "alpha": CE_WEIGHT,
                                                          "beta": KD_WEIGHT, "reduction": "batchmean"}},
                "weight": 1.0}}}},
        }
        self.box = get_distillation_box(teacher, student, {"train": datamodule.train_set}, train_config, device, None, False, 1)
        self.pair, self.device, self.epoch = pair, device, 0
        self.timer = StepTimer(device, args.warmup)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def rep(self) -> None:
        box, device = self.box, self.device
        box.pre_epoch_process(epoch=self.epoch)
        for step, (x, y, supp) in enumerate(box.train_data_loader):
            if step == self.timer.warmup + self.pair.steps:
                break
            self.timer.step_start(step)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x = self.augmentation(x, supp["index"].to(device), self.epoch)
            with self.autocast:
                loss = box.forward_process(x, y, supp_dict=supp)
            box.post_forward_process(loss=loss)
            self.timer.step_end(step, len(x))
        box.post_epoch_process()
        self.timer.close_rep()
        self.epoch += 1

    def extra(self) -> dict:
        return {}


def run_pair(pair: Pair, args, cache_dir: Path, device: torch.device) -> dict:
    """Build the four rows, then run their repetitions round-robin so load changes on a shared machine hit
    every row alike; peak memory per row is taken over its own repetitions."""
    rows, peaks = {}, {}
    for name in ("student_only", "kd_live", "kd_cached", "torchdistill"):
        with PeakMemory(device) as memory:
            rows[name] = (TorchdistillRow(pair, args, cache_dir, device) if name == "torchdistill"
                          else DistillscopeRow(pair, args, name, cache_dir, device))
        peaks[name] = memory.peak_mb
    for rep in range(pair.reps):
        for name, row in rows.items():
            with PeakMemory(device) as memory:
                row.rep()
            peaks[name] = max(peaks[name], memory.peak_mb)
            print(f"  {pair.name} rep {rep + 1}/{pair.reps} {name}: {row.timer.reps[-1]:.0f} img/s", flush=True)
    return {name: {"images_per_s": statistics.median(row.timer.reps), "reps_images_per_s": row.timer.reps,
                   "peak_memory_mb": peaks[name], **row.extra()} for name, row in rows.items()}


def profile_rows(pair: Pair, args, cache_dir: Path, device: torch.device) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    text = []
    for name in ("student_only", "kd_live", "kd_cached"):
        row = DistillscopeRow(pair, args, name, cache_dir, device)
        with profile(activities=activities) as prof:
            row.rep()
        text.append(f"== {pair.name}: {name} ({args.warmup + pair.steps} steps)\n"
                    + prof.key_averages().table(sort_by=sort, row_limit=15))
    return "\n".join(text)


def table(results: dict) -> str:
    lines = ["| pair (batch) | row | images/s | peak MB |", "|---|---|---|---|"]
    for pair, rows in results["pairs"].items():
        for row in ("student_only", "kd_live", "kd_cached", "torchdistill"):
            r = rows[row]
            lines.append(f"| {pair} ({rows['batch_size']}) | {row} | {r['images_per_s']:.1f} | {r['peak_memory_mb']:.0f} |")
    lines += ["", "| pair | kd_live/student_only | kd_cached/student_only | kd_cached/torchdistill | kd_live/torchdistill |",
              "|---|---|---|---|---|"]
    for pair, rows in results["pairs"].items():
        q = rows["ratios"]
        lines.append(f"| {pair} | {q['kd_live/student_only']:.2f} | {q['kd_cached/student_only']:.2f} | "
                     f"{q['kd_cached/torchdistill']:.2f} | {q['kd_live/torchdistill']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=128)
    # One thread by default: on this 2-core machine shared with other jobs, two OpenMP threads spin against
    # each other (a mobilenetv3 step took 25-34 s with 2 threads, 0.7 s with 1). Same count for every row.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--draws", type=int, default=2, help="augmentation draws per sample in the teacher cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of every repetition")
    parser.add_argument("--pairs", default=None, help="comma-separated indices into the pair list (default: all)")
    parser.add_argument("--profile", action="store_true", help="write the top ops of each distillscope row to bench/profile.txt")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pairs = PAIRS[args.device]
    if args.pairs:
        pairs = [pairs[int(i)] for i in args.pairs.split(",")]
    start = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = {"device": args.device, "threads": args.threads, "batch_size": args.batch_size, "draws": args.draws,
               "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "pairs": {}}
    with tempfile.TemporaryDirectory(prefix="distillscope-bench-") as tmp:
        if args.profile:
            text = "\n".join(profile_rows(pair, args, Path(tmp) / f"p{i}", device) for i, pair in enumerate(pairs))
            (BENCH_DIR / "profile.txt").write_text(text)
            print(text)
        for i, pair in enumerate(pairs):
            cache_dir = Path(tmp) / f"pair{i}"
            rows = run_pair(pair, args, cache_dir, device)
            rate = {row: r["images_per_s"] for row, r in rows.items()}
            rows["ratios"] = {
                "kd_live/student_only": rate["kd_live"] / rate["student_only"],
                "kd_cached/student_only": rate["kd_cached"] / rate["student_only"],
                "kd_cached/torchdistill": rate["kd_cached"] / rate["torchdistill"],
                "kd_live/torchdistill": rate["kd_live"] / rate["torchdistill"],
            }
            rows["steps_per_rep"], rows["reps"], rows["warmup_steps"] = pair.steps, pair.reps, args.warmup
            rows["batch_size"] = pair.batch_size or args.batch_size
            results["pairs"][pair.name] = rows
            args.out.write_text(json.dumps(results, indent=2) + "\n")  # what is done so far survives an interrupt
            print(f"{pair.name}: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in rate.items()), flush=True)
    results["seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + table(results) + f"\n\n{args.device}, {args.threads} thread(s), "
          f"median of the repetitions; {results['seconds']} s in all; written to {args.out}")


if __name__ == "__main__":
    main()
