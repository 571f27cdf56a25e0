"""Time ``Recommender.recommend(every user, k=50)`` on a bundle: seconds, peak RSS, load average.

    python benchmarks/recommend_all.py runs/vbpr [out.npy]     # THREADS=1 by default

Run it once per bundle in a fresh process (the peak RSS is the process's).
"""
import json
import os
import resource
import sys
import time

import numpy as np
import torch

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
from prismrec import Recommender  # noqa: E402

path = sys.argv[1]
rec = Recommender.load(path)
users = rec.dataset.user_ids
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
ids, scores = rec.recommend(users, k=50)
dt = time.perf_counter() - t0
print(json.dumps({"bundle": path, "users": len(users), "k": 50, "seconds": round(dt, 3),
                  "peak_rss_mb_after_load": round(rss0),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "loadavg": [round(x, 2) for x in os.getloadavg()], "threads": torch.get_num_threads()}))
if len(sys.argv) > 2:
    np.save(sys.argv[2], ids)
