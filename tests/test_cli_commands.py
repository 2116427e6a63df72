"""`python -m ai00ref`: every subcommand's --help explains itself, `generate` streams what the API answers for the
same request (on a random model, reference engine), `conformance` runs the runner, the loading bar shows its stages."""
from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys

import jsonschema
import pytest

from ai00ref.cli import main
from ai00ref.loading import loading_bar
from ai00ref.server.app import make_app
from ai00ref.server.config import AdapterConfig, default_config
from ai00ref.server.runtime import RUNTIME_STAGES, start_runtime
from ai00ref.weights.random_model import RandomModelSpec, write_random_model

from test_server_api import ServerThread, call

FLAG = {"type": "object", "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "blue"]}},
        "required": ["ok", "color"], "additionalProperties": False}  # every instance is short: it always finishes
COMMANDS = ("serve", "generate", "convert", "random-model", "bench", "conformance")


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_the_top_level_help_lists_every_command_with_examples(capsys):
    text = help_text(capsys)
    for command in COMMANDS:
        assert f"    {command}" in text and f"python -m ai00ref {command}" in text


@pytest.mark.parametrize("command, says", [
    ("serve", ["/api-docs", "/metrics", "--log-format", "--no-progress", "default: assets/configs/Config.toml"]),
    ("generate", ["--prompt", "--max-tokens", "--temperature", "--sampler", "--seed", "--chat", "examples:",
                  "reads stdin"]),
    ("convert", ["--input", "--output", ".pth"]),
    ("random-model", ["--variant", "--vocab", "65536", "World tokenizer", "(default: 2)"]),
    ("bench", ["--random", "--prefill", "examples:", "python -m ai00ref bench --random", "Peak memory"]),
    ("conformance", ["usage: python -m ai00ref conformance", "--backend", "fixtures", "skip is not a pass"]),
])
def test_each_command_explains_itself(capsys, command, says):
    text = help_text(capsys, command)
    flowing = " ".join(text.split())  # argparse wraps to the terminal's width
    assert not [phrase for phrase in says if phrase not in flowing]
    assert all(line.startswith(" ") or len(line) < 100 for line in text.splitlines())  # wrapped, examples aside


