"""Training the project's own small RWKV-7 (issue 8): corpus, PyTorch model, trainer, export.

Only `corpus` works without torch; the rest needs the `[train]` extra (`pip install -e .[train]`).
Nothing in the rest of ai00ref imports this package.
"""
