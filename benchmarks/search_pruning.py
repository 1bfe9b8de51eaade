"""What pruning saves in segkit's Optuna search, and that resume and parallel workers hold.

    python benchmarks/search_pruning.py            # the measurement: about 40 min on 2 CPU cores
    python benchmarks/search_pruning.py --tiny --out /tmp/sp.json --no-render   # a proof run

On the real dataset (SEGKIT_DATA_DIR), at ``--size`` px with ``--limit`` training images and
a small U-Net, the same search (space, sampler and seed) runs twice: ``pruner=none`` and with
``--pruner`` at its defaults in conf/hparams_search/optuna.yaml (successive halving: rungs at
epochs 3 and 9, a third goes on at each). The sampler is ``random`` by default: its proposals
do not depend on earlier results, so both searches train the same configurations and the
difference between them is the pruner's alone (with TPE the two searches part ways at the
first pruned trial; ``--sampler tpe`` measures that too).
Per search: epochs trained (the epochs each trial reported), wall time, trials complete /
pruned, and the best validation mDice (``val_mdice`` of the best COMPLETE trial). Then two
checks, with ``--check-epochs`` epochs per trial: resume (the sweeper is killed while trial 1
trains, the same command is run again: completed trials are not retrained, the study ends with
``n_trials`` counted trials) and two joblib workers on one journal file (no trial lost or
duplicated, one parent run).
Writes ``--out`` (JSON) and, unless ``--no-render``, its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
START, END = "<!-- search_pruning:start -->", "<!-- search_pruning:end -->"


def space(args: argparse.Namespace, epochs: int) -> list[str]:
    return ["hparams_search=optuna", f"data.image_size={args.size}", f"data.limit={args.limit}",
            f"trainer.epochs={epochs}", "trainer.batch_size=8", "model=unet",
            "model.depth=3", "callbacks.tensorboard.enabled=false", "eval.plots=false",
            "callbacks.early_stopping.enabled=false", "augment=none",
            "optimizer.lr=tag(log,interval(1e-4,3e-2))", "model.filters=choice(4,8,16)",
            "loss=choice(bce,dice,bce_dice)", f"hydra.sweeper.n_trials={args.trials}",
            f"hydra.sweeper.sampler.name={args.sampler}", f"hydra.sweeper.sampler.seed={args.seed}",
            f"hydra.sweeper.sampler.n_startup_trials={max(args.trials // 2, 2)}"]


def command(args: argparse.Namespace, work: Path, name: str, *extra: str,
            epochs: int | None = None) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), "-m", *space(args, epochs or args.epochs),
            f"tracking.uri=sqlite:///{work}/mlflow.db", f"tracking.experiment=search-{name}",
            f"hydra.sweep.dir={work}/{name}-{time.time_ns()}",
            f"hydra.sweeper.study_dir={work}/studies-{name}", *extra]


def sweeper_defaults():
    """``hydra.sweeper`` of conf/hparams_search/optuna.yaml: the defaults the search runs with."""
    from omegaconf import OmegaConf

    return OmegaConf.load(ROOT / "conf/hparams_search/optuna.yaml").hydra.sweeper


def pruner_defaults() -> str:
    p = sweeper_defaults().pruner
    return (f"median: {p.n_startup_trials} startup trials, from epoch {p.n_warmup_steps}; "
            f"halving and hyperband: first rung at epoch {p.min_resource}, reduction factor "
            f"{p.reduction_factor}")


def run(cmd: list[str], log: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with open(log, "a") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    return rc, time.perf_counter() - start


def study(work: Path, name: str):
    import optuna

    from segkit.search.study import open_storage

    storage = open_storage(str(next((work / f"studies-{name}").glob("*.journal"))))
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0],
                             storage=storage)


def search_totals(work: Path, name: str, seconds: float) -> dict:
    from optuna.trial import TrialState

    trials = study(work, name).trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    return {"wall_s": round(seconds, 1), "trials": len(trials),
            "complete": len(done),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "failed": sum(t.state == TrialState.FAIL for t in trials),
            "epochs_trained": sum(len(t.intermediate_values) for t in trials),
            "best_val_mdice": max((t.value for t in done), default=None)}


# pruner settings replayed on the unpruned study (name, overrides of the conf defaults)
REPLAYED = [("median", {}), ("median", {"n_warmup_steps": 2}),
            ("successive_halving", {"min_resource": 1}),
            ("successive_halving", {"min_resource": 2}), ("successive_halving", {}),
            ("successive_halving", {"reduction_factor": 4}), ("hyperband", {})]


def replay(trials: list, name: str, changes: dict) -> dict:
    """What pruner ``name`` (conf defaults + ``changes``) would have done to the unpruned
    study's trials: Optuna's own pruner, fed each trial's recorded per-epoch values in trial
    order, no training. Exact for the median and successive-halving pruners when training is
    deterministic and the sampler history-free (the same trials would be proposed); hyperband
    assigns trials to brackets by a hash of the study name, so its replay is one draw."""
    import optuna
    from omegaconf import OmegaConf
    from optuna.trial import TrialState

    from segkit.search.study import build_pruner

    settings = {**OmegaConf.to_container(sweeper_defaults().pruner), "name": name, **changes}
    study = optuna.create_study(study_name="replay", direction="maximize",  # fixed: hyperband
                                pruner=build_pruner(settings))
    epochs, pruned, best = 0, 0, None
    for old in sorted((t for t in trials if t.state == TrialState.COMPLETE),
                      key=lambda t: t.number):
        trial = study.ask()
        for step in sorted(old.intermediate_values):
            trial.report(old.intermediate_values[step], step)
            epochs += 1
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                pruned += 1
                break
        else:
            study.tell(trial, old.value)
            best = old.value if best is None else max(best, old.value)
    label = ", ".join(f"{k} {v}" for k, v in changes.items()) or "conf defaults"
    return {"pruner": name, "settings": label, "epochs_trained": epochs, "pruned": pruned,
            "best_val_mdice": best}


def children(work: Path, name: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    exp = client.get_experiment_by_name(f"search-{name}")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return runs


def resume_check(args: argparse.Namespace, work: Path, log: Path) -> dict:
    """Kill the sweeper (SIGKILL) once trial 1 has started, rerun the same command."""
    n = min(args.trials, 4)
    cmd = command(args, work, "resume", "hydra.sweeper.pruner.name=none",
                  f"hydra.sweeper.n_trials={n}", epochs=args.check_epochs)
    sweep_dir = Path(cmd[[i for i, c in enumerate(cmd) if c.startswith("hydra.sweep.dir=")][0]]
                     .partition("=")[2])
    with open(log, "a") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        while not (sweep_dir / "1").is_dir() and proc.poll() is None:
            time.sleep(1)
        time.sleep(5)  # inside trial 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first = [t.number for t in study(work, "resume").trials]
    cmd2 = [c if not c.startswith("hydra.sweep.dir=") else f"{c}-again" for c in cmd]
    rc, _ = run(cmd2, log)
    from optuna.trial import TrialState

    trials = study(work, "resume").trials
    runs = [r for r in children(work, "resume") if "mlflow.parentRunId" in r.data.tags]
    per_trial = [r.data.tags.get("segkit.search.trial") for r in runs]
    return {"exit_status": rc, "trials_before_kill": first,
            "states": [t.state.name for t in trials],
            "counted": sum(t.state != TrialState.FAIL or "segkit_orphaned" not in t.user_attrs
                           for t in trials),
            "n_trials": n, "runs_of_trial_0": per_trial.count("0"),
            "parents": len([r for r in children(work, "resume")
                            if r.data.tags.get("segkit.sweep") == "parent"])}


def workers_check(args: argparse.Namespace, work: Path, log: Path) -> dict:
    n = min(args.trials, 4)
    rc, seconds = run(command(args, work, "workers", "hydra.sweeper.pruner.name=none",
                              f"hydra.sweeper.n_trials={n}", "hydra.sweeper.n_jobs=2",
                              "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                              epochs=args.check_epochs), log)
    trials = study(work, "workers").trials
    runs = children(work, "workers")
    kids = [r.data.tags.get("segkit.search.trial") for r in runs
            if "mlflow.parentRunId" in r.data.tags]
    return {"exit_status": rc, "wall_s": round(seconds, 1), "n_trials": n,
            "trial_numbers": sorted(t.number for t in trials),
            "child_runs_per_trial": sorted(kids),
            "parents": sum(r.data.tags.get("segkit.sweep") == "parent" for r in runs)}


def render(res: dict) -> str:
    a, b = res["searches"]["none"], res["searches"][res["pruner"]]
    ratio = b["epochs_trained"] / a["epochs_trained"] if a["epochs_trained"] else float("nan")
    gap = (a["best_val_mdice"] or 0) - (b["best_val_mdice"] or 0)
    lines = [START, "## Optuna search: pruning, resume, parallel workers", "",
             f"`python benchmarks/search_pruning.py` ({res['setup']}); "
             f"whole measurement {res['total_wall_s'] / 60:.0f} min wall.", "",
             "| pruner | trials (complete / pruned / failed) | epochs trained | wall | "
             "best val mDice |", "|---|---|---|---|---|"]
    for name, s in res["searches"].items():
        best = "–" if s["best_val_mdice"] is None else f"{s['best_val_mdice']:.4f}"
        lines.append(f"| {name} | {s['trials']} ({s['complete']} / {s['pruned']} / "
                     f"{s['failed']}) | {s['epochs_trained']} | {s['wall_s'] / 60:.1f} min | "
                     f"{best} |")
    if res.get("replayed"):
        lines += ["", "The same pruners replayed on the unpruned search's recorded per-epoch "
                  "values (Optuna's own pruners fed them in trial order; no training; exact for "
                  "median and successive halving here, as training is deterministic and the "
                  "random sampler proposes the same trials; hyperband's brackets depend on the "
                  "study name):", "",
                  "| pruner | settings | epochs trained | share | pruned | best val mDice |",
                  "|---|---|---|---|---|---|"]
        for row in res["replayed"]:
            best = "–" if row["best_val_mdice"] is None else f"{row['best_val_mdice']:.4f}"
            lines.append(f"| {row['pruner']} | {row['settings']} | {row['epochs_trained']} | "
                         f"{row['epochs_trained'] / a['epochs_trained']:.0%} | {row['pruned']} | "
                         f"{best} |")
    r, w = res["resume"], res["workers"]
    lines += ["", f"Pruned search: {ratio:.0%} of the epochs (target <= 50%), best "
              f"{gap:+.4f} below the unpruned best (target <= 0.01).",
              f"Resume: killed in trial 1, rerun: states {r['states']}, trial 0 trained "
              f"{r['runs_of_trial_0']} time(s), {r['parents']} parent run(s).",
              f"Two joblib workers: trials {w['trial_numbers']}, child runs per trial "
              f"{w['child_runs_per_trial']}, {w['parents']} parent run(s).", END]
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path) -> None:
    old = path.read_text() if path.is_file() else ""
    if START in old and END in old:
        new = old[:old.index(START)] + text.rstrip("\n") + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=14)
    ap.add_argument("--epochs", type=int, default=12, help="epochs per trial of the searches")
    ap.add_argument("--check-epochs", type=int, default=3,
                    help="epochs per trial of the resume and workers checks")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--limit", type=int, default=400, help="training images (data.limit)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sampler", default="random", choices=["random", "tpe"])
    ap.add_argument("--pruner", default="successive_halving",
                    choices=["median", "successive_halving", "hyperband"])
    ap.add_argument("--tiny", action="store_true", help="3 trials, 2 epochs, 64 px, 16 images")
    ap.add_argument("--out", default="results/search_pruning.json")
    ap.add_argument("--no-render", action="store_true", help="leave RESULTS.md alone")
    ap.add_argument("--replay-from", metavar="WORK",
                    help="only add the replay table to --out from an earlier run's work folder")
    args = ap.parse_args()
    if args.replay_from:  # no training: replay the pruners on that run's unpruned study
        res = json.loads(Path(args.out).read_text())
        trials = study(Path(args.replay_from), "none").trials
        res["replayed"] = [replay(trials, n, c) for n, c in REPLAYED]
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        if not args.no_render:
            write_section(render(res), ROOT / "RESULTS.md")
        print(render(res))
        return
    if args.tiny:
        args.trials, args.epochs, args.check_epochs, args.size, args.limit = 3, 4, 2, 64, 16
    if not os.environ.get("SEGKIT_DATA_DIR"):
        sys.exit("set SEGKIT_DATA_DIR to the Kvasir-SEG folder")
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="search_pruning-"))
    log = work / "log.txt"
    print(f"working in {work} (log: {log})")
    res: dict = {"setup": f"{args.trials} trials x {args.epochs} epochs, {args.size} px, "
                          f"{args.limit} training images, U-Net depth 3, {args.sampler} sampler "
                          f"seed {args.seed}, pruner {args.pruner} at its defaults "
                          f"({pruner_defaults()}), monitor {sweeper_defaults().monitor}",
                 "pruner": args.pruner, "sampler": args.sampler, "searches": {}}
    for pruner in ("none", args.pruner):
        rc, seconds = run(command(args, work, pruner, f"hydra.sweeper.pruner.name={pruner}"),
                          log)
        res["searches"][pruner] = {"exit_status": rc, **search_totals(work, pruner, seconds)}
        print(pruner, res["searches"][pruner], flush=True)
        if pruner == "none":
            trials = study(work, "none").trials
            res["replayed"] = [replay(trials, n, c) for n, c in REPLAYED]
            print("replayed", res["replayed"], flush=True)
    res["resume"] = resume_check(args, work, log)
    print("resume", res["resume"], flush=True)
    res["workers"] = workers_check(args, work, log)
    print("workers", res["workers"], flush=True)
    res["total_wall_s"] = round(time.perf_counter() - start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    if not args.no_render:
        write_section(render(res), ROOT / "RESULTS.md")
    print(render(res))


if __name__ == "__main__":
    main()
