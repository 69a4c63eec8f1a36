"""What a run writes for people: metrics as JSON lines and TensorBoard events, and plots.

`metrics.jsonl` holds one JSON object per PPO update with keys as `scope/name`
("loss/entropy", "env/successes_at_end", "time/env_steps_per_s", ...) plus "update" and
"env_steps". TensorBoard reads the event files in `tensorboard/`. A shipped policy
(`dexjax save-policy`) carries the curves' columns as `metrics.csv` instead, and
`read_metrics` reads either.
"""

import csv
import json
import math
import pathlib

import numpy as np

METRICS_FILE = "metrics.jsonl"
METRICS_CSV_FILE = "metrics.csv"
CURVES_FILE = "curves.png"


class MetricsLog:
    """Appends rows to `metrics.jsonl` and to TensorBoard (both in `run_dir`)."""

    def __init__(self, run_dir: pathlib.Path, tensorboard: bool = True):
        self.path = pathlib.Path(run_dir) / METRICS_FILE
        self._file = open(self.path, "a")  # noqa: SIM115 - closed in close()
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(pathlib.Path(run_dir) / "tensorboard"))

    def write(self, row: dict) -> None:
        clean = {k: _json_number(v) for k, v in row.items()}
        self._file.write(json.dumps(clean) + "\n")
        if self._tb is not None:
            step = int(row["env_steps"])
            for name, value in clean.items():
                if name not in ("update", "env_steps") and value is not None:
                    self._tb.add_scalar(name, value, step)

    def flush(self) -> None:
        self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _json_number(value) -> float | int | None:
    value = np.asarray(value).item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(run_dir: pathlib.Path, max_update: int | None = None) -> list[dict]:
    """The rows of a run's `metrics.jsonl` (or, in a shipped policy's directory, of its
    `metrics.csv`); rows after `max_update` are dropped (a resumed run rewinds to its
    checkpoint and logs those updates again: the later copy wins)."""
    path = pathlib.Path(run_dir) / METRICS_FILE
    if not path.exists():
        return _read_csv(pathlib.Path(run_dir) / METRICS_CSV_FILE, max_update)
    rows: dict[int, dict] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if max_update is None or row["update"] <= max_update:
                rows[row["update"]] = row
    return [rows[k] for k in sorted(rows)]


def write_metrics_csv(rows: list[dict], path: pathlib.Path) -> pathlib.Path:
    """The columns the curves need (`CSV_COLUMNS`) of `rows`, as CSV; a value a row lacks
    or that was not finite is left empty."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow(_csv_cell(row.get(key)) for key in CSV_COLUMNS)
    return pathlib.Path(path)


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def _read_csv(path: pathlib.Path, max_update: int | None) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for record in csv.DictReader(f):
            row = {k: None if v == "" else float(v) for k, v in record.items()}
            row["update"], row["env_steps"] = int(row["update"]), int(row["env_steps"])
            if max_update is None or row["update"] <= max_update:
                rows.append(row)
    return rows


PANELS = (
    ("successes per episode", "env/successes_at_end"),
    ("episode return", "train/episode_return"),
    ("drops per episode (terminations)", "train/terminations_per_episode"),
    ("episode length (steps)", "env/episode_steps_at_end"),
    ("policy entropy", "loss/entropy"),
    ("approx. KL", "loss/approx_kl"),
    ("explained variance", "train/explained_variance"),
    ("env steps / s", "time/env_steps_per_s"),
)
CSV_COLUMNS = (
    "update",
    "env_steps",
    *(key for _, key in PANELS),
    "env/successes",
    "env/goal_distance",
    "time/elapsed_s",
)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average that ignores NaNs (for noisy per-update values)."""
    out = np.full(len(values), np.nan)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        chunk = chunk[np.isfinite(chunk)]
        if len(chunk):
            out[i] = chunk.mean()
    return out


def baseline_from_eval(summary: dict) -> dict:
    """Reference values for the curves from a `dexjax eval --json` summary.

    Comparable with the training curves when the eval used the training episodes' timeout
    (`dexjax eval --timeout 8` for 100 steps of 80 ms).
    """
    return {
        "env/successes_at_end": summary["mean"],
        "train/episode_return": summary["mean_return"],
        "train/terminations_per_episode": summary["drops"] / summary["trials"],
        "env/episode_steps_at_end": summary["mean_steps"],
    }


def plot_curves(
    rows: list[dict],
    path: pathlib.Path,
    title: str = "",
    baseline: dict | None = None,
    baseline_label: str = "baseline",
) -> pathlib.Path:
    """A grid of learning curves against environment steps, written as a PNG.

    `baseline` maps metric names to a reference value (e.g. a random policy's), drawn as
    a dashed line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 7), constrained_layout=True)
    steps = np.array([r["env_steps"] for r in rows], dtype=float)
    window = max(1, len(rows) // 50)
    for ax, (label, key) in zip(axes.ravel(), PANELS, strict=True):
        values = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)
        if np.isfinite(values).any():
            ax.plot(steps, values, color="tab:blue", alpha=0.25, linewidth=0.8)
            ax.plot(steps, smooth(values, window), color="tab:blue", linewidth=1.8)
        if baseline and key in baseline:
            ax.axhline(baseline[key], color="tab:red", linestyle="--", label=baseline_label)
            ax.legend(loc="best", fontsize=8)
        ax.set_title(label)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return pathlib.Path(path)
