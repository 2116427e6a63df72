"""Constrained sampling: grammars that restrict which tokens may come next (spec/bnf.md).

legacy.py       the old angle-bracket BNF dialect (bnf_sampler's, in the seed documents) -> KBNF
schema.py       JSON Schema (OpenAI's response_format) -> KBNF
constraint.py   compiling KBNF with kbnf (cached, bounded) and a per-request constraint: mask, accept, finished
"""
