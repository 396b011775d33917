"""Devices, dtypes, precisions and out-of-memory splitting; everything here runs on the CPU."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from netinvert import Class, Model, NetinvertError, invert, load
from netinvert.cli.main import app
from netinvert.ground.device import resolve_device, split_on_oom

runner = CliRunner()
HAS_CUDA = torch.cuda.is_available()


def test_explicit_cpu_and_auto_give_the_same_result_as_no_device(zoo):
    model = zoo("digits-mlp")
    targets = [Class(k) for k in (1, 4, 7)]
    plain = invert(model, targets, steps=30, early_stop=False)
    cpu = invert(model, targets, steps=30, early_stop=False, device="cpu")
    assert torch.equal(plain.inputs, cpu.inputs)
    assert plain.info["device"] == cpu.info["device"] == "cpu"
    auto = invert(model, targets, steps=30, early_stop=False, device="auto")
    if HAS_CUDA:  # auto picks the GPU: same answer up to float rounding, back on the CPU
        assert auto.info["device"].startswith("cuda") and auto.inputs.device.type == "cpu"
        assert torch.allclose(plain.inputs, auto.inputs, atol=1e-3)
        model.to("cpu")
    else:
        assert torch.equal(plain.inputs, auto.inputs)
    assert resolve_device("auto") == torch.device("cuda" if HAS_CUDA else "cpu")
    assert load("digits-mlp", device="cpu").device == torch.device("cpu")


def test_a_float64_model_gets_float64_inputs_and_matches_float32(zoo):
    base = zoo("digits-cnn")  # 28 x 28: random transforms, BN-free, data prior on
    wide = load("digits-cnn").double()
    assert wide.dtype == torch.float64 and wide.example_input(2).dtype == torch.float64
    targets = [Class(3), Class(8)]
    r32 = invert(base, targets, steps=25, early_stop=False)
    r64 = invert(wide, targets, steps=25, early_stop=False)
    assert r64.inputs.dtype == torch.float64 and r64.outputs.dtype == torch.float64
    assert r32.inputs.dtype == torch.float32
    assert (r64.inputs.float() - r32.inputs).abs().max() < 1e-3
    sampled = invert(wide, Class(5), method="langevin", samples=2, steps=10)
    assert sampled.inputs.dtype == torch.float64
    # a float32 input given to a float64 model follows the model's dtype
    assert wide(torch.rand(2, 1, 28, 28)).dtype == torch.float64


def test_cuda_without_a_gpu_is_one_clear_error(zoo, tmp_path):
    if HAS_CUDA:
        assert load("digits-mlp", device="cuda").device.type == "cuda"
        return
    with pytest.raises(NetinvertError, match="no CUDA GPU.*--device cpu"):
        load("digits-mlp", device="cuda")
    with pytest.raises(NetinvertError, match="no CUDA GPU"):
        invert(zoo("digits-mlp"), Class(0), steps=5, device="cuda:0")
    with pytest.raises(NetinvertError, match="unknown: use one of auto, cpu"):
        resolve_device("gpu")
    bad = runner.invoke(app, ["imagine", "-m", "digits-mlp", "-t", "3", "--device", "cuda", "-o",
                              str(tmp_path / "x")])
    assert bad.exit_code == 2, bad.output
    assert "no CUDA GPU" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x").exists()


class _OutOfMemoryAbove(nn.Module):
    """Runs ``inner`` but fails like a full GPU when a batch larger than ``limit`` needs gradients."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.calls = inner, limit, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.shape[0] > self.limit:
            self.calls += 1
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated for a batch of {x.shape[0]})")
        return self.inner(x)


