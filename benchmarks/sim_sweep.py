"""False-positive rates of the sweep comparison (sign-flip test over paired samples) by simulation.

A simulated sweep has 7 arms (stems) evaluated on the same n hyperparameter samples, so arms pair
per sample. Under the null the arms are exchangeable: each sample has a quality shared by every
arm (left-skewed, Beta(5, 1.5) between chance 0.1 and 1), each arm adds its own noise (sd 0.05),
and the accuracy is counted on 100 test clips (discrete: tied differences). A share of the
samples diverge (every arm exactly at chance: zero differences). The values are bounded in
[0, 1]. For power, the last arm gains 3 or 8 points on every sample that did not diverge.

Reported per n, diverged share and family (all 21 pairs, or baseline vs the 6 others), for the
sign-flip test compare(test="sign_flip") uses and, beside it, the paired t-test on the same data:
  fwer: share of null studies with at least one Holm-significant comparison (must be <= alpha);
  fpr_raw: share of null comparisons with raw p < alpha;
  power@k: share of studies where baseline vs the shifted arm is Holm-significant.

    python benchmarks/sim_sweep.py [--studies 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from stemlab.report.stats import holm, paired_t, sign_flip

ARMS, CLIPS, CHANCE, ALPHA = 7, 100, 0.1, 0.05
SHIFTS = (0.03, 0.08)


def simulate(
    rng: np.random.Generator, studies: int, samples: int, diverged: float, shift: float
) -> np.ndarray:
    """(studies, ARMS, samples) accuracies; the last arm gains ``shift`` where not diverged."""
    quality = CHANCE + (1 - CHANCE) * rng.beta(5.0, 1.5, (studies, 1, samples))
    arm = quality + rng.normal(0, 0.05, (studies, ARMS, samples))
    arm[:, -1] += shift
    values = rng.binomial(CLIPS, np.clip(arm, 0, 1)) / CLIPS
    lost = rng.random((studies, 1, samples)) < diverged
    return np.where(lost, CHANCE, values)


def p_values(values: np.ndarray, pairs: list[tuple[int, int]], test: str) -> np.ndarray:
    a = values[:, [i for i, _ in pairs]]
    b = values[:, [j for _, j in pairs]]
    p = sign_flip(a, b, interval=False)["p"] if test == "sign-flip" else paired_t(a, b)["p"]
    return np.where(np.isnan(p), 1.0, p)  # no spread: no test, never significant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    modes = {
        "all pairs": list(itertools.combinations(range(ARMS), 2)),
        "baseline": [(0, j) for j in range(1, ARMS)],
    }
    start = time.perf_counter()
    header = ["n", "diverged", "mode", "test", "fwer", "fpr_raw"]
    header += [f"power@{100 * s:g}pt" for s in SHIFTS]
    print(" | ".join(header))
    for n, diverged, (mode, pairs) in itertools.product(
        (8, 16, 32, 64), (0.0, 1 / 3), modes.items()
    ):
        null = simulate(rng, args.studies, n, diverged, 0.0)
        shifted = [simulate(rng, args.studies, n, diverged, s) for s in SHIFTS]
        target = pairs.index((0, ARMS - 1))
        for test in ("sign-flip", "paired t"):
            p = p_values(null, pairs, test)
            row = [str(n), f"{diverged:.2f}", mode, test]
            row += [f"{(holm(p) < ALPHA).any(axis=1).mean():.4f}", f"{(p < ALPHA).mean():.4f}"]
            for values in shifted:
                adjusted = holm(p_values(values, pairs, test))
                row.append(f"{(adjusted[:, target] < ALPHA).mean():.3f}")
            print(" | ".join(row), flush=True)
    mc = 2 * np.sqrt(ALPHA * (1 - ALPHA) / args.studies)
    print(
        f"\n{args.studies} studies per line, {ARMS} arms, alpha={ALPHA}; Monte-Carlo +-2se at "
        f"alpha: {mc:.4f}; {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
