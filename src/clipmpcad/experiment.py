"""A run from configuration to run folder: data and shots, backbone and prototypes, training,
bank and calibration (`train_model`, returning the run in memory; `train_run`, its folder); then
evaluation into metrics.json and the report (`evaluate_run` on a run in memory, `test_run` on a
folder).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .atomic import sole_writer, write_json, write_text
from .backbone import Backbone, load_backbone
from .checkpoint import RunMeta, TrainedRun, load_run, read_train_record, save_model
from .config import RunConfig
from .data import CategoryData, load_category
from .data.dataset import load_batch
from .data.fewshot import Shots, evaluation_samples, normal_shots_only, read_shots, select_shots, shots_to_json
from .detector import Detector, build_bank, calibrate_on_reference, fixed_calibration
from .errors import ConfigError
from .evaluation import REPORT_CASES, Evaluation, Preprocess, WorstMaps, evaluate, fit_test_calibration
from .madff import check_adapter_fits, count_parameters
from .memory_bank import MemoryBank
from .metrics import decision_counts
from .metrics.summary import RunResult
from .model import ClipMPCAD
from .prompts import load_prompt_set
from .protocols import RANDOM_WEIGHTS_NOTE, TEST_SELECTED_NOTE, Protocol, get_protocol
from .prototypes import PrototypeCache, prompt_sentences, text_prototypes
from .report.tables import benchmark_table, counted, percent
from .runs import check_new_run_dir, staged_run_dir
from .runtime import configure_cpu, fixed_torch_seed, precision_name, resolve_device, seed_everything
from .scoring import Calibration
from .synthesis import synthesise_anomalies
from .training import SupportSet, TrainHistory, fit

LEARNING_RATES = {"medical": 1e-3, "industrial": 1e-4}  # METHOD §8


def load_data(cfg: RunConfig) -> CategoryData:
    """The run's category, with the domain override applied (checked before any work)."""
    options: dict[str, Any] = dict(cfg.data.options)
    if cfg.data.domain is not None:
        options["domain"] = cfg.data.domain
    return load_category(cfg.data.dataset, cfg.data.root, cfg.data.category, **options)


def choose_shots(cfg: RunConfig, data: CategoryData, protocol: Protocol) -> Shots:
    """The run's shots: a shot file's (held to the protocol's rule on abnormal shots) or sampled."""
    if cfg.data.shot_file:
        shots = read_shots(cfg.data.shot_file, data)
        if shots.abnormal and not protocol.abnormal_shots:  # e.g. a clean run's file for a normal-only run
            warnings.warn(
                f"{cfg.data.shot_file}: the {len(shots.abnormal)} abnormal shots are not used: the "
                f"{protocol.name} protocol trains on none (its normal shots are used)",
                stacklevel=2,
            )
            return normal_shots_only(shots, data)
        if protocol.abnormal_shots and not shots.abnormal:
            raise ConfigError(
                f"{cfg.data.shot_file}: lists no abnormal shots, but the {protocol.name} protocol trains on "
                f"k of them; give a file with abnormal shots, or --protocol normal-only"
            )
        return shots
    return select_shots(data, cfg.data.shot, cfg.seed, cfg.data.shot_source, normal_only=not protocol.abnormal_shots)


def preprocess_for(backbone: Backbone, data: CategoryData, protocol: Protocol) -> Preprocess:
    normalize = protocol.clip_normalise_medical or data.domain != "medical"
    return Preprocess(backbone.info.image_size, normalize, tuple(backbone.mean), tuple(backbone.std))


