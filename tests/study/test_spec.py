import os

import pytest

from sslpipe.study.spec import load_study, parse_study
from tests.study.conftest import study_dict

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


@pytest.mark.parametrize("name", ["fashion_mnist_study.toml", "imagenet_subsets_study.toml"])
def test_example_files_parse(name):
    study = load_study(os.path.join(EXAMPLES, name))
    assert study.tasks and study.pretrain and study.evaluations and study.downstream


def test_parse_keeps_values_and_resolves_relative_paths(tmp_path):
    raw = study_dict(pretrain=[{"name": "30k", "data": "shards/in30k"},
                               {"name": "abs", "data": "/data/in60k"}])
    study = parse_study(raw, base_dir=str(tmp_path))
    assert study.pretrain[0].data == os.path.join(str(tmp_path), "shards", "in30k")
    assert study.pretrain[1].data == "/data/in60k"
    assert study.downstream[0].train == "sample:train"
    assert study.evaluations[0].name == "knn" and study.evaluations[0].options == {"k": 5}
    assert study.baselines == ("random", "supervised")
    # frozen: a study cannot be changed after it was checked
    with pytest.raises(AttributeError):
        study.name = "other"


def test_digest_follows_content():
    a, b = parse_study(study_dict()), parse_study(study_dict())
    assert a.digest() == b.digest()
    c = parse_study(study_dict(train={"epochs": 2}))
    assert c.digest() != a.digest()


@pytest.mark.parametrize("change, words", [
    ({"study": {"name": "x", "archs": ["resnet18"]}}, "[study]: missing key(s) tasks"),
    ({"study": {"name": "x", "archs": ["resnet18"], "tasks": ["rotation"], "colour": 1}},
     "[study]: unknown key(s) colour"),
    ({"study": {"name": "x", "archs": "resnet18", "tasks": ["rotation"]}},
     "study.archs must be a list"),
    ({"study": {"name": "x y", "archs": ["resnet18"], "tasks": ["rotation"]}}, "study.name"),
    ({"study": {"name": "x", "archs": ["resnet18"], "tasks": ["rotation"],
                "baselines": ["imagenet"]}}, "study.baselines: each must be one of"),
    ({"study": {"name": "x", "archs": ["resnet18"], "tasks": ["rotation"], "seed": -1}},
     "study.seed must be an integer >= 0. Got -1"),
    ({"train": {"epochz": 3}}, "[train]: unknown key(s) epochz"),
    ({"train": {"task": "rotation"}}, "train.task is set by the study grid"),
    ({"task_options": {"simclr": {"size": 32}}}, "task_options.simclr: 'simclr' is not in"),
    ({"pretrain": []}, "pretrain must be one or more [[pretrain]] tables"),
    ({"pretrain": [{"name": "a"}]}, "pretrain[0]: missing key(s) data"),
    ({"pretrain": [{"name": "a", "data": "x"}, {"name": "a", "data": "y"}]},
     "[[pretrain]] names must be unique. Got a twice"),
    ({"eval": [{"kind": "svm"}]}, "eval[0].kind must be one of linear, knn, finetune. Got 'svm'"),
    ({"eval": [{"kind": "knn", "freeze": "stage2"}]}, "eval[0]: unknown key(s) freeze"),
    ({"downstream": [{"name": "a", "train": "x"}]}, "downstream[0]: missing key(s) test"),
    ({"report": {"metric": "top3"}}, "report.metric must be 'top1' or 'top5'. Got 'top3'"),
    ({"extra": {}}, "the study file: unknown key(s) extra"),
])
def test_invalid_studies_name_the_key(change, words):
    with pytest.raises(ValueError) as err:
        parse_study(study_dict(**change))
    assert words in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ValueError, match="study file not found"):
        load_study(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname = 1\n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_study(bad)
