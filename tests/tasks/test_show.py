"""`sslpipe show`: PNG grids for any task, from skimage photos, shards or image folders."""

from __future__ import annotations

import io
import tarfile

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sslpipe.cli import main
from sslpipe.tasks.show import CAPTION_HEIGHT, CELL, PAD, load_images, render_grid

pytest.importorskip("skimage.data")


def _expected(num: int, rows: int) -> tuple[int, int]:
    return PAD + num * (CELL + PAD), PAD + CAPTION_HEIGHT + rows * (CAPTION_HEIGHT + CELL + PAD)


@pytest.mark.parametrize("task,rows,options", [
    ("rotation", 4, []),
    ("rotation", 1, ["--task-option", "mode=random"]),
    ("colorization", 4, []),
    ("context_encoder", 3, ["--task-option", "mask=random_region"]),
])
def test_show_writes_a_png_of_the_expected_size(tmp_path, task, rows, options):
    out = tmp_path / "sub" / "grid.png"
    result = CliRunner().invoke(
        main, ["show", task, "--size", "32", "--num", "2", "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == _expected(2, rows)
    assert [p.name for p in out.parent.iterdir()] == ["grid.png"]  # no temporary left


def _png(color, size=(40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_show_reads_shards(tmp_path):
    with tarfile.open(tmp_path / "s-000000.tar", "w") as tar:
        for i, color in enumerate(["red", "blue", "green"]):
            for ext, data in (("png", _png(color)), ("cls", b"1")):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    loaded = load_images(str(tmp_path), 2)
    assert len(loaded.images) == 2 and loaded.images[0][:, 0, 0].tolist() == [255, 0, 0]
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(main, ["show", "rotation", "--data", str(tmp_path), "--size", "32",
                                       "--num", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == _expected(3, 4)  # a row per rotation


def test_image_folder_reports_unreadable_files(tmp_path):
    (tmp_path / "a.png").write_bytes(_png("red"))
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    loaded = load_images(str(tmp_path), 4)
    assert len(loaded.images) == 1 and len(loaded.skipped) == 1 and "b.jpg" in loaded.skipped[0]
    result = CliRunner().invoke(main, ["show", "rotation", "--data", str(tmp_path), "--size", "32",
                                       "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 0 and "skipped 1 unreadable" in result.output


def test_an_image_folder_is_sampled_across_its_classes(tmp_path):
    # an ImageFolder tree sorted by path used to show only its first class
    for cls, colour in (("a_class", "red"), ("b_class", "green"), ("c_class", "blue")):
        (tmp_path / cls).mkdir()
        for i in range(10):
            (tmp_path / cls / f"{i}.png").write_bytes(_png(colour))
    loaded = load_images(str(tmp_path), 6)
    colours = {tuple(int(v) for v in im[:, 0, 0]) for im in loaded.images}
    assert len(loaded.images) == 6 and len(colours) >= 2
    again = load_images(str(tmp_path), 6)  # seeded: the same pictures every time
    assert all(torch.equal(a, b) for a, b in zip(loaded.images, again.images))


@pytest.mark.parametrize("args,message", [
    (["show", "rotatoin", "--out", "x.png"], "Did you mean: rotation"),
    (["show", "rotation", "--data", "/no/such/dir", "--out", "x.png"], "no such file"),
    (["show", "rotation", "--task-option", "mode", "--out", "x.png"], "KEY=VALUE"),
    (["show", "rotation", "--task-option", "mode=sideways", "--out", "x.png"], "mode must be"),
])
def test_show_errors_are_clear(tmp_path, args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and message in result.output, result.output


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="found no readable image files"):
        load_images(str(tmp_path), 2)


def test_render_grid_keeps_aspect_and_pixels(tmp_path):
    red = torch.zeros(1, 3, 8, 16)
    red[:, 0] = 1
    size = render_grid([("a very long caption " * 20, red)], tmp_path / "g.png", cell=32)
    assert size == (PAD + 64 + PAD, PAD + CAPTION_HEIGHT + 32 + PAD)
    im = Image.open(tmp_path / "g.png").convert("RGB")
    assert im.getpixel((PAD + 10, PAD + CAPTION_HEIGHT + 10)) == (255, 0, 0)


@pytest.mark.parametrize("task", ["rotation", "rotation+jigsaw", *sorted(
    __import__("sslpipe").list_tasks())])
def test_every_row_shows_num_source_images(task):
    # --num counts source images, whatever a task makes of each (four rotations, two views,
    # nine tiles, a patch pair)
    import sslpipe

    pipeline = sslpipe.create_task(task, seed=0)
    images = [(torch.randint(0, 256, (3, 120, 100), dtype=torch.uint8), i) for i in range(3)]
    batch = pipeline.collator(images)
    rows = pipeline.visualize(batch, max_images=2)
    assert rows and all(pictures.shape[0] == 2 for _, pictures in rows), [
        (caption, tuple(p.shape)) for caption, p in rows]


def test_show_dino_draws_every_crop_box_in_place(tmp_path):
    import sslpipe.tasks.dino  # noqa: F401  (registers "dino")

    out = tmp_path / "dino.png"
    result = CliRunner().invoke(main, ["show", "dino", "--size", "32", "--num", "2",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    # the sources with their boxes, two global crops, six local ones
    with Image.open(out) as im:
        assert im.size == _expected(2, 9)


def test_draw_boxes_outlines_the_recorded_box():
    from sslpipe.tasks.show import draw_boxes

    image = torch.zeros(3, 50, 100, dtype=torch.uint8)
    boxes = torch.tensor([[[10.0, 5.0, 60.0, 45.0]]])  # one box of one image
    picture = draw_boxes([image], [(boxes, "red")], side=200)  # scale 2, 50 px margin on top
    assert picture.shape == (1, 3, 200, 200)
    assert picture[0, :, 50 + 10, 20].tolist() == [1.0, 0.0, 0.0]  # the left edge, red
    assert picture[0, :, 50 + 40, 70].tolist() == [0.0, 0.0, 0.0]  # inside: the image
    assert picture[0, :, 10, 100].tolist() == [1.0, 1.0, 1.0]  # the white margin
