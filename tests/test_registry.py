"""Task registry: duplicates rejected, fnmatch filtering, close-match suggestions."""

from __future__ import annotations

import pytest

import sslpipe
from sslpipe.registry import describe_task, register_task
from sslpipe.tasks.rotation import Rotation


def test_list_tasks_filters_with_fnmatch() -> None:
    assert "rotation" in sslpipe.list_tasks()
    assert sslpipe.list_tasks("rot*") == ["rotation"]
    assert sslpipe.list_tasks("zzz*") == []
    assert sslpipe.list_tasks() == sorted(sslpipe.list_tasks())


def test_duplicate_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_task("rotation")(type("Other", (Rotation,), {}))


def test_registering_the_same_class_again_is_harmless() -> None:
    assert register_task("rotation")(Rotation) is Rotation


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match="Did you mean: rotation"):
        sslpipe.create_task("rotaton")
    with pytest.raises(ValueError, match="Registered tasks"):
        sslpipe.create_collator("nothing_like_it")


def test_bad_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="task name"):
        register_task("has space")


def test_every_task_has_a_description() -> None:
    for name in sslpipe.list_tasks():
        assert describe_task(name).strip()
