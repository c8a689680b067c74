"""`python -m fcnkit`: the train command end to end, and its errors."""

import json
import os
import subprocess
import sys

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fcnkit", *args], capture_output=True,
                          text=True, env=ENV, timeout=300)


def test_train_then_resume(tmp_path):
    common = ["--dataset", "text_deblur", "--model", "plain_cnn", "--crop-size", "32",
              "--batch-size", "2", "--steps-per-epoch", "2", "--depth", "1",
              "--filters", "4", "--out", str(tmp_path), "--verbose", "2"]
    first = run_cli("train", "--epochs", "2", *common)
    assert first.returncode == 0, first.stderr
    assert "Epoch 1/2" in first.stdout and "Epoch 2/2" in first.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["dataset"] == "text_deblur" and metrics["epochs"] == 2

    second = run_cli("train", "--epochs", "3", "--resume", *common)
    assert second.returncode == 0, second.stderr
    assert "Epoch 3/3" in second.stdout and "Epoch 1/3" not in second.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 2 and metrics["schedule_epochs"] == 2

    changed = run_cli("train", "--epochs", "4", "--resume", "--learning-rate", "0.001", *common)
    assert changed.returncode == 2
    assert changed.stderr.strip().endswith(
        f"error: `resume=True` continues the run in {tmp_path}, which was trained with other "
        "settings: learning_rate=0.002 in the run, 0.001 in this call. Resume with the run's "
        "settings, or train into another folder."
    )


def test_unknown_dataset_is_a_clear_error(tmp_path):
    result = run_cli("train", "--dataset", "nucleii", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        'error: `dataset` must be one of "nuclei", "text_deblur". '
        "Received: dataset='nucleii'. Did you mean \"nuclei\"?"
    )
    assert list(tmp_path.iterdir()) == []


def test_precision_xla_and_strategy_flags_reach_train(monkeypatch, capsys):
    """Parsed in this process, `train` replaced: each flag's default and both forms."""
    from fcnkit import __main__, training

    calls = []
    monkeypatch.setattr(training, "train", lambda **kwargs: calls.append(kwargs) or {})
    for args in ([], ["--mixed-precision", "--jit-compile", "--strategy", "mirrored"],
                 ["--no-mixed-precision", "--no-jit-compile", "--strategy", "none"]):
        assert __main__.main(["train", "--out", "runs/unused", *args]) == 0
    assert [(c["mixed_precision"], c["jit_compile"], c["strategy"]) for c in calls] == [
        (None, None, None), (True, True, "mirrored"), (False, False, "none")]
    capsys.readouterr()


def test_flags_on_a_real_run(tmp_path):
    common = ["--dataset", "text_deblur", "--model", "plain_cnn", "--crop-size", "32",
              "--batch-size", "2", "--steps-per-epoch", "2", "--depth", "1",
              "--filters", "4", "--epochs", "1", "--verbose", "0"]
    result = run_cli("train", *common, "--out", str(tmp_path), "--mixed-precision",
                     "--jit-compile", "--strategy", "none")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["mixed_precision"], metrics["jit_compile"], metrics["strategy"],
            metrics["replicas"]) == (True, True, "none", 1)


def test_predict_is_a_command(tmp_path, capsys):
    # The predict command itself is tested in test_predict.py; here, that
    # `python -m fcnkit` dispatches to it.
    from fcnkit.__main__ import main

    code = main(["predict", "--model", str(tmp_path / "model.keras"),
                 "--input", str(tmp_path / "missing.png"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: No such file or folder. Received: --input {tmp_path / 'missing.png'}.\n")
