"""ai00ref: a Python Ai00 Server with an exact NumPy reference engine for RWKV v4-v7."""
from ai00ref.engine import Engine, Lora, load_model, load_state, save_state
from ai00ref.tokenizer import load_tokenizer

__all__ = ["Engine", "Lora", "load_model", "load_state", "save_state", "load_tokenizer"]
