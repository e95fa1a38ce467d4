"""Where a pytest run spends its XLA compile time: per test and per jitted function.

    python -m bench.compile_profile [--out OUT.json] [--top N] [-- PYTEST ARGS ...]

The suite is bound by compile time on a 2-core CPU, so this is the profile to read before making it
faster. It runs pytest (by default the whole suite, as README's test command does) with a
`sitecustomize` on PYTHONPATH that registers a `jax.monitoring` listener in every Python process
the run starts (the xdist workers, CLI subprocesses, notebook kernels, the served app), attributes
each event to the test that was running (PYTEST_CURRENT_TEST, which subprocesses inherit) and to
the jitted function's name, and writes one file per process at exit. Processes killed without
exiting (a served app, a notebook kernel shut down) are not counted.

Reports, summed over all processes: tracing, lowering (jaxpr → MLIR) and XLA backend compile
seconds with their counts, persistent-cache hits, and the top functions and tests by compile time.
The seconds are worker-seconds: with two workers on two cores they add up to about twice the wall
clock, and contention inflates each of them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SITECUSTOMIZE = '''
import atexit, collections, json, os, sys
_acc = collections.defaultdict(lambda: collections.defaultdict(float))
_OUT = os.environ["TOY_COMPILE_PROFILE_DIR"]

def _listener(event, duration, **kw):
    test = os.environ.get("PYTEST_CURRENT_TEST", "-").rsplit(" (", 1)[0]
    name = event.rsplit("/", 1)[-1]
    for key in (test, "fn:" + str(kw.get("fun_name"))) if kw.get("fun_name") else (test,):
        _acc[key][name] += duration
        _acc[key]["n_" + name] += 1

class _Hook:
    def find_spec(self, name, path, target=None):
        if name != "jax._src.monitoring":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.register_event_duration_secs_listener(_listener)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Hook())

@atexit.register
def _dump():
    if _acc:
        with open(os.path.join(_OUT, f"{os.getpid()}.json"), "w") as f:
            json.dump(_acc, f)
'''

EVENTS = {"jaxpr_trace_duration": "tracing", "jaxpr_to_mlir_module_duration": "lowering",
          "backend_compile_duration": "compile", "cache_retrieval_time_sec": "cache_load"}


def aggregate(folder: Path) -> tuple[dict, dict, dict]:
    """(totals, by function, by test) from the per-process files: {name: {event: seconds, n_event: count}}."""
    total, by_fn, by_test = (collections.defaultdict(lambda: collections.defaultdict(float)) for _ in range(3))
    for f in folder.glob("*.json"):
        for key, acc in json.loads(f.read_text()).items():
            target = by_fn[key[3:]] if key.startswith("fn:") else by_test[key]
            for event, v in acc.items():
                target[event] += v
                if not key.startswith("fn:"):
                    total["all"][event] += v
    return dict(total["all"]), {k: dict(v) for k, v in by_fn.items()}, {k: dict(v) for k, v in by_test.items()}


def summary(total: dict, by_fn: dict, by_test: dict, top: int) -> dict:
    def row(acc):
        return {EVENTS[e]: round(acc.get(e, 0.0), 1) for e in EVENTS} | \
               {f"{EVENTS[e]}_count": int(acc.get("n_" + e, 0)) for e in EVENTS}
    key = lambda kv: -kv[1].get("backend_compile_duration", 0.0)
    return {"total": row(total),
            "functions": {k: row(v) for k, v in sorted(by_fn.items(), key=key)[:top]},
            "tests": {k: row(v) for k, v in sorted(by_test.items(), key=key)[:top]}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compile_profile", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="compile_profile.json")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest (default: the whole suite)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="toy-compile-profile-") as tmp:
        hook, out = Path(tmp) / "hook", Path(tmp) / "out"
        hook.mkdir()
        out.mkdir()
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = dict(os.environ, TOY_COMPILE_PROFILE_DIR=str(out),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
        rc = subprocess.run([sys.executable, "-m", "pytest", "-q", *a.pytest_args], env=env).returncode
        res = summary(*aggregate(out), a.top)
    res["pytest_args"], res["pytest_exit_code"] = a.pytest_args, rc
    Path(a.out).write_text(json.dumps(res, indent=1))
    t = res["total"]
    print(f"XLA compile {t['compile']} s ({t['compile_count']} programs), lowering {t['lowering']} s, "
          f"tracing {t['tracing']} s, {t['cache_load_count']} loaded from the persistent cache (worker-seconds)")
    for name, r in list(res["functions"].items())[:10]:
        print(f"  {r['compile']:7.1f} s {r['compile_count']:5d}×  {name}")
    print(f"wrote {a.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
