"""The app's canvases: reused matplotlib figures whose artists are built once and whose data change
between renders (building axes and ticks anew costs as much again as drawing them), and the PNG
encoding of what they draw. Drawing pieces come from `toy.plotting`."""

from __future__ import annotations

import io
import threading

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator
from PIL import Image

from toy import plotting as P

TRAJ_N = 40          # trajectories drawn per method

COL_W, COL_H, DPI = 3.2, 6.0, 80


class Canvas:
    """A reused figure (one per layout): its artists are built once and only their data change
    between renders, since building axes and ticks anew costs as much again as drawing them."""

    def __init__(self, width, height, rows, cols):
        self.lock = threading.Lock()
        self.fig = Figure(figsize=(width, height), dpi=DPI)
        FigureCanvasAgg(self.fig)
        self.axes = np.atleast_1d(self.fig.subplots(rows, cols)).ravel()
        for a in self.axes:
            a.xaxis.set_major_locator(MaxNLocator(5))
            a.yaxis.set_major_locator(MaxNLocator(5))

    def unlabelled_y(self, ax) -> None:
        """No y ticks on a density panel: its values teach nothing, and tick labels are most of a redraw."""
        ax.yaxis.set_major_locator(NullLocator())

    def pixels(self) -> np.ndarray:
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba()).copy()                                   # [H, W, 4]


class ColumnCanvas(Canvas):
    """One method's column: samples over the true density (top) and trajectories (bottom, Fig. 9)."""

    def __init__(self, window: P.Window):
        super().__init__(COL_W, COL_H, 2, 1)
        self.title = self.axes[0].set_title("", fontsize=10)
        self.samples = P.SamplesArtist(self.axes[0], window)
        if window.dim == 1:
            self.unlabelled_y(self.axes[0])
        self.paths = P.TrajectoryArtist(self.axes[1], window)
        self.note = self.axes[1].text(0.5, 0.5, "exact samples\nno trajectory", ha="center", va="center",
                                      transform=self.axes[1].transAxes)
        self.fig.subplots_adjust(left=0.2, right=0.96, top=0.94, bottom=0.08, hspace=0.25)

    def render(self, name: str, x: np.ndarray, traj: np.ndarray | None, window: P.Window) -> np.ndarray:
        with self.lock:
            self.title.set_text(name)
            self.samples.set_window(window)
            self.samples.set(x)
            self.paths.set_window(window)
            self.note.set_visible(traj is None)
            if traj is None:
                self.axes[1].set_axis_off()
            else:
                self.axes[1].set_axis_on()
            self.paths.paths.set_visible(traj is not None)
            if traj is not None:
                self.paths.set(traj[:, :TRAJ_N])
            return self.pixels()


class StepCanvas(Canvas):
    """The sampler at one step: each method's states over the exact noised density p_σ(x | c)."""

    def __init__(self, window: P.Window, panels: int):
        super().__init__(2.6 * panels, 2.7, 1, panels)
        self.artists = [P.SamplesArtist(ax, window) for ax in self.axes]
        for ax in self.axes if window.dim == 1 else ():
            self.unlabelled_y(ax)
        self.titles = [ax.set_title("", fontsize=9) for ax in self.axes]
        self.fig.subplots_adjust(left=0.06, right=0.98, top=0.84, bottom=0.12, wspace=0.3)

    def render(self, panels: list[tuple[str, np.ndarray]], window: P.Window) -> np.ndarray:
        with self.lock:
            for art, title, (name, x) in zip(self.artists, self.titles, panels):
                art.set_window(window)
                art.set(x)
                title.set_text(name)
            return self.pixels()



def to_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


TERM_NAMES = {"cfg_push": "CFG push (λ − 1)(D_c − D_∅)", "s2_correction": "S² correction −ω(D̂_c(m) − D_c)",
              "model_error": "true model error D*_c − D_c"}
TERM_STYLE = {"cfg_push": dict(color="C0"), "s2_correction": dict(color="C3"), "model_error": dict(color="k", ls=":")}


