"""What a run writes for people: progress bar, ``metrics.jsonl``, TensorBoard, the config.

Only rank 0 writes. ``metrics.jsonl`` holds one JSON object per line: ``{"event": "step", ...}``
every ``log_every`` steps (loss, lr, img_per_s, data_wait, task metrics, probe metrics) and
``{"event": "epoch", ...}`` at each epoch end; lines are appended and flushed, so a crashed run
keeps what it logged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RunLogger", "write_config"]
from sslpipe.atomic import atomic_write_text


def write_config(run_dir: str | os.PathLike[str], config: dict[str, Any]) -> None:
    """Write the resolved config as ``config.json`` and ``config.yaml`` (atomically)."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("config.json", json.dumps(config, indent=2, sort_keys=True)),
                       ("config.yaml", yaml.safe_dump(config, sort_keys=True))):
        atomic_write_text(folder / name, text + "\n")


class RunLogger:
    """JSONL + tqdm + optional TensorBoard; only the rank-0 process has ``enabled=True``."""

    def __init__(self, run_dir: str | os.PathLike[str], total_steps: int, initial_step: int,
                 enabled: bool, progress: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.writer: Any = None
        self.file: Any = None
        if not enabled:
            return
        self.file = open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=initial_step, unit="step",
                            dynamic_ncols=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional: tensorboard is not a dependency
                pass
            else:
                # a resumed run drops the events of the steps it logs again
                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"),
                                            purge_step=initial_step + 1 if initial_step else None)

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` (must hold ``event`` and ``step``) to metrics.jsonl / TensorBoard."""
        if not self.enabled:
            return
        self.file.write(json.dumps(record, sort_keys=True) + "\n")
        self.file.flush()
        if self.writer is not None:
            prefix = "train" if record["event"] == "step" else record["event"]
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def advance(self, steps: int, postfix: dict[str, float] | None = None) -> None:
        """Move the bar by ``steps``; with ``postfix`` (loss, lr, img/s, data-wait share, read
        at log steps) show it too."""
        if self.bar is not None:
            if postfix is not None:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self.bar.update(steps)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.file is not None:
            self.file.close()


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 step"``, ``"3 steps"`` (``many``: the plural when it is not ``word + "s"``)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"
