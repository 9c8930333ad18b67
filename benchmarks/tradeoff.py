"""Bytes against accuracy: every row of the given `compaction.json` results (level-0 memories
of several adapter shapes, compacted memories of several group sizes) as one table and one
plot of adapter MB per document against contains-gold accuracy.

    python benchmarks/tradeoff.py benchmarks/results/adapter_size/h200-n100 \\
        benchmarks/results/compaction/h100-n100 --out benchmarks/results/adapter_size
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def collect(folders: list[Path]) -> list[dict]:
    """One point per row of every compaction.json under the folders, named by its folder
    and row."""
    points = []
    for folder in folders:
        for result in sorted(folder.rglob("compaction.json")):
            rows = json.loads(result.read_text())["rows"]
            for row_name, row in rows.items():
                if "adapter_bytes_per_document" not in row:
                    continue  # a prompt baseline: no adapter
                points.append(_point(result.parent, folder, row_name, row))
    return sorted(points, key=lambda p: p["mb_per_document"])


def _point(where: Path, folder: Path, row_name: str, row: dict) -> dict:
    relative = where.relative_to(folder).as_posix()
    name = row_name if relative == "." else f"{relative} {row_name}"
    return {
        "run": folder.name,
        "name": name,
        "mb_per_document": row["adapter_bytes_per_document"] / 1e6,
        "contains": row["contains"]["mean"],
        "ci95": row["contains"]["ci95"],
        "questions": row["questions"],
    }


def render_markdown(points: list[dict]) -> str:
    lines = [
        "| run | memory | adapter MB/doc | contains gold [95% CI] | questions |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        low, high = p["ci95"]
        lines.append(
            f"| {p['run']} | {p['name']} | {p['mb_per_document']:.2f} "
            f"| {100 * p['contains']:.1f}% [{100 * low:.1f}-{100 * high:.1f}] "
            f"| {p['questions']} |"
        )
    return "\n".join(lines) + "\n"


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for run in sorted({p["run"] for p in points}):
        mine = [p for p in points if p["run"] == run]
        x = [p["mb_per_document"] for p in mine]
        y = [100 * p["contains"] for p in mine]
        errors = [
            [100 * (p["contains"] - p["ci95"][0]) for p in mine],
            [100 * (p["ci95"][1] - p["contains"]) for p in mine],
        ]
        axis.errorbar(x, y, yerr=errors, fmt="o", capsize=3, label=run)
        for p, xi, yi in zip(mine, x, y, strict=True):
            axis.annotate(
                p["name"], (xi, yi), fontsize=7, xytext=(4, 3), textcoords="offset points"
            )
    axis.set_xscale("log")
    axis.set_xlabel("adapter MB per document (log)")
    axis.set_ylabel("contains gold (%)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    points = collect(args.folders)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tradeoff.json").write_text(json.dumps(points, indent=1))
    (args.out / "tradeoff.md").write_text(render_markdown(points))
    plot(points, args.out / "tradeoff.png")
    print(render_markdown(points))


if __name__ == "__main__":
    main()
