"""This tree against an earlier commit, side by side in one run: ``benchmarks/frameworks.py``'s
epoch times (plain, online KD, offline KD) per framework, each tree's script run in turn for
``--rounds`` alternations (in reverse order on alternate rounds), and the ratio this ÷ earlier of
each variant's median epoch per round, then the median over rounds. Below 1: this tree is faster.

The earlier commit is checked out into a temporary worktree and imported through ``PYTHONPATH``
(the same virtual environment, so the same framework versions).

    python benchmarks/versus_commit.py bb43775 --rounds 3 -- --limit 20000 --epochs 3 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("plain", "online", "offline")


def run_frameworks(tree: Path, arguments: list[str], out: Path) -> dict:
    """One run of ``tree``'s frameworks.py; its per-framework median epoch seconds by variant."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "src"), str(tree / "benchmarks")])}
    subprocess.run([sys.executable, str(tree / "benchmarks/frameworks.py"), *arguments, "--out", str(out)],
                   env=environment, check=True, stdout=subprocess.DEVNULL)
    rows = json.loads(out.read_text())["frameworks"]
    return {name: {variant: row["seconds"][variant]["median"] for variant in VARIANTS} for name, row in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the earlier commit, e.g. bb43775")
    parser.add_argument("--rounds", type=int, default=3)
    own, arguments = (sys.argv[1:sys.argv.index("--")], sys.argv[sys.argv.index("--") + 1:]) if "--" in sys.argv \
        else (sys.argv[1:], [])
    args = parser.parse_args(own)  # after --: frameworks.py's own arguments
    work = Path(tempfile.mkdtemp(prefix="kdistill-versus-"))
    earlier = work / "earlier"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(earlier), args.commit], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        trees = {"this": ROOT, "earlier": earlier}
        seconds: dict[str, list[dict]] = {name: [] for name in trees}
        for round_ in range(args.rounds):
            for name in (trees if round_ % 2 == 0 else reversed(list(trees))):
                seconds[name].append(run_frameworks(trees[name], arguments, work / f"{name}-{round_}.json"))
                print(f"round {round_ + 1}/{args.rounds}: {name} {seconds[name][-1]}", file=sys.stderr, flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(earlier)], check=False)
    frameworks = list(seconds["this"][0])
    print(f"\n`python benchmarks/versus_commit.py {' '.join(sys.argv[1:])}`: this tree ÷ {args.commit}, "
          f"median epoch per round, median (range) over {args.rounds} rounds\n")
    print("| framework | " + " | ".join(f"{variant} epoch" for variant in VARIANTS) + " |")
    print("|---|" + "---:|" * len(VARIANTS))
    for framework in frameworks:
        cells = []
        for variant in VARIANTS:
            ratios = [now[framework][variant] / then[framework][variant]
                      for now, then in zip(seconds["this"], seconds["earlier"])]
            cells.append(f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})")
        print(f"| {framework} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
