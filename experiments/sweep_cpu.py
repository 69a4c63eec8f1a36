"""Short CPU runs of the `cpu` preset with a few knobs changed each: what makes it learn.

    python experiments/sweep_cpu.py --runs-dir runs/sweep [--steps 409600] [--only NAME ...]
        [--parallel 2] [--out experiments/results/cpu_sweep] [--summarize-only]

Every variant is the `cpu` preset plus the overrides listed in VARIANTS, trained with
`dexjax train` for the same number of env steps (a run already in --runs-dir is resumed,
a finished one reused). With --parallel 2 two runs share the machine, each with one
physics thread. The summary (`sweep.json`, `sweep.md`) gives, per variant, the goals
reached per finished training episode (8 s without a success ends one) over the last 20%
of its updates up to --steps, its drops per episode, the policy entropy and the
wall-clock; `curves.png` plots every variant's successes and entropy against env steps.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

# The `cpu` preset's settings before this sweep, as overrides of the present preset.
PREVIOUS = [
    "env.goal_turn_direction=either",
    "env.relative_to=target",
    "env.goal_turn=0.6,1.2",
    "train.ppo.gamma=0.998",
    "train.ppo.entropy_coef=0.01",
    "train.num_envs=32",
    "train.rollout_length=10",
    "train.num_minibatches=2",
]
_C128 = [
    "env.relative_to=center",
    "train.ppo.gamma=0.99",
    "train.num_envs=128",
    "train.num_minibatches=4",
]

# name -> overrides of the cpu preset; each variant changes a few things from the one
# above it.
VARIANTS: dict[str, list[str]] = {
    "previous-preset": PREVIOUS,
    "center": [*PREVIOUS, "env.relative_to=center"],
    "center-gamma99-128envs": [*PREVIOUS, *_C128],
    "c128-no-randomization": [
        *PREVIOUS,
        *_C128,
        "env.randomization.physics.enabled=false",
        "env.randomization.observation.enabled=false",
        "env.randomization.unmodeled.enabled=false",
    ],
    "c128-ent0-lr1e-3": [*PREVIOUS, *_C128, "train.ppo.entropy_coef=0.0", "train.ppo.lr=0.001"],
    # 256 envs x 16 steps, no entropy bonus, 0.6-0.8 rad goals, turned either way.
    "either-way": ["env.goal_turn_direction=either"],
    # The preset as it is: the same, every goal a counterclockwise turn.
    "preset": [],
    # One change each from the preset.
    "current-relative": ["env.relative_to=current"],
    "target-relative": ["env.relative_to=target"],
    "networks-128-64": ["train.network.hidden=128", "train.network.lstm=64"],
    "epochs-2": ["train.epochs=2"],
    "lr-1e-3": ["train.ppo.lr=0.001"],
    "128envs-x32steps": ["train.num_envs=128", "train.rollout_length=32"],
}


def _rows(run_dir: pathlib.Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(name: str, run_dir: pathlib.Path, steps: int) -> dict:
    """The variant's figures over the last 20% of its updates up to `steps` env steps."""
    rows = [r for r in _rows(run_dir) if r["env_steps"] <= steps]
    if not rows:
        return {"variant": name, "overrides": VARIANTS[name], "env_steps": 0}
    tail = rows[-max(1, len(rows) // 5) :]

    def mean(key):
        return float(np.mean([r[key] for r in tail if r.get(key) is not None]))

    return {
        "variant": name,
        "overrides": VARIANTS[name],
        "env_steps": rows[-1]["env_steps"],
        "wall_clock_s": rows[-1]["time/elapsed_s"],
        "successes_per_episode": mean("env/successes_at_end"),
        "successes_running": mean("env/successes"),
        "drops_per_episode": mean("train/terminations_per_episode"),
        "entropy": mean("loss/entropy"),
        "approx_kl": mean("loss/approx_kl"),
    }


def plot(names: list[str], runs_dir: pathlib.Path, path: pathlib.Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, name in enumerate(names):
        # 20 distinct colours; the preset in black.
        preset = name == "preset"
        style = {
            "color": "black" if preset else plt.cm.tab20(i % 20),
            "linewidth": 2.0 if preset else 1.2,
        }
        rows = [r for r in _rows(runs_dir / name) if r["env_steps"] <= steps]
        if not rows:
            continue
        env_steps = np.array([r["env_steps"] for r in rows])
        for ax, key in zip(axes, ("env/successes", "loss/entropy"), strict=True):
            values = np.array([r[key] for r in rows])
            width = max(1, len(values) // 20)
            smooth = np.convolve(values, np.ones(width) / width, mode="valid")
            ax.plot(env_steps[width - 1 :], smooth, label=name, **style)
    axes[0].set_ylabel("successes so far in the running episodes")
    axes[1].set_ylabel("policy entropy (nats)")
    for ax in axes:
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _shown(overrides: list[str]) -> str:
    """Overrides as the table shows them: those on top of PREVIOUS after its name."""
    n = len(PREVIOUS)
    if overrides[:n] == PREVIOUS and len(overrides) > n:
        return "previous-preset + " + " ".join(overrides[n:])
    return " ".join(overrides) or "- (the preset)"


def _command(name: str, runs_dir: pathlib.Path, steps: int, threads: int) -> list[str]:
    run_dir = runs_dir / name
    base = [sys.executable, "-m", "dexjax.cli", "train", "--no-progress"]
    if (run_dir / "config.json").exists():
        return base + ["--resume", str(run_dir)]
    sets = VARIANTS[name] + [f"total_env_steps={steps}", f"env.physics_threads={threads}"]
    return (
        base
        + ["--preset", "cpu", "--run-dir", str(run_dir)]
        + [arg for s in sets for arg in ("--set", s)]
    )


def _finished(run_dir: pathlib.Path, steps: int) -> bool:
    rows = _rows(run_dir)
    return bool(rows) and rows[-1]["env_steps"] >= steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=pathlib.Path, default=pathlib.Path("runs/sweep"))
    parser.add_argument("--steps", type=int, default=409_600)
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--parallel", type=int, default=1, choices=(1, 2))
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("experiments/results/cpu_sweep")
    )
    parser.add_argument(
        "--summarize-only", action="store_true", help="train nothing: summarize the runs there"
    )
    args = parser.parse_args(argv)
    names = args.only or list(VARIANTS)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    threads = 1 if args.parallel == 2 else 0

    pending = [n for n in names if not _finished(args.runs_dir / n, args.steps)]
    if args.summarize_only:
        pending = []
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            log = open(args.runs_dir / f"{name}.log", "a")
            print(f"training {name}", flush=True)
            cmd = _command(name, args.runs_dir, args.steps, threads)
            running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(5)
        for name, proc in list(running):
            if proc.poll() is not None:
                running.remove((name, proc))
                print(f"{name}: exit {proc.returncode}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    summary = [summarize(n, args.runs_dir / n, args.steps) for n in names]
    (args.out / "sweep.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [
        "| variant | overrides of `cpu` | env steps | wall-clock (min) | successes per "
        "episode (last 20%) | drops per episode | entropy |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        if not s["env_steps"]:  # not trained
            continue
        lines.append(
            f"| {s['variant']} | {_shown(s['overrides'])} | {s['env_steps']:,} | "
            f"{s['wall_clock_s'] / 60:.1f} | {s['successes_per_episode']:.2f} | "
            f"{s['drops_per_episode']:.2f} | {s['entropy']:.1f} |"
        )
    (args.out / "sweep.md").write_text("\n".join(lines) + "\n")
    plot(names, args.runs_dir, args.out / "curves.png", args.steps)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
