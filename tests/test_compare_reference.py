"""scripts/compare_reference.py: shipped runs' epoch tables against the reference's published log."""

import csv
import statistics
from pathlib import Path

import pytest
from conftest import ROOT, SHARED, load_script

compare_reference = load_script("compare_reference")

SEED_README = SHARED / "reference" / "seed-README.md"
SHIPPED = [ROOT / "results" / "seed", ROOT / "results" / "seed_seed1"]
KEPT_TABLES = sorted((ROOT / "results" / "seed_epoch_tables").glob("*.csv"))


def write_log(path: Path, val: list[float], train: list[float]) -> Path:
    rows = [
        f"| {e:5d} | 0.100000 | 00m 08s | 1.0 | {t} % | 0.5 | {v}% |" for e, (v, t) in enumerate(zip(val, train), 1)
    ]
    path.write_text(
        "Training Logs\n```\n| Epoch | LR | Time | TrainLoss | TrainAcc | ValLoss | ValAcc |\n" + "\n".join(rows)
    )
    return path


def write_run(folder: Path, val: list[float], train: list[float]) -> Path:
    folder.mkdir(parents=True)
    with (folder / "epochs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Epoch", "LR", "Time", "TrainLoss", "TrainAcc", "ValLoss", "ValAcc"])
        writer.writerows([e, 0.1, 1.0, 1.0, t, 0.5, v] for e, (v, t) in enumerate(zip(val, train), 1))
    return folder


def mid_training_val(table: Path) -> float:
    return statistics.fmean(float(row["ValAcc"]) for row in list(csv.DictReader(table.open()))[8:18])


@pytest.mark.skipif(not SEED_README.is_file(), reason="../shared/reference is not here")
def test_the_reference_log_and_the_kept_runs_are_read_as_published(capsys):
    reference = compare_reference.read_reference(SEED_README)
    assert len(reference.val_acc) == 24
    assert (reference.val_acc[0], reference.train_acc[0]) == (60.84, 48.34)
    assert (reference.val_acc[-1], reference.train_acc[-1], reference.val_loss[-1]) == (88.72, 89.25, 0.345160)

    assert compare_reference.main([str(p) for p in SHIPPED]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{statistics.fmean(reference.val_acc[8:18]):8.2f}%" in out[1]
    tables = [p / "epochs.csv" for p in SHIPPED]
    for line, table in zip(out[2:4], tables):
        assert f"{mid_training_val(table):8.2f}%" in line
    assert not any(line.startswith("validation accuracy") for line in out)  # two runs give no spread

    # the README's comparison: the shipped runs and the kept tables of the recipe's other seeds
    assert len(KEPT_TABLES) == 4
    assert compare_reference.main([*map(str, SHIPPED), *map(str, KEPT_TABLES)]) == 0
    mid = [mid_training_val(t) for t in tables + KEPT_TABLES]
    spread = f"6 runs {statistics.fmean(mid):.2f}% mean, sd {statistics.stdev(mid):.2f}"
    assert f"validation accuracy, epochs 9-18: {spread}" in capsys.readouterr().out


def test_windows_and_spread_are_computed_from_the_tables(tmp_path: Path, capsys):
    epochs = 24
    reference = write_log(tmp_path / "README.md", [80.0] * 8 + [90.0] * 16, [70.0] * epochs)
    low = write_run(tmp_path / "low", [80.0] * 8 + [86.0] * 16, [75.0] * epochs)
    middle = write_run(tmp_path / "middle", [80.0] * 8 + [87.0] * 16, [76.0] * epochs)
    high = write_run(tmp_path / "high", [80.0] * 8 + [88.0] * 16, [77.0] * epochs)
    runs = [str(low), str(middle), str(high)]
    assert compare_reference.main([*runs, "--reference", str(reference), "--per-epoch"]) == 0
    out = capsys.readouterr().out
    # the reference's 90 against runs at 86, 87 and 88: mean 87, sd 1, so 3 sd above
    assert "epochs 9-18: 3 runs 87.00% mean, sd 1.00, range 86.00-88.00%; the reference's 90.00% is +3.0 sd" in out
    assert "epochs last: 3 runs 87.00% mean" in out
    per_epoch = [line.split() for line in out.splitlines() if line.startswith("   ")]
    assert len(per_epoch) == 3 * epochs
    assert per_epoch[0] == ["1", "+0.00", "+5.00", "+0.000"] and per_epoch[8] == ["9", "-4.00", "+5.00", "+0.000"]


@pytest.mark.parametrize("case", ["missing run", "no log", "other length", "not a table"])
def test_bad_input_is_one_line_naming_it(tmp_path: Path, capsys, case):
    reference = write_log(tmp_path / "README.md", [50.0] * 24, [50.0] * 24)
    run = write_run(tmp_path / "run", [50.0] * 24, [50.0] * 24)
    argv, named = [str(run), "--reference", str(reference)], None
    if case == "missing run":
        argv[0] = named = str(tmp_path / "nowhere")
    elif case == "no log":
        reference.write_text("# a README without a training log\n")
        named = str(reference)
    elif case == "other length":
        write_run(tmp_path / "short", [50.0] * 3, [50.0] * 3)
        argv[0] = named = str(tmp_path / "short")
    else:
        (run / "epochs.csv").write_text("epoch,accuracy\n1,0.5\n")
        named = str(run / "epochs.csv")
    with pytest.raises(SystemExit) as exit_info:
        compare_reference.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and named in err
