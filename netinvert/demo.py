"""The demo: train the zoo if needed and imagine every class of every zoo classifier.

Writes one result folder per model (result.json, grid.png, one PNG per class, inputs.npy,
report.html; finished as ``netinvert imagine`` finishes its runs) and a summary table ``summary.md``
under ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from netinvert.domains.domain import Domain
from netinvert.ground.output import write_text
from netinvert.methods import invert
from netinvert.models.zoo import load_zoo
from netinvert.report.finish import finish
from netinvert.targets.units import Class

DEMO_MODELS = ("roman-mlp", "digits-cnn", "digits-mlp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    args = parser.parse_args()
    console = Console()
    table = Table(title="netinvert demo: every class imagined by gradient ascent")
    for col in ("model", "test acc", "classes reached (p >= 0.99)", "verifier agrees", "min model p", "seconds"):
        table.add_column(col)
    rows = []
    for name in DEMO_MODELS:
        model = load_zoo(name, quiet=False)
        start = time.perf_counter()
        result = invert(model, [Class(k) for k in range(model.num_outputs)], Domain(), method="gradient")
        seconds = time.perf_counter() - start
        finish(result, args.out / name, model)
        reached = result.statuses.count("found")
        agrees = sum(bool(a) for a in result.metric("verifier_agrees"))
        n = len(result.items)
        row = (name, f"{model.info['test_accuracy']:.3f}", f"{reached}/{n}", f"{agrees}/{n}",
               f"{min(result.metric('model_prob')):.4f}", f"{seconds:.1f}")
        rows.append(row)
        table.add_row(*row)
        console.print(f"{name}: wrote {args.out / name}/grid.png")
    console.print(table)
    header = "| model | test acc | classes reached (p >= 0.99) | verifier agrees | min model p | seconds |"
    lines = [header, "|---|---|---|---|---|---|"] + ["| " + " | ".join(r) + " |" for r in rows]
    write_text(args.out / "summary.md", "\n".join(lines) + "\n")
    console.print(f"summary: {args.out / 'summary.md'}")


if __name__ == "__main__":
    main()
