"""Explain a distillation run: fidelity figures, teacher-vs-student explanation maps, interpretable surrogates.

    python -m distillscope.explain run_dir=outputs/digits_kd/<time>
    python -m distillscope.explain teacher_ckpt=t.ckpt students=[s.ckpt] baseline=b.ckpt data=digits

Also runs at the end of training when `explain.enabled=true` (see `train.py`). Writes `explain.json` and
PNG figures into `<run_dir>/explain/` and lists them in the run's `report.md`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from distillscope.errors import ConfigError, config_errors_as_one_line
from distillscope.interpret import plots
from distillscope.interpret.attributions import METHODS, attribute, find_gradcam_layer, supports_gradcam
from distillscope.interpret.dark_knowledge import class_similarity, off_diagonal_correlation
from distillscope.interpret.faithfulness import deletion_insertion
from distillscope.interpret.similarity import SIMILARITIES, closer_share, similarity_scores, summarize
from distillscope.interpret.soft_tree import SoftDecisionTree
from distillscope.interpret.surrogates import fit_surrogates, surrogate_features
from distillscope.metrics import DetailMetrics, FidelityMetrics, classification_report
from distillscope.models import load_model_from_checkpoint
from distillscope.models.taps import FeatureTaps

log = logging.getLogger(__name__)
TEACHER, KD_STUDENT, BASELINE = "teacher", "student (KD)", "baseline student"
# Loss terms that only look at logits; any other term matches features, so its attention maps are drawn.
LOGIT_TERMS = {"ce", "kd"}


def check_settings(settings: DictConfig) -> None:
    """Bad explain settings fail here, before any model runs."""
    unknown = [m for m in settings.methods if m not in METHODS]
    if unknown or not settings.methods:
        raise ConfigError("explain.methods", f"unknown or empty: {unknown or '[]'}", f"use any of {', '.join(METHODS)}")
    if int(settings.num_images) < 2:
        raise ConfigError("explain.num_images", f"must be >= 2, got {settings.num_images}", "use e.g. 20")
    if settings.share_similarity not in SIMILARITIES:
        raise ConfigError("explain.share_similarity", f"unknown '{settings.share_similarity}'", f"use one of {', '.join(SIMILARITIES)}")
    if settings.target not in ("label", "teacher"):
        raise ConfigError("explain.target", f"unknown '{settings.target}'", "use label or teacher")
    if not 0 < float(settings.topk_fraction) < 1:
        raise ConfigError("explain.topk_fraction", f"must be in (0, 1), got {settings.topk_fraction}", "use e.g. 0.1")


def stratified_indices(labels: Tensor, n: int, seed: int) -> Tensor:
    """`n` indices, classes taken in turn (round robin over seeded per-class shuffles)."""
    generator = torch.Generator().manual_seed(seed)
    pools = [idx[torch.randperm(len(idx), generator=generator)].tolist()
             for c in labels.unique() for idx in [torch.nonzero(labels == c).flatten()]]
    chosen: list[int] = []
    while len(chosen) < min(n, len(labels)):
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    return torch.tensor(chosen)


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor, batch_size: int = 256) -> Tensor:
    model.eval()
    return torch.cat([model(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])


def split_tensors(dataset) -> tuple[Tensor, Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])


@torch.no_grad()
def stage_attention(model: nn.Module, inputs: Tensor) -> list[Tensor]:
    """Attention map of every timm feature stage (Zagoruyko & Komodakis 2017: mean squared activation)."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    stages = list(range(len(info.get_dicts() if hasattr(info, "get_dicts") else info)))
    taps = FeatureTaps(model, stages, "explain.attention_maps")
    try:
        model.eval()
        model(inputs)
        feats = taps.pop()
    finally:
        taps.remove()
    maps = []
    for s in stages:
        a = feats[str(s)].pow(2).mean(1, keepdim=True)
        a = torch.nn.functional.interpolate(a, size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        maps.append(a / (a.flatten(1).amax(1)[:, None, None] + 1e-12))
    return maps


def fidelity(logits: dict[str, Tensor], targets: Tensor, num_classes: int) -> dict:
    """Per model: accuracy/F1/ECE, per-class table, confusion matrix, reliability bins; students vs teacher."""
    out: dict = {}
    for name, z in logits.items():
        details = DetailMetrics(num_classes)
        details.update(z, targets)
        row = details.compute()
        row["accuracy"] = float((z.argmax(1) == targets).float().mean())
        if name != TEACHER and TEACHER in logits:
            pair = FidelityMetrics(num_classes, "test", with_teacher=True)
            pair.update(z, targets, logits[TEACHER])
            row["agreement"] = float(pair.agreement.compute())
            row["kl"] = float(pair.kl.compute())
        out[name] = row
    return out


def explain_models(
    models: dict[str, nn.Module],
    datamodule,
    settings: DictConfig,
    out_dir: Path,
    temperature: float = 1.0,
    feature_terms: bool = False,
) -> dict:
    """Everything `explain` reports, for a teacher (key "teacher") and students; writes PNGs and explain.json."""
    check_settings(settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(settings.seed))
    datamodule.setup("test")
    num_classes = int(datamodule.num_classes)
    test_x, test_y = split_tensors(datamodule.test_set)
    logits = {name: predict(m, test_x) for name, m in models.items()}
    summary: dict = {"num_test_images": len(test_y), "temperature": temperature, "figures": {}}
    summary["fidelity"] = fidelity(logits, test_y, num_classes)
    figures = summary["figures"]
    class_names = [str(c) for c in range(num_classes)]

    figures["reliability"] = plots.reliability_diagram(
        {n: f["reliability"] for n, f in summary["fidelity"].items()}, {n: f["ece"] for n, f in summary["fidelity"].items()},
        out_dir / "reliability.png")
    figures["confusion"] = plots.heatmaps(
        {n: f["confusion_matrix"] for n, f in summary["fidelity"].items()}, "confusion matrices (test split)",
        out_dir / "confusion.png", fmt=".0f", cmap="Blues")

    # Dark knowledge: mean soft label per true class at the run's temperature.
    sims = {n: class_similarity(z, test_y, num_classes, temperature) for n, z in logits.items()}
    figures["class_similarity"] = plots.heatmaps(
        {f"{n} (T={temperature:g})": s.fill_diagonal_(float("nan")).numpy() for n, s in [(k, v.clone()) for k, v in sims.items()]},
        "mean soft label per true class (diagonal hidden: the colours are the dark knowledge)",
        out_dir / "class_similarity.png", fmt=".2f")
    if TEACHER in sims:
        summary["class_similarity_correlation"] = {
            n: off_diagonal_correlation(sims[TEACHER], s) for n, s in sims.items() if n != TEACHER}

    # Explanation maps on a stratified held-out sample.
    pick = stratified_indices(test_y, int(settings.num_images), int(settings.seed))
    images, labels = test_x[pick], test_y[pick]
    target = logits[TEACHER][pick].argmax(1) if settings.target == "teacher" and TEACHER in logits else labels
    summary["images"] = {"test_indices": pick.tolist(), "labels": labels.tolist(), "target": settings.target}
    summary["maps"], summary["faithfulness"] = {}, {}
    rows = min(int(settings.grid_rows), len(pick))
    row_labels = [f"{class_names[int(y)]}" for y in labels[:rows]]
    for method in settings.methods:
        usable = {n: m for n, m in models.items() if method != "gradcam" or supports_gradcam(m)}
        maps = {}
        for name, model in usable.items():
            layer = None
            if method == "gradcam":
                layer = settings.gradcam_layer.get("teacher" if name == TEACHER else "student") or find_gradcam_layer(model, images.shape[-1])
            maps[name] = attribute(model, images, target, method, gradcam_layer=layer, ig_steps=int(settings.ig_steps))
            if settings.faithfulness:
                summary["faithfulness"].setdefault(method, {})[name] = deletion_insertion(
                    model, images, target, maps[name], seed=int(settings.seed))
        result: dict = {"models": list(maps)}
        if TEACHER in maps:
            scores = {n: similarity_scores(maps[TEACHER], m, float(settings.topk_fraction)) for n, m in maps.items() if n != TEACHER}
            result["similarity_to_teacher"] = {n: {k: summarize(v) for k, v in s.items()} for n, s in scores.items()}
            if KD_STUDENT in scores and BASELINE in scores:
                key = settings.share_similarity
                result["closer_to_kd_share"] = closer_share(scores[KD_STUDENT][key], scores[BASELINE][key])
            shown = {n: s["spearman"][:rows] for n, s in scores.items()}
            figures[f"explanations_{method}"] = plots.explanation_grid(
                images[:rows], row_labels, {n: m[:rows] for n, m in maps.items()}, shown,
                f"{method}: teacher vs students (rho = Spearman to the teacher's map)", out_dir / f"explanations_{method}.png")
        summary["maps"][method] = result
    if settings.faithfulness and summary["faithfulness"]:
        method = settings.methods[0] if settings.methods[0] in summary["faithfulness"] else next(iter(summary["faithfulness"]))
        res = summary["faithfulness"][method]
        lines = {f"{n}: deletion": r["deletion_curve"] for n, r in res.items()}
        lines.update({f"{n}: random": r["random_deletion_curve"] for n, r in res.items()})
        figures["deletion"] = plots.curves(next(iter(res.values()))["fractions"], lines, f"deletion curves ({method})",
                                           "fraction of pixels removed", "p(class)", out_dir / "deletion.png")

    want_stages = settings.attention_maps is True or (settings.attention_maps == "auto" and feature_terms)
    if want_stages:
        stages = {n: stage_attention(m, images[:rows]) for n, m in models.items()}
        stages = {n: s for n, s in stages.items() if s}
        if stages:
            figures["attention_maps"] = plots.stage_maps(images[:rows], stages, out_dir / "attention_maps.png")

    for name, model in models.items():
        if isinstance(model, SoftDecisionTree):
            key = "soft_tree" if name == KD_STUDENT else f"soft_tree_{name.split()[0]}"
            figures[key] = plots.soft_tree(model.filters(), model.leaf_distributions(), class_names, out_dir / f"{key}.png")

    if settings.surrogates.enabled and TEACHER in models:
        summary["surrogates"] = surrogates(models, datamodule, logits[TEACHER], test_x, test_y, settings, temperature)

    summary["figures"] = {k: str(Path(v).relative_to(out_dir)) for k, v in figures.items()}
    (out_dir / "explain.json").write_text(json.dumps(json_safe(summary), indent=2))
    return summary


def surrogates(models, datamodule, teacher_test_logits, test_x, test_y, settings, temperature: float) -> dict:
    train_x, train_y = split_tensors(datamodule.train_set)
    student = models.get(KD_STUDENT) or next((m for n, m in models.items() if n != TEACHER), None)
    size = int(settings.surrogates.pixel_size)
    features_train, mode = surrogate_features(train_x, settings.surrogates.features, student, size)
    features_test, _ = surrogate_features(test_x, mode, student, size)
    result = fit_surrogates(
        features_train, train_y.numpy(), (predict(models[TEACHER], train_x) / temperature).softmax(1).numpy(),
        features_test, test_y.numpy(), teacher_test_logits.argmax(1).numpy(),
        tree_max_depth=int(settings.surrogates.tree_max_depth), seed=int(settings.seed))
    return {"features": mode, "models": result}


def json_safe(obj):
    """NaN (empty reliability bins, absent classes) becomes null so explain.json is strict JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def report_section(summary: dict, folder: str = "explain") -> str:
    """Markdown for report.md: the pictures first, the numbers next to them."""
    fid, figs = summary["fidelity"], summary["figures"]
    lines = ["", "## Fidelity and explanations", ""]
    lines += ["| Model | Test acc | Agreement | KL(T‖S) | ECE | Class-sim. corr. |", "|---|---|---|---|---|---|"]
    corr = summary.get("class_similarity_correlation", {})
    for name, row in fid.items():
        cells = [f"{row['accuracy']:.4f}", f"{row.get('agreement', float('nan')):.4f}", f"{row.get('kl', float('nan')):.4f}",
                 f"{row['ece']:.4f}", f"{corr[name]:.3f}" if name in corr else "-"]
        lines.append(f"| {name} | " + " | ".join(c.replace("nan", "-") for c in cells) + " |")
    lines.append("")
    for method, res in summary["maps"].items():
        sims = res.get("similarity_to_teacher", {})
        if not sims:
            continue
        lines.append(f"### {method}")
        lines.append("")
        if f"explanations_{method}" in figs:
            lines.append(f"![{method}]({folder}/{figs[f'explanations_{method}']})")
            lines.append("")
        lines += ["| Student | cosine | Spearman | top-k IoU | worst Spearman (test idx) |", "|---|---|---|---|---|"]
        for name, s in sims.items():
            worst = ", ".join(f"{w['value']:.2f} ({summary['images']['test_indices'][w['index']]})" for w in s["spearman"]["worst"])
            lines.append(f"| {name} | {s['cosine']['mean']:.3f} ± {s['cosine']['std']:.3f} | "
                         f"{s['spearman']['mean']:.3f} ± {s['spearman']['std']:.3f} | "
                         f"{s['topk_iou']['mean']:.3f} ± {s['topk_iou']['std']:.3f} | {worst} |")
        if "closer_to_kd_share" in res:
            lines += ["", f"Teacher map closer to the KD student's than to the baseline's: "
                          f"**{res['closer_to_kd_share']:.0%}** of images (50% is chance)."]
        lines.append("")
    for key, title in (("class_similarity", "Class similarity (dark knowledge)"), ("reliability", "Reliability"),
                       ("confusion", "Confusion matrices"), ("deletion", "Faithfulness (deletion)"),
                       ("attention_maps", "Per-stage attention maps"), ("soft_tree", "Soft decision tree")):
        if key in figs:
            lines += [f"### {title}", "", f"![{key}]({folder}/{figs[key]})", ""]
    if summary.get("faithfulness"):
        lines += ["| Method | Model | deletion AUC | random AUC | insertion AUC |", "|---|---|---|---|---|"]
        for method, res in summary["faithfulness"].items():
            for name, r in res.items():
                lines.append(f"| {method} | {name} | {r['deletion_auc']:.3f} | {r['random_deletion_auc']:.3f} | {r['insertion_auc']:.3f} |")
        lines.append("")
    if "surrogates" in summary:
        lines += [f"### Interpretable surrogates (fitted on {summary['surrogates']['features']})", "",
                  "| Surrogate | accuracy | fidelity to teacher | depth | leaves |", "|---|---|---|---|---|"]
        for name, r in summary["surrogates"]["models"].items():
            lines.append(f"| {name} | {r['accuracy']:.4f} | {r['fidelity']:.4f} | {r.get('depth', '-')} | {r.get('leaves', '-')} |")
        lines.append("")
    for name, row in fid.items():
        lines += [f"<details><summary>Per-class report: {name}</summary>", "", classification_report(row["per_class"]), "", "</details>", ""]
    return "\n".join(lines)


def append_report(run_dir: Path, summary: dict, out_dir: Path) -> None:
    report = run_dir / "report.md"
    text = report.read_text() if report.is_file() else "# distillscope report\n"
    report.write_text(text.split("\n## Fidelity and explanations")[0].rstrip("\n") + "\n"
                      + report_section(summary, str(out_dir.relative_to(run_dir)) if out_dir.is_relative_to(run_dir) else str(out_dir)))


def log_to_wandb(loggers: list, summary: dict, out_dir: Path) -> None:
    """Figures as W&B images, the fidelity and similarity numbers as W&B tables."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        for key, rel in summary["figures"].items():
            logger.log_image(key=f"explain/{key}", images=[str(out_dir / rel)])
        rows = [[n, r["accuracy"], r.get("agreement"), r.get("kl"), r["ece"]] for n, r in summary["fidelity"].items()]
        logger.log_table(key="explain/fidelity", columns=["model", "acc", "agreement", "kl", "ece"], data=rows)
        sim_rows = [[method, n, *(s[k]["mean"] for k in SIMILARITIES), res.get("closer_to_kd_share")]
                    for method, res in summary["maps"].items() for n, s in res.get("similarity_to_teacher", {}).items()]
        logger.log_table(key="explain/similarity", columns=["method", "student", *SIMILARITIES, "closer_to_kd_share"], data=sim_rows)


def explain_after_training(cfg: DictConfig, module, datamodule, run_dir: Path, loggers: list) -> dict | None:
    """The train.py hook: explain the run's teacher, trained student and baseline; figures into report.md and W&B."""
    if module.teacher is None:
        log.info("explain.enabled but the run has no teacher: nothing to compare, skipped")
        return None
    models = {TEACHER: module.teacher, KD_STUDENT: module.student}
    baseline = cfg.report.get("baseline_checkpoint")
    if baseline and Path(baseline).is_file():
        models[BASELINE] = load_model_from_checkpoint(baseline)
    temperature = float(OmegaConf.select(cfg, "distill.kd.temperature") or 1.0)
    feature_terms = any(term.student_taps or term.teacher_taps for term in module.losses.values())
    out_dir = run_dir / "explain"
    was_training = module.student.training
    summary = explain_models(models, datamodule, cfg.explain, out_dir, temperature, feature_terms)
    module.student.train(was_training)
    append_report(run_dir, summary, out_dir)
    log_to_wandb(loggers, summary, out_dir)
    log.info("explanations and figures written to %s", out_dir)
    return summary


# -- command line ---------------------------------------------------------------------------------
def load_run(run_dir: Path) -> dict:
    record = run_dir / "run.json"
    if not record.is_file():
        raise ConfigError("run_dir", f"no run.json in {run_dir}", "pass a directory written by `python -m distillscope.train`")
    return json.loads(record.read_text())


def run_checkpoint(run_dir: Path, record: dict) -> Path:
    best = record.get("best_checkpoint")
    if best and Path(best).is_file():
        return Path(best)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise ConfigError("run_dir", f"no checkpoint in {run_dir}/checkpoints", "explain a finished run, or pass students=[<ckpt>]")
    return last


def load_checkpoint_model(path, key: str) -> nn.Module:
    if not Path(path).is_file():
        raise ConfigError(key, f"no file at {path}", f"point {key} at a distillscope .ckpt")
    return load_model_from_checkpoint(str(path))


def models_from_config(cfg: DictConfig) -> tuple[dict[str, nn.Module], DictConfig, Path, float, bool, Path | None]:
    """Teacher, students, data config, output dir, temperature and feature-term flag from the CLI config."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    record = load_run(run_dir) if run_dir else {}
    run_cfg = OmegaConf.create(record.get("config", {}))
    data_cfg = run_cfg.data if "data" in run_cfg else cfg.data
    teacher_path = cfg.teacher_ckpt or OmegaConf.select(run_cfg, "teacher.checkpoint")
    if not teacher_path:
        raise ConfigError("teacher_ckpt", "no teacher checkpoint given and the run has none", "pass teacher_ckpt=<ckpt> or a KD run_dir=")
    models = {TEACHER: load_checkpoint_model(teacher_path, "teacher_ckpt")}
    students = list(cfg.students) or ([run_checkpoint(run_dir, record)] if run_dir else [])
    if not students:
        raise ConfigError("students", "no student given", "pass run_dir=<run> or students=[<ckpt>]")
    for i, path in enumerate(students):
        models[KD_STUDENT if i == 0 else f"student {i + 1}"] = load_checkpoint_model(path, "students")
    baseline = cfg.baseline or OmegaConf.select(run_cfg, "report.baseline_checkpoint")
    if baseline and Path(baseline).is_file():
        models[BASELINE] = load_checkpoint_model(baseline, "baseline")
    elif cfg.baseline:
        raise ConfigError("baseline", f"no file at {cfg.baseline}", "run `make baseline` or drop baseline=")
    temperature = cfg.temperature or OmegaConf.select(run_cfg, "distill.kd.temperature") or 1.0
    terms = set((run_cfg.get("distill") or {}).keys()) if run_dir else set()
    out_dir = Path(cfg.output_dir) if cfg.output_dir else (run_dir / "explain" if run_dir else Path(cfg.paths.output_dir))
    return models, data_cfg, out_dir, float(temperature), bool(terms - LOGIT_TERMS), run_dir


def run(cfg: DictConfig) -> dict:
    check_settings(cfg.explain)
    models, data_cfg, out_dir, temperature, feature_terms, run_dir = models_from_config(cfg)
    datamodule = instantiate(data_cfg)
    summary = explain_models(models, datamodule, cfg.explain, out_dir, temperature, feature_terms)
    if run_dir is not None:
        append_report(run_dir, summary, out_dir)
    return summary


@hydra.main(version_base="1.3", config_path="../../conf", config_name="explain")
def main(cfg: DictConfig) -> None:
    with config_errors_as_one_line():
        summary = run(cfg)
    print(report_section(summary), flush=True)


if __name__ == "__main__":
    main()
