"""Repeated wall-clock measurements and their summary."""

import statistics
import time


def measure(action, repeat, setup=None):
    """Seconds taken by `action()` in `repeat` runs; `setup()` runs untimed before each."""
    samples = []
    for _ in range(repeat):
        if setup:
            setup()
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def summary(samples):
    return {
        "n": len(samples),
        "min": min(samples),
        "median": statistics.median(samples),
        "max": max(samples),
        "samples": samples,
    }


def comparison(name, measured, floor, unit_note=""):
    """One figure: what vTorque costs against its floor, as overhead (s) and ratio (medians)."""
    m, f = summary(measured), summary(floor)
    return {
        "name": name,
        "measured": m,
        "floor": f,
        "overhead_s": m["median"] - f["median"],
        "ratio": m["median"] / f["median"] if f["median"] else None,
        "note": unit_note,
    }
