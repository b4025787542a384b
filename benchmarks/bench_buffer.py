"""Benchmark the rehearsal buffers: native (cpp_loader) against the plain-Python ones.

One world size (every rank runs this):

    mpirun -np 4 --oversubscribe --bind-to none python benchmarks/bench_buffer.py --json b4.json

Several, merged into one table and one JSON (relaunches itself under mpirun for each P):

    python benchmarks/bench_buffer.py --ranks 1,2,4 --json bench.json [--quick] [--policy fixed]

Measured in the same run, for 3x32x32 and 3x224x224 uint8 samples, every rank's slice filled
first (10 classes x N slots, N large enough for the largest R on one rank; ``--policy adaptive``,
the default, gives each rank the same 10 x N slots shared by the classes, ``fixed`` the K x N
layout):

* insertion: add() in batches (128 / 32 samples), samples/s and GB/s per rank (median batch
  time), while filling (every sample written) and once full (reservoir replacements);
* draw of R = 7, 56, 128 representatives, median over repeats of the slowest rank:
  native ``sample`` (sync), native ``start`` + a simulated training step of --step-ms
  (sleep) + ``wait`` (only the wait timed), Python global, Python local, and the floor:
  ``np.copyto`` of the same bytes into a preallocated, pre-touched array on rank 0;
* ratios native/memcpy and python_global/native, and pass/fail against the native buffer's
  targets (targets.yaml; P >= 2, 3x224x224, R = 56): <= 2x memcpy, >= 10x faster than Python
  global, wait < 1 ms after a 50 ms step.

The native columns are filled when ``cpp_loader`` imports; --require-native makes its absence
an error.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.mpirun import mpirun_env, mpirun_prefix
from measure import int_list, targets, write_json

SHAPES = {"3x32x32": ((3, 32, 32), 128, 100), "3x224x224": ((3, 224, 224), 32, 26)}
QUICK_SLOTS = {"3x32x32": 26, "3x224x224": 13}  # 10 classes x 13 = 130 >= R = 128


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the results here")
    p.add_argument("--quick", action="store_true", help="fewer repeats, smaller slices")
    p.add_argument("--ranks", help="driver mode: comma-separated world sizes, e.g. 1,2,4")
    p.add_argument("--step-ms", type=float, default=50.0, help="simulated training step")
    p.add_argument("--reps", default="7,56,128", help="numbers of representatives R")
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"among {', '.join(SHAPES)}")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--policy", choices=("adaptive", "fixed"), default="adaptive",
                   help="the buffers' insertion policy (same number of slots either way)")
    p.add_argument("--repeats", type=int, help="timed repeats (default 30, quick 10)")
    p.add_argument("--warmup", type=int, help="untimed repeats first (default 3, quick 2)")
    p.add_argument("--require-native", action="store_true",
                   help="fail if cpp_loader cannot be imported")
    p.add_argument("--timeout", type=float, default=1200, help="driver: seconds per world size")
    p.add_argument("--no-print", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.reps = [int(r) for r in args.reps.split(",")]
    args.shapes = args.shapes.split(",")
    unknown = [s for s in args.shapes if s not in SHAPES]
    if unknown:
        p.error(f"unknown shape(s) {unknown}; choose among {', '.join(SHAPES)}")
    args.repeats = args.repeats or (10 if args.quick else 30)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    return args


def native_status():
    """(available, version or the import error)."""
    from buffers import buffer_class

    try:
        buffer_class("native")
    except ImportError as exc:
        return False, str(exc)
    import cpp_loader
    return True, f"cpp_loader {getattr(cpp_loader, '__version__', '')}".strip()


# ------------------------------------------------------------------ driver mode

def driver(args):
    ok, why = native_status()
    if args.require_native and not ok:
        sys.exit(f"--require-native: cpp_loader does not import ({why}); "
                 f"build it with: pip install ./cpp_loader")
    env = mpirun_env()
    passthrough = strip_option(strip_option(sys.argv[1:], "--ranks"), "--json")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in int_list(args.ranks):
            out = Path(tmp) / f"bench_{ranks}.json"
            cmd = [*mpirun_prefix(ranks), sys.executable, __file__, *passthrough, "--json", str(out), "--no-print"]
            print(f"# running {ranks} rank(s)...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, env=env, timeout=args.timeout)
            if proc.returncode != 0:
                sys.exit(f"bench at {ranks} rank(s) failed (exit {proc.returncode})")
            runs.append(json.loads(out.read_text()))
    result = {"runs": runs}
    for run in runs:
        print(format_run(run))
    print(format_summary(runs))
    if args.json:
        write_json(result, args.json, indent=1)
        print(f"wrote {args.json}")


def strip_option(argv, name):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


# ------------------------------------------------------------------ worker mode

class Timer:
    """Per-repeat seconds on this rank; summarised as the median of the slowest rank."""

    def __init__(self):
        self.samples = {}

    def add(self, key, seconds):
        self.samples.setdefault(key, []).append(seconds)

    def summary(self, comm):
        out = {}
        for key in sorted(self.samples):
            mine = np.array(self.samples[key])
            slowest = np.empty_like(mine)
            comm.Allreduce(mine, slowest, op=MPI_MAX())
            out[key] = {"median_ms": 1e3 * float(np.median(slowest)),
                        "p90_ms": 1e3 * float(np.percentile(slowest, 90)),
                        "min_ms": 1e3 * float(slowest.min())}
        return out


def MPI_MAX():
    from mpi4py import MPI
    return MPI.MAX


def fill_batches(shape, batch, classes, seed, count):
    """Random uint8 batches whose labels go round the classes, `count` samples in all."""
    rng = np.random.default_rng(seed)
    pool = [rng.integers(0, 256, size=(batch, *shape), dtype=np.uint8) for _ in range(2)]
    labels = np.arange(count, dtype=np.int64) % classes
    for i, first in enumerate(range(0, count, batch)):
        y = labels[first:first + batch]
        yield pool[i % 2][:len(y)], y


MIN_BATCHES = 16


def time_inserts(buf, shape, batch, classes, rank, count, comm, reset=None):
    """Samples/s of add() from the median time of full batches (robust on a noisy machine),
    mean over ranks. With `reset` (the state of the empty buffer), fill from empty again
    and again until MIN_BATCHES batches are timed, so every timed sample is written."""
    comm.Barrier()
    spent, n = [], 0
    while len(spent) < MIN_BATCHES:
        if reset is not None:
            buf.load_state(reset)
        for x, y in fill_batches(shape, batch, classes, rank + n, count):
            t0 = time.perf_counter()
            buf.add(x, y)
            t = time.perf_counter() - t0
            if len(y) == batch:
                spent.append(t)
            n += len(y)
    rates = comm.allgather(batch / float(np.median(spent)))
    nbytes = int(np.prod(shape))
    return {"samples_per_s": float(np.mean(rates)),
            "GB_per_s": float(np.mean(rates)) * nbytes / 1e9, "batches": len(spent)}


def worker(args):
    from mpi4py import MPI

    from buffers import buffer_class

    comm = MPI.COMM_WORLD
    rank, P = comm.Get_rank(), comm.Get_size()
    have_native, native_info = native_status()
    if args.require_native and not have_native:
        if rank == 0:
            print(f"--require-native: cpp_loader does not import ({native_info}); "
                  f"build it with: pip install ./cpp_loader", file=sys.stderr)
        sys.exit(2)
    kinds = (["native"] if have_native else []) + ["python", "local"]
    K, step = args.classes, args.step_ms / 1e3
    result = {"world_size": P, "host": platform.node(), "cpus": os.cpu_count(),
              "step_ms": args.step_ms, "quick": args.quick, "repeats": args.repeats,
              "warmup": args.warmup, "native": have_native, "policy": args.policy,
              "native_info": native_info, "shapes": []}
    for name in args.shapes:
        shape, batch, slots = SHAPES[name]
        if args.quick:
            slots = QUICK_SLOTS[name]
        slots = max(slots, -(-max(args.reps) // K))
        sample_bytes = int(np.prod(shape))
        layout = (dict(slots_per_class=slots, policy="fixed") if args.policy == "fixed"
                  else dict(capacity=K * slots, policy="adaptive"))
        bufs = {kind: buffer_class(kind)(num_classes=K, sample_shape=shape, dtype="uint8", seed=1, comm=comm,
                                         **layout) for kind in kinds}
        insert = {}
        for kind in ("native", "python"):
            if kind in bufs:
                empty = bufs[kind].state()
                insert[kind] = {
                    "fill": time_inserts(bufs[kind], shape, batch, K, rank, K * slots, comm,
                                         reset=empty),
                    "full": time_inserts(bufs[kind], shape, batch, K, rank + 1000, K * slots,
                                         comm)}
                del empty
        for x, y in fill_batches(shape, batch, K, rank, K * slots):
            bufs["local"].add(x, y)
        for kind, buf in bufs.items():
            filled = buf.stats()["filled"]
            assert filled == K * slots, f"{kind} holds {filled} of {K * slots}"

        rmax = max(args.reps)
        out_x = np.zeros((rmax, *shape), np.uint8)  # zeros() + fill: pages touched
        out_x.fill(1)
        out_y = np.zeros(rmax, np.int64)
        src = np.random.default_rng(0).integers(0, 256, size=(rmax, *shape), dtype=np.uint8)
        timer = Timer()
        for R in args.reps:
            for rep in range(args.warmup + args.repeats):
                timed = rep >= args.warmup
                comm.Barrier()
                if rank == 0:
                    t0 = time.perf_counter()
                    np.copyto(out_x[:R], src[:R])
                    t = time.perf_counter() - t0
                else:
                    t = 0.0
                if timed:
                    timer.add((R, "memcpy"), t)
                for kind, label in (("native", "native_sync"), ("python", "python_global"),
                                    ("local", "python_local")):
                    if kind not in bufs:
                        continue
                    comm.Barrier()
                    t0 = time.perf_counter()
                    n = bufs[kind].sample(R, out_x, out_y)
                    t = time.perf_counter() - t0
                    assert n == R, (kind, n, R)
                    if timed:
                        timer.add((R, label), t)
                if "native" in bufs:
                    comm.Barrier()
                    bufs["native"].start(R, out_x, out_y)
                    time.sleep(step)  # the training step the fetch overlaps
                    t0 = time.perf_counter()
                    n = bufs["native"].wait()
                    t = time.perf_counter() - t0
                    assert n == R, ("native async", n, R)
                    if timed:
                        timer.add((R, "native_wait"), t)
        times = timer.summary(comm)
        draws = []
        for R in args.reps:
            row = {"R": R, "bytes": R * sample_bytes}
            for label in ("memcpy", "native_sync", "native_wait", "python_global", "python_local"):
                if (R, label) in times:
                    row[label + "_ms"] = times[(R, label)]["median_ms"]
                    row[label + "_p90_ms"] = times[(R, label)]["p90_ms"]
            if "native_sync_ms" in row:
                row["native_over_memcpy"] = row["native_sync_ms"] / row["memcpy_ms"]
                row["python_over_native"] = row["python_global_ms"] / row["native_sync_ms"]
            row["python_global_over_memcpy"] = row["python_global_ms"] / row["memcpy_ms"]
            draws.append(row)
        result["shapes"].append({"shape": name, "sample_bytes": sample_bytes, "batch": batch,
                                 "slots_per_class": slots, "slots_per_rank": K * slots,
                                 "insert": insert, "draws": draws})
        for buf in bufs.values():
            buf.close()
        del bufs
    result["targets"] = check_targets(result)
    if rank == 0:
        if not args.no_print:
            print(format_run(result))
        write_json(result, args.json, indent=1)


# ------------------------------------------------------------------ report

def check_targets(run):
    """Pass/fail of the native buffer's targets (targets.yaml); why not where they do not apply.
    The keys are those of the JSON files already written (benchmarks/buffer*.json)."""
    where, goals = targets("buffer")
    row = next((d for s in run["shapes"] if s["shape"] == where["shape"]
                for d in s["draws"] if d["R"] == where["R"]), None)
    if run["world_size"] < where["min_ranks"] or row is None or "native_sync_ms" not in row:
        why = (f"needs >= {where['min_ranks']} ranks" if run["world_size"] < where["min_ranks"] else
               f"no {where['shape']} R={where['R']} row" if row is None else "native buffer not available")
        return {"applies": False, "why": why}
    return {"applies": True,
            "native_over_memcpy": row["native_over_memcpy"],
            "native_le_2x_memcpy": goals["native_over_memcpy"].passes(row["native_over_memcpy"]),
            "python_over_native": row["python_over_native"],
            "native_10x_faster_than_python": goals["python_over_native"].passes(row["python_over_native"]),
            "wait_ms": row["native_wait_ms"], "step_ms": run["step_ms"],
            "wait_lt_1ms": goals["native_wait_ms"].passes(row["native_wait_ms"])}


def fmt_ms(v):
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def fmt_ratio(v):
    return "-" if v is None else f"{v:.1f}x"


def format_run(run):
    lines = [f"== {run['world_size']} rank(s), policy {run.get('policy', 'fixed')}, "
             f"on {run['host']} ({run['cpus']} CPUs), "
             f"step {run['step_ms']:.0f} ms, {run['repeats']} repeats after {run['warmup']} "
             f"warm-up; native: " + (run["native_info"] if run["native"] else "not available")]
    lines.append("insertion, add() per rank      batch   fill: samples/s     GB/s"
                 "   full: samples/s     GB/s")
    for s in run["shapes"]:
        for kind, v in s["insert"].items():
            rates = " ".join(f"{v[p]['samples_per_s']:>18,.0f} {v[p]['GB_per_s']:>8.2f}"
                             for p in ("fill", "full"))
            lines.append(f"  {s['shape']:<10} {kind:<8} {s['batch']:>10} {rates}")
    lines.append("draw R representatives, ms (median of the slowest rank)")
    lines.append(f"  {'shape':<10} {'R':>4} {'MB':>6} {'memcpy':>8} {'nat.sync':>9} "
                 f"{'nat.wait':>9} {'py.global':>10} {'py.local':>9} {'nat/memcpy':>10} "
                 f"{'py/nat':>7} {'py/memcpy':>9}")
    for s in run["shapes"]:
        for d in s["draws"]:
            g = d.get
            lines.append(f"  {s['shape']:<10} {d['R']:>4} {d['bytes'] / 1e6:>6.2f} "
                         f"{fmt_ms(g('memcpy_ms')):>8} {fmt_ms(g('native_sync_ms')):>9} "
                         f"{fmt_ms(g('native_wait_ms')):>9} {fmt_ms(g('python_global_ms')):>10} "
                         f"{fmt_ms(g('python_local_ms')):>9} "
                         f"{fmt_ratio(g('native_over_memcpy')):>10} "
                         f"{fmt_ratio(g('python_over_native')):>7} "
                         f"{fmt_ratio(g('python_global_over_memcpy')):>9}")
    where, _ = targets("buffer")
    lines.append(f"targets ({where['shape']}, R={where['R']}): " + format_targets(run["targets"]))
    return "\n".join(lines)


def format_targets(t):
    if not t["applies"]:
        return f"n/a ({t['why']})"
    _, goals = targets("buffer")
    measured = {"native_over_memcpy": t["native_over_memcpy"], "python_over_native": t["python_over_native"],
                "native_wait_ms": t["wait_ms"]}
    return "; ".join(goals[key].report(value) for key, value in measured.items()) + f"; step {t['step_ms']:.0f} ms"


def format_summary(runs):
    lines = ["== targets by world size"]
    for run in runs:
        lines.append(f"  P={run['world_size']}: {format_targets(run['targets'])}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.ranks:
        driver(args)
    else:
        worker(args)


if __name__ == "__main__":
    main()