class MechanismCanvas(Canvas):
    """Left: the guidance terms at σ (curves over x in 1D, arrows in 2D). Right: α, β and cos_error
    against σ along the CFG sampler, with σ marked."""

    def __init__(self, dim: int):
        super().__init__(9.6, 3.3, 1, 2)
        ax, bx = self.axes
        self.dim, self.quivers = dim, []
        if dim == 1:
            self.curves = {k: ax.plot([], [], label=v, **TERM_STYLE[k])[0] for k, v in TERM_NAMES.items()}
            ax.axhline(0, color="0.6", lw=0.5)
            ax.set_xlabel("x")
            ax.legend(fontsize=7, loc="upper left")
        else:
            self.contours = LineCollection([], colors="0.7", linewidths=0.4)
            ax.add_collection(self.contours)
        self.title = ax.set_title("", fontsize=9)
        self.series = {k: bx.plot([], [], marker=".", ms=3, label=lab, **st_)[0] for k, lab, st_ in (
            ("alpha", "α", dict(color="C0")), ("beta", "β", dict(color="C2")),
            ("cos_error", "cos(s, model error)", dict(color="k", ls=":")))}
        self.mark = bx.axvline(1.0, color="C3", lw=1)
        bx.axhline(0, color="0.6", lw=0.5)
        bx.set_xscale("log")
        bx.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))      # plain numbers: no mathtext
        bx.xaxis.set_minor_locator(NullLocator())                                    # decades only
        bx.set_xlabel("σ")
        bx.set_title("s = D_c − D̂_c ≈ α·(D_c − D_∅) + β·(D_c − x) along the CFG sampler", fontsize=8)
        bx.legend(fontsize=7)
        self.fig.subplots_adjust(left=0.06, right=0.98, top=0.88, bottom=0.15, wspace=0.25)

    def render(self, terms: dict, grid: np.ndarray, window: P.Window, dec: dict, sigma: float) -> np.ndarray:
        with self.lock:
            ax, bx = self.axes
            if self.dim == 1:
                for k, v in terms.items():
                    self.curves[k].set_data(grid[:, 0], v[:, 0])
                lim = max(1e-9, max(float(np.abs(v).max()) for v in terms.values()))
                ax.set_xlim(grid[0, 0], grid[-1, 0])
                ax.set_ylim(-1.1 * lim, 1.1 * lim)
            else:
                for q in self.quivers:
                    q.remove()
                self.contours.set_segments(window.contours)
                span = float(np.max(window.hi - window.lo))
                scale = max(float(np.max(np.linalg.norm(np.concatenate(list(terms.values())), axis=1))), 1e-9) / (0.08 * span)
                self.quivers = [ax.quiver(grid[:, 0], grid[:, 1], v[:, 0], v[:, 1], angles="xy", scale_units="xy",
                                          scale=scale, width=0.004, label=TERM_NAMES[k], color=TERM_STYLE[k]["color"])
                                for k, v in terms.items()]
                ax.set_xlim(window.lo[0], window.hi[0])
                ax.set_ylim(window.lo[1], window.hi[1])
                ax.legend(handles=self.quivers, fontsize=7, loc="upper left")
            self.title.set_text(f"guidance terms on D at σ = {sigma:.3g}")
            s = np.asarray(dec["sigmas"])
            for k, line in self.series.items():
                line.set_data(s, dec[k])
            vals = np.concatenate([np.asarray(dec[k], float) for k in ("alpha", "beta")])
            vals = vals[np.isfinite(vals)]
            lo, hi = (min(-1.0, float(np.percentile(vals, 2))), max(1.0, float(np.percentile(vals, 98)))) if vals.size \
                else (-1.0, 1.0)
            bx.set_xlim(s.min() * 0.8, s.max() * 1.25)
            bx.set_ylim(lo - 0.1, hi + 0.1)
            self.mark.set_xdata([max(sigma, s.min())] * 2)
            return self.pixels()


class SeriesCanvas(Canvas):
    """α and β against σ for several networks side by side (the app's MLP-and-DiT comparison)."""

    KEYS = (("alpha", "α: along CFG's direction (> 0: extra CFG)"), ("beta", "β: along the denoising direction (> 0: weak model)"))

    def __init__(self):
        super().__init__(9.6, 3.0, 1, 2)
        for ax, (_, title) in zip(self.axes, self.KEYS):
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.axhline(0, color="0.6", lw=0.5)
            ax.set_xlabel("σ")
            ax.set_title(title, fontsize=8)
        self.fig.subplots_adjust(left=0.06, right=0.98, top=0.88, bottom=0.16, wspace=0.2)

    def render(self, curves: dict[str, dict], interval_sigmas: tuple[float, float]) -> np.ndarray:
        """curves: label → a decomposition ({"sigmas", "alpha", "beta"}); interval_sigmas: where S² acts."""
        with self.lock:
            for ax, (key, _) in zip(self.axes, self.KEYS):
                for line in list(ax.lines[1:]) + list(ax.patches):
                    line.remove()
                vals = []
                for i, (name, dec) in enumerate(curves.items()):
                    ax.plot(dec["sigmas"], dec[key], marker=".", ms=3, color=f"C{i}", label=name)
                    vals.append(np.asarray(dec[key], float))
                v = np.concatenate(vals)
                v = v[np.isfinite(v)]
                if v.size:
                    ax.set_ylim(min(-0.5, float(np.percentile(v, 2))) - 0.1, max(0.5, float(np.percentile(v, 98))) + 0.1)
                ax.axvspan(*interval_sigmas, color="0.92", zorder=0)
                ax.legend(fontsize=7)
            return self.pixels()
