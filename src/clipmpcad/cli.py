"""The `clipmpcad` command: thin verbs that parse, build the config, call one function and print.

    clipmpcad train --dataset mvtec --root DATA --category bottle --shot 4 --out runs/bottle
    clipmpcad test runs/bottle
    clipmpcad predict runs/bottle image.png folder/ 'glob/*.jpg' --out predictions/
    clipmpcad demo [--out DIR]
    clipmpcad benchmark --dataset bmad --root BMAD --shots 4 --seeds 1 2 3 --out suite/
    clipmpcad prompts list | show NAME | lint [FILES] | generate --domain TEXT --out FILE
    clipmpcad datasets [NAME ROOT]

Bad input (a ClipMPCADError, or arguments argparse refuses) prints one line and exits with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .config import DEMO_EPOCHS, DOMAINS, MAP_FORMATS, PIXEL_RESOLUTIONS, PRECISIONS
from .errors import ClipMPCADError
from .options import add_run_options, config_from_args, option_help


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        with warnings.catch_warnings(), _terminate_as_interrupt():
            warnings.showwarning = partial(_show_warning, warnings.showwarning)
            return handler(args)
    except ClipMPCADError as error:
        print(f"clipmpcad: error: {error}", file=sys.stderr)
        return 2
    except Terminated:
        print("clipmpcad: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("clipmpcad: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like, which stopped reading: end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 1
    except OSError as error:
        if error.errno not in (*_FULL, *_DENIED):  # any other OSError is a bug: it keeps its traceback
            raise
        return _refused(error)


_PACKAGE = Path(__file__).parent


def _refused(error: OSError) -> int:
    """One line for what the system refused: status 2 where this user may not read or write a path
    (the input's problem), 1 where the disk is full or failing (staged outputs are already gone)."""
    where = f" ({error.filename})" if error.filename else ""
    if error.errno in _DENIED:
        print(f"clipmpcad: error: {error.strerror or error}{where}", file=sys.stderr)
        return 2
    print(f"clipmpcad: error: {error.strerror or error}{where}; nothing half-written was left", file=sys.stderr)
    return 1


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)  # the system refused a write
_DENIED = (errno.EACCES, errno.EPERM)  # no permission, to read or to write


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwinding as Ctrl-C does; the exit status is 143 (128 + SIGTERM), Ctrl-C's 130."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's or `kill`'s) ends a verb as Ctrl-C does: its staged folders are
    removed on the way out instead of being left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


MOVED_WEIGHTS_HELP = "the run's backbone checkpoint where it is now, if it moved (the same weights: checked)"


