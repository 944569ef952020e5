"""Publish a benchmark run into the repository: bench/results/latest/ gets the
run's JSON (as results.json), its results.md and its charts, rendered again
from that JSON so that all three come from the same run; bench/results/history/
keeps a copy of every published JSON.

    python bench/run.py --publish                     # run the full suite, then publish it
    python bench/publish.py [--dest DIR] [--allow-partial] [RESULTS_JSON]

Without RESULTS_JSON, the newest bench/out/results-*.json is published.  Only
full runs (not --quick, no --only, all three loops) are published unless
--allow-partial is given.  See bench/results/README.md.
"""
import argparse
import datetime
import json
import shutil
import sys
from pathlib import Path

import report

BENCH = Path(__file__).resolve().parent
DEFAULT_DEST = BENCH / "results"
FULL_LOOPS = ["asyncio", "uvloop", "zcloop"]


def partial_reasons(results):
    """Why this run is not a full one (empty when it is)."""
    settings = results.get("settings", {})
    reasons = []
    if settings.get("quick"):
        reasons.append("a --quick run")
    if settings.get("only"):
        reasons.append(f"filtered with --only {settings['only']!r}")
    if sorted(results.get("loops", [])) != sorted(FULL_LOOPS):
        reasons.append(f"loops {','.join(results.get('loops', []))}")
    return reasons


def publish(json_path, dest=DEFAULT_DEST, allow_partial=False):
    """Write dest/latest/{results.json,results.md,<group>.png} and
    dest/history/<json name>; return the latest/ directory."""
    json_path, dest = Path(json_path), Path(dest)
    results = json.loads(json_path.read_text())
    reasons = partial_reasons(results)
    if reasons and not allow_partial:
        raise SystemExit(f"not publishing {json_path}: {'; '.join(reasons)} "
                         "(--allow-partial to publish it anyway)")
    git = results.get("versions", {}).get("zcloop_git") or ""
    if git.endswith("-dirty"):
        print(f"warning: {json_path.name} was measured on a modified work tree ({git})",
              file=sys.stderr)

    latest = dest / "latest"
    latest.mkdir(parents=True, exist_ok=True)
    for old in latest.iterdir():
        if old.suffix in (".json", ".md", ".png"):
            old.unlink()
    shutil.copyfile(json_path, latest / "results.json")
    charts = report.charts(results, latest)
    markdown = report.markdown(results, charts)
    published = datetime.datetime.now().isoformat(timespec="seconds")
    (latest / "results.md").write_text(
        markdown + f"\n_Published {published} from `{json_path.name}` "
        f"(raw samples in [results.json](results.json))._\n")

    history = dest / "history"
    history.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(json_path, history / json_path.name)
    return latest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="?", help="a results-*.json (default: newest in bench/out)")
    parser.add_argument("--dest", default=str(DEFAULT_DEST),
                        help="published results directory (default: %(default)s)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="publish a --quick, --only or --loops run too")
    args = parser.parse_args()
    if args.json:
        json_path = Path(args.json)
    else:
        runs = sorted((BENCH / "out").glob("results-*.json"))
        if not runs:
            parser.error("no bench/out/results-*.json: run bench/run.py first")
        json_path = runs[-1]
    latest = publish(json_path, args.dest, args.allow_partial)
    print(f"published {json_path} to {latest}")


if __name__ == "__main__":
    main()
