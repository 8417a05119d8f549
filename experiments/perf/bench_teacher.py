"""Teacher on CPU (issue 22, goal 2): the face teacher, old forward vs its fp32 and int8 inference forms, side by side in one run.

    .venv/bin/python experiments/perf/bench_teacher.py                      # 1024 FER+ test faces, 3 rounds
    .venv/bin/python experiments/perf/bench_teacher.py --check              # + equality and accuracy on all of FER+ test
    .venv/bin/python experiments/perf/bench_teacher.py --threads 1 --faces 512

"old": the network as it ran before issue 22 (plain backbone, flip average, eval, inference_mode); "new": the
fp32 ``FaceTeacher.forward`` in eval without gradients (:meth:`FaceTeacher.inference_backbone`), what
``teacher_precision=fp32`` runs; "int8": the package's own int8 teacher, ``load_teacher(precision="int8")``
(:mod:`crossmodal.models.teacher_int8`; the shipped int8 file, or the cached/built one for ``--teacher``), what
extraction, ``teacher_eval`` and the timeline run on a CPU by default (``teacher_precision=auto``). All go through
``crossmodal.pipeline.extract.teacher_logits`` (preprocessing 48->44 included), alternated A B C, C B A ...
``--repeats`` times; medians of images/s by wall clock and by process CPU time (the CPU figure is steadier on a
shared machine). Faces: FER+ test from ``--ferplus`` (default ../shared/data/ferplus) when there, else the shipped
demo faces. ``--check``: max |Δlogit|, argmax agreement with "old" and FER+ test accuracy (cntk cleaning, majority
label) of every path on every face of FER+ test. ``--int8 NAMES``: the exploration variants (``INT8``) as well.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perfkit import load_now, machine  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO_FACES = REPO / "crossmodal" / "assets" / "demo" / "ferplus"


class OldForward(nn.Module):
    """The teacher's forward before issue 22: the plain backbone (BN unfolded, NCHW), flip averaged."""

    def __init__(self, teacher) -> None:
        super().__init__()
        self.teacher = teacher
        self.preprocess = teacher.preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.teacher.backbone
        logits = net(x)
        if self.teacher.tta_flip:
            logits = (logits + net(torch.flip(x, dims=[-1]))) / 2
        return logits


