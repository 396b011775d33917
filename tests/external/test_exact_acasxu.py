"""ACAS Xu (VNN-COMP acasxu_dev): a fast subset of sat and unsat instances must match the consensus of
the six reference tools (the search each case chose is recorded); every found point is
re-checked with onnxruntime. Reads ``$NETINVERT_VNNCOMP/acasxu_dev`` (see conftest.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from netinvert.targets.vnnlib import read_vnnlib
from netinvert.tasks.solve import solve_instance

torch.set_num_threads(1)

FAST = [  # (network, property): a few seconds each on a loaded 2-core machine
    ("ACASXU_run2a_1_1_batch_2000.onnx", "prop_1.vnnlib"),  # unsat, 77 boxes
    ("ACASXU_run2a_1_4_batch_2000.onnx", "prop_3.vnnlib"),  # unsat
    ("ACASXU_run2a_1_6_batch_2000.onnx", "prop_4.vnnlib"),  # unsat
    ("ACASXU_run2a_1_3_batch_2000.onnx", "prop_2.vnnlib"),  # sat, found inside the split search
    ("ACASXU_run2a_1_7_batch_2000.onnx", "prop_3.vnnlib"),  # sat, found by the attack
]


@pytest.mark.parametrize(("onnx_name", "spec_name"), FAST)
def test_acasxu_fast_subset_matches_consensus(vnncomp: Path, onnx_name: str, spec_name: str) -> None:
    fam = vnncomp / "acasxu_dev"
    known = {(r["onnx"], r["vnnlib"]): r["consensus"] for r in csv.DictReader((fam / "known_results.csv").open())}
    onnx_path, spec_path = fam / "onnx" / onnx_name, fam / "vnnlib" / spec_name
    res = solve_instance(onnx_path, spec_path, timeout=100)
    status = res.items[0].status
    assert {"found": "sat", "none-exists": "unsat"}.get(status) == known[(onnx_name, spec_name)], res.items[0]
    certs = res.info["certificates"]
    assert all(c["search"] in ("input-split", "relu-split") for c in certs), certs
    if status == "found":
        x = res.inputs[0].double().numpy()
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        y = sess.run(None, {inp.name: x.astype(np.float32).reshape(1, 1, 1, 5)})[0].reshape(1, -1).astype(np.float64)
        spec = read_vnnlib(spec_path)
        assert any(np.all(x >= c.lo) and np.all(x <= c.hi) and c.output.contains(y)[0] for c in spec.cases)
    else:
        boxes = [d for c in certs for d in c.get("input_split", [])]
        assert all(d["status"] == "none" and d["open"] == 0 for d in boxes), boxes
