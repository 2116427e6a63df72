"""Ai00's samplers in NumPy: penalties, Nucleus, Typical and Mirostat, and how a request body picks one.

Behaviour follows shared/reference/ai00-server.md §4 (order of operations §4.1, penalties §4.2, Nucleus §4.3,
Typical §4.4, Mirostat §4.5) and the request fields of §1.3. One step of generation is:

    logits = sampler.transform(raw_logits)       # penalties (Nucleus, Typical); Mirostat: unchanged
    logits = <BNF mask>; logits = apply_bias(logits, bias)
    token = sampler.sample(softmax(logits), rng) # picks the token and updates the sampler's state

Candidates are ordered by descending probability, the lower token id first on ties (a stable sort). Differences
from Ai00 that we chose on purpose:

- `temperature == 0` is exact greedy: the most probable of the kept candidates, the lowest id on ties (for Nucleus
  that is the argmax; for Typical, the argmax of the typical set). Ai00 gets there through NaN weights and its
  "first candidate" fallback, which for Typical is the most *typical* token, not the most probable one.
- `top_k == 0` means "no top-k limit". Ai00 keeps no candidate and returns token 0 (EOS).
- Randomness comes from the `np.random.Generator` the caller passes (seedable, see `make_rng`), not a global RNG.
  The draw is `u = 1 - rng.random()` in (0, 1], so a zero-weight candidate is never picked.
- Ties in probability keep the lower token id first (Ai00's order on ties comes from a radix sort then a reversal).
- Temperature weights `p**(1/T)` are computed as `exp((ln p - ln p_max) / T)`, equal after normalisation but free
  of underflow for small T. Probabilities are float64 (Ai00: f32).
- Top-level `presence_penalty`, `frequency_penalty`, `penalty_decay` and `half_life` are honoured when no sampler
  object is sent (Ai00 ignores them, §1.3). `half_life` maps to `decay = 0.5 ** (1 / half_life)` (§4.2), and it is
  also read inside a Nucleus or Typical sampler object.
- The sampler tag is also accepted in lower case ("nucleus"); a sampler object without `type` is Nucleus (v0.5).
- A JSON `null` for a parameter means its default.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np

from ai00ref.server.errors import bad_request
from ai00ref.server.openapi import nullable, obj, typed

DEFAULT_PENALTY_DECAY = 0.99654026  # 0.5 ** (1/200): a 200-token half-life (§4.2)
SAMPLER_TYPES = ("Nucleus", "Typical", "Mirostat")


# ---- probability helpers (§4.1) ----

def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax in float64, shifted by the max so it cannot overflow. `-inf` logits get probability 0; when every
    logit is `-inf` no token is possible and the result is all zeros (samplers then fall back to token 0)."""
    x = np.asarray(logits, dtype=np.float64)
    top = x.max(initial=-np.inf)
    if top == -np.inf:
        return np.zeros_like(x)
    if top == np.inf:  # the +inf logits share all the mass
        hot = (x == np.inf).astype(np.float64)
        return hot / hot.sum()
    e = np.exp(x - top)
    return e / e.sum()


def apply_bias(logits: np.ndarray, bias: dict[int, float]) -> np.ndarray:
    """`logit[t] += bias[t]` on a copy (§4.1 step 4)."""
    out = np.array(logits, dtype=np.result_type(np.asarray(logits).dtype, np.float32))
    if bias:
        ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
        out[ids] += np.fromiter(bias.values(), dtype=np.float64, count=len(bias)).astype(out.dtype)
    return out


def descending_order(probs: np.ndarray) -> np.ndarray:
    """Token ids by descending probability, the lower id first on ties."""
    return np.argsort(-probs, kind="stable")


def leading_candidates(probs: np.ndarray, count: int) -> np.ndarray:
    """The first `count` (or more, when tied at the boundary) entries of `descending_order(probs)`, without sorting
    the whole vocabulary: every id at least as probable as the count-th largest, ordered as descending_order."""
    if count >= probs.size:
        return descending_order(probs)
    threshold = np.partition(probs, probs.size - count)[probs.size - count]
    ids = np.flatnonzero(probs >= threshold)  # ascending ids: the stable sort keeps the lower id first on ties
    return ids[np.argsort(-probs[ids], kind="stable")]


