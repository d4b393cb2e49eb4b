"""Frozen-feature evaluation: per-layer linear probes, kNN, fine-tuning, baselines, reports."""

from sslpipe.eval.baselines import CheckpointInfo, build_backbone, resolve_checkpoint
from sslpipe.eval.features import Features, extract_features, layer_names, parse_layers
from sslpipe.eval.finetune import FinetuneOptions, finetune
from sslpipe.eval.knn import knn_accuracy, knn_scores
from sslpipe.eval.linear import LinearOptions, topk_accuracy, train_linear
from sslpipe.eval.probes import knn_probe, linear_probe
from sslpipe.eval.report import write_report, write_tables
from sslpipe.eval.results import load_results, make_record, write_result
from sslpipe.eval.transform import EvalCollator, TrainCollator

__all__ = [
    "CheckpointInfo", "EvalCollator", "Features", "FinetuneOptions", "LinearOptions",
    "TrainCollator", "build_backbone", "extract_features", "finetune", "knn_accuracy",
    "knn_probe", "knn_scores", "layer_names", "linear_probe", "load_results", "make_record",
    "parse_layers", "resolve_checkpoint", "topk_accuracy", "train_linear", "write_report",
    "write_result", "write_tables",
]
