"""``netinvert draw`` (a picture of the network) and ``netinvert warp`` (how each layer bends the input plane)."""

from __future__ import annotations

import sys

from netinvert.cli.common import OutOpt, SeedOpt, cli_errors, console
from netinvert.cli.options import ModelOptions, model_command


@cli_errors
@model_command()
def draw(model: ModelOptions, out: OutOpt) -> None:
    """Draw the network: nodes and weighted edges for a small fully connected net, else its layers as boxes."""
    from netinvert.ground.output import check_writable
    from netinvert.report.draw import NETWORK_PNG, draw_result
    from netinvert.report.finish import finish

    check_writable(out)
    net = model.load()
    result = draw_result(net)
    finish(result, out, net, command=sys.argv)
    console.print(f"wrote {out}: {NETWORK_PNG} ({result.info['diagram']} diagram of {net.name}), result.json, "
                  "report.html", highlight=False, soft_wrap=True)


@cli_errors
@model_command()
def warp(model: ModelOptions, out: OutOpt, seed: SeedOpt = 0) -> None:
    """Show how each layer of a 2-input classifier bends the input plane, decision regions included (PNG strip)."""
    from netinvert.ground.output import check_writable
    from netinvert.report.finish import finish
    from netinvert.report.warp import WARP_PNG, warp_result

    check_writable(out)
    net = model.load()
    result = warp_result(net, seed=seed)
    finish(result, out, net, command=sys.argv)
    console.print(f"wrote {out}: {WARP_PNG} ({len(result.info['layers'])} panels of {net.name}), result.json, "
                  "report.html", highlight=False, soft_wrap=True)
