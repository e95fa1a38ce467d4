"""The app's Streamlit side of the settings schema: one widget per setting from its declaration, and
the URL codec (a shared link reproduces the view), both read from `toy.settings`.

`View` holds the settings a page shows (the simulator's guidance settings plus the page's own,
declared with the same `Setting` class) and the few values that are not settings (method list,
pasted text)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import streamlit as st

from toy import mechanism as M
from toy.canvases import to_png

from toy.errors import ToyError
from toy.guidance import REGISTRY
from toy.settings import SETTINGS, Setting, safe_text


@dataclass
class View:
    settings: list[Setting]                        # the page's own (and the run settings it shows)
    texts: dict = field(default_factory=dict)      # key → default of values that are no setting (methods, custom)
    step: Setting | None = None                    # the sampler-in-time slider, whose default is the last step

    def known(self) -> dict[str, Setting]:
        """Every setting the page shows, by its widget and URL key."""
        return {s.app_key: s for s in self.settings + [SETTINGS[n] for n in SETTINGS if SETTINGS[n].group == "guidance"]}

    def defaults(self) -> dict:
        out = {**{k: s.start for k, s in self.known().items()}, **self.texts}
        if self.step is not None:
            out[self.step.name] = self.step.default
        return out

    def read_url(self) -> list[str]:
        """On a session's first run, put the URL's settings into the widgets; returns what was ignored."""
        if st.session_state.get("_url_read"):
            return []
        st.session_state["_url_read"] = True
        known, ignored = self.known(), []
        for key, raw in st.query_params.to_dict().items():
            try:
                value = self._parse(known, key, safe_text(raw, key))
            except ToyError:
                ignored.append(f"{key}={raw[:40]}")
                continue
            if value is None:
                ignored.append(key)
            else:
                st.session_state[key] = list(value) if isinstance(value, tuple) else value
        return ignored

    def _parse(self, known, key, text):
        if key == "methods":
            value = [m for m in text.split(",") if m]
            if not value or any(m not in REGISTRY for m in value) or len(set(value)) != len(value):
                raise ToyError(key)
            return value
        if key in self.texts:
            return text
        if self.step is not None and key == self.step.name:
            return self.step.from_text(text)
        if key not in known:
            return None
        s = known[key]
        value = s.from_text(text)
        if s.kind != "choice":
            lo, hi, _ = s.widget_range
            if not all(lo <= v <= hi for v in np.atleast_1d(value)):
                raise ToyError(key)              # valid, but outside the widget's range
        return value

    def write_url(self) -> None:
        """Mirror every setting that differs from its default into the URL (a shareable link)."""
        known, want = self.known(), {}
        for k, v in self.defaults().items():
            cur = st.session_state.get(k, v)
            if isinstance(cur, list) and k in known:
                cur, v = tuple(cur), tuple(v)
            if cur == v or (self.step is not None and k == self.step.name and cur == st.session_state.get("steps")):
                continue
            want[k] = ",".join(cur) if k == "methods" else known[k].to_text(cur) if k in known else str(cur)
        if st.query_params.to_dict() != want:
            st.query_params.from_dict(want)

    def reset(self) -> None:
        """Every widget back to its default (the "Paper defaults" button)."""
        for k, v in self.defaults().items():
            st.session_state[k] = list(v) if isinstance(v, tuple) else v


def widget(box, s: Setting):
    """The widget of one setting, from its declaration."""
    name = (s.label or s.name)[:1].upper() + (s.label or s.name)[1:] + (f" {s.symbol}" if s.symbol else "")
    key, helptext = s.app_key, s.help or None
    if s.kind == "choice" and all(isinstance(v, (int, float)) for v in s.choices):
        return box.select_slider(name, list(s.choices), key=key, help=helptext)
    if s.kind == "choice":
        return box.selectbox(name, list(s.choices), key=key, help=helptext)
    lo, hi, step = s.widget_range
    if s.kind == "ints":
        return tuple(box.multiselect(name, list(range(int(lo), int(hi) + 1)), key=key, help=helptext))
    if s.name == "seed":
        return int(box.number_input(name, int(lo), int(hi), key=key, help=helptext))
    value = box.slider(name, lo, hi, step=step, key=key, help=helptext)
    return tuple(value) if s.kind == "pair" else value


def show_mechanism(image: np.ndarray, cfg_run, dec, interval, sigma: float, states: int, masks: int) -> None:
    """The mechanism section: the picture (or the error that stopped CFG's run) and its one-line reading."""
    if isinstance(cfg_run, ToyError) or isinstance(dec, ToyError):
        st.error(f"CFG: error: {cfg_run if isinstance(cfg_run, ToyError) else dec}")
        return
    st.image(to_png(image))
    med = {k: M.interval_median(dec, k, interval) for k in ("alpha", "beta")}
    st.caption(f"Left: at σ = {sigma:.3g}, what each term adds to D. Right: along the CFG sampler, the S² signal "
               f"s = D_c − D̂_c(m) fitted as α·(D_c − D_∅) + β·(D_c − x) ({states} states, {masks} masks "
               f"per σ). Where S² acts, median α = {med['alpha']:.2f}, β = {med['beta']:.2f}: "
               f"{M.verdict(med['alpha'], med['beta'])}.")


def downloads(mixture, truth, results, png, table, settings) -> None:
    """Samples (CSV, built on click), the figure (PNG) and the metrics with their settings (JSON)."""
    def csv():
        return pd.concat([pd.DataFrame(v["x"], columns=[f"x{i}" for i in range(mixture.dim)]).assign(method=k)
                          for k, v in {"exact samples": {"x": truth}, **results}.items()]).to_csv(index=False)
    c1, c2, c3 = st.columns(3)
    c1.download_button("Samples (CSV)", csv, "samples.csv", "text/csv", key="dl_csv")
    if png is not None:
        c2.download_button("Figure (PNG)", png, "figure.png", "image/png", key="dl_png")
    c3.download_button("Metrics (JSON)", json.dumps({"settings": settings, "metrics": table.to_dict("index")}, indent=1),
                       "metrics.json", "application/json", key="dl_json")
