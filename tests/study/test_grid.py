from sslpipe.study.grid import build_grid, cell_hash, data_fingerprint
from sslpipe.study.spec import parse_study
from tests.study.conftest import study_dict


def test_grid_sizes_ids_and_labels():
    raw = study_dict()
    raw["study"]["archs"] = ["resnet18", "resnet50"]
    grid = build_grid(parse_study(raw))
    # archs x pretraining sets x (tasks + supervised)
    assert len(grid.train) == 2 * 2 * 3
    # (runs + one random per arch) x evaluations x downstream
    assert len(grid.evals) == (12 + 2) * 2 * 1
    assert len(grid) == 12 + 28
    assert len({c.id for c in (*grid.train, *grid.evals)}) == len(grid)
    randoms = grid.evals_of(None)
    assert {c.id for c in randoms} == {f"eval/{a}/none/random/{e}/fm" for a in
                                       ("resnet18", "resnet50") for e in ("knn", "linear")}
    assert {c.label for c in grid.evals} >= {"rotation@resnet18", "random@resnet50"}
    cell = grid.train[0]
    assert cell.config["task"] == "rotation" and cell.config["seed"] == 0
    assert cell.config["epochs"] == 1


def test_hash_covers_settings_data_and_the_evaluated_run():
    def fp(path):
        return "same"

    a = build_grid(parse_study(study_dict()))
    b = build_grid(parse_study(study_dict(task_options={"jigsaw": {"grid": 2}})))
    hashes_a = {c.id: cell_hash(c, fp) for c in (*a.train, *a.evals)}
    hashes_b = {c.id: cell_hash(c, fp) for c in (*b.train, *b.evals)}
    changed = sorted(k for k in hashes_a if hashes_a[k] != hashes_b[k])
    assert changed == sorted([c.id for c in a.train if c.task == "jigsaw"]
                             + [c.id for c in a.evals if c.method == "jigsaw"])
    other_data = {c.id: cell_hash(c, lambda p: "other") for c in a.train}
    assert all(other_data[k] != hashes_a[k] for k in other_data)


def test_data_fingerprint_reads_the_manifest(tmp_path):
    assert data_fingerprint(str(tmp_path)) == f"missing:{tmp_path}"
    (tmp_path / "manifest.json").write_text("{}")
    assert len(data_fingerprint(str(tmp_path))) == 64
    assert len(data_fingerprint("sample:test")) == 64
