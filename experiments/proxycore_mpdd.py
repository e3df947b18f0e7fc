"""ProxyCore on MPDD: the official repository's logged results (means only; shared/specs/proxycore.md
§10) next to jad's run.

    python experiments/proxycore_mpdd.py --data_root=/path/to/mpdd \
        --weights=weights/wrn50_v1 --workdir=runs/experiments/proxycore_mpdd
    python experiments/proxycore_mpdd.py --synthetic      # smoke run on generated data, NOT comparable

Writes <workdir>/results.md and results.json; the jad run itself lives in <workdir>/run/ (rerun
the same command to resume or restore). Any ``--config.a.b=value`` override of jad.train works.
"""

import proxycore_logs
from common import main

TABLE = proxycore_logs.table("mpdd")

if __name__ == "__main__":
    raise SystemExit(main(TABLE))
