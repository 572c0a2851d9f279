"""One trial: an algorithm trains a network on a dataset with the shared optimizer.

Every epoch: train (per-update cost metered), evaluate train/val/test, compute the
alignment with bp and the algorithm's diagnostics on a fixed probe batch, checkpoint,
write the per-epoch table. Stops on patience/min_delta of validation accuracy, at the
maximum number of epochs, or as ``diverged`` on a non-finite loss.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from harness import store
from harness.algorithm import Algorithm
from harness.cost import CostMeter, NullMeter
from harness.datasets import Data, load_dataset
from harness.errors import ConfigError, CreditbenchError
from harness.hparams import TrainConfig
from harness.metrics import alignment_angles
from harness.networks import build_network
from harness.provenance import environment
from harness.registry import DATASETS, get_algorithm
from harness.schema import (ANGLE_PREFIX, CHECKPOINT, CONFIG_JSON, COST_PHASES, EPOCHS_CSV, RUNNING, SUMMARY_JSON,
                            TrialConfig, is_diagnostic)

# what a checkpoint holds (private to the trainer: the sweep reads a trial through summary_from_checkpoint
# and trial_history, never the file itself)
CHECKPOINT_KEYS = ("config", "epoch", "updates", "history", "best", "bad_epochs", "status", "stop_reason",
                   "train_seconds", "pretrain_flops", "net", "optimizer", "algo", "algo_gen", "data_gen", "meter",
                   "torch_rng", "summary")
REQUIRED_CHECKPOINT_KEYS = tuple(k for k in CHECKPOINT_KEYS if k != "summary")  # derived; older checkpoints lack it


DEVICES = "auto, cpu, cuda, cuda:N"


def parse_device(name: str) -> torch.device | None:
    """``name`` as a torch device (None for ``auto``); anything else is a one-line ConfigError."""
    if name == "auto":
        return None
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device '{name}'; valid: {DEVICES}")
    return dev


def resolve_device(name: str) -> torch.device:
    dev = parse_device(name)
    if dev is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; valid here: auto, cpu")
    return dev


def _derived_generator(seed: int, stream: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1000003 + stream)


class Trainer:
    def __init__(self, cfg: TrialConfig | dict, data: Data | None = None):
        cfg = cfg if isinstance(cfg, TrialConfig) else TrialConfig.build(cfg, owner="trial")
        self.algo_cls: type[Algorithm] = get_algorithm(cfg.algo)
        self.dataset_entry = DATASETS.get(cfg.dataset)  # the registered dataset (its default network)
        self.tc = TrainConfig.build(cfg.train, owner="training", refuse_inactive=True)
        params = self.algo_cls.Params.build(cfg.params, owner=cfg.algo, refuse_inactive=True)
        self.device = resolve_device(cfg.device)
        network = cfg.network or self.dataset_entry.default_network
        self.cfg = cfg.model_copy(update={"network": network})
        self.resolved = {
            **self.cfg.model_dump(exclude={"train", "params"}),
            "algo_version": self.algo_cls.version,
            "train": self.tc.active_dump(),
            "params": params.active_dump(),
        }
        self.data = data if data is not None else load_dataset(
            cfg.dataset, data_dir=cfg.data_dir, device=self.device, split_seed=cfg.split_seed,
            val_size=int(cfg.val_size) if cfg.val_size and cfg.val_size >= 1 else cfg.val_size)
        torch.manual_seed(cfg.seed)
        self.net = build_network(network, self.data.input_shape, self.data.num_classes, init=self.tc.init,
                                 generator=_derived_generator(cfg.seed, 0, self.device), device=self.device)
        self.data_gen = _derived_generator(cfg.seed, 1, self.device)
        self.meter = CostMeter(self.device)
        self.algo = self.algo_cls(self.net, params, generator=_derived_generator(cfg.seed, 2, self.device),
                                  meter=self.meter)
        self.meter.mix = self.algo.update_mix()
        self.optimizer = self._optimizer()
        n_probe = min(cfg.probe_size, len(self.data.y_train))
        self.probe = (self.data.x_train[:n_probe], self.data.y_train[:n_probe])
        self.epoch = 0
        self.updates = 0
        self.history: list[dict] = []
        self.best = {"val_acc": -1.0, "epoch": 0, "test_acc": float("nan")}
        self.bad_epochs = 0
        self.status, self.stop_reason = RUNNING, None
        self.train_seconds = 0.0

    def _optimizer(self) -> torch.optim.Optimizer:
        """``foreach=True``: grouped tensor operations, bit-for-bit the per-tensor loop's arithmetic on CPU
        (Adam and SGD, float32 and float64, checked) at less Python overhead per update."""
        tc, params = self.tc, self.net.parameters()
        if tc.optimizer == "adam":
            return torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay, foreach=True)
        momentum = tc.momentum if tc.optimizer == "momentum" else 0.0
        return torch.optim.SGD(params, lr=tc.lr, momentum=momentum, weight_decay=tc.weight_decay, foreach=True)

    # ------------------------------------------------------------------ epochs
    @property
    def pretrain_flops(self) -> float:
        return self.meter.pretrain_flops

    def _pretrain(self) -> None:
        t0 = time.perf_counter()
        with self.meter.pretraining():
            self.algo.pretrain(self.data, self.tc.batch_size)
        self.train_seconds += time.perf_counter() - t0

    def _between_epochs(self) -> None:
        t0 = time.perf_counter()
        with self.meter.between_epochs():
            self.algo.between_epochs(self.data, self.tc.batch_size)
        self.train_seconds += time.perf_counter() - t0

    def train_epoch(self) -> dict:
        n, bs = len(self.data.y_train), self.tc.batch_size
        n_batches = max(1, n // bs)  # the last partial batch is dropped (shapes fixed)
        perm = torch.randperm(n, generator=self.data_gen, device=self.device)
        t0 = time.perf_counter()
        loss_sum, correct = self.train_batches(perm, n_batches)
        self.train_seconds += time.perf_counter() - t0
        seen = n_batches * min(bs, n)
        return {"train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen}

    def train_batches(self, perm: torch.Tensor, n_batches: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_batches`` updates on consecutive batches of ``perm`` (the training path, also what ``creditbench
        bench`` times): summed loss and correct count as device tensors (no host sync per update)."""
        data, bs = self.data, self.tc.batch_size
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for b in range(n_batches):
            x, y = data.train_batch(perm[b * bs:(b + 1) * bs], self.data_gen)
            with self.meter.update(self.algo.update_kind()):
                out = self.algo.step(x, y)
                self.optimizer.step()
            self.updates += 1
            loss_sum += out.loss.detach() * len(y)
            correct += (out.logits.argmax(1) == y).sum()
        return loss_sum, correct

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> tuple[float, float]:
        loss, correct = 0.0, 0
        for i in range(0, len(y), batch):
            logits = self.net(x[i:i + batch])
            loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
        return loss / len(y), correct / len(y)

    def _epoch_row(self, train: dict) -> dict:
        d = self.data
        val_loss, val_acc = self.evaluate(d.x_val, d.y_val)
        test_loss, test_acc = self.evaluate(d.x_test, d.y_test)
        flops = self.meter.cumulative_flops()
        row = {
            "epoch": self.epoch, "updates": self.updates, "lr": self.optimizer.param_groups[0]["lr"], **train,
            "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
            **{f"flops_{p}": flops[p] for p in COST_PHASES},
        }
        row["flops_total"] = sum(row[f"flops_{p}"] for p in COST_PHASES)
        row["wall_time_s"] = self.train_seconds
        cost = self.meter.summary()
        row["seconds_per_update"] = cost["seconds_per_update"]
        row["peak_memory_bytes"] = cost["peak_memory_bytes"]
        if all(math.isfinite(p.detach().abs().sum().item()) for p in self.net.parameters()):
            row.update(self.probe_metrics())
        return row

    def probe_metrics(self) -> dict:
        """Alignment with bp and the algorithm's diagnostics, off the training path."""
        meter, self.algo.meter = self.algo.meter, NullMeter()
        try:
            out = {f"{ANGLE_PREFIX}{i + 1}": a for i, a in enumerate(alignment_angles(self.algo, *self.probe))}
            out.update(self.algo.diagnostics(*self.probe))
        finally:
            self.algo.meter = meter
            for p in self.net.parameters():
                p.grad = None
        return out

    def run(self, out_dir: Path | None = None, *, on_epoch: Callable[[dict, "Trainer"], None] | None = None,
            log=sys.stderr) -> dict:
        """Train to convergence (or resume an interrupted trial in ``out_dir``); return the summary.

        ``out_dir`` is locked while the trial runs: a second run into it is refused."""
        threads = torch.get_num_threads()
        torch.set_num_threads(self.cfg.threads)  # the trial's own setting, not the environment's
        try:
            if out_dir is None:
                return self._run(None, on_epoch=on_epoch, log=log)
            with store.locked(Path(out_dir)):
                return self._run(Path(out_dir), on_epoch=on_epoch, log=log)
        finally:
            torch.set_num_threads(threads)

    def _run(self, out_dir: Path | None, *, on_epoch, log) -> dict:
        if out_dir is not None:
            store.remove_orphans(out_dir)  # temporary files of writes a killed run left behind
        if out_dir is not None and (out_dir / CHECKPOINT).exists():
            self.load_checkpoint(out_dir / CHECKPOINT)
            print(f"resuming {self.cfg.algo} from epoch {self.epoch} ({out_dir})", file=log)
            if self.status == RUNNING and (out_dir / SUMMARY_JSON).exists():
                (out_dir / SUMMARY_JSON).unlink()  # training continues: the old summary is stale
        if out_dir is not None:
            store.write_json(out_dir / CONFIG_JSON, self.resolved)
        if self.epoch == 0 and self.status == RUNNING:
            self._pretrain()
        self._clock = (time.monotonic(), self.epoch)  # progress: elapsed and ETA of this run
        summary = None
        while self.status == RUNNING:
            if self.epoch >= self.tc.epochs:
                self.status, self.stop_reason = "ok", "max_epochs"
                break
            self.epoch += 1
            for group in self.optimizer.param_groups:
                group["lr"] = self.tc.lr_at(self.epoch)
            train = self.train_epoch()
            if math.isfinite(train["train_loss"]) and type(self.algo).between_epochs is not Algorithm.between_epochs:
                self._between_epochs()
            row = self._epoch_row(train)
            self.history.append(row)
            self._update_stopping(row)
            print(self._progress(row), file=log, flush=True)
            if out_dir is not None:
                summary = self.save(out_dir)  # the trial's files, summary.json included once it has ended
            if on_epoch is not None:
                on_epoch(row, self)
        if summary is None:
            summary = self.summary()
            if out_dir is not None:
                self.save(out_dir, summary)
        return summary

    def _update_stopping(self, row: dict) -> None:
        if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
            self.status, self.stop_reason = "diverged", "non-finite loss"
            return
        if row["train_loss"] > self.tc.diverge_loss:
            self.status, self.stop_reason = "diverged", f"training loss {row['train_loss']:.3g} > {self.tc.diverge_loss:g}"
            return
        if row["val_acc"] > self.best["val_acc"] + self.tc.min_delta or self.best["val_acc"] < 0:
            self.best = {"val_acc": row["val_acc"], "epoch": row["epoch"], "test_acc": row["test_acc"]}
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.tc.patience:
                self.status, self.stop_reason = "ok", "patience"
                return
        if self.epoch >= self.tc.epochs:
            self.status, self.stop_reason = "ok", "max_epochs"

    def _progress(self, row: dict) -> str:
        """One line per epoch: ``epoch k/N``, metrics, elapsed time and the ETA at the maximum epochs
        (``ETA ≤``: patience may stop the trial earlier)."""
        start, first = getattr(self, "_clock", (time.monotonic(), row["epoch"] - 1))
        elapsed = time.monotonic() - start
        eta = elapsed / max(row["epoch"] - first, 1) * (self.tc.epochs - row["epoch"])
        return (f"[{self.cfg.algo} seed={self.cfg.seed}] epoch {row['epoch']}/{self.tc.epochs}  "
                f"loss {row['train_loss']:.4f}  train {row['train_acc']:.4f}  val {row['val_acc']:.4f}  "
                f"test {row['test_acc']:.4f}  {row['seconds_per_update'] * 1e3:.2f} ms/update  "
                f"elapsed {clock(elapsed)}  ETA ≤ {clock(eta)}")

    # ------------------------------------------------------------------ results
    def summary(self, env: bool = True) -> dict:
        """The trial summary (``summary.json``); ``env=False`` leaves out the environment (package
        versions, git state, device), which a summary rebuilt from a checkpoint records afresh."""
        cost = self.meter.summary()
        last = self.history[-1] if self.history else {}
        out = {
            "algo": self.cfg.algo, "algo_version": self.algo_cls.version, "dataset": self.cfg.dataset,
            "network": self.cfg.network, "seed": self.cfg.seed, "status": self.status,
            "stop_reason": self.stop_reason, "epochs": self.epoch, "best_epoch": self.best["epoch"],
            "best_val_acc": self.best["val_acc"] if self.best["val_acc"] >= 0 else float("nan"),
            "test_acc": self.best["test_acc"], "final_test_acc": last.get("test_acc", float("nan")),
            "updates": self.updates, **cost, "pretrain_flops": self.pretrain_flops,
            "wall_time_s": self.train_seconds,
        }
        if self.cfg.target_acc is not None:
            hit = next((r for r in self.history if r["val_acc"] >= self.cfg.target_acc), None)
            out["target_acc"] = self.cfg.target_acc
            out["updates_to_target"] = hit["updates"] if hit else None
            out["flops_to_target"] = hit["flops_total"] if hit else None
        diag_keys = [k for k in last if is_diagnostic(k)]
        out["diagnostics"] = {k: last[k] for k in diag_keys}
        out.update({k: last[k] for k in diag_keys})
        out["angles"] = {k: v for k, v in last.items() if k.startswith(ANGLE_PREFIX)}
        out["config"] = self.resolved
        out["algorithm"] = self.algo_cls.spec()
        out["report_labels"] = dict(self.algo_cls.report_labels)
        out["plausibility"] = self.algo.plausibility().to_dict()
        out["dataset_fingerprint"] = self.data.fingerprint
        out["dataset_info"] = self.data.info
        if env:
            out["env"] = environment(self.device)
        return out

    def epochs_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.history)

    def save(self, out_dir: Path, summary: dict | None = None) -> dict | None:
        """Write the trial's files: ``epochs.csv``, the checkpoint (with the summary as of now, so that it
        can be rebuilt without data) and, once the trial has ended, ``summary.json`` (before anyone is
        told of the epoch); return that summary (None while running)."""
        summary = summary if summary is not None else self.summary(env=False)
        store.write_csv(out_dir / EPOCHS_CSV, self.epochs_frame())
        store.save_torch(out_dir / CHECKPOINT, self.checkpoint({k: v for k, v in summary.items() if k != "env"}))
        if self.status == RUNNING:
            return None
        if "env" not in summary:
            summary = {**summary, "env": environment(self.device)}
        store.write_json(out_dir / SUMMARY_JSON, summary)
        return summary

    def checkpoint(self, summary: dict | None = None) -> dict:
        return {
            "config": self.resolved, "epoch": self.epoch, "updates": self.updates, "history": self.history,
            "best": self.best, "bad_epochs": self.bad_epochs, "status": self.status, "stop_reason": self.stop_reason,
            "train_seconds": self.train_seconds, "pretrain_flops": self.pretrain_flops,
            "net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "algo": self.algo.extra_state(), "algo_gen": self.algo.gen.get_state(),
            "data_gen": self.data_gen.get_state(), "meter": self.meter.state_dict(),
            "torch_rng": torch.get_rng_state(),
            # so that a summary can be rebuilt without data or network (summary_from_checkpoint)
            "summary": summary if summary is not None else self.summary(env=False),
        }

    def load_checkpoint(self, path: Path) -> None:
        """Restore from ``path``, read as data only (``store.load_torch``); anything else is refused."""
        ck = store.load_torch(path, map_location=self.device)
        missing = sorted(set(REQUIRED_CHECKPOINT_KEYS) - set(ck)) if isinstance(ck, dict) else [f"all ({type(ck).__name__})"]
        if missing:
            raise CreditbenchError(f"{path}: not a creditbench checkpoint (missing: {', '.join(missing)}); "
                                   "use another --out directory")
        mine = {**self.resolved, "train": {**self.resolved["train"], "epochs": None}}
        theirs = {**ck["config"], "train": {**ck["config"]["train"], "epochs": None}}
        if mine != theirs:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise CreditbenchError(f"{path} belongs to a different trial (differs in: {', '.join(diff)}); "
                                   "use another --out directory")
        self.epoch, self.updates, self.history = ck["epoch"], ck["updates"], ck["history"]
        self.best, self.bad_epochs = ck["best"], ck["bad_epochs"]
        self.status, self.stop_reason = ck["status"], ck["stop_reason"]
        if self.tc.lr_schedule == "cosine" and ck["config"]["train"]["epochs"] != self.tc.epochs:
            raise CreditbenchError(f"{path}: the cosine schedule spans the trial's epochs "
                                   f"({ck['config']['train']['epochs']}); resume with the same --epochs")
        if self.status == "ok" and self.epoch < self.tc.epochs and self.stop_reason == "max_epochs":
            self.status, self.stop_reason = RUNNING, None  # more epochs were asked for
        self.train_seconds, self.meter.pretrain_flops = ck["train_seconds"], ck["pretrain_flops"]
        self.net.load_state_dict(ck["net"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.algo.load_extra_state(ck["algo"])
        # generator states are CPU byte tensors, whatever the device (map_location moved them with the rest)
        self.algo.gen.set_state(ck["algo_gen"].cpu())
        self.data_gen.set_state(ck["data_gen"].cpu())
        self.meter.load_state_dict(ck["meter"])
        torch.set_rng_state(ck["torch_rng"].cpu())


def summary_from_checkpoint(path: Path, *, status: str, stop_reason: str) -> dict:
    """The summary of a trial that did not end by itself (a scheduler stopped it, or it failed), from
    its checkpoint alone: no dataset is loaded and no network built. A trial the checkpoint shows
    still running gets ``status`` and ``stop_reason``; one that had ended keeps its own."""
    ck = store.load_torch(Path(path), map_location="cpu")
    if not isinstance(ck, dict) or not isinstance(ck.get("summary"), dict):
        raise CreditbenchError(f"{path}: not a creditbench checkpoint (no summary)")
    summary = dict(ck["summary"])
    if summary["status"] == RUNNING:
        summary.update(status=status, stop_reason=stop_reason)
    summary["env"] = environment(torch.device("cpu"))
    return summary


def trial_history(path: Path) -> list[dict]:
    """The per-epoch rows a checkpoint holds (``epochs.csv`` of the trial, as the trainer made them)."""
    ck = store.load_torch(Path(path), map_location="cpu")
    if not isinstance(ck, dict) or not isinstance(ck.get("history"), list):
        raise CreditbenchError(f"{path}: not a creditbench checkpoint (no history)")
    return ck["history"]


def run_trial(cfg: TrialConfig | dict, out_dir: Path | None = None, **kwargs) -> dict:
    return Trainer(cfg).run(out_dir, **kwargs)


def clock(seconds: float) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour)."""
    seconds = max(int(round(seconds)), 0)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
