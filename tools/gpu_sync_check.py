"""Does any algorithm's training path synchronise the host with the GPU? (run by tools/gpu_check.sh)

Why: the harness promises no host sync per update (``Trainer.train_batches`` keeps loss and accuracy on the device;
the bench closes a window with one sync), times updates with CUDA events and reports the allocator's peak memory.
A syncing call in an update (``.item()``, a data-dependent shape, a blocking copy, a linalg error check) stalls the
launch queue, and GPU timings then measure the host. Every registered algorithm, and rfl variants with other code
paths: a trainer as ``harness.bench.make_trainer`` builds it (digits, mlp-2x64-tanh, batch 32), ``bench.warm_up``,
then a window under ``torch.cuda.set_sync_debug_mode("error")``: ``ok`` or the first syncing call (innermost frame
of the repository's code, the error's first line); also the meter's peak memory (CUDA: the allocator's peak over
what was allocated when the trainer was built) and seconds per update. CPU (dry run): sync ``skipped (cpu)``, window still
runs. Exit 1 if any algorithm synchronises, 2 if one fails otherwise.  Usage: gpu_sync_check.py [DEVICE] [UPDATES]
"""
import gc, os, sys, time, traceback  # noqa: E401

import torch

from harness import bench
from harness.datasets import load_dataset
from harness.registry import algorithm_names
from harness.train import resolve_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [("rfl", {"feedback": "exact"}), ("rfl", {"feedback": "newton_schulz"}),
            ("rfl", {"schedule": "sleep_wake", "sleep_every": "10"}), ("rfl", {"propagation": "inverse"})]


def where(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    f = ([f for f in frames if f.filename.startswith(ROOT) and "/tools/" not in f.filename] or frames)[-1]
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    path = os.path.relpath(f.filename, ROOT) if f.filename.startswith(ROOT) else f.filename
    return f"{path}:{f.lineno} ({f.name}): {first}"


def check(algo, sets, cfg, data, updates, cuda):
    trainer = bench.make_trainer(algo, cfg, data, sets=sets)
    perm, n = bench.warm_up(trainer, updates)
    device = trainer.device
    sync = "skipped (cpu)"
    if cuda:  # the window only: setup, warm-up and FLOP counting may synchronise
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
    t0 = time.perf_counter()
    try:
        trainer.train_batches(perm, n)
        sync = "ok" if cuda else sync
    except RuntimeError as exc:
        if not (cuda and "synchroniz" in str(exc)):
            raise
        sync = f"SYNC at {where(exc)}"
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize(device)
    window = f"{(time.perf_counter() - t0) / n * 1e3:8.3f} ms/update" if not sync.startswith("SYNC") else "–"
    cost = trainer.meter.summary()
    peak = f"{cost['peak_memory_bytes'] / 2**20:8.2f} MiB" if cost["peak_memory_bytes"] is not None else " n/a"
    return sync, f"peak {peak}  meter {cost['seconds_per_update'] * 1e3:8.3f} ms/update  window {window} ({n} updates)"


def main(argv):
    device = resolve_device(argv[1] if len(argv) > 1 else "cuda")
    updates, cuda, status = int(argv[2]) if len(argv) > 2 else 20, device.type == "cuda", 0
    print(f"torch {torch.__version__}, {device}" + (f" ({torch.cuda.get_device_name(device)})" if cuda else ""))
    cfg = bench.BenchConfig(algos=[], network="mlp-2x64-tanh", dataset="digits", batch_size=32, device=str(device))
    data = load_dataset("digits", device=device)
    for algo, sets in [(a, {}) for a in algorithm_names()] + VARIANTS:
        try:
            sync, figures = check(algo, sets, cfg, data, updates, cuda)
        except Exception as exc:  # noqa: BLE001  one line per algorithm; go on with the next
            sync, figures, status = f"ERROR at {where(exc)} [{type(exc).__name__}]", "", status or 2
        status = 1 if sync.startswith("SYNC") else status
        print(f"{algo + ''.join(f' {k}={v}' for k, v in sets.items()):<38} {sync:<13} {figures}", flush=True)
        gc.collect()
    print("result:", ["none synchronises" if cuda else "dry run (cpu)", "SOME SYNCHRONISE", "SOME FAILED"][status])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
