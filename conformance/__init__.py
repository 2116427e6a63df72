"""Conformance suite: golden logits and states from BlinkDL's official `rwkv` 0.8.32 package.

`generate.py` (oracle venv, needs torch + rwkv) writes the fixtures in `fixtures/`; `runner.py` (project venv,
no torch) replays them against any `ai00ref` backend. See `conformance/README.md`.
"""
