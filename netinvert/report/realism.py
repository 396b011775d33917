"""Realism: do imagined inputs look like the data? Measured by an independent verifier, not by eye.

The verifier is the model's own: a second network trained separately. For the class
items of a result this module reports

- ``verifier_agreement`` (the fraction the verifier puts in the intended class) and ``verifier_prob`` (its mean
  probability for that class);
- ``frechet``: the Frechet distance between the items and real data of the same classes in the verifier's
  penultimate feature space (the input of its last weighted layer), as FID does with Inception features.
  It is shown beside two reference points computed the same way with the same number of items and the
  same classes: ``frechet_floor`` (real items from one half of the data against the other half) and
  ``frechet_ceiling`` (uniform noise), and as ``gap_closed = (ceiling - frechet) / (ceiling - floor)``
  (1: as real as real data, 0: no better than noise) and ``frechet_ratio = frechet / floor``;
- ``diversity``: the mean pairwise verifier-feature distance between items of the same target (multi-sample
  runs), beside ``diversity_real``, the same for real items of those classes.

A handful of items cannot support a full covariance in a 64-d feature space, so every covariance is the
Ledoit-Wolf shrinkage estimate (towards a scaled identity, weight chosen from the data); the floor and the
ceiling use the same estimator and the same item count, so the three numbers are comparable. Floor and
ceiling are averaged over ``DRAWS`` random draws. The verifier reads every input in its own input description
(``Model.outputs_for``), which may differ from the model's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.covariance import ledoit_wolf

from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.ground.spec import InputSpec
from netinvert.models.wrapper import Model

DRAWS = 8
MAX_REFERENCE = 4000


def feature_layer(verifier: Model) -> str | None:
    """The verifier's last weighted leaf layer (its input is the penultimate feature vector); ``None`` when forward
    hooks see none (a TorchScript verifier hides its layers)."""
    table = verifier.layer_table()
    weighted = [info for info in table.values() if info.weighted and info.leaf and info.order is not None]
    return max(weighted, key=lambda info: info.order or 0).name if weighted else None


@torch.no_grad()
def verifier_features(verifier: Model, x: torch.Tensor | np.ndarray, spec: InputSpec | None = None,
                   batch: int = 512) -> np.ndarray:
    """Penultimate features (n, d) in the verifier (float64) of inputs ``x`` described by ``spec`` (default: the
    verifier's own description; a verified model's inputs are mapped into it, ``Model.outputs_for``)."""
    name = feature_layer(verifier)
    if name is None:
        raise NetinvertError(f"the verifier {verifier.name} shows no weighted layer to read features from: give an "
                             "ONNX or state-dict verifier")
    x = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x, dtype=torch.float32)
    store: list[torch.Tensor] = []
    handle = verifier.get_layer(name).register_forward_pre_hook(lambda _m, args: store.append(args[0].flatten(1)))
    try:
        for i in range(0, len(x), batch):
            verifier.outputs_for(x[i : i + batch], spec or verifier.input_spec)
    finally:
        handle.remove()
    return torch.cat(store).double().cpu().numpy() if store else np.zeros((0, 0))


def _moments(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(f) < 2:
        return f.mean(0), np.zeros((f.shape[1], f.shape[1]))
    cov, _ = ledoit_wolf(f)
    return f.mean(0), cov


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` (n, d) and ``b`` (m, d).

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)`` with Ledoit-Wolf covariances,
    computed from symmetric eigendecompositions (no complex square roots).
    """
    mu_a, s_a = _moments(a)
    mu_b, s_b = _moments(b)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())
    return max(value, 0.0)


def mean_pairwise(f: np.ndarray) -> float | None:
    """Mean Euclidean distance between distinct rows (``None`` for fewer than two)."""
    if len(f) < 2:
        return None
    d = np.sqrt(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))
    return float(d.sum() / (len(f) * (len(f) - 1)))


def _labelled_data(model: Model) -> tuple[np.ndarray, np.ndarray] | None:
    if not model.has_data:
        return None
    split = model.data_split()
    if split.y_train is None and split.y_held is None:
        return None
    xs = [x for x, y in ((split.x_train, split.y_train), (split.x_held, split.y_held)) if y is not None]
    ys = [y for y in (split.y_train, split.y_held) if y is not None]
    return np.concatenate(xs), np.concatenate(ys).astype(int)