def test_out_of_memory_splits_the_batch_and_gives_the_same_items(zoo):
    base = zoo("digits-mlp")
    targets = [Class(k) for k in range(6)]
    whole = invert(base, targets, steps=40, early_stop=False)
    fake = _OutOfMemoryAbove(base.module, limit=2)
    small = Model(fake, base.input_spec, name="tight", data=base.data_split())
    split = invert(small, targets, steps=40, early_stop=False)
    assert fake.calls == 2  # 6 failed, 3 failed, then batches of 2
    assert [n.split(":")[0] for n in split.info["notes"]] == ["out of memory on a batch of 6",
                                                            "out of memory on a batch of 3"]
    assert split.statuses == whole.statuses
    assert split.metric("class_index") == whole.metric("class_index")
    assert torch.allclose(split.inputs, whole.inputs, atol=1e-5)
    assert "notes" not in whole.info


def test_split_keeps_the_copies_of_a_target_together_and_gives_up_at_one_group():
    sizes: list[int] = []

    def run_part(i: int, j: int) -> list[int]:
        if j - i > 4:
            raise torch.OutOfMemoryError("out of memory")
        sizes.append(j - i)
        return list(range(i, j))

    notes: list[str] = []
    parts = split_on_oom(run_part, 12, 12, group=2, notes=notes)
    assert sum(parts, []) == list(range(12)) and sizes == [4, 4, 4] and len(notes) == 2
    with pytest.raises(NetinvertError, match="out of memory even for a batch of 2"):
        split_on_oom(lambda i, j: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")), 4, 4, group=2)
    with pytest.raises(ValueError, match="not memory"):  # other errors pass through untouched
        split_on_oom(lambda i, j: (_ for _ in ()).throw(ValueError("not memory")), 4, 4)


def test_precision_float16_on_the_cpu_is_refused_and_bfloat16_runs(zoo, tmp_path):
    model = zoo("digits-mlp")
    if not HAS_CUDA:
        with pytest.raises(NetinvertError, match="float16 needs a GPU"):
            invert(model, Class(0), steps=5, precision="float16")
        bad = runner.invoke(app, ["imagine", "-m", "digits-mlp", "-t", "3", "--device", "cpu", "--precision",
                                  "float16", "-o", str(tmp_path / "x")])
        assert bad.exit_code == 2 and "float16 needs a GPU" in bad.output, bad.output
    with pytest.raises(NetinvertError, match="precision='half' is unknown"):
        invert(model, Class(0), steps=5, precision="half")
    half = invert(model, [Class(2), Class(5)], steps=60, precision="bfloat16", device="cpu")
    assert half.info["options"]["precision"] == "bfloat16"
    assert half.inputs.dtype == torch.float32 and bool(torch.isfinite(half.inputs).all())
    assert half.metric("predicted") == ["2", "5"]


def test_device_flag_on_imagine_and_layers(tmp_path):
    out = tmp_path / "img"
    done = runner.invoke(app, ["imagine", "-m", "digits-mlp", "-t", "3", "--steps", "20", "--device", "cpu",
                               "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads((out / "result.json").read_text())["device"] == "cpu"
    listed = runner.invoke(app, ["layers", "digits-mlp", "--device", "cpu"])
    assert listed.exit_code == 0 and "fc" in listed.output, listed.output
    bad = runner.invoke(app, ["layers", "digits-mlp", "--device", "tpu"])
    assert bad.exit_code == 2 and "device 'tpu' is unknown" in bad.output, bad.output


@pytest.mark.slow
def test_cpu_only_methods_record_where_they_ran(zoo):
    result = invert(zoo("digits-mlp"), Class(4), method="analytic", samples=1)
    assert result.info["device"] == "cpu"


@pytest.mark.slow
def test_gpu_benchmark_runs_small_on_the_cpu(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "gpu.json"
    script = Path(__file__).parents[1] / "benchmarks" / "gpu.py"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--size", "32", "--batch", "2",
                           "--steps", "2", "--repeats", "1", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    row = json.loads(out.read_text())
    assert (row["device"], row["arch"], row["size"], row["batch"]) == ("cpu", "resnet18", 32, 2)
    assert row["bare_ms_per_step"] > 0 and row["ours_ms_per_step"] > 0 and "ratio" in done.stdout
