"""``prismrec extract``: modality features from an items table of texts, images and audio files."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import typer

log = logging.getLogger("prismrec")


def _csv(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def register(app: typer.Typer) -> None:
    """Add the ``extract`` command to the prismrec CLI."""

    @app.command()
    def extract(
        items: Optional[Path] = typer.Option(None, "--items", help="items table (.csv/.tsv/.parquet): id + "
                                             "title/description, image path, audio path columns"),
        data: Optional[str] = typer.Option(None, "--data", help="instead of --items: a dataset with item text "
                                           "(RecBole .text/.item, MovieLens u.item); OUT is then a dataset folder "
                                           "(interactions + text_feat.npy) ready for `prismrec train --data OUT`"),
        min_rating: Optional[float] = typer.Option(None, "--min-rating", help="with --data: keep only ratings >= "
                                                   "this as positives (MovieLens, RecBole with a rating field)"),
        out: Path = typer.Option(..., "--out", help="output folder: <modality>_feat.npy, items.json, extract_report.json"),
        modalities: Optional[str] = typer.Option(None, "--modalities", help="comma list of text,image,audio "
                                                 "(default: those with a column)"),
        workers: int = typer.Option(1, "--workers", help="local processes encoding in parallel"),
        batch_size: int = typer.Option(64, "--batch-size", help="items per encoder call (and per forward pass)"),
        text_encoder: str = typer.Option("auto", "--text-encoder", help="minilm | hashing | sentence-transformer | "
                                         "auto (minilm if installed, else hashing)"),
        image_encoder: str = typer.Option("auto", "--image-encoder", help="efficientnet-lite0 | colorstats | "
                                          "torch-image | auto (efficientnet-lite0 if installed, else colorstats)"),
        audio_encoder: str = typer.Option("auto", "--audio-encoder", help="logmel | torch-audio | auto (logmel)"),
        text_model: Optional[Path] = typer.Option(None, "--text-model", help="local sentence-transformers folder "
                                                  "(implies --text-encoder sentence-transformer)"),
        image_weights: Optional[Path] = typer.Option(None, "--image-weights", help="image CNN/ViT weights "
                                                     "(.safetensors or .pt state dict; implies torch-image)"),
        image_arch: str = typer.Option("efficientnet_lite0", "--image-arch", help="architecture of --image-weights: "
                                       "efficientnet_lite0, a timm/torchvision name, or module:factory"),
        audio_model: Optional[Path] = typer.Option(None, "--audio-model", help="pretrained audio network weights "
                                                   "(implies torch-audio; needs --audio-arch)"),
        audio_arch: Optional[str] = typer.Option(None, "--audio-arch", help="module:factory of --audio-model"),
        audio_input: str = typer.Option("logmel", "--audio-input", help="what --audio-model takes: logmel | waveform"),
        id_col: Optional[str] = typer.Option(None, "--id-col", help="item id column (default item/item_id/id)"),
        text_cols: Optional[str] = typer.Option(None, "--text-cols", help="comma list of text columns "
                                                "(default title,description,text)"),
        image_col: Optional[str] = typer.Option(None, "--image-col", help="image (or video key-frame) path column"),
        audio_col: Optional[str] = typer.Option(None, "--audio-col", help="audio (or video sound track) path column"),
        cache: Optional[Path] = typer.Option(None, "--cache", help="content-hash cache folder (default OUT/cache)"),
        no_cache: bool = typer.Option(False, "--no-cache", help="use a temporary cache, removed at the end"),
        fill: str = typer.Option("mean", "--fill", help="feature row of skipped items: mean | zeros"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or progress messages (warnings, "
                                   "errors and the final summary still print)"),
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ):
        """Extract modality features (offline): from an items table of raw media (--items), or from a
        dataset's own item text (--data).

        With --items, OUT holds the features and items.json; add an interactions.csv (user, item
        [, timestamp | split]) beside them for `prismrec train --data OUT`. With --data, OUT is a complete
        dataset folder (interactions.csv, items.csv, text_feat.npy): `prismrec train --data OUT` runs as is.
        Skipped items (missing or unreadable files, empty text) are listed in OUT/extract_report.json and
        get the mean feature row of their modality. Under `torchrun`, each rank encodes a shard into the
        (shared) cache and rank 0 writes the outputs.
        """
        from prismrec.cli import _setup_logging, fail, run_guarded
        from prismrec.features.pipeline import extract as run_extract, extract_distributed

        _setup_logging(verbose)
        if quiet and not verbose:
            logging.getLogger("prismrec").setLevel(logging.WARNING)
        if fill not in ("mean", "zeros"):
            fail(f"--fill must be mean or zeros, got {fill!r}")
        if workers < 1 or batch_size < 1:
            fail(f"--workers and --batch-size must be >= 1, got {workers} and {batch_size}")
        if (items is None) == (data is None):
            fail("give either --items TABLE (raw media/text per item) or --data DATASET (its own item text)")
        if min_rating is not None and data is None:
            fail("--min-rating goes with --data")
        encoders = {"text": text_encoder, "image": image_encoder, "audio": audio_encoder}
        options: dict[str, dict] = {}
        if text_model is not None:
            encoders["text"], options["text"] = "sentence-transformer", {"model": text_model}
        if image_weights is not None:
            encoders["image"], options["image"] = "torch-image", {"arch": image_arch, "weights": image_weights}
        if audio_model is not None:
            if audio_arch is None:
                fail("--audio-model needs --audio-arch module:factory (the network the weights belong to)")
            encoders["audio"], options["audio"] = "torch-audio", {"arch": audio_arch, "weights": audio_model,
                                                                  "input": audio_input}
        kwargs = dict(modalities=_csv(modalities), encoders=encoders, encoder_options=options, cache_dir=cache,
                      use_cache=not no_cache, batch_size=batch_size, workers=workers, fill=fill, id_col=id_col,
                      text_cols=_csv(text_cols), image_col=image_col, audio_col=audio_col, show_progress=not quiet)
        if data is not None:
            from prismrec.features.from_dataset import extract_dataset
            for k in ("modalities", "id_col", "image_col", "audio_col", "text_cols"):
                kwargs.pop(k)
            load = {"min_rating": min_rating} if min_rating is not None else None
            result = run_guarded(extract_dataset, data, out, text_cols=_csv(text_cols), load_options=load, **kwargs)
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            kwargs.pop("use_cache")
            result = run_guarded(extract_distributed, items, out, **kwargs)
        else:
            result = run_guarded(run_extract, items, out, **kwargs)
        if result is not None:
            typer.echo(result.summary())
            if any(r.file is None for r in result.modalities.values()):
                raise typer.Exit(1)

    @app.command("encoders")
    def encoders_cmd():
        """List the feature encoders of `prismrec extract`, and which can run here."""
        from prismrec.features.encoders import AUTO, registered_encoders
        for name, cls in registered_encoders().items():
            missing = cls.missing_requirements()
            state = f"needs {', '.join(missing)}" if missing else "ready"
            auto = " (auto)" if name in AUTO[cls.modality] else ""
            typer.echo(f"{name:<21} {cls.modality:<6} {state:<34} {cls.description}{auto}")
