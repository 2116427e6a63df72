"""The command line: random-model, bench and serve; every failure is one line, exit 1."""
from __future__ import annotations

import ai00ref
from ai00ref.cli import main


def test_random_model_then_bench(tmp_path, capsys):
    path = tmp_path / "m.st"
    assert main(["random-model", "--variant", "v7", "--layers", "2", "--embd", "32", "--head-size", "16",
                 "--vocab", "50", "--output", str(path)]) == 0
    assert ai00ref.load_model(path).info.n_vocab == 50
    assert main(["bench", "--model", str(path), "--prefill", "4", "--decode", "2", "--batch", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("RESULT")]
    assert len(lines) == 4 and all(float(line.split("=")[1].split()[0]) > 0 for line in lines)


def test_bench_on_random_shape(capsys):
    assert main(["bench", "--random", "v6:L1:C32:V40:N16", "--prefill", "3", "--decode", "1"]) == 0
    assert "(v6, L1 C32 V40)" in capsys.readouterr().out


def test_bad_random_shape_is_one_line(capsys):
    assert main(["bench", "--random", "v7:X3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: bad size 'X3'") and err.count("\n") == 1


def test_serve_with_a_broken_config_is_one_line(capsys, tmp_path):
    config = tmp_path / "Config.toml"
    config.write_text("[model]\nmax_batch = \"eight\"\n")
    assert main(["serve", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.max_batch" in err and err.count("\n") == 1
