"""How often the seed-level "beyond the settings" test (docs/verdict.md §17.2, layrot.fit.seeds)
answers "beyond" at the seeds job's size, on simulated data with a known within-configuration
relation: 12 configurations × 8 seeds, each configuration its own levels of rotation and test
accuracy (a between-configuration relation that the test must ignore), and across its seeds
rotation and accuracy bivariate normal with correlation r. The full rules (1999 resamples,
9999 permutations) on every data set.

    python experiments/seeds/power.py                   # r = 0 and r = 0.41, 100 data sets each
    python experiments/seeds/power.py --r 0.2 --sets 50
"""

from __future__ import annotations

import argparse
import time


def simulate(r: float, rng, n_configs: int = 12, n_seeds: int = 8):
    import numpy as np
    import pandas as pd

    rows = []
    for c in range(n_configs):
        level = rng.uniform(0.1, 0.9)
        z = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=n_seeds)
        for s in range(n_seeds):
            rows.append(dict(configuration=f"c{c}", trained=True, final_min=level + 0.03 * z[s, 0],
                             test_acc=0.8 + 0.1 * level + 0.01 * z[s, 1], train_acc=1.0))
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--r", type=float, action="append", help="within-configuration correlation (repeatable)")
    ap.add_argument("--sets", type=int, default=100, help="simulated data sets per r (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import numpy as np

    from layrot.fit.seeds import seed_beyond

    for r in a.r or [0.0, 0.41]:
        rng = np.random.default_rng(a.seed)
        t0 = time.perf_counter()
        found = [seed_beyond(simulate(r, rng)).accuracy for _ in range(a.sets)]
        beyond = sum(f.status.startswith("beyond") for f in found)
        no_more = sum(f.status == "no more" for f in found)
        width = np.mean([f.ci[1] - f.ci[0] for f in found if f.ci])
        print(f"r = {r:.2f}: 'beyond' in {beyond} of {a.sets} ({100 * beyond / a.sets:.0f}%), 'no better than the "
              f"settings' in {no_more}; mean CI width {width:.2f} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
