"""Simulations of the gradient paradigm's GD, W and R (docs/methods.md §9).

``mmret-gradient-sim gd|w|r --out DIR`` writes CSV files and PNG plots (matplotlib Agg):

- ``gd``: θ⁺ ~ N(μ_pos, 0.05) and ``negatives`` (127) negative angles ~ N(μ_neg, 0.10) per
  batch; μ_pos ∈ [0.05π, 0.5π], μ_neg ∈ [0.05π, π] (``steps`` values each); GD of each
  loss averaged over ``batches`` (1000) batches per grid point. Files ``gd_<loss>.csv``
  (``loss,mu_pos,mu_neg,gd``) and ``gd_<loss>.png`` (heat map), one per loss.
- ``w``: hardest-negative share ``max_j e^{cos θ_j/τ} / Σ_j e^{cos θ_j/τ}``, averaged over the
  batches whose InfoNCE GD ≥ 1e-2 (NaN where none is); θ⁺ ~ N(0.5 rad, 0.05),
  μ_neg ∈ [π/20, π], τ ∈ {0.3, 0.1, 0.05, 0.03, 0.01, 0.005}. Files ``w.csv``
  (``tau,mu_neg,hardest_share,kept_batches``) and ``w.png`` (one curve per τ).
- ``r``: closed-form R over a (θ_ii, θ_ij) grid, θ_ii ∈ [0.05π, 0.5π], θ_ij ∈ [0.05π, π],
  for ArcCon (sin(θ_ii+u)/sin θ_ii), MET (d_ij/d_ii) and MAT (sin θ_ij/sin θ_ii); a point
  is invalid (hatched) where θ_ii > θ_ij or the gradient has dissipated (ArcCon: GD < 0.01
  with ``negatives`` identical negatives at θ_ij; MET: d_ij − d_ii ≥ m; MAT:
  θ_ij − θ_ii ≥ m·π). Files ``r_<loss>.csv`` (``loss,theta_pos,theta_neg,r,valid``) and
  ``r_<loss>.png``.

Angles are drawn with ``numpy.random.default_rng(seed)`` (seed 0), grid point by grid
point in row-major (μ_pos, μ_neg) order, positives before negatives; similarities are
``cos θ``, and MAT uses ``arccos(cos θ)`` (so sampled angles outside [0, π] fold back).
Loss parameters are the simulation defaults: τ = 0.05, u = 10°, MPT m = 0.23,
MET m = 0.45, MAT m = 0.15.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

GD_LOSSES = ("infonce", "arccon", "mpt", "met", "mat")
R_LOSSES = ("arccon", "met", "mat")
W_TAUS = (0.3, 0.1, 0.05, 0.03, 0.01, 0.005)
DEFAULTS = {"temperature": 0.05, "margin_degrees": 10.0, "mpt": 0.23, "met": 0.45, "mat": 0.15}


def _logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


def batch_gd(loss: str, s_pos: np.ndarray, s_neg: np.ndarray, params: dict | None = None) -> np.ndarray:
    """GD per batch for one anchor: ``s_pos`` (B,) and ``s_neg`` (B, K) cosines → (B,)."""
    p = {**DEFAULTS, **(params or {})}
    tau = p["temperature"]
    if loss in ("infonce", "arccon"):
        pos = s_pos
        if loss == "arccon":
            theta = np.arccos(np.clip(s_pos, -1 + 1e-6, 1 - 1e-6))
            pos = np.cos(theta + math.radians(p["margin_degrees"]))
        return _sigmoid(_logsumexp(s_neg / tau) - pos / tau)
    if loss == "mpt":
        return ((s_pos - s_neg.max(axis=1)) < p["mpt"]).astype(float)
    if loss == "met":
        d_pos = np.sqrt(np.maximum(2 - 2 * s_pos, 1e-4))
        d_neg = np.sqrt(np.maximum(2 - 2 * s_neg, 1e-4))
        return ((d_neg.min(axis=1) - d_pos) < p["met"]).astype(float)
    if loss == "mat":
        t_pos = np.arccos(np.clip(s_pos, -1 + 1e-6, 1 - 1e-6))
        t_neg = np.arccos(np.clip(s_neg, -1 + 1e-6, 1 - 1e-6))
        return ((t_neg.min(axis=1) - t_pos) < p["mat"] * math.pi).astype(float)
    raise KeyError(f"unknown loss {loss!r}; known: {GD_LOSSES}")


def gd_grid(
    steps: int = 100,
    batches: int = 1000,
    negatives: int = 127,
    seed: int = 0,
    losses: Sequence[str] = GD_LOSSES,
    params: dict | None = None,
) -> dict[str, list[dict]]:
    """Rows ``{loss, mu_pos, mu_neg, gd}`` per loss (see the module docstring)."""
    for loss in losses:
        if loss not in GD_LOSSES:
            raise KeyError(f"gd_grid: unknown loss {loss!r}; known: {GD_LOSSES}")
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict]] = {loss: [] for loss in losses}
    for mu_pos in np.linspace(0.05 * math.pi, 0.5 * math.pi, steps):
        for mu_neg in np.linspace(0.05 * math.pi, math.pi, steps):
            s_pos = np.cos(rng.normal(mu_pos, 0.05, size=batches))
            s_neg = np.cos(rng.normal(mu_neg, 0.10, size=(batches, negatives)))
            for loss in losses:
                gd = float(batch_gd(loss, s_pos, s_neg, params).mean())
                out[loss].append({"loss": loss, "mu_pos": mu_pos, "mu_neg": mu_neg, "gd": gd})
    return out


def w_grid(
    steps: int = 100,
    batches: int = 1000,
    negatives: int = 127,
    seed: int = 0,
    taus: Sequence[float] = W_TAUS,
    theta_pos: float = 0.5,
    min_gd: float = 1e-2,
) -> list[dict]:
    """Rows ``{tau, mu_neg, hardest_share, kept_batches}`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rows = []
    for tau in taus:
        for mu_neg in np.linspace(math.pi / 20, math.pi, steps):
            s_pos = np.cos(rng.normal(theta_pos, 0.05, size=batches))
            s_neg = np.cos(rng.normal(mu_neg, 0.10, size=(batches, negatives)))
            logits = s_neg / tau
            share = np.exp(logits.max(axis=1) - _logsumexp(logits))
            keep = batch_gd("infonce", s_pos, s_neg, {"temperature": tau}) >= min_gd
            value = float(share[keep].mean()) if keep.any() else float("nan")
            rows.append({"tau": tau, "mu_neg": mu_neg, "hardest_share": value,
                         "kept_batches": int(keep.sum())})
    return rows


def r_grid(
    steps: int = 100, negatives: int = 127, losses: Sequence[str] = R_LOSSES, params: dict | None = None
) -> dict[str, list[dict]]:
    """Rows ``{loss, theta_pos, theta_neg, r, valid}`` per loss (closed form, no sampling)."""
    p = {**DEFAULTS, **(params or {})}
    tau, u = p["temperature"], math.radians(p["margin_degrees"])
    out: dict[str, list[dict]] = {}
    for loss in losses:
        if loss not in R_LOSSES:
            raise KeyError(f"r_grid: unknown loss {loss!r}; known: {R_LOSSES}")
        rows = []
        for t_pos in np.linspace(0.05 * math.pi, 0.5 * math.pi, steps):
            for t_neg in np.linspace(0.05 * math.pi, math.pi, steps):
                if loss == "arccon":
                    r = math.sin(t_pos + u) / math.sin(t_pos)
                    gd = 1 / (1 + math.exp(math.cos(t_pos + u) / tau) / (negatives * math.exp(math.cos(t_neg) / tau)))
                    dissipated = gd < 0.01
                elif loss == "met":
                    d_pos = math.sqrt(max(2 - 2 * math.cos(t_pos), 1e-4))
                    d_neg = math.sqrt(max(2 - 2 * math.cos(t_neg), 1e-4))
                    r = d_neg / d_pos
                    dissipated = d_neg - d_pos >= p["met"]
                else:
                    r = math.sin(t_neg) / math.sin(t_pos)
                    dissipated = t_neg - t_pos >= p["mat"] * math.pi
                valid = not (t_pos > t_neg or dissipated)
                rows.append({"loss": loss, "theta_pos": t_pos, "theta_neg": t_neg, "r": r,
                             "valid": int(valid)})
        out[loss] = rows
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` (dicts with the same keys) as CSV, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _figure():
    from mmret.extras import require

    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def _heat_map(rows: list[dict], x: str, y: str, value: str, title: str, path: Path,
              invalid: str | None = None) -> None:
    plt = _figure()
    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    grid = np.array([[r[value] for r in rows]]).reshape(len(ys), len(xs))
    fig, ax = plt.subplots(figsize=(5, 4))
    image = ax.pcolormesh(np.array(xs) / math.pi, np.array(ys) / math.pi, grid, shading="auto")
    fig.colorbar(image, ax=ax, label=value)
    if invalid is not None:
        mask = np.array([[1 - r[invalid] for r in rows]]).reshape(len(ys), len(xs)).astype(float)
        if mask.any() and len(xs) > 1 and len(ys) > 1:
            ax.contourf(np.array(xs) / math.pi, np.array(ys) / math.pi, mask, levels=[0.5, 1.5],
                        colors="none", hatches=["//"])
    ax.set_xlabel(f"{x} / π")
    ax.set_ylabel(f"{y} / π")
    ax.set_title(title)
    _save(fig, path)
    plt.close(fig)


