"""Checks that pip resolves the accelerator extras against the project's pins.

    python experiments/check_extras.py [--extras cuda12 tpu] [--json FILE]

For each extra runs `pip install --dry-run --ignore-installed -e ".[EXTRA]"` from the
repository root (pip downloads the wheels it needs to resolve, several hundred MB for
cuda12, and installs nothing) and reports whether it resolved and the JAX packages it
would install. Nothing here can run a GPU or TPU: this proves only that the set-up command
of the README installs, not that the device works.
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def check(extra: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "-q",
        "--report",
        "-",
        "-e",
        f".[{extra}]",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    result = {"extra": extra, "command": " ".join(cmd[1:]), "resolved": proc.returncode == 0}
    if proc.returncode:
        result["error"] = proc.stderr.strip().splitlines()[-5:]
        return result
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    names = {
        item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]
    }
    result["jax_packages"] = {
        n: v for n, v in sorted(names.items()) if re.match(r"(jax|jaxlib|libtpu|nvidia-cudnn)", n)
    }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", nargs="+", default=["cuda12", "tpu"])
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    results = [check(extra) for extra in args.extras]
    for r in results:
        state = "resolves" if r["resolved"] else "does NOT resolve"
        print(f".[{r['extra']}] {state}: {r.get('jax_packages') or r.get('error')}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["resolved"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
