"""Closed-form simulators for inverse design (the benchmark tasks of Ren, Padilla & Malof, NeurIPS 2020).

A simulator maps a batch of inputs ``x`` (n, d) to outputs (n, m) in float64; rows it cannot
simulate are NaN. Each ``Simulator`` also samples its input prior, which is where the zoo
surrogates get their training data and where the inverse-design benchmark draws its targets.

- ``sine``: y = sin(3 pi x1) + cos(3 pi x2), x ~ U[-1, 1]^2.
- ``arm``: a planar arm on a vertical rail: rail height x1, joint angles x2..x4, links 0.5 / 0.5 / 1.0,
  standard cumulative angles (link k points at x2 + ... + x(k+1)); output the end point. The paper's
  code combines the angles differently; this is the textbook kinematics. Prior N(0, diag(1/16, 1/4, 1/4, 1/4)).
  Horizontal reach: |y1| <= 2.0.
- ``ballistics``: a ball thrown from (x0, y0) at angle ``a`` (radians) with speed ``v`` under gravity and
  linear drag (g = 9.81, k = 0.25, m = 0.2); output the x where it hits the ground y = 0, the impact time
  found with ``scipy.optimize.brentq`` on the closed-form height. A ball that starts below the ground
  never lands: NaN, flagged by ``ballistics_impact``. Prior (Kruse et al. 2019): x0 ~ N(0, 1/4),
  y0 ~ N(3/2, 1/4), a ~ U(9, 72 degrees), v ~ Poisson(15).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from netinvert.ground.errors import NetinvertError, choices

SimulatorFn = Callable[[np.ndarray], np.ndarray]
ARM_LINKS = (0.5, 0.5, 1.0)
ARM_REACH = sum(ARM_LINKS)
GRAVITY, DRAG, MASS = 9.81, 0.25, 0.2


def sine(x: np.ndarray) -> np.ndarray:
    """(n, 2) -> (n, 1): sin(3 pi x1) + cos(3 pi x2)."""
    x = _rows(x, 2, "sine")
    return (np.sin(3 * np.pi * x[:, 0]) + np.cos(3 * np.pi * x[:, 1]))[:, None]


def arm_joints(x: np.ndarray) -> np.ndarray:
    """(n, 4) -> (n, 4, 2): the rail point and the three joint/end points of each pose."""
    x = _rows(x, 4, "arm")
    angles = np.cumsum(x[:, 1:], axis=1)
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=2) * np.asarray(ARM_LINKS)[None, :, None]
    base = np.stack([np.zeros(len(x)), x[:, 0]], axis=1)[:, None, :]
    return np.concatenate([base, base + np.cumsum(steps, axis=1)], axis=1)


def arm(x: np.ndarray) -> np.ndarray:
    """(n, 4) -> (n, 2): the end point (horizontal, vertical) of the arm."""
    return arm_joints(x)[:, -1, :]


def _height(t: float, y0: float, vy: float) -> float:
    tau = MASS / DRAG
    return y0 + tau * (vy + GRAVITY * tau) * (1.0 - math.exp(-t / tau)) - GRAVITY * tau * t


def ballistics_impact(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) -> (impact x (n,), landed (n,) bool); rows that never land (start below ground) are NaN."""
    x = _rows(x, 4, "ballistics")
    tau = MASS / DRAG
    out = np.full(len(x), np.nan)
    landed = np.zeros(len(x), dtype=bool)
    for i, (x0, y0, angle, speed) in enumerate(x):
        if not np.all(np.isfinite((x0, y0, angle, speed))) or y0 < 0:
            continue
        vx, vy = speed * math.cos(angle), speed * math.sin(angle)
        if y0 == 0 and vy <= 0:
            t = 0.0
        else:
            hi = 1.0
            while _height(hi, y0, vy) > 0:  # the height falls without bound (terminal speed g * tau)
                hi *= 2.0
            lo = 1e-12 if y0 == 0 else 0.0
            t = brentq(_height, lo, hi, args=(y0, vy), xtol=1e-14, rtol=1e-14)
        out[i] = x0 + tau * vx * (1.0 - math.exp(-t / tau))
        landed[i] = True
    return out, landed


def ballistics(x: np.ndarray) -> np.ndarray:
    """(n, 4) -> (n, 1): where the ball hits the ground (NaN when it never lands)."""
    return ballistics_impact(x)[0][:, None]


def _sine_prior(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=(n, 2))


def _arm_prior(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, 1.0, size=(n, 4)) * np.array([0.25, 0.5, 0.5, 0.5])


def _ballistics_prior(n: int, rng: np.random.Generator) -> np.ndarray:
    x0 = rng.normal(0.0, 0.5, n)
    y0 = rng.normal(1.5, 0.5, n)
    angle = rng.uniform(math.radians(9), math.radians(72), n)
    speed = rng.poisson(15, n).astype(np.float64)
    return np.stack([x0, y0, angle, speed], axis=1)


@dataclass(frozen=True)
class Simulator:
    """A simulator with its input prior: ``simulate(x)`` and ``sample(n, seed)``."""

    name: str
    simulate: SimulatorFn
    prior: Callable[[int, np.random.Generator], np.ndarray]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` prior draws and their outputs (rows the simulator cannot simulate are redrawn)."""
        rng = np.random.default_rng(seed)
        xs, ys, have = [], [], 0
        while have < n:
            x = self.prior(n - have, rng)
            y = self.simulate(x)
            ok = np.all(np.isfinite(y), axis=1)
            xs.append(x[ok])
            ys.append(y[ok])
            have += int(ok.sum())
        return np.concatenate(xs), np.concatenate(ys)


SIMULATORS: dict[str, Simulator] = {s.name: s for s in (
    Simulator("sine", sine, _sine_prior, ("x1", "x2"), ("y",)),
    Simulator("arm", arm, _arm_prior, ("rail height", "angle 1", "angle 2", "angle 3"), ("end x", "end y")),
    Simulator("ballistics", ballistics, _ballistics_prior, ("x0", "y0", "angle", "speed"), ("impact x",)),
)}


def get_simulator(spec: str) -> SimulatorFn:
    """A built-in simulator by name, or ``module:function`` (a callable from (n, d) arrays to (n, m))."""
    if spec in SIMULATORS:
        return SIMULATORS[spec].simulate
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise NetinvertError(f"simulator {spec!r} is not understood: give module:function or one of "
                             f"{choices(SIMULATORS)}")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise NetinvertError(f"cannot load simulator {spec!r}: {exc}") from None
    if not callable(fn):
        raise NetinvertError(f"simulator {spec!r} is not a function")
    return fn


def simulate(fn: SimulatorFn, x: np.ndarray, num_outputs: int) -> np.ndarray:
    """Run a user's simulator on ``x`` and check what it returns: (n, num_outputs) float64, NaN allowed."""
    try:
        y = np.asarray(fn(np.asarray(x, dtype=np.float64)), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 (a user's simulator may raise anything; report it as one line)
        raise NetinvertError(f"the simulator failed: {type(exc).__name__}: {exc}") from None
    if y.ndim == 1 and num_outputs == 1:
        y = y[:, None]
    if y.shape != (len(x), num_outputs):
        raise NetinvertError(f"the simulator returned shape {y.shape} for {len(x)} inputs; expected "
                             f"({len(x)}, {num_outputs}): one row of {num_outputs} outputs per input")
    return y


def _rows(x: np.ndarray, d: int, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != d:
        raise NetinvertError(f"the {name} simulator takes rows of {d} inputs, got shape {x.shape}")
    return x
