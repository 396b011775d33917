"""The ``exact`` method and ``netinvert solve`` on VNN-COMP instances: the ``test`` category and a subset of
2022 ``mnist_fc``, against the five-verifier consensus of ``known_results.csv``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from known_instances import check_found, check_solve_command, ort_outputs

from netinvert.targets.vnnlib import read_vnnlib
from netinvert.tasks.solve import solve_instance

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ known answers
def test_test_family_statuses(vnncomp: Path) -> None:
    fam = vnncomp / "test"
    expected = {"test_sat.onnx": "found", "test_unsat.onnx": "none-exists"}
    for onnx_name, spec_name, _ in csv.reader((fam / "instances.csv").open()):
        onnx_path, spec_path = fam / onnx_name, fam / spec_name.strip()
        res = solve_instance(onnx_path, spec_path, timeout=30)
        status = res.items[0].status
        assert status != "unknown", (onnx_name, res.items[0].reason)
        if onnx_name in expected:
            assert status == expected[onnx_name], onnx_name
        if status == "found":
            check_found(onnx_path, spec_path, res.inputs[0].numpy().astype(np.float64))
        else:  # one-input networks: a dense scan must agree that no input qualifies
            spec = read_vnnlib(spec_path)
            if spec.num_inputs == 1:
                c = spec.cases[0]
                xs = np.linspace(c.lo[0], c.hi[0], 4001)
                ys = ort_outputs(onnx_path, xs[:, None])
                assert not c.output.contains(ys).any(), onnx_name


MNIST_FAST = [
    ("mnist-net_256x2.onnx", "prop_0_0.03.vnnlib"),
    ("mnist-net_256x2.onnx", "prop_1_0.03.vnnlib"),
    ("mnist-net_256x4.onnx", "prop_0_0.03.vnnlib"),
    ("mnist-net_256x4.onnx", "prop_1_0.03.vnnlib"),
    ("mnist-net_256x6.onnx", "prop_0_0.03.vnnlib"),
]


@pytest.mark.parametrize(("onnx_name", "spec_name"), MNIST_FAST)
def test_mnist_fc_fast_subset_matches_consensus(vnncomp: Path, onnx_name: str, spec_name: str) -> None:
    fam = vnncomp / "mnist_fc"
    known = {(r["onnx"], r["vnnlib"]): r["consensus"] for r in csv.DictReader((fam / "known_results.csv").open())}
    onnx_path, spec_path = fam / "onnx" / onnx_name, fam / "vnnlib" / spec_name
    res = solve_instance(onnx_path, spec_path, timeout=60)
    want = {"sat": "found", "unsat": "none-exists"}[known[(onnx_name, spec_name)]]
    assert res.items[0].status == want, res.items[0].reason
    if want == "found":
        check_found(onnx_path, spec_path, res.inputs[0].numpy().astype(np.float64))
    else:
        assert sum(res.info["certificates"][0]["unstable_crown"]) > 0  # a real proof over unstable neurons


@pytest.mark.slow
def test_mnist_fc_milp_instances_match_consensus(vnncomp: Path) -> None:
    fam = vnncomp / "mnist_fc"
    for spec_name, want in (("prop_2_0.03.vnnlib", "found"), ("prop_6_0.03.vnnlib", "none-exists")):
        res = solve_instance(fam / "onnx" / "mnist-net_256x2.onnx", fam / "vnnlib" / spec_name, timeout=120)
        assert res.items[0].status == want
        assert res.items[0].metrics["stage"] == "milp"


@pytest.mark.slow
def test_mnist_fc_deep_instance_needs_and_gets_refined_bounds(vnncomp: Path) -> None:
    """256x4 prop_14_0.05 (unsat): alpha-CROWN leaves every disjunct open; the sign-refined
    intermediate bounds refute disjuncts, and the verdict matches the consensus."""
    fam = vnncomp / "mnist_fc"
    res = solve_instance(fam / "onnx" / "mnist-net_256x4.onnx", fam / "vnnlib" / "prop_14_0.05.vnnlib", timeout=120)
    cert = res.info["certificates"][0]
    assert res.items[0].status == "none-exists", res.items[0].reason
    assert cert["refuted_by_crown"] + cert["refuted_by_alpha"] < cert["disjuncts"]
    assert sum(cert["refine"]["proved"]) > 0 and cert["refuted_by_refined"] > 0
    assert sum(cert["unstable_refined"]) < sum(cert["unstable_alpha"])


# ------------------------------------------------------------------------------------------ CLI
def test_cli_solve_writes_result_and_counterexample(vnncomp: Path, tmp_path: Path) -> None:
    check_solve_command(vnncomp / "test", tmp_path,
                        {"sat": "test_sat.onnx", "prop": "test_prop.vnnlib", "nano": "test_nano.onnx"},
                        ["none-exists", "none-exists", "none-exists", "found", "none-exists"])
