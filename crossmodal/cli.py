"""The `crossmodal` command: predict (or predict --about, the model card), export, timeline, report, and
run (the same as python -m crossmodal.run); `crossmodal COMMAND -h` for each.

Without --ckpt the shipped default student is used (crossmodal/assets/student_cpu.safetensors, or
$CROSSMODAL_STUDENT). --ckpt takes a student file or a Lightning checkpoint of a student.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys

from crossmodal.tasks.predict import DEFAULT_HOP, DEFAULT_WINDOW


def _seconds(allow_zero: bool):
    """argparse type: a finite number of seconds above 0 (or exactly 0 when ``allow_zero``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if allow_zero and value == 0:
            return 0.0
        if not math.isfinite(value) or value <= 0:
            wanted = "0 (whole file only) or a finite number of seconds above 0" if allow_zero else "a finite number of seconds above 0"
            raise argparse.ArgumentTypeError(f"{text!r}: give {wanted}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossmodal", description="Speech emotion from a student distilled from a face-expression teacher.")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help="emotion distribution of audio/video files", description="Emotion distribution (8 FER+ emotions) of each file, whole and per window.")
    predict.add_argument("paths", nargs="*", metavar="PATH", help="wav, flac, ogg, mp3, m4a or video files (folders are searched)")
    predict.add_argument("--about", action="store_true", help="print the student's model card (what it was trained on, how it was judged, what it is not) and exit")
    predict.add_argument("--ckpt", default=None, help="student file or Lightning checkpoint (default: the shipped student)")
    predict.add_argument("--json", action="store_true", help="machine-readable output with the embeddings")
    predict.add_argument(
        "--window", type=_seconds(allow_zero=True), default=DEFAULT_WINDOW,
        help=f"window length in seconds for long files (default {DEFAULT_WINDOW}); 0 = whole file only. Files over "
        "a minute are streamed in bounded memory, their whole-file answer pooled over 20-s stretches",
    )
    predict.add_argument("--hop", type=_seconds(allow_zero=False), default=DEFAULT_HOP,
                         help=f"hop between windows in seconds (default {DEFAULT_HOP}; at least 0.01, and at most 10,000 windows a file)")
    predict.add_argument("--no-embedding", action="store_true", help="leave the embeddings out of --json output")
    predict.add_argument(
        "--allow-non-speech", action="store_true",
        help="answer files in which the voice-activity detector finds no speech (flagged \"speech\": false, and windows "
        "without speech scored) instead of refusing them",
    )

    export = commands.add_parser("export", help="write the student (front-end included) as TorchScript or ONNX")
    export.add_argument("--ckpt", default=None, help="student file or Lightning checkpoint (default: the shipped student)")
    export.add_argument("--format", choices=("torchscript", "onnx"), required=True)
    export.add_argument("--out", default=None, help="output file (default: <student name>.ts.pt or .onnx here)")

    _timeline_parser(commands)
    report = commands.add_parser("report", help="write report.html of a run folder, or index.html of a sweep folder",
                                 description="One HTML page per run folder (summary, metrics, figures, sample gallery, "
                                 "model card, config), and an index per sweep folder with one row per job.")
    report.add_argument("folders", nargs="+", metavar="DIR", help="run folders or sweep (multirun) folders")
    report.add_argument("--rebuild", action="store_true", help="in a sweep folder, rewrite every job's report (default: only missing ones)")

    commands.add_parser("run", help="python -m crossmodal.run with the remaining arguments", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        from crossmodal.run import main as run_main

        run_main(argv[1:])
        return 0
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return {"predict": _predict, "export": _export, "timeline": _timeline, "report": _report}[args.command](args)
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as exn:  # ImportError: an extra not installed
        print(f"error: {exn}", file=sys.stderr)
        return 2


def _predict(args: argparse.Namespace) -> int:
    if args.about:
        from crossmodal.models.card import about

        print(about(args.ckpt), end="")
        return 0
    if not args.paths:
        raise ValueError("crossmodal predict needs at least one PATH (or --about for the model card)")
    from crossmodal.inference import load_student
    from crossmodal.tasks.predict import as_json, format_table, predict_files

    student = load_student(args.ckpt)
    result = predict_files(student, args.paths, window=args.window or None, hop=args.hop, allow_non_speech=args.allow_non_speech)
    if args.json:
        print(as_json(result, student, embeddings=not args.no_embedding))
    else:
        print("\n\n".join(format_table(r, student.emotions) for r in result.results))
    return _exit_status(result.errors, len(result.errors) + len(result.results), "files")


def _timeline_parser(commands) -> None:
    timeline = commands.add_parser(
        "timeline", help="face (teacher) and voice (student) emotions over time in talking-face videos",
        description="Per window: the student's emotions from the voice, the teacher's from the face frames (window "
        "aggregation of the frame logits, as in distillation), their distillation loss and whether the top emotions "
        "match; windows without a face or without speech are marked. Writes <video>.timeline.json/.csv/.png into "
        "the current folder (or --out); for a folder or several videos also summary.csv/.json.",
    )
    timeline.add_argument("paths", nargs="+", metavar="VIDEO", help="talking-face videos or folders of them")
    timeline.add_argument("--out", default=None, help="output folder (default: the current folder)")
    timeline.add_argument("--ckpt", default=None, help="student file or Lightning checkpoint (default: the shipped student)")
    timeline.add_argument("--teacher", default=None, help="teacher file (default: the shipped crossmodal/assets/teacher_cpu.safetensors)")
    timeline.add_argument("--teacher-precision", choices=("auto", "int8", "fp32"), default="auto",
                          help="the teacher in int8 (ONNX Runtime, ~4x faster on a CPU) or fp32; auto: int8 (default)")
    timeline.add_argument("--window", type=_seconds(allow_zero=False), default=DEFAULT_WINDOW, help=f"window length in seconds (default {DEFAULT_WINDOW}, as predict)")
    timeline.add_argument("--hop", type=_seconds(allow_zero=False), default=DEFAULT_HOP, help=f"hop between windows in seconds (default {DEFAULT_HOP})")
    timeline.add_argument("--reduce", choices=("max", "mean"), default="max", help="frame logits -> window target, as data.reduce (default max, the paper's)")
    timeline.add_argument("--temperature", type=_seconds(allow_zero=False), default=None, help="softening of the teacher and the loss (default: the paper's 2)")
    timeline.add_argument("--frame-rate", type=_seconds(allow_zero=False), default=None, help="face frames per second (default 25/6, the paper's)")
    timeline.add_argument("--thumbnails", type=int, default=10, help="face thumbnails along the time axis (default 10)")
    timeline.add_argument("--no-plot", action="store_true", help="JSON and CSV only")


def _timeline(args: argparse.Namespace) -> int:
    from crossmodal.inference import load_student
    from crossmodal.inference.timeline import run_timelines
    from crossmodal.io.video import FaceConfig
    from crossmodal.models.loading import load_teacher
    from crossmodal.models.teacher import DEFAULT_TEACHER
    from crossmodal.paper import TEMPERATURE

    face_config = FaceConfig() if args.frame_rate is None else FaceConfig(frame_rate=args.frame_rate)
    student = load_student(args.ckpt)
    student.check_windows(args.window, args.hop, ("--window", "--hop"))
    teacher = load_teacher(args.teacher, precision=args.teacher_precision)
    run = run_timelines(
        args.paths, student, teacher, args.out, plot=not args.no_plot, window=args.window, hop=args.hop,
        reduce=args.reduce, temperature=args.temperature or TEMPERATURE, face_config=face_config,
        thumbnails=max(0, args.thumbnails), teacher_path=args.teacher or DEFAULT_TEACHER,
    )
    for files in run.outputs:
        print("  ".join(str(path) for path in files.values()))
    for path in run.summary_files.values():
        print(path)
    return _exit_status(run.errors, len(run.summary), "videos")


def _exit_status(errors: list[tuple[object, str]], total: int, noun: str) -> int:
    """Print each (path, message) error and how many of ``total`` inputs failed; 1 if any did, else 0."""
    for _path, message in errors:
        print(f"error: {message}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} of {total} {noun} failed", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from crossmodal.export import export_student

    result = export_student(args.ckpt, args.format, args.out)
    print(result.describe())
    return 0


def _report(args: argparse.Namespace) -> int:
    from crossmodal.report import report_folder

    logging.getLogger("crossmodal.report").setLevel(logging.INFO)  # progress of long sweeps
    for folder in args.folders:
        for page in report_folder(folder, rebuild=args.rebuild):
            print(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
