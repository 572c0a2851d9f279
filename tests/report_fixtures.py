"""Real results directories for the report tests: tiny two-phase sweeps run with the real trainer.

Until ``creditbench sweep`` writes them, these stand in for a sweep's output: every number comes
from a real trial (``harness.train.Trainer`` on digits), flattened with ``harness.schema``'
``trial_row``/``epoch_rows`` exactly as a sweep does. Search configurations are sampled from the
declared search spaces; the final phase takes each algorithm's best search configuration (by
validation accuracy) over several seeds.

``fa_probe`` is a test-only algorithm: feedback alignment that also reports rfl-style
diagnostics of its fixed feedback (the pseudoinverse residual of Bᵀ and the contraction
‖δa_L − J Bᵀ δa_L‖ / ‖δa_L‖), so the report's diagnostics figure is exercised before rfl lands.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from algorithms.fa import FeedbackAlignment
from harness import store
from harness.algorithm import output_error
from harness.datasets import load_dataset
from harness.hparams import TrainConfig
from harness.registry import ALGORITHMS, get_algorithm, register_algorithm
from harness.schema import epoch_rows, trial_row
from harness.train import Trainer

DATASET = "digits"
NETWORK = "mlp-1x16-tanh"
LAMBDA = 1e-3


class FeedbackAlignmentProbe(FeedbackAlignment):
    name = "fa_probe"
    description = "test-only: feedback alignment that reports pseudoinverse diagnostics of its feedback"
    reference = "Lillicrap et al. 2016, Nat. Commun. 7:13276 (diagnostics as rfl in docs/design.md)"

    @torch.no_grad()
    def diagnostics(self, x, y):
        layers = self.net.layers
        residuals = []
        for l in range(1, len(layers)):
            w, q = layers[l].weight, self.B[l - 1].T  # Q_l = B_lᵀ, shape d_{l-1} × d_l
            gram = w @ w.T + LAMBDA * torch.eye(w.shape[0], device=w.device)
            residuals.append(((q @ gram - w.T).norm() / w.T.norm()).item())
        fw = self.net.forward_all(x)
        _, e = output_error(fw.logits, y)
        delta_h = e
        for l in range(len(layers) - 1, 0, -1):  # δh_1 = Q_2 ⋯ Q_L δa_L (linear pass, as rfl's chain rule)
            delta_h = delta_h @ self.B[l - 1]
            if l > 1:
                delta_h = layers[l - 1].act.deriv(fw.a[l - 1], fw.h[l]) * delta_h

        def tail(h1):
            h = h1
            for layer in layers[1:]:
                h = layer.act(layer.pre(h))
            return h

        _, jvp = torch.func.jvp(tail, (fw.h[1],), (delta_h,))
        contraction = ((e - jvp).norm() / e.norm()).item()
        return {"pinv_residual": float(np.mean(residuals)), "contraction": contraction}


def ensure_probe_algorithm() -> None:
    if "fa_probe" not in ALGORITHMS:
        register_algorithm(FeedbackAlignmentProbe)


def remove_probe_algorithm() -> None:
    ALGORITHMS.unregister("fa_probe")


def sample_configs(algo: str, n: int, rng: np.random.Generator) -> list[dict]:
    """``n`` configurations drawn from the declared search spaces (training and algorithm)."""
    spaces = {**TrainConfig.search_space(), **get_algorithm(algo).Params.search_space()}
    out = []
    for _ in range(n):
        cfg = {}
        for name, s in spaces.items():
            if s["kind"] == "loguniform":
                cfg[name] = float(math.exp(rng.uniform(math.log(s["low"]), math.log(s["high"]))))
            elif s["kind"] == "uniform":
                cfg[name] = float(rng.uniform(s["low"], s["high"]))
            elif s["kind"] == "randint":
                cfg[name] = int(rng.integers(s["low"], s["high"] + 1))
            else:
                cfg[name] = s["values"][int(rng.integers(len(s["values"])))]
        out.append(cfg)
    return out


def run_trial(data, *, algo, phase, config_id, seed, values, train, network=NETWORK):
    """One real trial → (trials.csv row, epochs.csv rows)."""
    params_cls = get_algorithm(algo).Params
    train = {**train, **{k: v for k, v in values.items() if k in TrainConfig.model_fields}}
    params = {k: v for k, v in values.items() if k in params_cls.model_fields}
    trainer = Trainer({"algo": algo, "dataset": DATASET, "network": network, "seed": seed, "train": train,
                       "params": params, "probe_size": 128}, data=data)
    with open("/dev/null", "w") as quiet:
        summary = trainer.run(None, log=quiet)
    trial_id = f"{config_id}-s{seed}-{phase}"
    row = trial_row(summary, trial_id=trial_id, phase=phase, config_id=config_id)
    rows = epoch_rows(trainer.history, trial_id=trial_id, phase=phase, config_id=config_id, algo=algo, seed=seed)
    return row, rows, summary


def run_sweep(data, algos, *, search_configs=3, seeds=(0, 1, 2), search_train=None, final_train=None,
              fixed=None, network=NETWORK, rng_seed=0):
    """A two-phase sweep: ``search_configs`` sampled configurations × seed 0, then the best × ``seeds``.

    ``fixed`` maps an algorithm to hyperparameters forced in every phase (e.g. a diverging lr).
    Returns (trials frame, epochs frame, one trial summary for env.json).
    """
    search_train = search_train or {"epochs": 2, "patience": 5}
    final_train = final_train or {"epochs": 3, "patience": 5}
    rng = np.random.default_rng(rng_seed)
    trials, epochs, summary = [], [], None
    for algo in algos:
        configs = sample_configs(algo, search_configs, rng)
        configs = [{**c, **(fixed or {}).get(algo, {})} for c in configs]
        scores = []
        for i, values in enumerate(configs):
            row, rows, summary = run_trial(data, algo=algo, phase="search", config_id=f"{algo}-{i:03d}", seed=0,
                                           values=values, train=search_train, network=network)
            trials.append(row)
            epochs.extend(rows)
            scores.append(row["best_val_acc"] if math.isfinite(row["best_val_acc"]) else -1.0)
        best = int(np.argmax(scores))
        for seed in seeds:
            row, rows, summary = run_trial(data, algo=algo, phase="final", config_id=f"{algo}-{best:03d}", seed=seed,
                                           values=configs[best], train=final_train, network=network)
            trials.append(row)
            epochs.extend(rows)
    return pd.DataFrame(trials), pd.DataFrame(epochs), summary


def spec_for(algos, *, seeds, search_configs, search_train, final_train, network=NETWORK) -> dict:
    """A resolved sweep spec as a sweep writes it (spec.yaml): per-algorithm search spaces."""
    return {
        "name": "report-fixture",
        "dataset": DATASET,
        "network": network,
        "algorithms": list(algos),
        "seeds": list(seeds),
        "budgets": {"search_trials": search_configs, "search_epochs": search_train["epochs"],
                    "final_epochs": final_train["epochs"]},
        "search_spaces": {a: {**TrainConfig.search_space(), **get_algorithm(a).Params.search_space()} for a in algos},
    }


def env_for(summary: dict) -> dict:
    env = summary["env"]
    return {"versions": env["versions"], "git": env["git"], "device": env["device"], "platform": env["platform"],
            "dataset": {"name": summary["dataset"], "fingerprints": {summary["dataset"]: summary["dataset_fingerprint"]}}}


def write_results(out: Path, trials: pd.DataFrame, epochs: pd.DataFrame, spec: dict | None = None,
                  env: dict | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store.write_csv(out / "trials.csv", trials)
    store.write_csv(out / "epochs.csv", epochs)
    if spec is not None:
        store.write_text(out / "spec.yaml", yaml.safe_dump(spec, sort_keys=False))
    if env is not None:
        store.write_text(out / "env.json", json.dumps(env, indent=2, default=str) + "\n")
    return out


def build_all(root: Path) -> dict[str, Path]:
    """Every fixture directory the report tests use (≈ 30 tiny trials, a few seconds)."""
    ensure_probe_algorithm()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is fastest, and 7× faster on a busy machine
    try:
        return _build_all(Path(root))
    finally:
        torch.set_num_threads(threads)
        remove_probe_algorithm()


def _build_all(root: Path) -> dict[str, Path]:
    data = load_dataset(DATASET)
    dirs = {}

    # main: bp, fa and fa_probe on mlp-1x16-tanh, 3 search configurations, 3 final seeds
    algos = ("bp", "fa", "fa_probe")
    s_train = {"epochs": 2, "patience": 5, "batch_size": 32}
    f_train = {"epochs": 3, "patience": 5, "batch_size": 32}
    trials, epochs, summary = run_sweep(data, algos, search_train=s_train, final_train=f_train)
    spec = spec_for(algos, seeds=(0, 1, 2), search_configs=3, search_train=s_train, final_train=f_train)
    env = env_for(summary)
    dirs["main"] = write_results(root / "main", trials, epochs, spec, env)

    # per-algorithm directories of the same run (combined reports, algorithm missing from some)
    for algo in algos:
        keep = trials["algo"] == algo
        dirs[f"only_{algo}"] = write_results(root / f"only_{algo}", trials[keep], epochs[epochs["algo"] == algo],
                                             spec_for((algo,), seeds=(0, 1, 2), search_configs=3,
                                                      search_train=s_train, final_train=f_train), env)

    # diverged: linear network, plain SGD; bp's lr forced to 2.0 diverges, fa's searched lr does not
    lin = "mlp-1x16-linear"
    d_search, d_final = {"epochs": 3, "patience": 5, "optimizer": "sgd"}, {"epochs": 3, "patience": 5, "optimizer": "sgd"}
    trials, epochs, summary = run_sweep(data, ("bp", "fa"), search_configs=2, seeds=(0, 1), search_train=d_search,
                                        final_train=d_final, fixed={"bp": {"lr": 2.0}}, network=lin, rng_seed=1)
    dirs["diverged"] = write_results(root / "diverged", trials, epochs,
                                     spec_for(("bp", "fa"), seeds=(0, 1), search_configs=2, search_train=d_search,
                                              final_train=d_final, network=lin), env_for(summary))
    return dirs
