"""``netinvert preimage``: the certified preimage of each target (``method="bounds"``) for low-dimensional inputs."""

from __future__ import annotations

import sys

from netinvert.cli.common import OutOpt, TargetOpt, cli_errors, console, parse_targets, print_written
from netinvert.cli.options import MethodFlags, ModelOptions, method_command, model_command


@cli_errors
@model_command()
@method_command("bounds")
def preimage(model: ModelOptions, out: OutOpt, target: TargetOpt, options: MethodFlags) -> None:
    """Certified inside / uncertain input boxes for each target (models with up to 8 inputs), with a 2-D picture."""
    from rich.table import Table

    from netinvert.ground.output import check_writable
    from netinvert.methods import invert
    from netinvert.report.finish import finish

    check_writable(out)
    net = model.load()
    targets = parse_targets(target, net)
    result = invert(net, targets, None, method="bounds", **options.for_method("bounds"))
    finish(result, out, net, command=sys.argv)
    table = Table(title=f"certified preimage on {net.name}")
    for col in ("target", "status", "inside (fraction)", "over-approximation", "boxes"):
        table.add_column(col)
    for item in result.items:
        m = item.metrics
        table.add_row(item.target, item.status, f"{m['fraction_under']:.3f}", f"{m['fraction_over']:.3f}",
                      str(m["boxes_examined"]))
    console.print(table)
    print_written(out, result.inputs)
