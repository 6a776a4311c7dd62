"""scripts/carry_dataset.py: an image folder packed into parts, unpacked elsewhere, decodes to the same tensors."""

from pathlib import Path

import pytest
import torch
from conftest import load_script, make_image_folder

from wycifar.data.sources import load_split

carry_dataset = load_script("carry_dataset")  # registered by name: its pool pickles by name


def test_parts_unpack_to_the_same_tensors_and_a_missing_part_is_caught(tmp_path: Path, capsys):
    root = make_image_folder(tmp_path / "root", train_per_class=12, test_per_class=4)
    assert carry_dataset.main(["pack", str(root), str(tmp_path / "parts"), "--max-mb", "0.1"]) == 0
    parts = sorted((tmp_path / "parts").glob("part-*.pkl"))
    assert len(parts) >= 2 and all(p.stat().st_size <= 0.1e6 for p in parts)

    dest = tmp_path / "dest"
    for part in parts[:-1]:
        assert carry_dataset.main(["unpack", str(part), str(dest)]) == 0
    capsys.readouterr()
    assert carry_dataset.main(["check", str(dest)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {dest}: ")
    assert carry_dataset.main(["unpack", str(parts[-1]), str(dest)]) == 0
    assert carry_dataset.main(["check", str(dest)]) == 0

    for split in ("train", "test"):
        before, after = load_split(root, split, download=False), load_split(dest, split, download=False)
        assert torch.equal(before.images, after.images) and torch.equal(before.labels, after.labels)
        assert before.classes == after.classes


@pytest.mark.parametrize(
    "argv,named",
    [
        (["pack", "{tmp}/nowhere", "{tmp}/parts"], "{tmp}/nowhere"),
        (["pack", "{tmp}", "{tmp}/parts", "--max-mb", "0"], "--max-mb=0.0"),
        (["unpack", "{tmp}/part-9.pkl", "{tmp}/dest"], "{tmp}/part-9.pkl"),
        (["check", "{tmp}"], "{tmp}"),
    ],
)
def test_bad_input_is_one_line_naming_it(tmp_path: Path, capsys, argv: list[str], named: str):
    with pytest.raises(SystemExit) as exit_info:
        carry_dataset.main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and err.count("\n") == 1
    assert err.startswith("error: ") and named.format(tmp=tmp_path) in err