def realism(model: Model, result: Result, seed: int = 0) -> dict[str, Any] | None:
    """The realism of ``result``'s class items, or ``None`` without a verifier, labelled data or class items.

    A verifier whose features cannot be read (``feature_layer`` is ``None``) still gives its agreement; the
    Frechet distances and diversity are then ``None``, and ``not_measured`` says why.
    """
    verifier = model.verifier
    data = _labelled_data(model)
    rows = [i for i, item in enumerate(result.items) if item.metrics.get("class_index") is not None]
    if verifier is None or data is None or not rows:
        return None
    x_all, y_all = data
    classes = np.array([int(result.items[i].metrics["class_index"]) for i in rows])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_all))
    half_a, half_b = order[: len(order) // 2], order[len(order) // 2 :]
    half_b = half_b[np.isin(y_all[half_b], classes)][:MAX_REFERENCE]
    pools = {k: half_a[y_all[half_a] == k] for k in set(classes.tolist())}
    if len(half_b) < 2 or any(len(p) == 0 for p in pools.values()):
        return None
    agrees = [result.items[i].metrics.get("verifier_agrees") for i in rows]
    probs = [result.items[i].metrics.get("verifier_prob") for i in rows]
    layer = feature_layer(verifier)
    out: dict[str, Any] = {
        "verifier": verifier.name, "features": f"input of {layer}" if layer else None, "items": len(rows),
        "verifier_agreement": float(np.mean([bool(a) for a in agrees])) if None not in agrees else None,
        "verifier_prob": float(np.mean(probs)) if None not in probs else None,
        "frechet": None, "frechet_floor": None, "frechet_ceiling": None, "gap_closed": None, "frechet_ratio": None,
    }
    if layer is None:
        out["not_measured"] = (f"Frechet distance and diversity: the verifier {verifier.name} shows no weighted layer "
                               "to read features from (TorchScript hides its layers; give an ONNX or state-dict "
                               "verifier)")
        return out
    spec = model.input_spec
    reference = verifier_features(verifier, x_all[half_b], spec)
    images = verifier_features(verifier, result.inputs[rows].detach().cpu(), spec)
    floors, ceilings = [], []
    for _ in range(DRAWS):
        picks = np.array([rng.choice(pools[k]) for k in classes])
        floors.append(frechet_distance(verifier_features(verifier, x_all[picks], spec), reference))
        noise = spec.low + (spec.high - spec.low) * rng.random((len(rows), *spec.shape))
        ceilings.append(frechet_distance(verifier_features(verifier, noise, spec), reference))
    value, floor, ceiling = frechet_distance(images, reference), float(np.mean(floors)), float(np.mean(ceilings))
    out.update({
        "frechet": value, "frechet_floor": floor, "frechet_ceiling": ceiling,
        "gap_closed": (ceiling - value) / (ceiling - floor) if ceiling > floor else None,
        "frechet_ratio": value / floor if floor > 0 else None,
        "covariance": "Ledoit-Wolf shrinkage", "draws": DRAWS,
    })
    out.update(_diversity(result, rows, images, verifier, spec, x_all, y_all, half_b))
    return out


def _diversity(result: Result, rows: list[int], images: np.ndarray, verifier: Model, spec: InputSpec,
               x_all: np.ndarray, y_all: np.ndarray, half_b: np.ndarray) -> dict[str, Any]:
    """Mean pairwise feature distance within each target's items, beside real items of the same classes."""
    groups: dict[str, list[int]] = {}
    for j, i in enumerate(rows):
        groups.setdefault(result.items[i].target, []).append(j)
    multi = {t: g for t, g in groups.items() if len(g) > 1}
    if not multi:
        return {}
    imagined = [mean_pairwise(images[g]) for g in multi.values()]
    real = []
    for t, g in multi.items():
        k = int(result.items[rows[g[0]]].metrics["class_index"])
        pool = half_b[y_all[half_b] == k][: max(len(g), 2) * 4]
        real.append(mean_pairwise(verifier_features(verifier, x_all[pool], spec)))
    return {"diversity": float(np.mean([v for v in imagined if v is not None])),
            "diversity_real": float(np.mean([v for v in real if v is not None])) if any(v is not None for v in real)
            else None}


def annotate(model: Model, result: Result) -> dict[str, Any] | None:
    """Store ``realism(model, result)`` in ``result.info['realism']`` when it can be measured; return it."""
    value = realism(model, result)
    if value is not None:
        result.info["realism"] = value
    return value
