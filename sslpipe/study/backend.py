"""Who does a cell's work: :class:`Backend` (the interface) and :class:`SslpipeBackend`.

:class:`SslpipeBackend` runs training through :func:`sslpipe.train.train` (what ``sslpipe
train`` runs) and evaluation through the ``sslpipe eval`` click commands themselves, called
in-process, so a study cell and a hand-typed command give the same result file. Tests inject
a backend of their own to check the runner without training anything.
"""

from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING, Any, Protocol

from sslpipe.study.spec import resolve_data

if TYPE_CHECKING:
    from sslpipe.study.grid import EvalCell, Grid, TrainCell
    from sslpipe.study.spec import Study


class Backend(Protocol):
    """The three kinds of work a study needs. Exceptions mark the cell as failed."""

    def train(self, cell: TrainCell, run_dir: str, resume: bool) -> dict[str, Any]:
        """Pretrain ``cell`` into ``run_dir`` (continue its checkpoint when ``resume``).

        Returns a JSON-able summary; ``img_per_s`` in it feeds ``--dry-run`` estimates.
        """
        ...

    def evaluate(self, cell: EvalCell, checkpoint: str, out_dir: str) -> dict[str, Any]:
        """Evaluate ``checkpoint`` (``random``, ``RUN_DIR`` or ``supervised:RUN_DIR``) and
        write the result file into ``out_dir``; returns ``{"path": file relative to out_dir,
        ...}``."""
        ...

    def report(self, study: Study, grid: Grid, records: dict[str, dict[str, Any]],
               out_dir: str) -> dict[str, str]:
        """Write the study's report from the cell ``records`` (id -> record)."""
        ...


class SslpipeBackend:
    """sslpipe's own training, evaluation and report code."""

    def train(self, cell: TrainCell, run_dir: str, resume: bool) -> dict[str, Any]:
        """``sslpipe train`` in-process: :func:`sslpipe.train.train` on the cell's config."""
        from sslpipe.train import TrainConfig, train

        values = {**cell.config, "data": resolve_data(cell.config["data"]), "out": run_dir,
                  "resume": resume}
        result = train(TrainConfig().replace(**values))
        return {"run_dir": os.path.relpath(result.run_dir, os.path.dirname(run_dir)),
                "backbone": os.path.relpath(result.backbone, os.path.dirname(run_dir)),
                "steps": result.steps, "metrics": result.metrics,
                "img_per_s": result.metrics.get("img_per_s") or logged_img_per_s(run_dir)}

    def evaluate(self, cell: EvalCell, checkpoint: str, out_dir: str) -> dict[str, Any]:
        """``sslpipe eval KIND --checkpoint ... --out out_dir``, called in-process."""
        from sslpipe.eval.cli import eval_group

        args = eval_args(cell, checkpoint, out_dir)
        # one feature cache for the study: a checkpoint's test features serve every budget
        root = out_dir[:-len(cell.id)] if out_dir.endswith(cell.id) else out_dir
        args += ["--cache", os.path.join(root, "features")] if cell.evaluation.kind != \
            "finetune" else []
        eval_group.main(args, prog_name="sslpipe eval", standalone_mode=False)
        found = sorted(glob.glob(os.path.join(out_dir, "eval_*.json")))
        if len(found) != 1:
            raise RuntimeError(f"sslpipe eval {cell.evaluation.kind} should write one eval_*.json "
                               f"into {out_dir!r}. Found {len(found)}")
        import json

        with open(found[0], encoding="utf-8") as f:
            record = json.load(f)
        return {"path": os.path.basename(found[0]), "command": ["sslpipe", "eval", *args],
                "results": record.get("results", {})}

    def report(self, study: Study, grid: Grid, records: dict[str, dict[str, Any]],
               out_dir: str) -> dict[str, str]:
        """Tables and charts of ``sslpipe report`` plus the study's own sections."""
        from sslpipe.study.report import write_study_report

        return write_study_report(study, grid, records, out_dir)


def logged_img_per_s(run_dir: str) -> float | None:
    """The last ``img_per_s`` in a run's ``metrics.jsonl`` (None when it logged none: a run
    shorter than ``log_every`` steps that stopped before an epoch ended)."""
    import json

    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    found = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                value = json.loads(line).get("img_per_s")
            except (json.JSONDecodeError, AttributeError):
                continue  # a line torn by a crash
            found = value if isinstance(value, (int, float)) else found
    return found


def eval_args(cell: EvalCell, checkpoint: str, out_dir: str) -> list[str]:
    """The ``sslpipe eval`` arguments of an evaluation cell (its options as flags)."""
    kind, options = cell.evaluation.kind, dict(cell.evaluation.options)
    args = [kind, "--checkpoint", checkpoint, "--arch", cell.arch,
            "--small-input" if cell.small_input else "--standard-input",
            "--train", resolve_data(cell.downstream.train),
            "--test", resolve_data(cell.downstream.test),
            "--seed", str(cell.seed), "--name", cell.label, "--out", out_dir]
    if cell.num_seeds > 1:
        args += ["--seeds", str(cell.num_seeds)]
    if cell.budget is not None:
        from sslpipe.eval.labels import parse_budget

        budget = parse_budget(cell.budget)
        args += (["--labels-per-class", str(budget.per_class)] if budget.per_class else
                 ["--label-fraction", repr(budget.fraction)])
    # the study's names for options whose flag is spelled differently
    if "weight_decays" in options:
        options["wd"] = ",".join(str(v) for v in options.pop("weight_decays"))
    if "weight_decay" in options:
        options["wd"] = options.pop("weight_decay")
    for key, value in options.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args
