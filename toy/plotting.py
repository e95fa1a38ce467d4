"""The shared drawing: samples over the exact density, sampler trajectories, panel layouts, captions
and image grids. The figures, the app, the command line and the notebooks all draw through here,
so a density window, a histogram or a trajectory looks the same wherever it appears.

Matplotlib's object API only (`Figure`, never pyplot's global state): the app draws from worker
threads, and a notebook shows a returned `Figure` inline. `SamplesArtist` and `TrajectoryArtist`
build their artists once and only change their data on `set`, which is what lets the app redraw a
column in milliseconds.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import contourpy
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from toy.files import atomic_write
from toy.mixtures import GaussianMixture

BINS = 80                 # 1D histograms
GRID_1D, GRID_2D = 400, 120   # density grid points (per axis in 2D)
LEVELS = 7                # 2D contour lines of log p, over the top 12 nats
PAD = 1.5                 # margin around the density's bulk, in data units
TAIL = 4.0                # the bulk: each component's mean ± TAIL standard deviations


@dataclass(frozen=True, eq=False)
class Window:
    """A plot window around a class's exact density and that density on a grid: in 1D the pdf
    curve, in 2D the contour lines of log p (computed once, drawn as one line collection)."""

    dim: int
    lo: np.ndarray             # [d] lower corner
    hi: np.ndarray             # [d] upper corner
    x: np.ndarray | None       # 1D: [G] grid
    pdf: np.ndarray | None     # 1D: [G] density
    contours: list | None      # 2D: contour segments, each [k, 2]


def density_window(target: GaussianMixture, sigma: float = 0.0, *, window: Window | None = None) -> Window:
    """The window that holds `target` noised at σ and its density there: every component's mean ±
    TAIL standard deviations of its noised covariance (about the extremes of 20,000 samples), plus PAD.
    Pass `window` to draw the density at σ inside an existing window instead."""
    if target.dim > 2:
        raise ValueError(f"plots show 1D and 2D mixtures; this one has dimension {target.dim}")
    if window is None:
        std = np.sqrt(np.diagonal(target.covs, axis1=1, axis2=2) + float(sigma) ** 2)             # [K, d]
        lo = (target.means - TAIL * std).min(0) - PAD                                             # [d]
        hi = (target.means + TAIL * std).max(0) + PAD                                             # [d]
    else:
        lo, hi = window.lo, window.hi
    if target.dim == 1:
        grid = np.linspace(lo[0], hi[0], GRID_1D)[:, None].astype(np.float32)                 # [G, 1]
        return Window(1, lo, hi, grid[:, 0], np.asarray(target.pdf(grid, sigma), np.float64), None)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], GRID_2D), np.linspace(lo[1], hi[1], GRID_2D))   # [G, G] ×2
    pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)                            # [G², 2]
    lp = np.asarray(target.logp(pts, sigma), np.float64).reshape(gx.shape)                    # [G, G]
    gen = contourpy.contour_generator(gx, gy, lp)
    lines = [seg for level in np.linspace(lp.max() - 12, lp.max(), LEVELS) for seg in gen.lines(level)]
    return Window(2, lo, hi, None, None, lines)


class SamplesArtist:
    """Samples of one class over its exact density: a histogram and the pdf (1D) or a scatter over
    contour lines (2D)."""

    def __init__(self, ax, window: Window, color: str = "C0"):
        self.ax, self.window = ax, window
        if window.dim == 1:
            self.hist = ax.stairs(np.zeros(1), np.arange(2.0), fill=True, color=color, alpha=0.6)
            self.curve, = ax.plot(window.x, window.pdf, "k", lw=1.2)
        else:
            self.contours = LineCollection(window.contours, colors="0.45", linewidths=0.5)
            ax.add_collection(self.contours)
            self.points = ax.scatter(np.zeros(1), np.zeros(1), s=3, alpha=0.45, color=color, linewidths=0)
        self.set_window(window)

    def set_window(self, window: Window) -> None:
        self.window = window
        self.ax.set_xlim(window.lo[0], window.hi[0])
        if window.dim == 1:
            self.curve.set_data(window.x, window.pdf)
        else:
            self.contours.set_segments(window.contours)
            self.ax.set_ylim(window.lo[1], window.hi[1])

    def set(self, x: np.ndarray) -> None:
        """x: [n, d] samples."""
        w = self.window
        if w.dim == 1:
            lo, hi = w.lo[0], w.hi[0]
            counts, edges = np.histogram(np.clip(x[:, 0], lo, hi), bins=BINS, range=(lo, hi), density=True)
            self.hist.set_data(counts, edges)
            self.ax.set_ylim(0, 1.08 * max(counts.max(), w.pdf.max()))
        else:
            self.points.set_offsets(x)


class TrajectoryArtist:
    """Sampler trajectories (paper Fig. 9): x against the step in 1D, paths in the plane in 2D
    (over the density's contour lines)."""

    def __init__(self, ax, window: Window):
        self.ax, self.window = ax, window
        if window.dim == 2:
            self.contours = LineCollection(window.contours, colors="0.6", linewidths=0.4)
            ax.add_collection(self.contours)
        self.paths = LineCollection([], linewidths=0.6, alpha=0.6)
        ax.add_collection(self.paths)

    def set_window(self, window: Window) -> None:
        self.window = window
        if window.dim == 2:
            self.contours.set_segments(window.contours)

    def set(self, traj: np.ndarray, marks: tuple[float, ...] = ()) -> None:
        """traj: [T + 1, m, d] states from σ_max to 0; `marks`: values of x to draw dotted (1D)."""
        T1, m = traj.shape[0], traj.shape[1]
        w = self.window
        if w.dim == 1:
            steps = np.broadcast_to(np.arange(T1, dtype=np.float64)[:, None], (T1, m))            # [T + 1, m]
            lines = np.stack([steps, traj[:, :, 0]], -1).transpose(1, 0, 2)                      # [m, T + 1, 2]
            self.ax.set_xlim(0, T1 - 1)
            self.ax.set_ylim(w.lo[0] - 4, w.hi[0] + 4)
            self.ax.set_xlabel("sampler step")
            for v in marks:
                self.ax.axhline(v, color="k", ls=":", lw=0.8)
        else:
            lines = traj[1:].transpose(1, 0, 2)                                                  # [m, T, 2]
            self.ax.set_xlim(w.lo[0], w.hi[0])
            self.ax.set_ylim(w.lo[1], w.hi[1])
        self.paths.set_segments(lines)
        self.paths.set_color([f"C{i % 10}" for i in range(m)])


def layout(n: int, max_cols: int = 4) -> tuple[int, int]:
    """(rows, cols) of a grid of n panels at most `max_cols` wide, as square as that allows."""
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def panels(n: int, *, max_cols: int = 4, size: tuple[float, float] = (3.0, 3.0), caption_lines: int = 2,
           title_lines: int = 1) -> tuple[Figure, list]:
    """A figure of n panels in a grid (unused cells hidden), with room for a suptitle and a caption."""
    rows, cols = layout(n, max_cols)
    # margins in inches: the suptitle and two-line panel titles above, tick labels and the caption below
    top_in, bottom_in, gap_in = 0.2 + 0.2 * title_lines + 0.4, 0.5 + 0.14 * caption_lines, 0.85
    height = size[1] * rows + gap_in * (rows - 1) + top_in + bottom_in
    fig = Figure(figsize=(size[0] * cols, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.subplots_adjust(top=1 - top_in / height, bottom=bottom_in / height, hspace=gap_in / size[1], wspace=0.3,
                        left=0.55 / fig.get_figwidth(), right=0.98)
    return fig, axes[:n]


def caption(fig: Figure, text: str) -> None:
    """The settings line at the foot of a figure: which seeds and settings made it."""
    fig.text(0.01, 0.005, text, fontsize=7, color="0.3", ha="left", va="bottom", wrap=True)


def save(fig: Figure, path, dpi: int = 110) -> None:
    """Write the figure as a PNG atomically (a kill never leaves half a picture)."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def image_grid(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """[rows, cols, size·size·channels] flat images in [−1, 1] → one [rows·H, cols·W, C] picture in [0, 1]."""
    r, c = images.shape[:2]
    img = images.reshape(r, c, size, size, channels).transpose(0, 2, 1, 3, 4).reshape(r * size, c * size, channels)
    return np.clip((img + 1) / 2, 0, 1)


def shades(cmap: str, n: int) -> list:
    """n colours from light to dark along a matplotlib colour map (one per depth, say)."""
    from matplotlib import colormaps
    return [colormaps[cmap](v) for v in np.linspace(0.45, 0.95, max(n, 1))]