def build_prototypes(
    backbone: Backbone, cfg: RunConfig, data: CategoryData
) -> tuple[torch.Tensor, str | None, str, str]:
    """T (D, 2) for the run's prompt mode, set and object name, through the on-disk cache; the
    set's name (None in base mode, which uses none), the object name and the sentences' digest."""
    if cfg.prompts.mode == "base":
        if cfg.prompts.prompt_set:
            warnings.warn(f"--prompts base uses no prompt set: {cfg.prompts.prompt_set} is not used", stacklevel=2)
        name, prompt_set = None, None
    else:
        name = cfg.prompts.prompt_set or data.prompt_set
        prompt_set = load_prompt_set(name)
    classname = cfg.prompts.classname or data.classname
    sentences = prompt_sentences(cfg.prompts.mode, prompt_set, classname)
    prototypes = PrototypeCache().get_or_compute(
        backbone.info.identity, sentences, lambda: text_prototypes(backbone.encode_text, backbone.tokenize, sentences)
    )
    return prototypes, name, classname, sentences.digest()


def load_support(shots: Shots, prep: Preprocess, views: int, seed: int, has_masks: bool) -> SupportSet:
    """Support views: k normal then k abnormal images (synthesised when there are none), × views."""
    normal = load_batch(shots.normal, prep.image_size, prep.normalize, prep.mean, prep.std)
    images, masks = normal.images, normal.masks
    labels = [0] * len(shots.normal)
    if shots.abnormal:
        abnormal = load_batch(shots.abnormal, prep.image_size, prep.normalize, prep.mean, prep.std)
        images, masks = torch.cat([images, abnormal.images]), torch.cat([masks, abnormal.masks])
        labels += [1] * len(shots.abnormal)
    elif shots.normal:  # normal-only (METHOD §8): anomalies synthesised on the normal shots
        fake, fake_masks = synthesise_anomalies(normal.images, seed)
        images, masks = torch.cat([images, fake]), torch.cat([masks, fake_masks])
        labels += [1] * len(shots.normal)
    return SupportSet.of_images(images, masks, torch.tensor(labels), views, seg=has_masks)


def train_run(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    train_on: Sequence[str] | None = None,
) -> Path:
    """Train one run and write its folder; returns the folder (train_model has the arguments)."""
    return train_model(cfg, out, overwrite=overwrite, progress=progress, train_on=train_on).run_dir


def train_model(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    train_on: Sequence[str] | None = None,
) -> TrainedRun:
    """Train one run and write its folder; returns the run as load_run would rebuild it from there,
    without reading it back (evaluate_run tests it). Bad input fails before any work, and so does
    a folder that another process is writing (atomic.sole_writer).

    train_on (zero-shot only): categories whose support sets train the adapters instead of the
    target's, as CATEGORY (same dataset and root) or DATASET:ROOT:CATEGORY (MVFA's leave-one-out).
    """
    with sole_writer(out):
        return _train_model(cfg, Path(out), overwrite, progress, train_on)


