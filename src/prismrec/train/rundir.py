"""Run directories: a new run starts in an empty folder, a resumed one only with the settings of
its checkpoint (or the changes it names), an overwritten one without the old run's files (issue 22).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Iterable

from prismrec.bundle import BUNDLE_FILES, CHECKPOINT_FILE, MANIFEST, STAGE_PREFIX, clean_stale
from prismrec.errors import ConfigError, PrismrecError
from prismrec.train.checkpoint import check_resume_config

log = logging.getLogger("prismrec")
LOG_FILE = "log.jsonl"
# what prismrec writes into a run directory (train, report): what --overwrite removes
TRAIN_LOG = "train.log"  # cli.run_log's human-readable journal, appended by each invocation
RUN_FILES = (*BUNDLE_FILES, MANIFEST, CHECKPOINT_FILE, LOG_FILE, "report.html", TRAIN_LOG)


def prepare_run_dir(run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
                    run_config: dict | None = None, allow_config_change: Iterable[str] = (),
                    is_main: bool = True) -> list[str]:
    """Check (and with ``overwrite``, clear) ``run_dir`` before a run writes into it.

    Args:
        run_dir: the run directory.
        resume: continue the run there; its checkpoint's settings must equal ``run_config``
            except for the keys in ``allow_config_change``.
        overwrite: delete the files an earlier run wrote there (:data:`RUN_FILES`; others are kept).
        run_config: this run's settings (see :func:`prismrec.train.checkpoint.config_differences`);
            ``None`` skips the comparison on resume (for a caller that checks the folder early).
        allow_config_change: config keys a resume may change.
        is_main: whether this process writes (rank 0); other ranks only check.

    Returns:
        The config keys that change on resume.

    Raises:
        PrismrecError: a non-empty folder without ``resume``/``overwrite``, or a file where the
            folder should be; ``CheckpointError`` for a checkpoint of another run or settings.
        ConfigError: ``resume`` with ``overwrite``, or ``allow_config_change`` without ``resume``.
    """
    path = Path(run_dir)
    allow = [k.strip() for k in allow_config_change if k.strip()]
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the folder and --overwrite replaces it: choose one")
    if allow and not resume:
        raise ConfigError("--allow-config-change applies to --resume only")
    if path.exists() and not path.is_dir():
        raise PrismrecError(f"{path}: exists and is not a folder; choose another --out")
    if is_main and path.is_dir():
        clean_stale(path)  # staging folders and temporary files of killed writers
    if resume:
        return [] if run_config is None else check_resume_config(path / CHECKPOINT_FILE, run_config, allow)
    if not path.is_dir():
        return []
    # the CLI's journal alone does not make a run: the CLI clears the folder, then opens it, then fits
    entries = sorted(e.name for e in path.iterdir() if not e.name.startswith(STAGE_PREFIX) and e.name != TRAIN_LOG)
    if not entries:
        return []
    if not overwrite:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise PrismrecError(f"{path} is not empty (it holds {shown}): a new run needs an empty folder. Continue "
                            "the run there with --resume, replace it with --overwrite (Python: resume=True / "
                            "overwrite=True), or choose another --out")
    if is_main:
        removed = []
        for name in RUN_FILES:
            f = path / name
            if f.is_file() or f.is_symlink():
                f.unlink()
                removed.append(name)
        for stage in path.glob(STAGE_PREFIX + "*"):
            shutil.rmtree(stage, ignore_errors=True)
        kept = [n for n in entries if n not in removed]
        log.info("--overwrite: removed %s from %s%s", ", ".join(removed) or "nothing", path,
                 f" (kept {', '.join(kept[:4])})" if kept else "")
    return []
