"""Pretext-task comparison studies: one ``STUDY.toml`` -> every training run, every
evaluation and the report (``sslpipe study``)."""

from sslpipe.study.backend import Backend, SslpipeBackend
from sslpipe.study.cost import estimate, format_dry_run
from sslpipe.study.grid import EvalCell, Grid, TrainCell, build_grid, cell_hash
from sslpipe.study.runner import StudyResult, run_study
from sslpipe.study.spec import Downstream, Evaluation, Pretrain, Study, load_study, parse_study

__all__ = [
    "Backend", "Downstream", "EvalCell", "Evaluation", "Grid", "Pretrain", "SslpipeBackend",
    "Study", "StudyResult", "TrainCell", "build_grid", "cell_hash", "estimate",
    "format_dry_run", "load_study", "parse_study", "run_study",
]
