#!/usr/bin/env python3
"""schemathesis over the whole serving API with at least 200 examples per operation and generation
mode (valid and invalid data): count the answers by status, and check 0 5xx and every default
conformance check (issue 22).

    python benchmarks/serve_fuzz.py --examples 200     # -> benchmarks/results/serve_fuzz.json

The bundle is the serving tests' one (VBPR on 300 users x 120 items, image 24-d + text 16-d).
The cases run through ``fuzz`` of ``tests/serve/test_serve_fuzz.py`` (its slow test is the same
run without the JSON).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _results import write_json  # noqa: E402  (puts src/ on the path)

RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "fuzz-admin-token"


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=200, help="examples per operation and generation mode")
    ap.add_argument("--out", default=str(RESULTS / "serve_fuzz.json"))
    args = ap.parse_args(argv)
    import schemathesis
    import torch
    torch.set_num_threads(1)
    from prismrec import Recommender, make_synthetic
    from prismrec.serve.settings import ServeSettings
    from prismrec.serve.state import ServingState
    from tests.serve.test_serve_fuzz import fuzz
    ds = make_synthetic(300, 120, 10, modalities={"image": 24, "text": 16}, seed=1, name="serve-tiny")
    bundle = Path(tempfile.mkdtemp(prefix="prismrec-fuzz-")) / "vbpr"
    Recommender("vbpr", epochs=20, patience=100).fit(ds, run_dir=bundle, show_progress=False)
    state = ServingState.load(ServeSettings(bundle=bundle))
    load_start, t0 = os.getloadavg(), time.perf_counter()
    report = fuzz(state, TOKEN, max_examples=args.examples)  # raises on the first failing check
    seconds = time.perf_counter() - t0
    server_errors = sum(n for op in report.values() for m in op.values() for c, n in m["statuses"].items() if c >= 500)
    out = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
           "schemathesis": schemathesis.__version__, "max_examples_per_mode": args.examples,
           "operations": len(report), "server_errors": server_errors, "failed_checks": 0,
           "min_examples_per_operation": min(sum(m["examples"] for m in op.values()) for op in report.values()),
           "total_examples": sum(m["examples"] for op in report.values() for m in op.values()),
           "seconds": round(seconds, 1), "load_avg": {"start": [round(x, 2) for x in load_start],
                                                      "end": [round(x, 2) for x in os.getloadavg()]},
           "checks": "schemathesis' default checks (not_a_server_error, status/content-type/headers/response "
                     "schema conformance, positive_data_acceptance, negative_data_rejection, ...)",
           "note": "GET /health and GET /metrics take no parameters: one distinct request exists, so hypothesis "
                   "sends it once (and there is no invalid one); every other operation got the full count",
           "operations_detail": report}
    dest = Path(args.out)
    write_json(dest, out)
    print({k: out[k] for k in ("operations", "server_errors", "min_examples_per_operation", "total_examples")},
          f"\nwrote {dest}")
    return dest


if __name__ == "__main__":
    main()
