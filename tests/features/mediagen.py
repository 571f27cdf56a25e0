"""Generated media for the feature-extraction tests (a plain module: tests import it by name).

Items fall into four categories; each category has its own colour and shape (PIL images), words
(texts) and tone (numpy sine clips), so that content features separate the categories.
"""
from __future__ import annotations

import csv

import numpy as np
import scipy.io.wavfile
from PIL import Image, ImageDraw

CATEGORIES = [  # colour, words, tone Hz
    ((220, 40, 40), "red cotton stroller blanket", 220.0),
    ((40, 160, 60), "green wooden teether toy", 440.0),
    ((40, 70, 210), "blue plastic bath tub", 880.0),
    ((230, 200, 40), "yellow soft plush bear", 1320.0),
]


def category(i: int) -> int:
    return i % len(CATEGORIES)


def make_media(folder, ids, *, seed: int = 0, size: int = 48, seconds: float = 0.25, sr: int = 8000):
    """Write one image (PNG/JPEG alternating), one WAV clip and a title per item; returns table rows."""
    rng = np.random.default_rng(seed)
    (folder / "media").mkdir(parents=True, exist_ok=True)
    rows = []
    for n, i in enumerate(ids):
        c = category(n)
        colour, words, hz = CATEGORIES[c]
        bg = tuple(int(v) for v in rng.integers(200, 256, 3))
        img = Image.new("RGB", (size, size), bg)
        draw = ImageDraw.Draw(img)
        jitter = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in colour)
        box = [size // 6, size // 6, size - size // 6, size - size // 6]
        (draw.ellipse if c % 2 else draw.rectangle)(box, fill=jitter)
        name = f"media/{i}.{'jpg' if n % 2 else 'png'}"
        img.save(folder / name)
        t = np.arange(int(seconds * sr)) / sr
        clip = 0.4 * np.sin(2 * np.pi * hz * (1 + 0.02 * rng.standard_normal()) * t) + 0.01 * rng.standard_normal(t.size)
        scipy.io.wavfile.write(folder / f"media/{i}.wav", sr, (clip * 32767).astype(np.int16))
        rows.append({"item": str(i), "title": f"{words} {rng.integers(100)}", "description": f"item {i}",
                     "image": name, "audio": f"media/{i}.wav"})
    return rows


def write_table(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path
