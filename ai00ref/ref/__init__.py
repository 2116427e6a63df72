"""The reference engine: RWKV v4-v7 in plain NumPy. It defines the semantics (spec/)."""
