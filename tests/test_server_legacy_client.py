"""The seed README's Python example (tests/data/seed_readme_client.py, openai 0.28's module API with `names`,
`half_life` and the stop list) runs unchanged against the server, but for the port.

openai 0.28 cannot share a venv with the current openai, so it lives in its own venv, `.venv/legacy-openai`, which
`make test` creates. Without it the test skips, except under CI=true, where it fails.

The example asks for max_tokens 4096 at temperature 2; a random model would take minutes to emit that many tokens on
the reference engine. The model here is random but its head always ranks token 0 (end of text) first by far, so
every reply ends at once with "stop": what is tested is the client's requests and its reading of the replies.
"""
from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ai00ref.server.app import make_app
from ai00ref.server.config import config_from_dict
from ai00ref.server.runtime import start_runtime
from ai00ref.weights.convert import pth_to_st_tensors
from ai00ref.weights.random_model import RandomModelSpec, random_model_tensors
from ai00ref.weights.safetensors_io import write_safetensors
from test_server_api import ServerThread

ROOT = Path(__file__).resolve().parents[1]
LEGACY_PYTHON = ROOT / ".venv" / "legacy-openai" / "bin" / "python"
EXAMPLE = ROOT / "tests" / "data" / "seed_readme_client.py"


def write_end_of_text_model(path: Path) -> None:
    """A random v7 model whose final LayerNorm outputs its bias alone, which the head maps to a top logit for 0."""
    tensors = random_model_tensors(RandomModelSpec("v7", n_layer=1, n_embd=32, n_vocab=65536, head_size=16, seed=3))
    bias = np.linspace(-1.0, 1.0, 32, dtype=np.float32)
    tensors["ln_out.weight"] = np.zeros(32, np.float32)
    tensors["ln_out.bias"] = bias
    tensors["head.weight"][0] = 40.0 * bias / float(bias @ bias)  # logit 40 for token 0; the others stay near 0
    write_safetensors(path, {k: v.astype(np.float16) for k, v in pth_to_st_tensors(tensors).items()},
                      metadata={"format": "pt"})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    write_end_of_text_model(folder / "eot.st")
    config = config_from_dict({"model": {"path": str(folder), "name": "eot.st"}, "adapter": {"engine": "ref"}})
    served = ServerThread(make_app(start_runtime(config)))
    yield served
    served.close()


def test_the_seed_readme_example_runs_unchanged(server):
    if not LEGACY_PYTHON.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{LEGACY_PYTHON} is missing: `make test` installs openai 0.28 there")
        pytest.skip("openai 0.28 is not installed in .venv/legacy-openai (make test does it)")
    run = subprocess.run([str(LEGACY_PYTHON), str(EXAMPLE), str(server.port)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 4, run.stdout  # two replies, the context, the continuation (replies are empty: EOS)
    context = ast.literal_eval(lines[2])
    assert [m["role"] for m in context] == ["user", "assistant", "user", "assistant"]
    assert context[0]["content"] == "how are you?" and context[2]["content"] == "me too!"
