"""Error rates of stemlab.report.compare by simulation: null FWER / FPR and power.

A simulated study has 7 groups (stems) and n replicates (seeds). Each value is
``group effect + seed effect + noise`` with seed-effect sd 1 and noise sd 1, so one value has sd
sqrt(2) and a paired difference has sd sqrt(2) too: "effect = k sd" means a shift of k * sqrt(2).
Paired design: the seed effect is shared by every group (same seeds: common random numbers), so
compare() pairs. Welch design: every group has its own seeds (independent values), so compare()
uses Welch's test. Under the null every group effect is 0; for power one group is shifted.

Reported per design, n and mode (all 21 pairs, or baseline vs the 6 others):
  fwer: share of studies with at least one significant (Holm-adjusted) comparison under the null;
  fpr_raw / fpr_holm: share of comparisons with raw p < alpha / adjusted p < alpha under the null;
  power_raw / power_holm (effect k sd): share of studies where the baseline-vs-shifted comparison
  has raw p < alpha / is significant after Holm;
  cover_sim / cover_unadj: share of null studies where every one of the m intervals covers the
  true difference, for compare()'s default simultaneous intervals (Bonferroni, each at
  1 - alpha/m; must be >= 1 - alpha) and for unadjusted 95% intervals.

    python benchmarks/sim_compare.py [--studies 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from stemlab.report.stats import holm, paired_t, welch_t

GROUPS = 7
ALPHA = 0.05
EFFECTS = (1.0, 2.0, 3.0, 5.0, 8.0)


def simulate(
    rng: np.random.Generator, studies: int, n: int, design: str, shift: float
) -> np.ndarray:
    """(studies, GROUPS, n) values; the last group is shifted by ``shift`` (in value sds)."""
    noise = rng.standard_normal((studies, GROUPS, n))
    if design == "paired":
        seed_effect = rng.standard_normal((studies, 1, n))
    else:
        seed_effect = rng.standard_normal((studies, GROUPS, n))
    values = seed_effect + noise
    values[:, -1] += shift * np.sqrt(2.0)
    return values


def p_values(values: np.ndarray, pairs: list[tuple[int, int]], design: str) -> np.ndarray:
    a = values[:, [i for i, _ in pairs]]
    b = values[:, [j for _, j in pairs]]
    test = paired_t if design == "paired" else welch_t
    return test(a, b)["p"]


def joint_coverage(
    values: np.ndarray, pairs: list[tuple[int, int]], design: str, confidence: float
) -> float:
    """Share of studies whose every interval covers the true difference (0 under the null)."""
    a = values[:, [i for i, _ in pairs]]
    b = values[:, [j for _, j in pairs]]
    result = (paired_t if design == "paired" else welch_t)(a, b, confidence=confidence)
    return float(((result["ci_low"] <= 0) & (result["ci_high"] >= 0)).all(axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    modes = {
        "all pairs": list(itertools.combinations(range(GROUPS), 2)),
        "baseline": [(0, j) for j in range(1, GROUPS)],
    }
    start = time.perf_counter()
    header = ["design", "n", "mode", "fwer", "fpr_raw", "fpr_holm", "cover_sim", "cover_unadj"]
    header += [f"power_raw@{e:g}sd" for e in EFFECTS] + [f"power_holm@{e:g}sd" for e in EFFECTS]
    print(" | ".join(header))
    for design, n, (mode, pairs) in itertools.product(
        ("paired", "welch"), (2, 3, 5), modes.items()
    ):
        null_values = simulate(rng, args.studies, n, design, 0.0)
        null = p_values(null_values, pairs, design)
        adjusted = holm(null)
        row = [
            design,
            str(n),
            mode,
            f"{(adjusted < ALPHA).any(axis=1).mean():.4f}",
            f"{(null < ALPHA).mean():.4f}",
            f"{(adjusted < ALPHA).mean():.4f}",
            f"{joint_coverage(null_values, pairs, design, 1 - ALPHA / len(pairs)):.4f}",
            f"{joint_coverage(null_values, pairs, design, 1 - ALPHA):.4f}",
        ]
        target = pairs.index((0, GROUPS - 1))
        raw_power, holm_power = [], []
        for effect in EFFECTS:
            p = p_values(simulate(rng, args.studies, n, design, effect), pairs, design)
            raw_power.append(f"{(p[:, target] < ALPHA).mean():.3f}")
            holm_power.append(f"{(holm(p)[:, target] < ALPHA).mean():.3f}")
        print(" | ".join(row + raw_power + holm_power))
    mc = 2 * np.sqrt(ALPHA * (1 - ALPHA) / args.studies)
    print(
        f"\n{args.studies} studies per line, {GROUPS} groups, alpha={ALPHA}; Monte-Carlo "
        f"+-2se at alpha: {mc:.4f}; {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