def _train_model(
    cfg: RunConfig, out: Path, overwrite: bool, progress: bool, train_on: Sequence[str] | None
) -> TrainedRun:
    cfg = cfg.with_absolute_paths()  # config.json must work from any folder
    protocol = get_protocol(cfg.protocol)
    if train_on and protocol.trains:
        raise ConfigError("--train-on trains adapters for the zero-shot protocol; add --protocol zero-shot")
    warn_unused_settings(cfg, protocol, bool(train_on))
    inputs = run_inputs(cfg, train_on or ())
    check_new_run_dir(out, overwrite, inputs)
    data = load_data(cfg)
    shots = choose_shots(cfg, data, protocol) if protocol.uses_shots else NO_SHOTS
    if cfg.data.shot_file and shots.k != cfg.data.shot:  # the file fixes k: config.json says so too
        cfg = cfg.with_overrides({"data.shot": shots.k})
    if protocol.uses_bank and shots.k == 1 and cfg.train.views == 1:
        raise ConfigError(
            "one shot without augmented views leaves no other normal view to calibrate against; "
            "keep train.views 11 or use --shot 2 or more"
        )
    sources = [_source_data(cfg, item, data) for item in train_on or ()]
    device = resolve_device(cfg.device)
    configure_cpu()
    generator = seed_everything(cfg.seed)
    start = time.perf_counter()
    backbone = load_backbone(cfg.backbone, quick_gelu_for_openai=protocol.quick_gelu_for_openai)
    if protocol.trains or sources:
        check_adapter_fits(cfg.adapter, backbone.info.width)  # the width is known once the backbone is
    prep = preprocess_for(backbone, data, protocol)
    prototypes, prompt_set, classname, sentences_digest = build_prototypes(backbone, cfg, data)
    support, lr, source_shots = _support(cfg, data, shots, sources, backbone, prep, protocol)
    backbone.drop_text()  # every prototype exists now: the text tower never goes to the device
    adapter = cfg.adapter if protocol.trains or sources else None
    with fixed_torch_seed(cfg.seed):
        model = ClipMPCAD(backbone, prototypes, adapter, cfg.decoder).to(device)
    model.bank_block_size = cfg.bank.block_size
    backbone.store_products(device, cfg.precision)
    normals = support.select(0) if support is not None and not sources else None
    best = protocol.epoch_rule == "best"
    selector = _BestEpoch(model, data, shots, normals, prep, cfg, protocol, device) if best else None
    history = TrainHistory()
    if support is not None:
        history = fit(
            model,
            support,
            dataclasses.replace(cfg.train, lr=lr),
            device=device,
            generator=generator,
            precision=cfg.precision,
            on_epoch=selector,
            progress=progress,
        )
    if selector is not None:
        selector.restore()
    detector, calibration, bank = finish_model(model, normals, data, cfg, protocol, device)
    meta = RunMeta(data.dataset, data.category, data.domain, classname, prompt_set, data.has_masks, prep.normalize)
    record = {
        "losses": history.losses,
        "steps": history.steps,
        "lr": lr,
        "support_views": len(support or ()),
        "train_on": list(train_on or []),
        "prompt_sentences_sha256": sentences_digest,  # which sentences made the prototypes, whatever a file says later
        "train_on_shots": source_shots,  # the shots each --train-on category gave, as shots.json records them
        "adapter_parameters": adapter_parameters(model),
        "train_seconds": time.perf_counter() - start,
        "device": str(device),
        "precision": precision_name(device, cfg.precision),
        "best_epoch": None if selector is None else selector.best_epoch,
    }
    with staged_run_dir(out, overwrite, inputs) as stage:
        write_json(stage / "config.json", cfg.to_dict())
        write_json(stage / "shots.json", shots_to_json(shots, data))
        save_model(stage, detector.model, calibration, meta, bank)
        write_json(stage / "train.json", record)
    return TrainedRun(out, cfg, meta, detector, prep)


def warn_unused_settings(cfg: RunConfig, protocol: Protocol, trained_elsewhere: bool) -> None:
    """A warning naming the settings, changed from their defaults, that this protocol never reads
    (zero-shot builds no bank; without --train-on it trains nothing and draws no shots)."""
    untrained = not (protocol.trains or trained_elsewhere)
    unused = [] if protocol.uses_bank else ["bank"]
    if untrained:
        unused += ["train", "adapter", "decoder", "data.shot", "data.shot_source", "data.shot_file"]
    changed = cfg.changed(*unused)
    if changed:
        how = " (--train-on CATEGORY trains adapters on another category)" if untrained else ""
        warnings.warn(
            f"the {protocol.name} protocol does not use {', '.join(changed)}: set, but left unused{how}", stacklevel=4
        )


NO_SHOTS = Shots(k=0, seed=None, source="none (zero-shot)", normal=(), abnormal=(), removed_from_test=0)


def _train_on_category(cfg: RunConfig, item: str) -> tuple[str, str, str]:
    """(dataset, root, category) of a --train-on item: CATEGORY or DATASET:ROOT:CATEGORY."""
    parts = item.split(":")
    if len(parts) == 1:
        return cfg.data.dataset, cfg.data.root, item
    if len(parts) >= 3:
        return parts[0], ":".join(parts[1:-1]), parts[-1]
    raise ConfigError(f"--train-on takes CATEGORY or DATASET:ROOT:CATEGORY, got {item!r}")


