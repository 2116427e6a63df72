"""A progress bar over the stages of loading a model for serving (`serve`, `generate`), on stderr (tqdm).

    with loading_bar("loading tiny.st") as on_stage:
        runtime = start_runtime(config, on_stage=on_stage)   # calls on_stage("model"), ("tokenizer"), ...

The bar moves one step per stage of `ai00ref.server.runtime.RUNTIME_STAGES` and shows the stage running and the
time so far (refreshed while a long stage, the model's weights, is loading). Quantization and conversion draw their
own bars inside the loaders (ai00ref/weights).
"""
from __future__ import annotations

import contextlib
import sys
import threading

from tqdm import tqdm

REFRESH_SECONDS = 0.25


@contextlib.contextmanager
def loading_bar(label: str, stages: tuple[str, ...], enabled: bool = True, file=None):
    """Yield `on_stage(name)`; the bar completes when the block ends without an error."""
    bar = tqdm(total=len(stages), desc=label, unit="stage", disable=not enabled, file=file or sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} stages{postfix} [{elapsed}]")
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(REFRESH_SECONDS):
            bar.refresh()

    ticker = threading.Thread(target=tick, daemon=True)

    def on_stage(name: str) -> None:
        bar.update(stages.index(name) - bar.n)
        bar.set_postfix_str(name)

    if enabled:
        ticker.start()
    try:
        yield on_stage
        bar.update(len(stages) - bar.n)
        bar.set_postfix_str("done")
    finally:
        stop.set()
        if enabled:
            ticker.join()
        bar.close()