def nucleus_candidates(probs: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """`descending_order(probs)[:top_k]` cut by `cumulative_cut(·, top_p)`: the same ids, found from a partial sort
    that grows until the cut ends inside it (decode time: a full sort of 65536 ids costs ~10 ms)."""
    limit = top_k or probs.size
    count = min(limit, 256)
    while True:
        candidates = leading_candidates(probs, count)[:limit]
        kept = cumulative_cut(probs[candidates], top_p)
        if kept < len(candidates) or len(candidates) >= limit or count >= probs.size:
            return candidates[:kept]
        count *= 8


def cumulative_cut(sorted_probs: np.ndarray, limit: float) -> int:
    """How many leading candidates Ai00's cut keeps (§4.3): a candidate is kept while the sum of those *before* it is
    <= limit, so the first is always kept and the one crossing `limit` is kept too."""
    before = np.concatenate(([0.0], np.cumsum(sorted_probs)[:-1]))
    return int(np.searchsorted(before, limit, side="right"))


def temperature_weights(probs: np.ndarray, temperature: float) -> np.ndarray:
    """`p ** (1/T)` normalised (§4.3 step "temperature AFTER truncation"); T == 0 puts all weight on the first max."""
    if temperature == 0 or probs.max() <= 0:
        weights = np.zeros_like(probs)
        weights[int(np.argmax(probs))] = 1.0
        return weights
    with np.errstate(divide="ignore"):
        log_p = np.log(probs)
    weights = np.exp((log_p - log_p.max()) / temperature)
    return weights / weights.sum()


def draw(weights: np.ndarray, r: float) -> int:
    """Index of the first candidate whose cumulative weight reaches `r * total` (r in (0, 1]); the first candidate
    when none does (Ai00's `find_or_first` fallback, e.g. total 0)."""
    cdf = np.cumsum(weights)
    i = int(np.searchsorted(cdf, r * cdf[-1], side="left"))
    return i if i < len(cdf) else 0


def uniform(rng: np.random.Generator) -> float:
    """A uniform draw in (0, 1], so a zero-weight candidate is never picked by `draw`."""
    return 1.0 - float(rng.random())


# ---- penalties (§4.2) ----

class Penalties:
    """Presence/frequency penalties with decay: `pen[token]` is subtracted from the token's logit."""

    def __init__(self, presence: float = 0.3, frequency: float = 0.3, decay: float = DEFAULT_PENALTY_DECAY):
        self.presence, self.frequency, self.decay = presence, frequency, decay
        self.pen: dict[int, float] = {}

    def seed(self, model_tokens: list[int]) -> None:
        """Start from the assistant history: `pen[t] = pen.get(t, ap) + af * d**i`, i = distance from the end."""
        self.pen = {}
        for i, t in enumerate(reversed(model_tokens)):
            self.pen[int(t)] = self.pen.get(int(t), self.presence) + self.frequency * self.decay ** i

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """`logit[t] -= pen[t]` on a copy."""
        return apply_bias(logits, {t: -p for t, p in self.pen.items()})

    def update(self, token: int) -> None:
        """After sampling `token`: decay every penalty, then `+af` if the token had one, else set it to `ap`."""
        for t in self.pen:
            self.pen[t] *= self.decay
        self.pen[token] = self.pen[token] + self.frequency if token in self.pen else self.presence


# ---- samplers (§4.3-§4.5) ----

class Nucleus:
    """Top-k, then the top-p cut, then temperature on the kept probabilities (§4.3)."""

    def __init__(self, top_p: float = 0.5, top_k: int = 128, temperature: float = 1.0,
                 penalties: Penalties | None = None):
        self.top_p, self.top_k, self.temperature = top_p, top_k, temperature
        self.penalties = penalties if penalties is not None else Penalties()

    def transform(self, logits: np.ndarray) -> np.ndarray:
        return self.penalties.apply(logits)

    def sample(self, probs: np.ndarray, rng: np.random.Generator) -> int:
        p = np.asarray(probs, dtype=np.float64)
        kept = nucleus_candidates(p, self.top_k, self.top_p)
        token = int(kept[draw(temperature_weights(p[kept], self.temperature), uniform(rng))])
        self.penalties.update(token)
        return token


class Typical:
    """Locally typical sampling: candidates closest to the entropy first, then the Nucleus cut with `tau` (§4.4)."""

    def __init__(self, tau: float = 0.5, top_k: int = 128, temperature: float = 1.0,
                 penalties: Penalties | None = None):
        self.tau, self.top_k, self.temperature = tau, top_k, temperature
        self.penalties = penalties if penalties is not None else Penalties()

    def transform(self, logits: np.ndarray) -> np.ndarray:
        return self.penalties.apply(logits)

    def sample(self, probs: np.ndarray, rng: np.random.Generator) -> int:
        p = np.asarray(probs, dtype=np.float64)
        token = self._pick(p, rng) if (p > 0).any() else 0
        self.penalties.update(token)
        return token

    def _pick(self, p: np.ndarray, rng: np.random.Generator) -> int:
        ids = np.flatnonzero(p > 0)
        surprise = -np.log(p[ids])
        entropy = float(np.sum(p[ids] * surprise))
        candidates = ids[np.argsort(np.abs(surprise - entropy), kind="stable")][: self.top_k or None]
        kept = candidates[: cumulative_cut(p[candidates], self.tau)]
        return int(kept[draw(temperature_weights(p[kept], self.temperature), uniform(rng))])


class Mirostat:
    """Mirostat (v2-like): truncate where the surprise exceeds `max_surprise`, then steer it toward `tau` (§4.5)."""

    def __init__(self, tau: float = 3.0, rate: float = 0.1):
        self.tau, self.rate = tau, rate
        self.max_surprise = 2.0 * tau

    def transform(self, logits: np.ndarray) -> np.ndarray:
        return np.array(logits)

    def sample(self, probs: np.ndarray, rng: np.random.Generator) -> int:
        p = np.asarray(probs, dtype=np.float64)
        order = descending_order(p)
        kept = order[: self.truncation(p[order])]
        pick = draw(p[kept], uniform(rng))
        self.steer(float(p[kept].sum()), float(p[kept[pick]]))
        return int(kept[pick])

    def truncation(self, sorted_probs: np.ndarray) -> int:
        """1 + index of the first candidate with `-log2 p > max_surprise` (that one is kept); all when none is."""
        with np.errstate(divide="ignore"):
            over = np.flatnonzero(-np.log2(sorted_probs) > self.max_surprise)
        return int(over[0]) + 1 if len(over) else len(sorted_probs)

    def steer(self, kept_mass: float, token_prob: float) -> None:
        """`max_surprise -= rate * (log2(kept_mass) - log2(p_token) - tau)`, capped at `4 * tau`."""
        if token_prob <= 0:  # only when every probability is 0: nothing was learned
            return
        surprise = math.log2(kept_mass) - math.log2(token_prob)
        self.max_surprise = min(self.max_surprise - self.rate * (surprise - self.tau), 4.0 * self.tau)


Sampler = Union[Nucleus, Typical, Mirostat]


# ---- the fields' schemas (the OpenAPI document): the ranges and defaults the parsers below check ----

def _number_field(description: str, **limits) -> dict:
    return nullable(typed("number", description, **limits))


TOP_P = _number_field("Nucleus: keep the most probable tokens up to this mass (default 0.5)", minimum=0, maximum=1)
TOP_K = nullable(typed("integer", "keep at most this many tokens; 0: no limit (default 128)", minimum=0))
TEMPERATURE = _number_field("0: greedy (default 1)", minimum=0)
PENALTY_FIELDS = {
    "presence_penalty": _number_field("subtracted once a token appeared (default 0.3)"),
    "frequency_penalty": _number_field("subtracted per (decayed) occurrence (default 0.3)"),
    "penalty_decay": _number_field(f"per-token decay of the penalties (default {DEFAULT_PENALTY_DECAY}); not with "
                                   "half_life", exclusiveMinimum=0, maximum=1),
    "half_life": _number_field("decay = 0.5^(1/half_life), in tokens; not with penalty_decay", exclusiveMinimum=0)}
NUCLEUS_FIELDS = {"top_p": TOP_P, "top_k": TOP_K, "temperature": TEMPERATURE, **PENALTY_FIELDS}
SAMPLER_TYPE = typed("string", enum=[*SAMPLER_TYPES, *(name.lower() for name in SAMPLER_TYPES)])
SAMPLER_OBJECT = {"anyOf": [
    obj({"type": SAMPLER_TYPE, **NUCLEUS_FIELDS}, description="Nucleus (also without type)"),
    obj({"type": SAMPLER_TYPE, "tau": _number_field("typical mass (default 0.5)", minimum=0, maximum=1),
         "top_k": TOP_K, "temperature": TEMPERATURE, **PENALTY_FIELDS}, required=("type",), description="Typical"),
    obj({"type": SAMPLER_TYPE, "tau": _number_field("target surprise (default 3)", exclusiveMinimum=0),
         "rate": _number_field("learning rate (default 0.1)", minimum=0), "learning_rate": _number_field(
             "alias of rate", minimum=0)}, required=("type",), description="Mirostat")],
    "description": "Ai00's sampler object; replaces the top-level sampler fields"}
BIAS = nullable({"type": "object", "propertyNames": {"pattern": "^[0-9]+$"}, "additionalProperties": typed("number"),
                 "description": "token id -> a number added to its logit (ids below the model's vocabulary size)"})
SEED = nullable(typed("integer", "seeds the request's sampler"))
SAMPLER_FIELDS = {**NUCLEUS_FIELDS, "sampler": nullable(SAMPLER_OBJECT), "sampler_override": nullable(SAMPLER_OBJECT),
                  "bias": BIAS, "logit_bias": BIAS, "seed": SEED}


# ---- request fields (§1.3) ----

def _number(obj: dict, key: str, default: float, param: str) -> float:
    """A finite JSON number (booleans are not numbers); absent or null -> `default`."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"`{param}` must be a finite number", param)
    return float(value)


def _in_range(value: float, lo: float, hi: float, param: str, *, lo_open: bool = False) -> float:
    if value < lo or value > hi or (lo_open and value == lo):
        raise bad_request(f"`{param}` must be in {'(' if lo_open else '['}{lo}, {hi}], got {value}", param)
    return value


def _top_k(obj: dict, param: str) -> int:
    value = obj.get("top_k")
    if value is None:
        return 128
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_request(f"`{param}` must be an integer >= 0 (0: no limit)", param)
    return value


def _temperature(obj: dict, param: str) -> float:
    return _in_range(_number(obj, "temperature", 1.0, param), 0.0, math.inf, param)


def _penalties(obj: dict, prefix: str) -> Penalties:
    """presence_penalty, frequency_penalty and penalty_decay (or half_life, in tokens) from `obj`."""
    presence = _number(obj, "presence_penalty", 0.3, prefix + "presence_penalty")
    frequency = _number(obj, "frequency_penalty", 0.3, prefix + "frequency_penalty")
    decay = _in_range(_number(obj, "penalty_decay", DEFAULT_PENALTY_DECAY, prefix + "penalty_decay"),
                      0.0, 1.0, prefix + "penalty_decay", lo_open=True)
    if obj.get("half_life") is not None:
        if obj.get("penalty_decay") is not None:
            raise bad_request("send either `penalty_decay` or `half_life`, not both", prefix + "half_life")
        half_life = _number(obj, "half_life", 200.0, prefix + "half_life")
        decay = 0.5 ** (1.0 / _in_range(half_life, 0.0, math.inf, prefix + "half_life", lo_open=True))
    return Penalties(presence, frequency, decay)


def _nucleus(obj: dict, prefix: str) -> Nucleus:
    top_p = _in_range(_number(obj, "top_p", 0.5, prefix + "top_p"), 0.0, 1.0, prefix + "top_p")
    return Nucleus(top_p, _top_k(obj, prefix + "top_k"), _temperature(obj, prefix + "temperature"),
                   _penalties(obj, prefix))


def _typical(obj: dict, prefix: str) -> Typical:
    tau = _in_range(_number(obj, "tau", 0.5, prefix + "tau"), 0.0, 1.0, prefix + "tau")
    return Typical(tau, _top_k(obj, prefix + "top_k"), _temperature(obj, prefix + "temperature"),
                   _penalties(obj, prefix))


def _mirostat(obj: dict, prefix: str) -> Mirostat:
    if obj.get("rate") is not None and obj.get("learning_rate") is not None:
        raise bad_request("send either `rate` or `learning_rate`, not both", prefix + "rate")
    rate_key = "learning_rate" if obj.get("learning_rate") is not None else "rate"
    tau = _in_range(_number(obj, "tau", 3.0, prefix + "tau"), 0.0, math.inf, prefix + "tau", lo_open=True)
    rate = _in_range(_number(obj, rate_key, 0.1, prefix + rate_key), 0.0, math.inf, prefix + rate_key)
    return Mirostat(tau, rate)


_BUILDERS = {"Nucleus": _nucleus, "Typical": _typical, "Mirostat": _mirostat}


def _sampler_field(body: dict) -> tuple[str, object] | None:
    """The sampler object and the name it was sent under (`sampler`, or its alias `sampler_override`)."""
    sent = [key for key in ("sampler", "sampler_override") if body.get(key) is not None]
    if len(sent) == 2:
        raise bad_request("send either `sampler` or `sampler_override`, not both", "sampler_override")
    return (sent[0], body[sent[0]]) if sent else None


def _from_object(obj: object, key: str) -> Sampler:
    """A tagged sampler object `{"type": "Nucleus"|"Typical"|"Mirostat", ...}`; no tag -> Nucleus (v0.5)."""
    if not isinstance(obj, dict):
        raise bad_request(f"`{key}` must be an object", key)
    tag = obj.get("type", "Nucleus")
    name = next((n for n in SAMPLER_TYPES if tag in (n, n.lower())), None)
    if name is None:
        raise bad_request(f"`{key}.type` must be one of {', '.join(SAMPLER_TYPES)}, got {tag!r}", key + ".type")
    return _BUILDERS[name](obj, key + ".")


def build_sampler(body: dict, model_tokens: list[int]) -> Sampler:
    """The request's sampler (§1.3): the `sampler`/`sampler_override` object, else Nucleus from the top-level
    `top_p`, `top_k`, `temperature` and penalty fields. Penalties are seeded from `model_tokens` (§4.2)."""
    field = _sampler_field(body)
    sampler = _from_object(field[1], field[0]) if field else _nucleus(body, "")
    if not isinstance(sampler, Mirostat):
        sampler.penalties.seed(model_tokens)
    return sampler


def parse_bias(value: object, n_vocab: int, param: str = "bias") -> dict[int, float]:
    """`{token_id: bias}` from JSON, where keys are strings like "50256" (OpenAI) or ints; ids must be < n_vocab."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"`{param}` must be an object of token id -> number", param)
    bias = {}
    for key, amount in value.items():
        token = _token_id(key, n_vocab, param)
        bias[token] = _number({"v": amount}, "v", 0.0, f"{param}.{key}")
    return bias


def _token_id(key: object, n_vocab: int, param: str) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        token = key
    else:
        token = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else None
    if token is None or not 0 <= token < n_vocab:
        raise bad_request(f"`{param}` key {key!r} is not a token id in [0, {n_vocab})", param)
    return token


def request_bias(body: dict, n_vocab: int) -> dict[int, float]:
    """The request's `bias` or its alias `logit_bias` (§1.3); sending both is an error."""
    sent = [key for key in ("bias", "logit_bias") if body.get(key) is not None]
    if len(sent) == 2:
        raise bad_request("send either `bias` or `logit_bias`, not both", "logit_bias")
    return parse_bias(body[sent[0]], n_vocab, sent[0]) if sent else {}


def make_rng(seed: object = None) -> np.random.Generator:
    """A generator for one request: fresh entropy when `seed` is None, else seeded (negative seeds wrap mod 2**64)."""
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise bad_request("`seed` must be an integer", "seed")
    return np.random.default_rng(seed % 2 ** 64)
