"""ai00ref: a Python Ai00 Server with an exact NumPy reference engine for RWKV v4-v7."""