def run_inputs(cfg: RunConfig, train_on: Sequence[str] = ()) -> list[Path]:
    """The files and folders a run reads (--overwrite must never replace a folder holding one)."""
    named = [*cfg.named_paths().values(), *(_train_on_category(cfg, item)[1] for item in train_on)]
    return [Path(name) for name in named if name and Path(name).exists()]


def _source_data(cfg: RunConfig, item: str, target: CategoryData) -> CategoryData:
    data = load_category(*_train_on_category(cfg, item))
    same_root = Path(data.root).resolve() == Path(target.root).resolve()  # however either is spelled
    if (data.dataset, data.category) == (target.dataset, target.category) and same_root:
        raise ConfigError(f"--train-on {item} is the test category itself: zero-shot must not train on it")
    return data


def _support(
    cfg: RunConfig,
    data: CategoryData,
    shots: Shots,
    sources: list[CategoryData],
    backbone: Backbone,
    prep: Preprocess,
    protocol: Protocol,
) -> tuple[SupportSet | None, float, list[dict]]:
    """The views the adapters train on, the learning rate, and the --train-on sources' shots."""
    if sources:  # zero-shot with adapters trained elsewhere (METHOD §9); their prototypes need the text tower
        support, source_shots = _source_support(cfg, sources, backbone, protocol)
        return support, cfg.train.lr or 1e-4, source_shots
    if shots.normal:
        support = load_support(shots, prep, cfg.train.views, cfg.seed, data.has_masks)
        return support, cfg.train.lr or LEARNING_RATES[data.domain], []
    return None, 0.0, []  # training-free zero-shot: nothing to fit


def _source_support(
    cfg: RunConfig, sources: list[CategoryData], backbone: Backbone, protocol: Protocol
) -> tuple[SupportSet, list[dict]]:
    """Support views of every source category (k normal + k abnormal shots each), each view with
    its own category's text prototypes (its prompt set and object name, as MVFA trains); and the
    shots of each source, as shots.json records a run's own."""
    own_prompts = cfg.with_overrides({"prompts.prompt_set": None, "prompts.classname": None})
    sets, records = [], []
    for data in sources:
        shots = select_shots(data, cfg.data.shot, cfg.seed, cfg.data.shot_source)
        prep = preprocess_for(backbone, data, protocol)
        support = load_support(shots, prep, cfg.train.views, cfg.seed, data.has_masks)
        prototypes, _, _, _ = build_prototypes(backbone, own_prompts, data)
        support.prototypes = prototypes.expand(len(support), *prototypes.shape)  # (V, D, 2)
        sets.append(support)
        records.append({"root": str(Path(data.root).resolve()), **shots_to_json(shots, data)})
    return SupportSet.concat(sets), records


def train_seeds(
    cfg: RunConfig,
    seeds: Sequence[int],
    out: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    train_on: Sequence[str] | None = None,
) -> str:
    """Train and test one run per seed into OUT/seed-N; write and return the mean ± std summary
    (seeds.md and seeds.json say, as every printed result does, what was run and how to read it)."""
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds names {', '.join(map(str, repeated))} more than once; each seed is one run")
    for seed in seeds:  # every seed's config is checked before the first one trains
        cfg.with_overrides({"seed": seed})
    inputs = run_inputs(cfg, train_on or ())
    for seed in seeds:
        check_new_run_dir(out / f"seed-{seed}", overwrite, inputs)
    results = []
    for seed in seeds:
        # the trained run as it is (no second backbone load), and no reference kept to it: one
        # seed's model is freed before the next one's is built
        with sole_writer(out / f"seed-{seed}"):  # trained and tested under one hold: no writer between
            record = evaluate_run(
                train_model(
                    cfg.with_overrides({"seed": seed}),
                    out / f"seed-{seed}",
                    overwrite=overwrite,
                    progress=progress,
                    train_on=train_on,
                ),
                progress=progress,
            )
        results.append(RunResult(record["dataset"], record["category"], record["shot"], seed, record))
    table = benchmark_table(results)
    first = results[0].metrics
    header = describe_header(first)
    write_text(out / "seeds.md", header + "\n" + table.to_markdown())
    flags = {"protocol": first["protocol"], "test_selected": first["test_selected"]}
    flags |= {"random_weights": first["backbone"]["random"], "seeds": list(seeds)}
    write_json(out / "seeds.json", {**flags, "rows": json.loads(table.to_json())})
    return header + table.to_markdown()


