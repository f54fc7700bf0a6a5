"""The Markdown report of :mod:`idiomatic` runs: the targets of the speed issue, judged on
every run, then each run's tables.

Targets (medium sizes, batch 128 and 1024, 1 and 2 threads, both networks):

* refnet time / the faster idiomatic peer's time ≤ 1.0 (median over rounds) for every quantity;
* gradient and HVP at ≥ 85% of NumPy's own rate on the same matrix products (refnet's best
  call against the best of 7 runs of exactly its GEMMs, preallocated);
* no quantity slower with 2 threads than with 1 (refnet's median times).

A target counts as met only if it holds in every run; the per-round ranges show how far a
median can move.
"""
from __future__ import annotations

import datetime
import os
import platform

from idiomatic import tables

FASTEST_PEER_TARGET = 1.0
GEMM_FRACTION_TARGET = 0.85


def _key(r):
    return (r["network"], r["batch"], r["quantity"])


def _vs_faster(r):
    """(median ratio vs the faster peer, that peer, its per-round range)."""
    best = max((r[k][0], k[3:], r[k]) for k in ("vs_torch", "vs_jax") if r.get(k))
    return best


def peer_targets(runs):
    out = ["| network | batch | quantity | threads | refnet / faster peer, per run (range) "
           "| met |", "|---|---|---|---|---|---|"]
    keys = [(_key(r), r["threads"]) for r in runs[0]]
    met = 0
    for k, t in keys:
        cells, ok = [], True
        for rows in runs:
            r = next(r for r in rows if _key(r) == k and r["threads"] == t)
            v, peer, (m, lo, hi) = _vs_faster(r)
            cells.append(f"{v:.2f} {peer} ({lo:.2f}–{hi:.2f})")
            ok &= v <= FASTEST_PEER_TARGET
        met += ok
        out.append(f"| {k[0]} | {k[1]} | {k[2]} | {t} | {'; '.join(cells)} | "
                   f"{'yes' if ok else '**no**'} |")
    return out, met, len(keys)


def gemm_targets(runs):
    out = ["| network | batch | quantity | threads | refnet's fraction of NumPy's rate on the same "
           "GEMMs, per run | NumPy time / torch, JAX time | met |", "|---|---|---|---|---|---|---|"]
    met = n = 0
    for r0 in runs[0]:
        if "flops" not in r0:
            continue
        same = [next(r for r in rows if _key(r) == _key(r0) and r["threads"] == r0["threads"])
                for rows in runs]
        fr = [r["gemm_numpy"] / r.get("refnet_best", r["refnet"]) for r in same]
        ok = min(fr) >= GEMM_FRACTION_TARGET
        met, n = met + ok, n + 1
        peers = "; ".join(f"{r['gemm_numpy'] / r['gemm_torch']:.2f} / "
                          + ("–" if r.get("gemm_jax") is None else
                             f"{r['gemm_numpy'] / r['gemm_jax']:.2f}") for r in same)
        out.append(f"| {r0['network']} | {r0['batch']} | {r0['quantity']} | {r0['threads']} | "
                   f"{' ; '.join(f'{f:.0%}' for f in fr)} | {peers} | "
                   f"{'yes' if ok else '**no**'} |")
    return out, met, n


def thread_targets(runs):
    out = ["| network | batch | quantity | refnet 2 threads / 1 thread, per run | met |",
           "|---|---|---|---|---|"]
    met = n = 0
    for r1 in [r for r in runs[0] if r["threads"] == 1]:
        ratios = []
        for rows in runs:
            a = next(r for r in rows if _key(r) == _key(r1) and r["threads"] == 1)
            b = next((r for r in rows if _key(r) == _key(r1) and r["threads"] == 2), None)
            if b is not None:
                ratios.append(b["refnet"] / a["refnet"])
        if not ratios:
            continue
        ok = max(ratios) <= 1.0
        met, n = met + ok, n + 1
        out.append(f"| {r1['network']} | {r1['batch']} | {r1['quantity']} | "
                   f"{'; '.join(f'{v:.2f}' for v in ratios)} | {'yes' if ok else '**no**'} |")
    return out, met, n


def reproduction(runs, again):
    """How many of ``again``'s median ratios fall inside the per-round ranges of ``runs``
    (the union over its runs), and the rows that do not, with the load seen meanwhile."""
    inside, total, out = 0, 0, []
    for rows in again:
        for r in rows:
            for k in ("vs_torch", "vs_jax"):
                if not r.get(k):
                    continue
                ref = [q[k] for q2 in runs for q in q2 if _key(q) == _key(r)
                       and q["threads"] == r["threads"] and q.get(k)]
                if not ref:
                    continue
                lo, hi = min(v[1] for v in ref), max(v[2] for v in ref)
                total += 1
                if lo <= r[k][0] <= hi:
                    inside += 1
                else:
                    out.append(f"| {r['network']} | {r['batch']} | {r['quantity']} | "
                               f"{r['threads']} | {k[3:]} | {r[k][0]:.2f} | {lo:.2f}–{hi:.2f} | "
                               f"{r.get('load', float('nan')):.1f} |")
    head = [f"{inside} of {total} median ratios of the independent runs fall inside the "
            f"per-round ranges of the runs above. Outside:", "",
            "| network | batch | quantity | threads | peer | median ratio | range above "
            "| load meanwhile |", "|---|---|---|---|---|---|---|---|"]
    return head + out


def report(runs, argv, notes=None, again=None):
    """The whole report: header, the three target tables, notes, then each run's tables."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ld = [r["load"] for rows in runs for r in rows if "load" in r]
    loads = f"{min(ld):.1f}–{max(ld):.1f}" if ld else "not recorded"
    out = [f"<!-- generated by: python benchmarks/idiomatic.py {' '.join(argv)} ({now}) -->",
           "# refnet vs idiomatic PyTorch (nn.Module + autograd) and JAX (jit on pytrees), float64",
           "", f"{len(runs)} full run(s) on {platform.processor() or platform.machine()}, "
           f"{os.cpu_count()} CPUs; 1-minute load average seen by the workers {loads} (the run "
           f"itself adds about its thread count). "
           "Ratios are refnet time / peer time (below 1: refnet is faster), the median over "
           "interleaved rounds with the per-round range in brackets.", ""]
    for title, (rows, met, n) in (("refnet against the faster peer", peer_targets(runs)),
                                  ("refnet's GEMM rate", gemm_targets(runs)),
                                  ("2 threads never slower than 1", thread_targets(runs))):
        out += [f"## Target: {title} — met {met} of {n}", ""] + rows + [""]
    if notes:
        out += [notes.rstrip(), ""]
    if again:
        out += ["## Independent runs: are the ratios reproduced?", ""] + reproduction(runs, again) \
            + [""]
    for i, rows in enumerate(runs + (again or []), 1):
        out += [f"## Run {i}" + (" (independent)" if i > len(runs) else "")] + tables(rows) + [""]
    return "\n".join(out)
