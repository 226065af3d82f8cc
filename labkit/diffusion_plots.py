"""The figures of diffusion.ipynb: point clouds, metric histories, trajectories of the two samplers, the loss
at each step, the tuning's trials, the DDIM curve and the reverse process as a GIF. Drawing them is not
what the notebook teaches, so the code lives here; every function takes what the notebook measured and
returns a matplotlib figure (or writes a file)."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

AXIS_LIMITS = (-3, 3)  # the data have unit standard deviation and lie within about +-2.5


def scatter(ax: plt.Axes, points, title: str = "", color: str = "C0") -> None:
    """One point cloud (an (n, 2) tensor or array) on ax, on the data's scale."""
    ax.scatter(points[:, 0], points[:, 1], s=1.5, alpha=0.6, color=color)
    ax.set(xlim=AXIS_LIMITS, ylim=AXIS_LIMITS, aspect="equal", xticks=[], yticks=[], title=title)


def clouds(panels: list, color: str | list = "C0", suptitle: str = "") -> plt.Figure:
    """A row of scatter plots, one per (title, points) in panels, in one color or one per panel."""
    colors = [color] * len(panels) if isinstance(color, str) else color
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.6), squeeze=False)
    for ax, (title, points), panel_color in zip(axes[0], panels, colors, strict=True):
        scatter(ax, points, title, panel_color)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def samples_image(samples, reference, title: str) -> np.ndarray:
    """Generated samples over the reference points, rendered to an RGB array for `mlflow.log_image`."""
    fig, ax = plt.subplots(figsize=(3, 3), dpi=80)
    scatter(ax, reference, color="lightgray")
    scatter(ax, samples, title, color="C1")
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def signal_left(curves: dict) -> plt.Figure:
    """alpha_bar against t / T, one curve per label in curves (label -> alpha_bar)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for label, alpha_bar in curves.items():
        ax.plot(np.linspace(0, 1, len(alpha_bar)), alpha_bar, label=label)
    ax.set(xlabel="t / T", ylabel="signal left, alpha_bar")
    ax.legend(fontsize=8)
    return fig


def history(histories: dict) -> plt.Figure:
    """One panel per metric (key -> MLflow metric history); the quality ratios against their floor."""
    fig, axes = plt.subplots(1, len(histories), figsize=(3.5 * len(histories), 3))
    for ax, (key, metrics) in zip(axes, histories.items(), strict=True):
        ax.plot([m.step for m in metrics], [m.value for m in metrics], marker=".")
        ax.set(xlabel="epoch", title=key)
        if key.endswith("_ratio"):
            ax.set_yscale("log")
            ax.axhline(1, color="gray", linestyle=":", label="noise floor")
            ax.legend()
        elif key.endswith("_share"):
            ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig


def trajectories(paths: dict, count: int) -> plt.Figure:
    """One panel per sampler (label -> its path, [(t, points)] from the noise to the samples): the paths
    of the first `count` points, each from a cross (its noise) to a dot (its sample), over all the samples."""
    fig, axes = plt.subplots(1, len(paths), figsize=(4 * len(paths), 4), squeeze=False)
    for ax, (label, path) in zip(axes[0], paths.items(), strict=True):
        steps = np.stack([np.asarray(points[:count]) for _, points in path])  # (steps, count, 2)
        scatter(ax, path[-1][1], label, color="lightgray")
        for point in range(count):
            ax.plot(steps[:, point, 0], steps[:, point, 1], color=f"C{point % 10}", linewidth=0.8, alpha=0.8)
        ax.scatter(steps[0, :, 0], steps[0, :, 1], marker="x", color="black", s=20, zorder=3)
        ax.scatter(steps[-1, :, 0], steps[-1, :, 1], color="black", s=12, zorder=3)
    fig.tight_layout()
    return fig


def loss_per_step(curves: dict) -> plt.Figure:
    """The loss at each step (label -> (alpha_bar, loss), one value per step): against t / T, and against
    the noise at that step, 1 - alpha_bar."""
    fig, (by_step, by_noise) = plt.subplots(1, 2, figsize=(10, 3.5))
    for index, (label, (alpha_bar, losses)) in enumerate(curves.items()):
        mean = float(np.mean(np.asarray(losses)))
        by_step.plot(
            np.linspace(0, 1, len(losses)), losses, color=f"C{index}", label=f"{label} (mean {mean:.3f})"
        )
        by_step.axhline(mean, color=f"C{index}", linestyle=":")
        by_noise.plot(1 - np.asarray(alpha_bar), losses, color=f"C{index}", label=label)
    by_step.set(xlabel="t / T", ylabel="loss (MSE of the noise)", title="what the training loss averages")
    by_noise.set(xlabel="noise variance at the step, 1 - alpha_bar", xscale="log", title="by noise level")
    by_step.legend(fontsize=8)
    by_noise.legend(fontsize=8)
    fig.tight_layout()
    return fig


def trials(results_table: pd.DataFrame, reports: int, baseline_ratio: float) -> plt.Figure:
    """Each trial's last validation ratio against its T, by schedule; hollow: stopped early by ASHA."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for index, (schedule, group) in enumerate(results_table.groupby("schedule")):
        full = group.reports == reports
        ax.scatter(group.timesteps[full], group.mmd_ratio[full], color=f"C{index}", label=schedule)
        ax.scatter(group.timesteps[~full], group.mmd_ratio[~full], facecolors="none", edgecolors=f"C{index}")
    ax.axhline(baseline_ratio, color="gray", linestyle=":", label="baseline")
    ax.set(xlabel="timesteps T", ylabel="mmd_ratio (last report)", yscale="log", xscale="log")
    ax.legend(fontsize=8)
    return fig


def ddim_curve(validation: dict, ddpm: tuple, tolerance: float, test: dict) -> plt.Figure:
    """DDIM's validation ratio by network evaluations (validation: steps -> ratio), DDPM's (ddpm: (T, ratio)),
    the tolerance line, and the test ratios of the choice and of DDPM (test: steps -> ratio)."""
    timesteps, ddpm_ratio = ddpm
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(list(validation), list(validation.values()), marker="o", label="DDIM, validation")
    ax.scatter([timesteps], [ddpm_ratio], color="C3", zorder=3, label=f"DDPM ({timesteps} steps), validation")
    ax.axhline(tolerance * ddpm_ratio, color="C3", linestyle="--", linewidth=1, label=f"{tolerance}x DDPM")
    ax.scatter(list(test), list(test.values()), marker="*", s=120, color="C2", zorder=4,
               label="test: the choice and DDPM")  # fmt: skip
    ax.axhline(1, color="gray", linestyle=":", label="noise floor")
    ax.set(xscale="log", yscale="log", xlabel="network evaluations per sample", ylabel="mmd_ratio")
    ax.legend(fontsize=7)
    return fig


def save_gif(snapshots: list, path: Path, frame_ms: int = 120) -> None:
    """The reverse process as an animated GIF, one frame per (t, points) snapshot."""
    empty = np.empty((0, 2))
    frames = [Image.fromarray(samples_image(points, empty, f"t={t}")) for t, points in snapshots]
    frames += [frames[-1]] * 8  # linger on the result
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