def _show_warning(fallback: Callable[..., None], message, category, filename, lineno, file=None, line=None) -> None:
    """The package's own warnings as one line, like its errors; others as `fallback` shows them."""
    if Path(filename).is_relative_to(_PACKAGE):
        print(f"clipmpcad: warning: {message}", file=sys.stderr)
    else:
        fallback(message, category, filename, lineno, file, line)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, not the usage block: the subparsers of the
    whole tree are built from this class too (argparse's add_subparsers uses type(self))."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="clipmpcad", description="Few-shot anomaly detection on a frozen CLIP.")
    parser.add_argument("--version", action="version", version=f"clipmpcad {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in (_add_train, _add_test, _add_predict, _add_demo, _add_benchmark, _add_prompts, _add_datasets):
        add(verbs)
    return parser


def _add_train(verbs: Any) -> None:
    """train: the run options, seeds, zero-shot sources."""
    train = verbs.add_parser("train", help="train a run: adapters, memory bank, calibration")
    add_run_options(train)
    train.add_argument("--seeds", type=int, nargs="+", help="several seeds: OUT/seed-N each, tested, mean ± std")
    train.add_argument(
        "--train-on",
        nargs="+",
        metavar="SOURCE",
        help="zero-shot: train the adapters on these categories (CATEGORY or DATASET:ROOT:CATEGORY)",
    )
    train.add_argument("--test", action="store_true", help="test the run right after training")
    _add_out(train, required=True)
    train.set_defaults(handler=cmd_train)


def _add_test(verbs: Any) -> None:
    """test: a run folder into metrics and a report."""
    test = verbs.add_parser("test", help="evaluate a run folder: metrics.json and report.html")
    test.add_argument("run", help="run folder from `clipmpcad train`")
    test.add_argument("--device", help=option_help("--device"))
    test.add_argument("--precision", choices=PRECISIONS, help=option_help("--precision"))
    test.add_argument("--pixel-resolution", choices=PIXEL_RESOLUTIONS, help=option_help("--pixel-resolution"))
    test.add_argument("--weights", metavar="FILE", help=MOVED_WEIGHTS_HELP)
    test.add_argument("--no-report", action="store_true", help="skip report.html")
    _add_quiet(test)
    test.set_defaults(handler=cmd_test)


def _add_predict(verbs: Any) -> None:
    """predict: images, folders or globs into a CSV, overlays and masks."""
    predict = verbs.add_parser("predict", help="score images: CSV, overlays, masks, maps")
    predict.add_argument("run", help="run folder from `clipmpcad train`")
    predict.add_argument("inputs", nargs="+", help="image files, folders or globs")
    predict.add_argument("--recursive", action="store_true", help="look into sub-folders of folders")
    predict.add_argument("--device", help=option_help("--device"))
    predict.add_argument("--precision", choices=PRECISIONS, help=option_help("--precision"))
    predict.add_argument("--weights", metavar="FILE", help=MOVED_WEIGHTS_HELP)
    predict.add_argument("--image-fpr", type=float, help="re-derive the image threshold for this false-positive rate")
    predict.add_argument("--pixel-fpr", type=float, help="re-derive the pixel threshold for this false-positive rate")
    predict.add_argument(
        "--threshold", type=float, help="image threshold, on the scale of the scores (score ≥ it: anomalous)"
    )
    predict.add_argument("--pixel-threshold", type=float, help="pixel threshold, on the scale of the maps")
    predict.add_argument(
        "--skip-errors",
        action="store_true",
        help="a file that cannot be read gets a row with its error instead of stopping the run (exit status 1)",
    )
    predict.add_argument("--save-maps", choices=MAP_FORMATS, help="also save anomaly maps (float .npy or 16-bit PNG)")
    predict.add_argument("--save-levels", action="store_true", help="also save every level's zero-shot map")
    predict.add_argument("--sigma", type=float, help="Gaussian smoothing of the displayed maps")
    predict.add_argument(
        "--batch-size",
        type=int,
        help="images per forward pass (default: the run's eval batch: 64 on a GPU, 16 on a CPU)",
    )
    _add_out(predict, required=True)
    predict.set_defaults(handler=cmd_predict)


def _add_demo(verbs: Any) -> None:
    """demo: the generated benchmark end to end."""
    demo = verbs.add_parser("demo", help="generate a benchmark, train, test and print a table (tiny model)")
    demo.add_argument("--epochs", type=int, default=None, help=f"training epochs per dataset (default {DEMO_EPOCHS})")
    demo.add_argument("--seed", type=int, default=0, help="seed of the generated benchmark (default 0)")
    _add_out(demo, required=False, default="runs/demo")
    demo.set_defaults(handler=cmd_demo)


def _add_benchmark(verbs: Any) -> None:
    """benchmark: suites of categories × shots × seeds."""
    bench = verbs.add_parser("benchmark", help="run a suite of categories × shots × seeds into tables")
    add_run_options(bench)
    bench.add_argument("--suite", nargs="+", metavar="DATASET=ROOT", help="several datasets at once")
    bench.add_argument("--categories", nargs="+", help="only these categories (default: all found)")
    bench.add_argument("--shots", type=int, nargs="+", default=None, help="default: the config's shot")
    bench.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the config's seed")
    bench.add_argument("--report", action="store_true", help="write each cell's report.html")
    _add_out(bench, required=True)
    bench.set_defaults(handler=cmd_benchmark)


def _add_datasets(verbs: Any) -> None:
    """datasets: layouts, or the categories under a root."""
    datasets = verbs.add_parser("datasets", help="list dataset layouts, or the categories under a root")
    datasets.add_argument("name", nargs="?", help="a dataset layout")
    datasets.add_argument("root", nargs="?", help="its root folder")
    datasets.set_defaults(handler=cmd_datasets)


def _add_out(parser: argparse.ArgumentParser, required: bool, default: str | None = None) -> None:
    """--out, --overwrite and --quiet: every verb that writes a folder has all three."""
    parser.add_argument("--out", required=required, default=default, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_quiet(parser)


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_prompts(verbs: Any) -> None:
    prompts = verbs.add_parser("prompts", help="P-Prompt sets: list, show, lint, generate")
    sub = prompts.add_subparsers(dest="prompts_verb", required=True, metavar="ACTION")
    sub.add_parser("list", help="the package's prompt sets").set_defaults(handler=cmd_prompts_list)
    show = sub.add_parser("show", help="print one set as JSON")
    show.add_argument("name", help="set name or JSON file")
    show.set_defaults(handler=cmd_prompts_show)
    lint = sub.add_parser("lint", help="check prompt files (default: the package's)")
    lint.add_argument("files", nargs="*", help="prompt-set JSON files (default: the package's)")
    lint.set_defaults(handler=cmd_prompts_lint)
    gen = sub.add_parser("generate", help="ask an OpenAI-compatible endpoint for a new domain's set")
    gen.add_argument("--domain", required=True, help='what the images show, e.g. "knee MRI"')
    gen.add_argument("--out", required=True, help="JSON file to write")
    gen.add_argument("--kind", choices=DOMAINS, help="the set's domain (default: the model says which)")
    gen.add_argument("--classname", help="object name put into the sentences")
    gen.add_argument("-n", type=int, default=40, help="sentences asked for per state")
    gen.add_argument("--base-url", help="default $OPENAI_BASE_URL")
    gen.add_argument("--model", help="default $OPENAI_MODEL")
    gen.add_argument("--api-key", help="default $OPENAI_API_KEY (prefer the variable: flags show in ps)")
    gen.add_argument("--timeout", type=float, default=60.0, help="seconds per connection attempt and per read")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    gen.set_defaults(handler=cmd_prompts_generate)


# ---------------------------------------------------------------- train, test


def cmd_train(args: argparse.Namespace) -> int:
    from .atomic import sole_writer
    from .experiment import evaluate_run, train_model, train_seeds

    cfg = config_from_args(args)
    progress = not args.quiet
    if args.seeds and len(args.seeds) > 1:
        summary = train_seeds(
            cfg, args.seeds, Path(args.out), overwrite=args.overwrite, progress=progress, train_on=args.train_on
        )
        print(summary)
        return 0
    if args.seeds:
        cfg = cfg.with_overrides({"seed": args.seeds[0]})
    with sole_writer(args.out):  # trained and tested under one hold: no other writer between the two
        run = train_model(cfg, args.out, overwrite=args.overwrite, progress=progress, train_on=args.train_on)
        print(describe_training(run.run_dir))
        if args.test:
            try:
                _print_record(evaluate_run(run, progress=progress))  # the trained run as it is: no second load
            except ClipMPCADError as error:  # the run itself is complete: say so beside the problem
                raise type(error)(
                    f"{error} (the trained run is saved in {run.run_dir}; `clipmpcad test` it again)"
                ) from error
    return 0


def describe_training(run: Path) -> str:
    from .checkpoint import read_train_record
    from .report.tables import counted

    record = read_train_record(run)
    params = record["adapter_parameters"]
    losses = record["losses"]
    loss = f", loss {losses[0]:.4f} → {losses[-1]:.4f}" if losses else ""
    line = (
        f"trained {run}: {counted(len(losses), 'epoch')} in {record['train_seconds']:.1f} s{loss}; "
        f"{params['adapters']} adapters of {params['per_adapter']:,} parameters ({params['trainable']:,} trainable)"
    )
    return line + bf16_hint(record.get("device"), record.get("precision"))


BF16_SPEED = (
    "--precision bf16 runs about 1.4–1.5 × faster (ViT-L-14-336 on a 2-core EPYC: test 1.47 ×, training 1.39 ×), "
    "with results that differ by bf16 rounding"
)


def bf16_hint(device: str | None, precision: str | None) -> str:
    """A second line for CPU runs whose precision does not suit the CPU: fp32 where the CPU
    multiplies bf16 in hardware (bf16 is faster), bf16 where it does not (bf16 is slower)."""
    from .runtime import native_bf16

    if device != "cpu":
        return ""
    native = native_bf16()
    if precision == "fp32" and native:
        return f"\nnote: this CPU computes bf16 natively; {BF16_SPEED}"
    if precision == "bf16" and not native:
        return "\nnote: this CPU has no native bf16 (AVX512-BF16 or AMX), so --precision bf16 is slower here than fp32"
    return ""


def cmd_test(args: argparse.Namespace) -> int:
    from .experiment import test_run

    record = test_run(
        Path(args.run),
        device=args.device,
        precision=args.precision,
        pixel_resolution=args.pixel_resolution,
        progress=not args.quiet,
        report=not args.no_report,
        weights=args.weights,
    )
    _print_record(record)
    return 0


def _print_record(record: dict[str, Any]) -> None:
    from .experiment import describe_record

    print(describe_record(record))


# ---------------------------------------------------------------- predict, demo, benchmark


def cmd_predict(args: argparse.Namespace) -> int:
    from .data.folder import list_images
    from .predict import Predictor, failed_rows, predict_to_folder, without_earlier_predictions
    from .report.tables import counted

    inputs: list[Path] = []
    for item in args.inputs:
        found = list_images(item, recursive=args.recursive)
        inputs += without_earlier_predictions(Path(item), found) if Path(item).is_dir() else found
    # a file named twice is scored once; links keep their own names (two links to one file are two inputs)
    inputs = list(dict.fromkeys(Path(os.path.abspath(p)) for p in inputs))
    predictor = Predictor.from_run(
        args.run,
        device=args.device,
        image_fpr=args.image_fpr,
        pixel_fpr=args.pixel_fpr,
        precision=args.precision,
        weights=args.weights,
        image_threshold=args.threshold,
        pixel_threshold=args.pixel_threshold,
    )
    csv_path = predict_to_folder(
        predictor,
        inputs,
        Path(args.out),
        save_maps=args.save_maps,
        save_levels=args.save_levels,
        sigma=args.sigma,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        progress=not args.quiet,
        skip_errors=args.skip_errors,
    )
    failed = failed_rows(csv_path) if args.skip_errors else 0
    print(f"{counted(len(inputs) - failed, 'image')} scored; results in {csv_path}")
    if failed:
        print(f"clipmpcad: {failed} file(s) could not be read; their rows in {csv_path} say why", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    table = run_demo(
        Path(args.out), seed=args.seed, epochs=args.epochs, overwrite=args.overwrite, progress=not args.quiet
    )
    print(table)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import SuiteSpec, parse_dataset, run_benchmark

    cfg = config_from_args(args)
    pairs = [parse_dataset(item) for item in args.suite] if args.suite else [(cfg.data.dataset, cfg.data.root)]
    categories = tuple(args.categories) if args.categories else ((cfg.data.category,) if cfg.data.category else None)
    spec = SuiteSpec(
        datasets=tuple(pairs),
        categories=categories,
        shots=tuple(args.shots or [cfg.data.shot]),
        seeds=tuple(args.seeds or [cfg.seed]),
    )
    result = run_benchmark(
        cfg, spec, Path(args.out), overwrite=args.overwrite, progress=not args.quiet, report=args.report
    )
    print("\n".join(result.notes))
    print(result.table.to_markdown())
    return 0


# ---------------------------------------------------------------- prompts, datasets


def cmd_prompts_list(args: argparse.Namespace) -> int:
    from .prompts import list_prompt_sets

    print(f"{'name':24} {'domain':10} {'classname':28} {'normal':>6} {'abnormal':>8}  reviewed")
    for s in list_prompt_sets():
        reviewed = "yes" if s.provenance.get("reviewed") else "no"
        print(f"{s.name:24} {s.domain:10} {s.classname:28} {len(s.normal):>6} {len(s.abnormal):>8}  {reviewed}")
    return 0


def cmd_prompts_show(args: argparse.Namespace) -> int:
    from .prompts import load_prompt_set

    print(json.dumps(load_prompt_set(args.name).to_dict(), indent=2, ensure_ascii=False))
    return 0


def cmd_prompts_lint(args: argparse.Namespace) -> int:
    from .errors import PromptError
    from .prompts import lint_prompt_files

    for file in args.files:  # a file that cannot be opened is bad input (status 2), not a lint finding (1)
        try:
            with open(file, "rb"):
                pass
        except OSError as error:
            raise PromptError(f"{file}: cannot read the prompt file ({error.strerror})") from None
    report = lint_prompt_files(args.files or None)
    problems = [(path, p) for path, found in report.items() for p in found]
    for path, problem in problems:
        print(f"{path}: {problem}")
    print(f"{len(report)} file(s) checked, {len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_prompts_generate(args: argparse.Namespace) -> int:
    from .prompt_generation import ChatEndpoint, generate_prompt_set

    endpoint = ChatEndpoint.resolve(args.base_url, args.model, args.api_key, args.timeout)
    path = generate_prompt_set(
        args.domain,
        Path(args.out),
        endpoint=endpoint,
        kind=args.kind,
        classname=args.classname,
        n=args.n,
        overwrite=args.overwrite,
    )
    print(f"wrote {path}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS, list_categories

    if args.name is None:
        for name, spec in DATASETS.items():
            print(f"{name:8} {spec.description}")
        return 0
    if args.root is None:
        from .errors import ConfigError

        raise ConfigError(f"give the root folder of {args.name} to list its categories")
    categories = list_categories(args.name, args.root)  # a missing root is an error (status 2)
    if not categories:  # an existing root without categories is an answer: said on stderr, stdout stays a list
        from .data.mvtec import NO_CATEGORY, NORMAL_FOLDERS, root_hint

        mvtec_like = args.name in NORMAL_FOLDERS
        why = f" {NO_CATEGORY}{root_hint(Path(args.root), [])}" if mvtec_like else ""  # as train says it
        print(f"{args.root}: no {args.name} categories; found: none{why}", file=sys.stderr)
    for category in categories:
        print(category)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