def load_faces(ferplus: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """uint8 [N, 48, 48] faces of FER+ test (every face), their majority labels, which are kept by the cntk
    cleaning (the project's accuracy: cntk, majority label), and where they came from."""
    from crossmodal.io.ferplus import load_ferplus_image, read_ferplus

    source = ferplus if ferplus is not None and (ferplus / "FER2013Test").is_dir() else DEMO_FACES
    items = read_ferplus(source, splits=["test"], cleaning="none")
    kept = {item.name: item.majority for item in read_ferplus(source, splits=["test"], cleaning="cntk")}
    faces = np.stack([load_ferplus_image(item) for item in items])
    labels = np.array([kept.get(item.name, -1) for item in items])
    return faces, labels, labels >= 0, f"{source} (FER2013Test, {len(items)} faces, {len(kept)} kept by cntk cleaning)"


def check(variants: dict, faces: np.ndarray, labels: np.ndarray, cntk: np.ndarray, batch: int) -> dict:
    """Every variant against "old" on ``faces``: max |Δlogit|, argmax agreement, accuracy (cntk, majority label)."""
    from crossmodal.pipeline.extract import teacher_logits

    logits = {name: teacher_logits(net, faces, batch) for name, net in variants.items()}
    old_top = logits["old"].argmax(1)
    out = {"faces": len(faces), "cntk_faces": int(cntk.sum()), "acc_old": float((old_top[cntk] == labels[cntk]).mean())}
    for name, values in logits.items():
        top = values.argmax(1)
        out[name] = {"max_abs_diff": float(np.abs(values - logits["old"]).max()), "argmax_agreement": float((top == old_top).mean()),
                     "acc": float((top[cntk] == labels[cntk]).mean())}
    return out


# ----------------------------------------------------------------------------------------- int8 (ONNX Runtime)

INT8 = {  # name: quantize_static options (QDQ, per-channel weights unless said), calibration on FER+ *train* faces
    "ort_s8s8_minmax": dict(activation="QInt8", weight="QInt8", method="MinMax"),
    "ort_u8s8_minmax": dict(activation="QUInt8", weight="QInt8", method="MinMax"),
    "ort_u8s8_minmax_rr": dict(activation="QUInt8", weight="QInt8", method="MinMax", reduce_range=True),
    "ort_u8u8_minmax": dict(activation="QUInt8", weight="QUInt8", method="MinMax"),
    "ort_u8s8_pct": dict(activation="QUInt8", weight="QInt8", method="Percentile"),
    "ort_u8s8_pct_rr": dict(activation="QUInt8", weight="QInt8", method="Percentile", reduce_range=True),
    "ort_u8s8_entropy_rr": dict(activation="QUInt8", weight="QInt8", method="Entropy", reduce_range=True),
    "ort_u8s8_minmax_rr_ends_fp32": dict(activation="QUInt8", weight="QInt8", method="MinMax", reduce_range=True, ends_fp32=True),
    "ort_u8s8_pct_rr_ends_fp32": dict(activation="QUInt8", weight="QInt8", method="Percentile", reduce_range=True, ends_fp32=True),
}


class OrtTeacher:
    """The teacher's folded backbone run by ONNX Runtime (fp32 or int8), flip averaged in one call of 2N."""

    def __init__(self, teacher, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.preprocess, self.tta_flip = teacher.preprocess, teacher.tta_flip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.numpy()
        if not self.tta_flip:
            return torch.from_numpy(self.session.run(None, {"x": x})[0])
        logits = self.session.run(None, {"x": np.concatenate([x, x[..., ::-1]])})[0]
        return torch.from_numpy((logits[: len(x)] + logits[len(x):]) / 2)


def calibration_faces(ferplus: Path, count: int, seed: int = 0, split: str = "train") -> np.ndarray:
    """``count`` FER+ faces of ``split`` (seeded draw; cntk cleaning), the calibration set of the int8 variants."""
    from crossmodal.io.ferplus import load_ferplus_image, read_ferplus

    items = read_ferplus(ferplus, splits=[split], cleaning="cntk")
    chosen = np.random.default_rng(seed).choice(len(items), size=min(count, len(items)), replace=False)
    return np.stack([load_ferplus_image(items[i]) for i in sorted(chosen)])


def int8_variants(teacher, calib: np.ndarray, workdir: Path, threads: int, names: list[str]) -> dict[str, OrtTeacher]:
    """The fp32 ONNX export of the folded backbone and the int8 models of ``names`` (keys of INT8), quantised by
    ``onnxruntime.quantization.quantize_static`` with ``calib`` (and their mirrors, as inference sees both)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    net = teacher.inference_backbone().to(memory_format=torch.contiguous_format)
    size = teacher.input_size
    fp32 = workdir / "teacher_fp32.onnx"
    torch.onnx.export(net, (torch.zeros(2, 1, size, size),), str(fp32), dynamo=False, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    with torch.no_grad():
        inputs = teacher.preprocess(torch.from_numpy(calib)).numpy()
    inputs = np.concatenate([inputs, inputs[..., ::-1]]).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": np.ascontiguousarray(inputs[i : i + 64])} for i in range(0, len(inputs), 64)])

        def get_next(self):
            return next(self.batches, None)

    graph = onnx.load(str(fp32)).graph
    compute = [node.name for node in graph.node if node.op_type in ("Conv", "Gemm", "MatMul")]
    out = {"ort_fp32": OrtTeacher(teacher, fp32, threads)}
    for name in names:
        opt = INT8[name]
        path = workdir / f"teacher_{name}.onnx"
        tick = time.perf_counter()
        quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=opt.get("reduce_range", False), activation_type=getattr(QuantType, opt["activation"]),
                        weight_type=getattr(QuantType, opt["weight"]), calibrate_method=getattr(CalibrationMethod, opt["method"]),
                        nodes_to_exclude=[compute[0], compute[-1]] if opt.get("ends_fp32") else None)
        print(f"  {name}: quantised in {time.perf_counter() - tick:.1f} s ({opt}; first/last of {len(compute)} "
              f"conv/gemm nodes {'kept fp32' if opt.get('ends_fp32') else 'quantised'})", flush=True)
        out[name] = OrtTeacher(teacher, path, threads)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ferplus", default=str(REPO.parent / "shared" / "data" / "ferplus"), help="FER+ root (FER2013Test/)")
    parser.add_argument("--teacher", default=None, help="teacher file (default: the shipped teacher_cpu.safetensors)")
    parser.add_argument("--faces", type=int, default=1024, help="faces timed per round (0: all)")
    parser.add_argument("--batch-size", type=int, default=256, help="teacher batch (extraction's data.batch_size default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--check", action="store_true", help="equality and accuracy on every face of FER+ test")
    parser.add_argument("--int8", default="", help="comma-separated int8 variants (keys of INT8, or 'all'); adds ort_fp32")
    parser.add_argument("--calib-faces", type=int, default=1024, help="FER+ train faces calibrating the int8 variants")
    parser.add_argument("--calib-demo", action="store_true", help="calibrate on the shipped demo faces of FER2013Valid instead")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from crossmodal.models.loading import load_teacher
    from crossmodal.pipeline.extract import teacher_logits

    teacher = load_teacher(args.teacher)
    old = OldForward(teacher).eval()
    print(f"Teacher on CPU {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}; {load_now()}", flush=True)
    all_faces, all_labels, cntk, where = load_faces(Path(args.ferplus) if args.ferplus else None)
    faces = all_faces[: args.faces] if args.faces else all_faces
    print(f"faces: {len(faces)} of {where}; teacher {teacher.name}, {teacher.input_size} px, flip TTA {teacher.tta_flip}, "
          f"batch {args.batch_size}", flush=True)
    variants = {"old": old, "new": teacher, "int8": load_teacher(args.teacher, precision="int8")}
    print(f"int8: {variants['int8'].__dict__['_int8'].path}", flush=True)
    if args.int8:
        import tempfile

        names = list(INT8) if args.int8 == "all" else args.int8.split(",")
        calib = (calibration_faces(DEMO_FACES, args.calib_faces, split="val") if args.calib_demo
                 else calibration_faces(Path(args.ferplus), args.calib_faces))
        print(f"int8: calibration on {len(calib)} FER+ {'demo valid' if args.calib_demo else 'train'} faces (+ mirrors); "
              f"{load_now()}", flush=True)
        variants |= int8_variants(teacher, calib, Path(tempfile.mkdtemp(prefix="bench_teacher_")), torch.get_num_threads(), names)
    for net in variants.values():  # warm-up (and the inference form is built here, once)
        teacher_logits(net, faces[: args.batch_size], args.batch_size)
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for round_ in range(args.repeats):
        for name in list(variants) if round_ % 2 == 0 else list(variants)[::-1]:
            tick, tock = time.perf_counter(), time.process_time()
            teacher_logits(variants[name], faces, args.batch_size)
            wall[name].append(time.perf_counter() - tick)
            cpu[name].append(time.process_time() - tock)
    rate = {k: len(faces) / statistics.median(v) for k, v in wall.items()}
    cpu_rate = {k: len(faces) / statistics.median(v) for k, v in cpu.items()}
    result = {"machine": machine(), "faces": len(faces), "source": where, "batch_size": args.batch_size, "repeats": args.repeats,
              "images_per_s": {k: round(v, 1) for k, v in rate.items()}, "images_per_cpu_s": {k: round(v, 1) for k, v in cpu_rate.items()},
              "wall_s": {k: [round(t, 3) for t in v] for k, v in wall.items()}}
    for name in variants:
        if name == "old":
            continue
        paired = statistics.median(o / n for o, n in zip(wall["old"], wall[name]))
        result[name] = {"ratio": round(rate[name] / rate["old"], 2), "paired_ratio": round(paired, 2),
                        "cpu_ratio": round(cpu_rate[name] / cpu_rate["old"], 2)}
        print(f"Teacher {name} / old = {rate[name] / rate['old']:.2f}x by wall clock (paired {paired:.2f}x; target >= 4x): "
              f"{rate[name]:.1f} vs {rate['old']:.1f} images/s; by process CPU time {cpu_rate[name] / cpu_rate['old']:.2f}x "
              f"({cpu_rate[name]:.1f} vs {cpu_rate['old']:.1f} images per CPU-s)", flush=True)
    paired = statistics.median(n / i for n, i in zip(wall["new"], wall["int8"]))
    result["int8_vs_new"] = {"ratio": round(rate["int8"] / rate["new"], 2), "paired_ratio": round(paired, 2),
                             "cpu_ratio": round(cpu_rate["int8"] / cpu_rate["new"], 2)}
    print(f"Teacher int8 / new (fp32 inference form) = {rate['int8'] / rate['new']:.2f}x by wall clock (paired {paired:.2f}x); "
          f"by process CPU time {cpu_rate['int8'] / cpu_rate['new']:.2f}x", flush=True)
    result["load"] = load_now()
    print(load_now(), flush=True)
    if args.check:
        result["check"] = a = check(variants, all_faces, all_labels, cntk, args.batch_size)
        print(f"Teacher check on all {a['faces']} faces of FER+ test against old (accuracy: cntk, majority label, "
              f"{a['cntk_faces']} faces; old {a['acc_old']:.2%}):", flush=True)
        for name in variants:
            if name != "old":
                v = a[name]
                print(f"  {name}: max |Δlogit| {v['max_abs_diff']:.2e}, argmax agreement {v['argmax_agreement']:.2%}, "
                      f"accuracy {v['acc']:.2%} ({(v['acc'] - a['acc_old']) * 100:+.2f} points)", flush=True)
        print(load_now(), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
