"""``netinvert draw`` (a picture of the network) and ``netinvert warp`` (how each layer bends the input plane)."""

from __future__ import annotations

from netinvert.cli.common import OutOpt, SeedOpt, cli_errors, console
from netinvert.cli.options import ModelOptions, model_command
from netinvert.cli.report import save_report

NETWORK_PNG = "network.png"
WARP_PNG = "warp.png"


@cli_errors
@model_command()
def draw(model: ModelOptions, out: OutOpt) -> None:
    """Draw the network: nodes and weighted edges for a small fully connected net, else its layers as boxes."""
    from netinvert.ground.output import atomic_folder, check_writable, write_json
    from netinvert.report.draw import draw as draw_network

    check_writable(out)
    net = model.load()
    with atomic_folder(out) as tmp:
        drawn = draw_network(net, tmp / NETWORK_PNG)
        write_json(tmp / "result.json", {"method": "draw", "model": net.name, "diagram": drawn["kind"],
                                         "input_shape": list(net.input_spec.shape), "layers": drawn["layers"]})
    save_report(out)
    console.print(f"wrote {out}: {NETWORK_PNG} ({drawn['kind']} diagram of {net.name}), result.json, report.html",
                  highlight=False, soft_wrap=True)


@cli_errors
@model_command()
def warp(model: ModelOptions, out: OutOpt, seed: SeedOpt = 0) -> None:
    """Show how each layer of a 2-input classifier bends the input plane, decision regions included (PNG strip)."""
    from netinvert.ground.output import atomic_folder, check_writable, write_json
    from netinvert.report.warp import warp as warp_plane

    check_writable(out)
    net = model.load()
    with atomic_folder(out) as tmp:
        shown = warp_plane(net, tmp / WARP_PNG, seed=seed)
        write_json(tmp / "result.json", {"method": "warp", "seed": seed, **shown})
    save_report(out)
    console.print(f"wrote {out}: {WARP_PNG} ({len(shown['layers'])} panels of {net.name}), result.json, report.html",
                  highlight=False, soft_wrap=True)
