"""Two-process training of the hand on this machine, killed and resumed (issue 5).

python experiments/two_process_resume.py [--out /tmp/two-process] [--preset smoke]

Starts `dexjax train` twice on localhost (jax.distributed, gloo collectives, one CPU
device each) with 8 updates to do, SIGKILLs both once the first checkpoint exists, then
runs `dexjax train --resume` in two processes and checks that the run reaches its last
update with every update logged. Prints what it saw; exits non-zero on a failure.
"""

import argparse
import json
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

UPDATES = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(out: pathlib.Path, tag: str, args: list[str]) -> list[subprocess.Popen]:
    address = f"localhost:{_free_port()}"
    processes = []
    for rank in range(2):
        log = open(out / f"{tag}.{rank}.log", "w")  # a file: an undrained pipe would block
        command = [sys.executable, "-m", "dexjax.cli", "train", *args, "--no-progress"]
        command += ["--coordinator-address", address, "--num-processes", "2"]
        command += ["--process-id", str(rank)]
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
    return processes


def _checkpoints(run: pathlib.Path) -> list[int]:
    directory = run / "checkpoints"
    names = directory.iterdir() if directory.exists() else []
    return sorted(int(p.name) for p in names if p.name.isdigit())  # not orbax's tmp dirs


def _logged_updates(run: pathlib.Path) -> list[int]:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["update"] for line in lines]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/two-process", help="logs and the run go here")
    parser.add_argument("--preset", default="smoke")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run = out / "run"

    start = time.monotonic()
    steps = f"total_env_steps={UPDATES * 16}"  # the smoke preset: 16 env steps per update
    processes = _launch(
        out, "first", ["--preset", args.preset, "--set", steps, "--run-dir", str(run)]
    )
    while not _checkpoints(run):
        if any(p.poll() is not None for p in processes):
            print(f"a process ended before the first checkpoint; see {out}/first.*.log")
            return 1
        time.sleep(0.5)
    for p in processes:
        p.send_signal(signal.SIGKILL)
        p.wait()
    killed_at = _checkpoints(run)
    print(f"killed both after {time.monotonic() - start:.0f} s; checkpoints {killed_at}")
    print(f"updates logged before the kill: {_logged_updates(run)}")

    start = time.monotonic()
    codes = [p.wait() for p in _launch(out, "resume", ["--resume", str(run)])]
    logged = _logged_updates(run)
    print(f"resumed in {time.monotonic() - start:.0f} s, exit codes {codes}")
    print(f"updates logged: {logged}; checkpoints {_checkpoints(run)}")
    ok = codes == [0, 0] and sorted(set(logged)) == list(range(1, UPDATES + 1))
    print("ok" if ok else f"FAILED; see {out}/resume.*.log")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