def run_gd(out: Path, **kw) -> list[Path]:
    written = []
    for loss, rows in gd_grid(**kw).items():
        write_csv(out / f"gd_{loss}.csv", rows)
        _heat_map(rows, "mu_neg", "mu_pos", "gd", f"GD of {loss}", out / f"gd_{loss}.png")
        written += [out / f"gd_{loss}.csv", out / f"gd_{loss}.png"]
    return written


def run_w(out: Path, **kw) -> list[Path]:
    rows = w_grid(**kw)
    write_csv(out / "w.csv", rows)
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 4))
    for tau in dict.fromkeys(r["tau"] for r in rows):
        sel = [r for r in rows if r["tau"] == tau]
        ax.plot([r["mu_neg"] / math.pi for r in sel], [r["hardest_share"] for r in sel], label=f"τ={tau}")
    ax.set_xlabel("μ_neg / π")
    ax.set_ylabel("hardest-negative share of W")
    ax.legend()
    _save(fig, out / "w.png")
    plt.close(fig)
    return [out / "w.csv", out / "w.png"]


def run_r(out: Path, **kw) -> list[Path]:
    written = []
    for loss, rows in r_grid(**kw).items():
        write_csv(out / f"r_{loss}.csv", rows)
        _heat_map(rows, "theta_neg", "theta_pos", "r", f"R of {loss} (hatched: invalid)",
                  out / f"r_{loss}.png", invalid="valid")
        written += [out / f"r_{loss}.csv", out / f"r_{loss}.png"]
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mmret-gradient-sim", description="Simulate the gradient paradigm's GD, W or R."
    )
    parser.add_argument("what", choices=("gd", "w", "r"))
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV and PNG files")
    parser.add_argument("--steps", type=int, default=100, help="grid values per axis")
    parser.add_argument("--batches", type=int, default=1000, help="batches per grid point (gd, w)")
    parser.add_argument("--negatives", type=int, default=127, help="negatives per batch (B − 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--losses", nargs="+", help="subset of losses (gd, r)")
    parser.add_argument("--taus", nargs="+", type=float, default=list(W_TAUS), help="τ values (w)")
    args = parser.parse_args(argv)
    for name in ("steps", "batches", "negatives"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.what == "gd":
        files = run_gd(args.out, steps=args.steps, batches=args.batches, negatives=args.negatives,
                       seed=args.seed, losses=args.losses or GD_LOSSES)
    elif args.what == "w":
        files = run_w(args.out, steps=args.steps, batches=args.batches, negatives=args.negatives,
                      seed=args.seed, taus=args.taus)
    else:
        files = run_r(args.out, steps=args.steps, negatives=args.negatives,
                      losses=args.losses or R_LOSSES)
    for path in files:
        print(path)


if __name__ == "__main__":
    main()