def describe_header(record: dict[str, Any]) -> str:
    """The lines every printed result starts with: what was run, and what its numbers mean."""
    b = record["backbone"]
    lines = [
        f"{record['dataset']}/{record['category']}: {record['shot']}-shot, protocol {record['protocol']}, "
        f"{b['model']} ({b['weights']}), adapter {record['adapter']}, prompts {record['prompts']['mode']}"
    ]
    if b["random"]:
        lines.append(f"NOTE: {RANDOM_WEIGHTS_NOTE}")
    if record["test_selected"]:
        lines.append(f"NOTE: {TEST_SELECTED_NOTE}")
    return "\n".join(lines) + "\n"


def describe_record(record: dict[str, Any]) -> str:
    """A short human summary of one test record."""

    def pct(key: str) -> str:
        return percent(record.get(key))

    lines = [
        f"image AUROC {pct('image_auroc')}  AP {pct('image_ap')}  F1-max {pct('image_f1_max')}",
        f"pixel AUROC {pct('pixel_auroc')}  AP {pct('pixel_ap')}  F1-max {pct('pixel_f1_max')}  "
        f"AUPRO {pct('pixel_aupro')}  ({_pixel_resolution_words(record.get('pixel_resolution'))})"
        if record.get("pixel_metrics_at")
        else "pixel metrics: none, the category has no masks" + NO_MASKS_HINT.get(record.get("dataset"), ""),
        f"{counted(record['n_test_images'], 'test image')} ({counted(record['removed_from_test'], 'shot')} removed "
        "from the test split), "
        f"test {record['test_seconds']:.1f} s",
    ]
    for kind, undefined in (("anomalous", "image and pixel metrics"), ("normal", "image metrics")):
        if record.get(f"n_{kind}") == 0:
            removed = record.get("removed_from_test")
            lines.append(
                f"NOTE: the test split holds no {kind} image{' once the shots are removed' if removed else ''}, "
                f"so its {undefined} are undefined (–); "
                + ("use fewer shots or more test images" if removed else f"add {kind} test images")
            )
            break
    else:
        pairs = (record.get("n_normal") or 0) * (record.get("n_anomalous") or 0)
        if 0 < pairs < COARSE_PAIRS:  # image AUROC moves in steps of one (normal, anomalous) pair
            lines.append(
                f"NOTE: {record['n_normal']} normal and {record['n_anomalous']} anomalous test images: image AUROC "
                f"moves in steps of {100 / pairs:.2g} points (one pair ranked the other way); read it as coarse"
            )
    return describe_header(record) + "\n".join(lines)


COARSE_PAIRS = 100  # fewer (normal, anomalous) test pairs: image AUROC steps of over one point


NO_MASKS_HINT = {  # where a layout's masks would be, said when a category has none
    **dict.fromkeys(("mvtec", "mpdd", "btad"), " (an MVTec-layout one: no ground_truth/ folder)"),
    "folder": " (give --mask-dir, and --test-mask-dir where the test images lie elsewhere)",
}


def _pixel_resolution_words(resolution: str | None) -> str:
    """ "at 240x240", or where the masks kept their own sizes, "at each mask's own size"."""
    if resolution == "mixed":
        return "at each mask's own size"
    return f"at {resolution or '–'}"


def adapter_parameters(model: ClipMPCAD) -> dict[str, int]:
    """Trainable parameters: per adapter (METHOD §3 counts) and in all."""
    if not model.adapted:
        return {"per_adapter": 0, "adapters": 0, "trainable": 0}
    per = count_parameters(model.seg_adapters[0])
    trainable = sum(p.numel() for b in ("seg", "det") for p in model.branch_parameters(b))
    return {"per_adapter": per, "adapters": 2 * len(model.levels), "trainable": trainable}


