#!/usr/bin/env python
"""ImageNet-size throughput: ResNet-18/50 on synthetic 3x224x224 uint8 images held in memory, side
by side in one job: base at B, base at B+R, nil_cpp (async native draw), nil and nil_local, each
with every --amp mode the device has; and ImageFolder decoding (images/s per worker).

    python benchmarks/bench_throughput.py                                      # B=56, R=7, on a GPU
    python benchmarks/bench_throughput.py --batch-size 16 --reps 2 --steps 2   # a CPU-sized run

Reported per model, amp mode and agent: median step time (ms, load + wait + train), images/s per
rank and in total (new samples and representatives), the wait for representatives as a share of
the step, and step / step of base at B+R (what the B+R samples cost anyway). Targets on a GPU
(targets.yaml): nil_cpp / base at B+R <= 1.05, wait < 2% of the step. Data is generated once and held in memory
(so the model and the buffer are measured, not the noise generator or JPEG decoding); decoding
is measured apart, on JPEGs this script writes to a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from measure import BENCHMARKS, run_in_one_job, step_breakdown, targets, write_json

AGENTS = ("base", "base@B+R", "nil_cpp", "nil", "nil_local")


def amp_modes(requested: str | None) -> list[str]:
    if requested:
        return requested.split(",")
    return ["off", "bf16", "fp16"] if torch.cuda.is_available() else ["off", "bf16"]


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "CPU")
    threads = os.environ.get("OMP_NUM_THREADS", "1")  # what measure.run_in_one_job gives each rank
    return f"CPU: {cpu}, {os.cpu_count()} vCPUs, {threads} thread(s) per rank, no GPU"


def run_matrix(args, ranks: int, tmp: Path) -> dict:
    """{(model, amp, agent): step breakdown}, every run in one process / mpirun job."""
    B, R, steps = args.batch_size, args.reps, args.steps + args.warmup_steps
    runs = {}
    for model in args.models.split(","):
        for amp in amp_modes(args.amp):
            for agent in AGENTS:
                batch = B + R if agent == "base@B+R" else B
                data = (f"{{'num_classes': 10, 'shape': [3, 224, 224], 'train_size': {ranks * batch * steps}, "
                        f"'test_size': 10, 'in_memory': True}}")
                flags = ["--model", model, "--amp", amp, "--agent", agent.split("@")[0],
                         "--batch-size", str(batch), "--dataset-config", data,
                         "--channels-last", str(args.channels_last).lower()]
                if agent.startswith("nil"):
                    flags += ["--agent-config", f"{{'num_representatives': {R}, 'rehearsal_ratio': 30}}"]
                runs[f"{model}-{amp}-{agent}"] = flags
    common = ["--dataset", "synthetic", "--epochs", "1", "--backend", args.backend,
              "--tasksets-config", "{'scenario': 'joint'}", "--eval-batch-size", "10"]
    run_in_one_job(runs, ranks, tmp, common)
    return {name: step_breakdown(tmp / name, skip=args.warmup_steps) for name in runs}


def decode_rate(workers: int, images: int, tmp: Path) -> float:
    """Images/s of the ImageFolder pipeline (PIL decode, resize to 224, centre crop) on JPEGs
    of ImageNet's typical size (about 500x375), with `workers` DataLoader workers."""
    from PIL import Image

    from data.dataset import FolderSplit
    from data.loader import make_loader

    folder = tmp / "jpeg"
    if not folder.exists():
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(images):
            smooth = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            img = Image.fromarray(smooth).resize((500, 375), Image.BICUBIC)
            noisy = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (375, 500, 3)), 0, 255)
            Image.fromarray(noisy.astype(np.uint8)).save(folder / f"{i}.JPEG", quality=90)
    paths = sorted(str(p) for p in folder.glob("*.JPEG"))
    split = FolderSplit(paths, [0] * len(paths), 224)
    loader = make_loader(split, np.arange(len(paths)), 8, workers=workers)
    start = time.perf_counter()
    count = sum(len(y) for _, y in loader)
    return count / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,resnet50")
    p.add_argument("--batch-size", type=int, default=56, help="B, new samples per step and rank")
    p.add_argument("--reps", type=int, default=7, help="R, representatives per step and rank")
    p.add_argument("--steps", type=int, default=20, help="measured steps per run (after the warm-up)")
    p.add_argument("--warmup-steps", type=int, default=3, help="steps not measured (allocation, autotuning)")
    p.add_argument("--amp", default=None, help="comma-separated modes (default: off,bf16 and fp16 on a GPU)")
    p.add_argument("--channels-last", action="store_true", help="NHWC model and inputs")
    p.add_argument("--ranks", type=int, default=1)
    p.add_argument("--backend", default="torch")
    p.add_argument("--decode-workers", default="1,2", help="DataLoader workers for the decoding measurement")
    p.add_argument("--decode-images", type=int, default=96)
    p.add_argument("--json", default=str(BENCHMARKS / "throughput.json"))
    args = p.parse_args()
    B, R = args.batch_size, args.reps
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_matrix(args, args.ranks, Path(tmp))
        decode = {w: decode_rate(w, args.decode_images, Path(tmp)) for w in map(int, args.decode_workers.split(","))}
    device = device_name()
    out = {"device": device, "ranks": args.ranks, "B": B, "R": R, "steps": args.steps,
           "warmup_steps": args.warmup_steps, "channels_last": args.channels_last, "runs": {},
           "decode_images_per_s": {}, "decode_images_per_s_per_worker": {}}
    print(f"\nthroughput: synthetic 3x224x224 in memory, B={B}, R={R}, {args.ranks} rank(s), "
          f"medians over {args.steps} steps after {args.warmup_steps} warm-up; {device}")
    print(f"{'model':<9} {'amp':<5} {'agent':<9} {'step ms':>9} {'img/s rank':>10} {'img/s total':>11} "
          f"{'wait %':>7} {'vs base@B+R':>11}")
    for name, r in rows.items():
        model, amp, agent = name.split("-", 2)
        base_br = rows[f"{model}-{amp}-base@B+R"]["step_s"]
        per_rank = r["samples_per_step"] / r["step_s"]
        entry = {**r, "images_per_s_rank": per_rank, "images_per_s_total": per_rank * args.ranks,
                 "wait_share": r["mean_wait_s"] / r["mean_step_s"], "vs_base_BR": r["step_s"] / base_br}
        out["runs"][name] = entry
        print(f"{model:<9} {amp:<5} {agent:<9} {1000 * r['step_s']:>9.1f} {per_rank:>10.1f} "
              f"{entry['images_per_s_total']:>11.1f} {100 * entry['wait_share']:>6.2f}% {entry['vs_base_BR']:>11.3f}")
    where, goals = targets("throughput")
    for model in args.models.split(","):
        for amp in amp_modes(args.amp):
            native = out["runs"][f"{model}-{amp}-{where['agent']}"]
            print(f"  {model} {amp}, targets on a {where['device']}: "
                  + "; ".join(goal.report(native[key]) for key, goal in goals.items()))
    for workers, rate in decode.items():
        out["decode_images_per_s"][workers] = rate
        out["decode_images_per_s_per_worker"][workers] = rate / workers
        print(f"ImageFolder decoding (JPEG ~500x375 -> 224x224), {workers} worker(s): {rate:.0f} images/s, "
              f"{rate / workers:.0f} per worker")
    write_json(out, args.json)
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