def test_python_dash_m_runs_the_same_command_line():
    result = subprocess.run([sys.executable, "-m", "ai00ref", "generate", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m ai00ref generate")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.st"
    write_random_model(RandomModelSpec("v7", n_layer=1, n_embd=32, n_vocab=65536, head_size=16, seed=11), path)
    return path


@pytest.fixture(scope="module")
def api(model):
    config = dataclasses.replace(default_config(), adapter=AdapterConfig(engine="ref"))
    served = ServerThread(make_app(start_runtime(config, model)))
    yield served
    served.close()


def generate(model, capsys, monkeypatch, tmp_path, *options: str) -> tuple[int, str, str]:
    monkeypatch.chdir(tmp_path)  # no assets/configs/Config.toml here: the built-in defaults
    code = main(["generate", "--model", str(model), "--engine", "ref", "--no-progress", *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("sampling", [["-t", "0", "--top-k", "0"], ["--seed", "5", "--top-p", "0.9"],
                                      ["--sampler", "typical", "--tau", "0.9", "--seed", "2"]])
def test_generate_streams_what_the_api_answers(model, api, capsys, monkeypatch, tmp_path, sampling):
    code, out, err = generate(model, capsys, monkeypatch, tmp_path, "--prompt", "The sky is", "-n", "6", *sampling)
    assert code == 0, err
    body = {"prompt": "The sky is", "max_tokens": 6, "stop": []}
    options = dict(zip(sampling[::2], sampling[1::2]))
    if options.get("--sampler") == "typical":
        body["sampler"] = {"type": "Typical", "tau": 0.9}
    body.update({name: float(options[flag]) if name != "top_k" else int(options[flag])
                 for flag, name in (("-t", "temperature"), ("--top-k", "top_k"), ("--top-p", "top_p"))
                 if flag in options})
    if "--seed" in options:
        body["seed"] = int(options["--seed"])
    status, answer = call(api, "/v1/completions", body)
    assert status == 200, answer
    assert out == answer["choices"][0]["text"] + "\n"
    assert err.strip().endswith(f"[{answer['choices'][0]['finish_reason']}]")


def test_generate_chat_reads_stdin(model, api, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello there"))
    code, out, _ = generate(model, capsys, monkeypatch, tmp_path, "--chat", "--prompt", "-", "-n", "5", "-t", "0")
    assert code == 0
    status, answer = call(api, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello there"}],
                                                        "max_tokens": 5, "temperature": 0})
    assert status == 200 and out.strip() == answer["choices"][0]["message"]["content"]


@pytest.mark.parametrize("options, message", [
    (["--prompt", "x", "--top-p", "3"], "error: `top_p` must be in [0.0, 1.0], got 3.0"),
    (["--prompt", "x", "--sampler", "mirostat", "--top-p", "0.3"], "error: --sampler mirostat does not take --top-p"),
    (["--prompt", "x", "-n", "0"], "error: max_tokens must be an integer from 1"),
])
def test_generate_refuses_bad_options_in_one_line(model, capsys, monkeypatch, tmp_path, options, message):
    code, out, err = generate(model, capsys, monkeypatch, tmp_path, *options)
    assert code == 1 and out == ""
    assert err.splitlines()[-1].startswith(message) and "Traceback" not in err


def test_generate_names_a_missing_model(capsys, monkeypatch, tmp_path):
    code, _, err = generate(tmp_path / "absent.st", capsys, monkeypatch, tmp_path, "--prompt", "x")
    assert code == 1 and err.strip() == f"error: no such model file: {tmp_path / 'absent.st'}"


def test_conformance_runs_the_runner(capsys):
    assert main(["conformance", "--variant", "v7", "--files", "st-fp16"]) == 0
    out = capsys.readouterr().out
    assert "v7      st-fp16" in out and " 0 failed" in out


def test_the_loading_bar_walks_the_stages():
    out = io.StringIO()
    with loading_bar("loading m.st", RUNTIME_STAGES, file=out) as on_stage:
        for stage in RUNTIME_STAGES:
            on_stage(stage)
    text = out.getvalue()
    n = len(RUNTIME_STAGES)
    assert "loading m.st" in text and f"{n}/{n} stages, done" in text
    assert all(f"{i}/{n} stages, {stage}" in text for i, stage in enumerate(RUNTIME_STAGES))


def test_start_runtime_reports_each_stage_in_order(model):
    stages = []
    config = dataclasses.replace(default_config(), adapter=AdapterConfig(engine="ref"))
    runtime = start_runtime(config, model, on_stage=stages.append)
    runtime.close()
    assert stages == list(RUNTIME_STAGES)


def test_generate_follows_a_grammar_and_a_json_schema(model, capsys, monkeypatch, tmp_path):
    (tmp_path / "yes_no.kbnf").write_text('start ::= "yes" | "no";')
    code, out, err = generate(model, capsys, monkeypatch, tmp_path, "--prompt", "Is it? ", "--bnf", "yes_no.kbnf",
                              "--seed", "3")
    assert code == 0, err
    assert out in ("yes\n", "no\n")
    (tmp_path / "flag.json").write_text(json.dumps(FLAG))
    for seed in ("1", "2"):
        code, out, err = generate(model, capsys, monkeypatch, tmp_path, "--prompt", "A flag: ", "--json-schema",
                                  "flag.json", "-n", "64", "--seed", seed)
        assert code == 0 and err.strip().endswith("[stop]"), err
        jsonschema.validate(json.loads(out), FLAG)


def test_generate_refuses_a_bad_grammar_in_one_line(model, capsys, monkeypatch, tmp_path):
    (tmp_path / "bad.kbnf").write_text("start ::= ;")
    code, out, err = generate(model, capsys, monkeypatch, tmp_path, "--prompt", "x", "--bnf", "bad.kbnf")
    assert code == 1 and out == "" and err.splitlines()[-1].startswith("error: bnf_schema: ")