def finish_model(
    model: ClipMPCAD,
    normals: SupportSet | None,
    data: CategoryData,
    cfg: RunConfig,
    protocol: Protocol,
    device: torch.device,
) -> tuple[Detector, Calibration | None, MemoryBank | None]:
    """After training: the bank of the normal support views and the calibration; also the bank as
    built, for the run to save (the model's may be stored in bf16 for the search)."""
    detector = Detector(
        model,
        None,
        has_masks=data.has_masks,
        image_size=model.backbone.info.image_size,
        device=device,
        score_sigma=cfg.eval.score_sigma,
        precision=cfg.precision,
    )
    model.bank = built = None
    batch = cfg.eval.batch_for(device.type)
    if protocol.uses_bank and normals is not None:  # only the branch the maps come from (METHOD §6)
        bank = build_bank(model, normals, (detector.map_branch,), device, batch, cfg.precision)
        if cfg.bank.coreset < 1.0:  # approximate bank (PatchCore-style), off by default
            bank = bank.coreset(cfg.bank.coreset, seed=cfg.seed)
        model.bank, built = bank.placed(device, cfg.bank.precision, cfg.precision), bank
    calibration = None  # "test": fitted by test_run on the test set
    if protocol.calibration == "fixed":
        calibration = fixed_calibration(model)
    elif protocol.calibration == "reference":
        calibration = calibrate_on_reference(
            detector,
            normals,
            batch=batch,
            image_fpr=cfg.eval.image_fpr,
            pixel_fpr=cfg.eval.pixel_fpr,
        )
    detector.calibration = calibration
    return detector, calibration, built


class _BestEpoch:
    """The `paper` protocol's epoch rule: evaluate on the test set after every epoch, keep the best."""

    def __init__(
        self,
        model: ClipMPCAD,
        data: CategoryData,
        shots: Shots,
        normals: SupportSet | None,
        prep: Preprocess,
        cfg: RunConfig,
        protocol: Protocol,
        device: torch.device,
    ) -> None:
        self.model, self.data, self.prep, self.cfg, self.device = model, data, prep, cfg, device
        self.protocol = protocol
        self.samples = evaluation_samples(data, shots)
        self.support = normals  # the normal support views already loaded for training
        self.best, self.best_epoch, self.best_state = -1.0, None, None

    def __call__(self, epoch: int) -> None:
        detector, _, _ = finish_model(self.model, self.support, self.data, self.cfg, self.protocol, self.device)
        detector.calibration = fit_test_calibration(detector, self.samples, self.prep, self.cfg.eval, progress=False)
        metrics = evaluate(detector, self.samples, self.prep, self.cfg.eval, progress=False).metrics
        value = (metrics.image_auroc or 0.0) + (metrics.pixel_auroc or 0.0)  # MVFA's selection score
        if value > self.best:
            self.best, self.best_epoch = value, epoch
            self.best_state = copy.deepcopy(self.model.trained_state())
        self.model.bank = None

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state, strict=False)


def test_run(
    run_dir: str | Path,
    *,
    device: str | None = None,
    precision: str | None = None,
    pixel_resolution: str | None = None,
    progress: bool = True,
    report: bool = True,
    weights: str | None = None,
) -> dict[str, Any]:
    """Evaluate a run folder on its test split, on `device` at `precision` (default: the run's);
    weights: where its backbone weights are now, if they moved (load_run)."""
    run = load_run(run_dir, device, precision, weights)
    return evaluate_run(run, pixel_resolution=pixel_resolution, progress=progress, report=report)


def evaluate_run(
    run: TrainedRun, *, pixel_resolution: str | None = None, progress: bool = True, report: bool = True
) -> dict[str, Any]:
    """Evaluate a trained run (load_run's, or train_model's still in memory) on its test split;
    writes metrics.json (and report.html) into its folder and returns the metrics record. Refused
    while another process writes that folder (atomic.sole_writer)."""
    with sole_writer(run.run_dir):
        return _evaluate_run(run, pixel_resolution, progress, report)


