"""Frozen-feature evaluation: per-layer linear probes, kNN, fine-tuning, baselines, reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sslpipe._lazy import lazy_names

if TYPE_CHECKING:
    from sslpipe.eval.baselines import CheckpointInfo, build_backbone, resolve_checkpoint
    from sslpipe.eval.features import Features, extract_features, layer_names, parse_layers
    from sslpipe.eval.fewlabels import TrainLabels
    from sslpipe.eval.finetune import FinetuneOptions, finetune
    from sslpipe.eval.intervals import Interval, clear_difference, interval, summarize_runs
    from sslpipe.eval.knn import knn_accuracy, knn_scores
    from sslpipe.eval.labels import LabelBudget, LabeledSplit, label_subset, parse_budget
    from sslpipe.eval.linear import LinearOptions, topk_accuracy, train_linear
    from sslpipe.eval.probes import knn_on_features, knn_probe, linear_on_features, linear_probe
    from sslpipe.eval.report import write_report, write_tables
    from sslpipe.eval.results import load_results, make_record, write_result
    from sslpipe.eval.transform import EvalCollator, TrainCollator

__all__ = [
    "CheckpointInfo", "EvalCollator", "Features", "FinetuneOptions", "Interval", "LabelBudget",
    "LabeledSplit", "LinearOptions", "TrainCollator", "TrainLabels", "build_backbone",
    "clear_difference", "extract_features", "finetune", "interval", "knn_accuracy",
    "knn_on_features", "knn_probe", "knn_scores", "label_subset", "layer_names",
    "linear_on_features", "linear_probe", "load_results", "make_record", "parse_budget",
    "parse_layers", "resolve_checkpoint", "summarize_runs", "topk_accuracy", "train_linear",
    "write_report", "write_result", "write_tables",
]

__getattr__, __dir__ = lazy_names(__name__, {
    "CheckpointInfo": "sslpipe.eval.baselines",
    "EvalCollator": "sslpipe.eval.transform",
    "Features": "sslpipe.eval.features",
    "FinetuneOptions": "sslpipe.eval.finetune",
    "Interval": "sslpipe.eval.intervals",
    "LabelBudget": "sslpipe.eval.labels",
    "LabeledSplit": "sslpipe.eval.labels",
    "TrainLabels": "sslpipe.eval.fewlabels",
    "clear_difference": "sslpipe.eval.intervals",
    "interval": "sslpipe.eval.intervals",
    "knn_on_features": "sslpipe.eval.probes",
    "label_subset": "sslpipe.eval.labels",
    "linear_on_features": "sslpipe.eval.probes",
    "parse_budget": "sslpipe.eval.labels",
    "summarize_runs": "sslpipe.eval.intervals",
    "LinearOptions": "sslpipe.eval.linear",
    "TrainCollator": "sslpipe.eval.transform",
    "build_backbone": "sslpipe.eval.baselines",
    "extract_features": "sslpipe.eval.features",
    "finetune": "sslpipe.eval.finetune",
    "knn_accuracy": "sslpipe.eval.knn",
    "knn_probe": "sslpipe.eval.probes",
    "knn_scores": "sslpipe.eval.knn",
    "layer_names": "sslpipe.eval.features",
    "linear_probe": "sslpipe.eval.probes",
    "load_results": "sslpipe.eval.results",
    "make_record": "sslpipe.eval.results",
    "parse_layers": "sslpipe.eval.features",
    "resolve_checkpoint": "sslpipe.eval.baselines",
    "topk_accuracy": "sslpipe.eval.linear",
    "train_linear": "sslpipe.eval.linear",
    "write_report": "sslpipe.eval.report",
    "write_result": "sslpipe.eval.results",
    "write_tables": "sslpipe.eval.report",
})