def _evaluate_run(run: TrainedRun, pixel_resolution: str | None, progress: bool, report: bool) -> dict[str, Any]:
    cfg = run.config
    if pixel_resolution is not None:
        cfg = cfg.with_overrides({"eval.pixel_resolution": pixel_resolution})
    protocol = get_protocol(cfg.protocol)
    data = load_data(cfg)
    shots = read_shots(run.run_dir / "shots.json", data)
    samples = evaluation_samples(data, shots)
    detector = run.detector
    if protocol.calibration == "test":
        detector.calibration = fit_test_calibration(detector, samples, run.prep, cfg.eval, progress=progress)
    # the report's worst cases by the image threshold, when it is known before the test pass
    cal = detector.calibration
    known = cal is not None and math.isfinite(cal.image_threshold)
    worst = WorstMaps(cal.image_threshold, REPORT_CASES) if report and known else None
    result = evaluate(detector, samples, run.prep, cfg.eval, progress=progress, worst=worst)
    if protocol.calibration == "test":  # thresholds picked on the test set too: flagged as such
        m = result.metrics
        detector.calibration = dataclasses.replace(
            detector.calibration,
            image_threshold=m.image_f1_threshold if m.image_f1_threshold is not None else 0.5,
            pixel_threshold=m.pixel_f1_threshold if m.pixel_f1_threshold is not None else 0.5,
        )
    record = metrics_record(run, cfg, protocol, shots, result)
    if report:  # an older report must not stand beside these metrics if the new one fails
        (run.run_dir / "report.html").unlink(missing_ok=True)
    write_json(run.run_dir / "metrics.json", record)  # first: a report that fails loses no metrics
    if report:
        from .report.run_report import write_run_report  # local: the report pulls in matplotlib

        try:
            write_run_report(run, cfg, samples, result, record)
        except OSError as error:  # a full disk, say: the metrics are written
            warnings.warn(
                f"{run.run_dir / 'report.html'} could not be written ({error}); metrics.json was", stacklevel=2
            )
    return record


def _decisions(run: TrainedRun, result: Evaluation) -> dict[str, float | int] | None:
    """Misses and false alarms at the run's image threshold (None where it has none)."""
    cal = run.detector.calibration
    if cal is None or not math.isfinite(cal.image_threshold):
        return None
    return decision_counts(result.labels, result.scores, cal.image_threshold)


def metrics_record(
    run: TrainedRun, cfg: RunConfig, protocol: Protocol, shots: Shots, result: Evaluation
) -> dict[str, Any]:
    info = run.info
    return {
        "dataset": run.meta.dataset,
        "category": run.meta.category,
        "domain": run.meta.domain,
        "shot": shots.k,
        "seed": cfg.seed,
        "shot_source": shots.source,
        "protocol": protocol.name,
        "test_selected": protocol.test_selected,
        "backbone": {
            "model": info.model,
            "weights": info.weights,
            "random": info.random,
            "quick_gelu": info.quick_gelu,
            "image_size": info.image_size,
        },
        "adapter": cfg.adapter.kind if run.detector.model.adapted else None,
        "prompts": {"mode": cfg.prompts.mode, "set": run.meta.prompt_set, "classname": run.meta.classname},
        "levels": list(info.levels),
        "image_score": "max of the fused map" if run.meta.has_masks else "fused detection score",
        **result.metrics.to_dict(),
        "pixel_metrics_at": (
            {"model": "model input size", "original": "each mask's original size"}[cfg.eval.pixel_resolution]
            if run.meta.has_masks
            else None
        ),
        "n_test_images": len(result.scores),
        "removed_from_test": shots.removed_from_test,
        "calibration": run.detector.calibration.to_dict(tables=False) if run.detector.calibration else None,
        "decisions": _decisions(run, result),
        "train_seconds": read_train_record(run.run_dir).get("train_seconds"),
        "device": str(run.detector.device),
        "precision": precision_name(run.detector.device, run.detector.precision),
        "test_seconds": result.seconds,
        "test_images_per_second": result.images_per_second,
    }
