"""MM-SHAP (Parcalabescu & Frank, ACL 2023): Shapley values over image cells and text tokens.

Players and masking follow MM-SHAP, through the adapter capability
``mask_tokens`` (tasks/adapters/contract.py):

- text players are the caption's tokens (``players(inputs).text_valid``,
  never CLS/EOS/padding/prompt); a masked text player becomes the
  tokenizer's mask id (its pad id where there is none);
- image players are the cells of a g×g grid over the model's input image,
  g = max(1, round(√t)) for t text players, so both modalities have
  comparable player counts; a masked cell becomes the normalised mean
  (zero after normalisation), see ``tasks.diagnostics.masking``.

v(S) is the model's score with the players outside S masked. Shapley
values are estimated by permutation sampling: along a random order of the
players, each player's marginal contribution v(S ∪ {j}) − v(S) is one
unbiased draw of φ_j. Antithetic pairs (an order and its reverse) are
averaged into one unit, which cancels much of the variance of a linear
score. V-SHAP = Σ|φ_image| / (Σ|φ_image| + Σ|φ_text|) of the mean φ.

Standard error: the delta method. V-SHAP is a smooth function of the mean of
i.i.d. units (away from φ_j = 0), so SE² ≈ ∇Vᵀ Σ ∇V / m, computed as the
standard error of the mean of the linearised units ∇V·φ_u. The spread of
per-permutation V-SHAP values would measure a different estimator: |φ| of
one permutation's noisy marginals inflates both sums, so its spread says
little about the error of V-SHAP of the mean. The units are the i.i.d.
draws (the two halves of an antithetic pair are dependent). |φ̄_j| is biased
upwards for players whose true value is near zero; that bias (O(1/√m) per
such player) is not in the SE, as in MM-SHAP itself.

Batching: every coalition of one permutation step (each sample's order and
its reverse) for all samples of a batch goes through one ``score`` call.
Inputs with one row per coalition are built by ``model.prepare`` on repeated
images and captions, once per batch layout, so adapters never index their
own tensors. Samples are grouped by grid side g (the keep tensor is
[rows, g, g]); captions of similar length share one group.

Dual encoders (capability ``separable``): along an order the image part of
the coalition only changes at image players and the text part only at text
players. So each order needs g² − 1 image-tower passes and t − 1 text-tower
passes instead of g² + t − 1 passes of both towers; the coalition values
are then ``similarity`` of the cached embeddings. The same orders give the
same values as the generic route (up to float rounding).

Interleaved route (dual encoders, the default there): the value of any pair
(a image players of the order, c text players of the order) is a dot product
of two cached embeddings, so every interleaving of the order's image players
with its text players costs nothing more. Each player's marginal is then
averaged over all interleavings exactly: the a-th image player joins after
c of the t text players with probability C(a−1+c, c)·C(g²−a+t−c, t−c)/C(g²+t, t)
(a uniform random order, given the relative orders of each modality). This
conditional expectation of the permutation estimator (Rao–Blackwell) is
unbiased with no more variance, for the same tower passes; on CLIP-like
scores it cuts the Monte-Carlo error several-fold (benchmarks/mm_shap_cost.py).

Crossed route (dual encoders, the default there): an order's image chain and
its text chain are independent uniform orders of each modality, so any image
chain may be paired with any text chain the sample has seen. With P orders
the P² pairs (each averaged over its interleavings as above) cost dot
products only, and their mean is unbiased; every image player's marginal is
then averaged over P text chains and every text player's over P image
chains. Its error comes from the Hoeffding projection of this two-sample
U-statistic: unit k = mean over q of h(image chain k, text chain q) + mean
over p of h(image chain p, text chain k) − the mean, whose spread over the
units gives the standard error (first order; the O(1/P²) term is left out).

Exact table (dual encoders, few players): every chain of every order only
visits image subsets and text subsets, so 2^{g²} image-tower and 2^t
text-tower passes give the value of every coalition as a dot product, and φ
follows exactly from the Shapley formula over that table. Where those
passes are at most half of what the orders would still cost (the rest of a
fixed budget; with ``target_se``, what the error after ``min_permutations``
projects; half, as distinct rows are encoded once per call), the table is
used and the error is zero; short captions (g = 2, t ≤ 6) need 16 + 64 passes.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from collections import deque
from functools import lru_cache
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from tasks.diagnostics.masking import grid_side

ROUTES = ("auto", "generic", "separable", "interleaved", "crossed")


@dataclass
class MMShapResult:
    """Per-sample MM-SHAP values of one batch (tensors are [B])."""

    sample_ids: list[str]
    v: torch.Tensor                 # V-SHAP, NaN when every φ is zero
    se: torch.Tensor                # Monte-Carlo standard error (delta method), NaN with < 2 units
    permutations: torch.Tensor      # orders evaluated (an antithetic pair counts two)
    evals: torch.Tensor             # masked inputs run through the model (tower passes on the separable route)
    image_passes: torch.Tensor      # passes through the image tower (generic route: every pass)
    text_passes: torch.Tensor       # passes through the text tower (generic route: every pass)
    grid: torch.Tensor              # g: the image has g² players
    n_text: torch.Tensor            # text players
    phi_image: list[torch.Tensor] = field(default_factory=list)  # [g²] row-major cells
    phi_text: list[torch.Tensor] = field(default_factory=list)   # [t] in caption order
    route: str = "generic"
    score_calls: int = 0            # model calls (score, or encode_image/encode_text + similarity)


def v_shap(phi_image: torch.Tensor, phi_text: torch.Tensor) -> torch.Tensor:
    """Σ|φ_image| / (Σ|φ_image| + Σ|φ_text|) over the last dimension; NaN where both sums are zero."""
    a_img, a_txt = phi_image.abs().sum(-1), phi_text.abs().sum(-1)
    total = a_img + a_txt
    return torch.where(total > 0, a_img / total.clamp_min(1e-30), torch.full_like(total, float("nan")))


def v_shap_with_se(units: torch.Tensor, n_text: int) -> tuple[float, float]:
    """V-SHAP of the mean of ``units`` [m, n] (text players first) and its delta-method standard error."""
    phi = units.double().mean(0)
    a_txt, a_img = phi[:n_text].abs().sum(), phi[n_text:].abs().sum()
    total = a_img + a_txt
    if total <= 0:
        return float("nan"), float("nan")
    value = (a_img / total).item()
    if units.shape[0] < 2:
        return value, float("nan")
    grad = torch.sign(phi) * torch.cat([torch.full((n_text,), -a_img), torch.full((len(phi) - n_text,), a_txt)])
    linear = units.double() @ (grad / total**2)
    return value, (linear.std(unbiased=True) / math.sqrt(units.shape[0])).item()


def mm_shap(model, images: Sequence[Image.Image], captions: Sequence[str], sample_ids: Sequence[str], *,
            permutations: int = 16, target_se: float | None = None, min_permutations: int = 8,
            antithetic: bool = True, seed: int = 0, route: str = "auto", max_rows: int | None = None,
            exact: bool = True) -> MMShapResult:
    """MM-SHAP of each (image, caption) pair; ``model`` has capabilities "score" and "mask_tokens".

    ``permutations`` orders per sample, or, with ``target_se``, as many as it
    takes for each sample's standard error to reach ``target_se`` (at least
    ``min_permutations``, at most ``permutations``). A sample with so few
    players that n! ≤ ``permutations`` gets every order once: exact, SE 0.
    ``route``: "separable" uses the dual-encoder towers, "auto" does so where
    the model has them. ``max_rows`` caps the rows of one model call
    (default: every row of a round in one call). ``exact``: on a separable
    route, a sample whose every image and text subset costs fewer tower
    passes than its orders gets exact values from that table (SE 0).
    """
    caps = model.capabilities
    if "mask_tokens" not in caps:
        raise ValueError(f"{model.spec.name}: MM-SHAP needs the adapter capability 'mask_tokens' "
                         f"(players/mask_tokens); this model has {sorted(caps)}")
    if route not in ROUTES:
        raise ValueError(f"route {route!r}: use one of {ROUTES}")
    if route in ("separable", "interleaved", "crossed") and "separable" not in caps:
        raise ValueError(f"{model.spec.name} has no 'separable' capability (encode_image/encode_text/similarity); "
                         "use route='generic' or 'auto'")
    if route == "auto":
        route = "crossed" if "separable" in caps else "generic"
    separable = route != "generic"
    per_order = 2 if antithetic else 1
    if permutations < per_order:
        raise ValueError(f"permutations={permutations}: at least {per_order} (antithetic pairs)")
    max_units = permutations // per_order
    min_units = min(max_units, max(2, -(-min_permutations // per_order)))

    base = model.prepare(list(images), list(captions), list(sample_ids))
    n_text = model.players(base).text_valid.sum(1).tolist()
    grids = [grid_side(t) for t in n_text]
    b = len(sample_ids)
    out = {k: torch.full((b,), float("nan"), dtype=torch.float64) for k in ("v", "se")}
    used = torch.zeros(b, dtype=torch.long)
    passes = {k: torch.zeros(b, dtype=torch.long) for k in ("image", "text")}
    phi_image: list[torch.Tensor] = [torch.empty(0)] * b
    phi_text: list[torch.Tensor] = [torch.empty(0)] * b
    # One stream per sample, from the seed and the sample's id: a sample's orders do not depend on which other
    # samples share its batch, in what order, or how many rounds they take.
    gens = [torch.Generator().manual_seed(sample_seed(seed, sid)) for sid in sample_ids]
    calls = 0
    for g in sorted(set(grids)):  # the keep tensor has one g per call
        members = [i for i in range(b) if grids[i] == g]
        Evaluator = {"generic": _GenericEvaluator, "separable": _SeparableEvaluator,
                     "interleaved": _InterleavedEvaluator, "crossed": _CrossedEvaluator}[route]
        ev = Evaluator(model, images, captions, sample_ids, members, [n_text[i] for i in members], g, max_rows)
        units: dict[int, list[torch.Tensor]] = {i: [] for i in members}
        # Few players (n! ≤ permutations): every order once, so φ is exact and the error zero.
        exhaustive = {i: deque(_all_orders(n_text[i] + g * g, antithetic)) for i in members
                      if math.factorial(n_text[i] + g * g) <= permutations}
        tabled: set[int] = set()
        active = list(members)
        while active:
            if separable and exact:  # the table where it costs fewer tower passes than the orders still needed
                cheaper = ev.exact_phi([i for i in active if i not in exhaustive and _table_is_cheaper(
                    g, n_text[i], _rows_per_unit(route, n_text[i], g, per_order)
                    * _units_still_needed(len(units[i]), out["se"][i].item(), target_se, min_units, max_units))])
                for i, phi in cheaper.items():
                    units[i] = [phi]
                    out["v"][i], out["se"][i] = v_shap(phi[n_text[i]:], phi[:n_text[i]]).item(), 0.0
                tabled |= set(cheaper)
                active = [i for i in active if i not in cheaper]
                if not active:
                    break
            orders = {}
            for i in active:
                k = _units_this_round(len(units[i]), out["se"][i].item(), target_se, min_units, max_units,
                                      _rows_per_unit(route, n_text[i], g, per_order) * len(active))
                if i in exhaustive:
                    orders[i] = torch.cat([exhaustive[i].popleft() for _ in range(min(k, len(exhaustive[i])))])
                    continue
                drawn = [torch.randperm(n_text[i] + g * g, generator=gens[i]) for _ in range(k)]
                orders[i] = torch.cat([torch.stack([o, o.flip(0)]) if antithetic else o[None] for o in drawn])
            marginals = ev.marginals(active, orders)  # i -> [P, n]: each player's marginal along each order
            for i in active:
                if isinstance(ev, _CrossedEvaluator):  # every unit changes as chains are added: recomputed whole
                    units[i] = list(ev.units(i, per_order))
                else:  # one unit per antithetic pair (or single order)
                    units[i].extend(marginals[i].view(-1, per_order, marginals[i].shape[1]).mean(1))
            still = []
            for i in active:
                m = len(units[i])
                value, se = v_shap_with_se(torch.stack(units[i]), n_text[i])
                if i in exhaustive:
                    done = not exhaustive[i]
                    se = 0.0 if done else se  # every order seen: no sampling error left
                else:
                    done = m >= max_units or (target_se is not None and m >= min_units and not se > target_se)
                out["v"][i], out["se"][i] = value, se
                if not done:
                    still.append(i)
            active = still
        for i in members:
            phi = torch.stack(units[i]).mean(0)
            phi_text[i], phi_image[i] = phi[:n_text[i]], phi[n_text[i]:]
            every = i in exhaustive or i in tabled  # every order counted, by enumeration or by the table
            used[i] = math.factorial(n_text[i] + g * g) if every else len(units[i]) * per_order
            passes["image"][i], passes["text"][i] = ev.passes["image"][i], ev.passes["text"][i]
        calls += ev.calls
    evals = passes["image"] if not separable else passes["image"] + passes["text"]
    return MMShapResult(list(sample_ids), out["v"].float(), out["se"].float(), used, evals, passes["image"],
                        passes["text"], torch.tensor(grids), torch.tensor(n_text), phi_image, phi_text,
                        route, calls)


ROUND_ROWS = 512  # coalition rows one round may build per grid group: bounds the memory of a round


def sample_seed(seed: int, sample_id: str) -> int:
    """The seed of one sample's orders: a stable hash of (seed, sample id), the same in every process."""
    digest = hashlib.blake2b(f"{seed}/{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _rows_per_unit(route: str, t: int, g: int, per_order: int) -> int:
    """Model rows one unit costs: every inner coalition (generic), or the tower prefixes (separable routes)."""
    inner = t + g * g - 1 if route == "generic" else max(g * g - 1, 0) + max(t - 1, 0)
    return per_order * max(inner, 1)


def _table_is_cheaper(g: int, t: int, sampled_passes: int) -> bool:
    """Whether every image subset and every text subset (one round's rows each at most) cost clearly fewer tower
    passes than the orders would: half of their count, since adapters encode each distinct row of a call once and
    the orders of a round share many prefixes (open_clip ViT-B-32, t = 6: the table after 8 orders cost 13 s where
    14 more orders cost 11 s, with 80 table passes against 112 counted)."""
    return max(2 ** (g * g), 2**t) <= ROUND_ROWS and 2 ** (g * g) + 2**t <= sampled_passes // 2


def _subsets(n: int) -> torch.Tensor:
    """[2^n, n] every subset of n players: row ``code`` keeps player j where bit j of ``code`` is set."""
    return (torch.arange(2**n)[:, None] >> torch.arange(n)) & 1 == 1


def _shapley_from_table(table: torch.Tensor, n_image: int, n_text: int) -> torch.Tensor:
    """Exact φ (text players first) from ``table[a, c]`` = v(image subset a ∪ text subset c), subsets as bit codes.

    φ_j = Σ_{S ∌ j} |S|!(n − |S| − 1)!/n! · (v(S ∪ {j}) − v(S)).
    """
    n = n_image + n_text
    weight = torch.tensor([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)],
                          dtype=torch.float64)
    size = _subsets(n_image).sum(1)[:, None] + _subsets(n_text).sum(1)[None, :]  # [2^{n_image}, 2^{n_text}]
    w = weight[size.clamp(max=n - 1)]  # rows with every player are never an S ∌ j (masked below)
    phi = torch.zeros(n, dtype=torch.float64)
    for j in range(n_text):
        without = torch.nonzero((torch.arange(2**n_text) >> j) & 1 == 0).flatten()
        phi[j] = (w[:, without] * (table[:, without | (1 << j)] - table[:, without])).sum()
    for k in range(n_image):
        without = torch.nonzero((torch.arange(2**n_image) >> k) & 1 == 0).flatten()
        phi[n_text + k] = (w[without] * (table[without | (1 << k)] - table[without])).sum()
    return phi


def _units_still_needed(m: int, se: float, target_se: float | None, min_units: int, max_units: int) -> int:
    """Units a sample would still draw: the rest of a fixed budget, or what SE² ≈ σ²/m projects for ``target_se``
    (0 before ``min_units``: nothing is known yet)."""
    if target_se is None:
        return max_units - m
    if m < min_units or not math.isfinite(se) or target_se <= 0:
        return 0
    return min(max_units - m, max(0, math.ceil(m * (se / target_se) ** 2) - m))


def _units_this_round(m: int, se: float, target_se: float | None, min_units: int, max_units: int,
                      rows_per_unit: int) -> int:
    """How many units a sample gets in the next round: as few rounds (model calls) as the error allows.

    A fixed budget is drawn at once; with ``target_se`` the first round draws ``min_units`` and each
    later one half the units the error's 1/√m decay says are still missing (SE² ≈ σ²/m): an SE read
    from a few units is noisy, and half a step overshoots the target less. Capped by ``ROUND_ROWS``
    rows per round (at least one unit) so that a round's inputs fit in memory.
    """
    if target_se is not None and m < min_units:
        want = min_units - m
    else:
        needed = _units_still_needed(m, se, target_se, min_units, max_units)
        want = needed if target_se is None else math.ceil(needed / 2)
    return max(1, min(want, max_units - m, ROUND_ROWS // max(rows_per_unit, 1)))


def _all_orders(n: int, antithetic: bool) -> list[torch.Tensor]:
    """Every order of n players as units: [2, n] antithetic pairs (each pair once) or [1, n] single orders."""
    orders = itertools.permutations(range(n))
    if not antithetic:
        return [torch.tensor([o]) for o in orders]
    return [torch.tensor([o, o[::-1]]) for o in orders if o <= o[::-1]]


# --- evaluation of coalitions -----------------------------------------------

def _prefixes(orders: torch.Tensor) -> torch.Tensor:
    """[P, n] orders → [P, n − 1, n] coalitions: the first k players of each order, k = 1..n − 1."""
    n = orders.shape[1]
    rank = torch.argsort(orders, dim=1)  # the step at which each player joins
    return torch.arange(1, n)[None, :, None] > rank[:, None, :]


class _Rows:
    """Model inputs with one row per coalition, built by ``prepare`` on repeated samples and reused per layout."""

    def __init__(self, model, images, captions, sample_ids, max_rows: int | None):
        self.model, self.images, self.captions, self.ids = model, images, captions, sample_ids
        self.max_rows = max_rows
        self._cache: tuple[tuple[int, ...], list] | None = None

    def chunks(self, rows: list[int]) -> list[tuple[slice, object]]:
        """(slice of ``rows``, Inputs) pieces of at most ``max_rows`` rows."""
        key = tuple(rows)
        if self._cache is None or self._cache[0] != key:
            step = self.max_rows or max(1, len(rows))
            pieces = []
            for start in range(0, len(rows), step):
                idx = rows[start:start + step]
                inputs = self.model.prepare([self.images[i] for i in idx], [self.captions[i] for i in idx],
                                            [self.ids[i] for i in idx])
                pieces.append((slice(start, start + len(idx)), inputs))
            self._cache = (key, pieces)
        return self._cache[1]


def _text_keep(text_valid: torch.Tensor, players_kept: torch.Tensor) -> torch.Tensor:
    """[M, T] keep mask: the k-th player position of a row takes ``players_kept[row, k]``; other positions are kept."""
    if players_kept.shape[1] == 0:
        return torch.ones_like(text_valid)
    which = (text_valid.long().cumsum(1) - 1).clamp(0, players_kept.shape[1] - 1)
    return torch.where(text_valid, players_kept.gather(1, which), torch.ones_like(text_valid))


class _Evaluator:
    """Values of every coalition along the given orders; counts model passes per sample."""

    def __init__(self, model, images, captions, sample_ids, members: list[int], n_text: list[int], g: int,
                 max_rows: int | None):
        self.model, self.g = model, g
        self.n_text = dict(zip(members, n_text))
        self.passes = {k: {i: 0 for i in members} for k in ("image", "text")}
        self.calls = 0
        self.source = (model, images, captions, sample_ids, max_rows)
        self.rows = _Rows(*self.source)
        self.ends: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # v(∅), v(all players)

    def _check_players(self, inputs, rows: list[int]) -> torch.Tensor:
        valid = self.model.players(inputs).text_valid
        counts = valid.sum(1).tolist()
        for r, i in enumerate(rows):
            if counts[r] != self.n_text[i]:
                raise RuntimeError(f"{self.model.spec.name}: sample {i} has {self.n_text[i]} text players alone but "
                                   f"{counts[r]} when prepared with others; players() must not depend on the batch")
        return valid

    def _text_part(self, rows: list[int], keeps: list[torch.Tensor]) -> torch.Tensor:
        """[M, max t] kept text players per row, padded with True."""
        text = torch.ones(len(rows), max(self.n_text[i] for i in rows), dtype=torch.bool)
        for r, (i, keep) in enumerate(zip(rows, keeps)):
            text[r, :self.n_text[i]] = keep[:self.n_text[i]]
        return text

    def marginals(self, active: list[int], orders: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """i -> [P, n] marginal contribution of each player (by index) along each order."""
        values = self.values(active, orders)  # i -> [P, n + 1] values along each order
        out = {}
        for i in active:
            marginal = torch.zeros(orders[i].shape, dtype=torch.float64)
            marginal.scatter_(1, orders[i], values[i][:, 1:] - values[i][:, :-1])
            out[i] = marginal
        return out

    def _with_ends(self, i: int, inner: torch.Tensor) -> torch.Tensor:
        empty, full = self.ends[i]
        p = inner.shape[0]
        return torch.cat([empty.expand(p, 1), inner, full.expand(p, 1)], dim=1)


class _GenericEvaluator(_Evaluator):
    """v(S) = score(mask_tokens(inputs, S)): one pass of the whole model per coalition."""

    def _score(self, rows: list[int], coalitions: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for part, inputs in self.rows.chunks(rows):
            sub_rows, sub = rows[part], coalitions[part]
            valid = self._check_players(inputs, sub_rows)
            image = torch.stack([keep[self.n_text[i]:].view(self.g, self.g) for i, keep in zip(sub_rows, sub)])
            masked = self.model.mask_tokens(inputs, image, _text_keep(valid, self._text_part(sub_rows, sub)))
            out.append(self.model.score(masked).detach().double().cpu())
            self.calls += 1
        for i in rows:
            self.passes["image"][i] += 1
            self.passes["text"][i] += 1
        return torch.cat(out)

    def values(self, active: list[int], orders: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        todo = [i for i in active if i not in self.ends]
        if todo:
            ends = [torch.full((self.n_text[i] + self.g**2,), keep) for i in todo for keep in (False, True)]
            v = self._score([i for i in todo for _ in range(2)], ends)
            self.ends.update({i: (v[2 * k], v[2 * k + 1]) for k, i in enumerate(todo)})
        rows, coalitions, shapes = [], [], {}
        for i in active:
            prefixes = _prefixes(orders[i])  # [P, n − 1, n]
            shapes[i] = prefixes.shape[:2]
            coalitions.extend(prefixes.reshape(-1, prefixes.shape[-1]))
            rows.extend([i] * (shapes[i][0] * shapes[i][1]))
        v = self._score(rows, coalitions) if rows else torch.empty(0, dtype=torch.float64)
        result, start = {}, 0
        for i in active:
            p, k = shapes[i]
            result[i] = self._with_ends(i, v[start:start + p * k].view(p, k))
            start += p * k
        return result


class _SeparableEvaluator(_Evaluator):
    """Dual encoders: image coalitions through the image tower, text coalitions through the text tower."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.text_rows = _Rows(*self.source)
        self.end_embeddings: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # [2, D] image, text: (∅, full)

    def _encode_images(self, rows: list[int], keeps: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for part, inputs in self.rows.chunks(rows):
            out.append(self.model.encode_image(inputs, torch.stack(keeps[part])).detach())
            self.calls += 1
        for i in rows:
            self.passes["image"][i] += 1
        return torch.cat(out)

    def _encode_texts(self, rows: list[int], keeps: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for part, inputs in self.text_rows.chunks(rows):
            sub_rows = rows[part]
            valid = self._check_players(inputs, sub_rows)
            out.append(self.model.encode_text(inputs, _text_keep(valid, self._text_part(sub_rows, keeps[part]))).detach())
            self.calls += 1
        for i in rows:
            self.passes["text"][i] += 1
        return torch.cat(out)

    def _similarity(self, image: list[torch.Tensor], text: list[torch.Tensor]) -> torch.Tensor:
        self.calls += 1
        return self.model.similarity(torch.stack(image), torch.stack(text)).detach().double().cpu()

    def values(self, active: list[int], orders: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        g2 = self.g**2
        img_emb, txt_emb, plan = self._states(active, orders)
        left, right = [], []
        for i in active:
            t = self.n_text[i]
            img_base, txt_base, img_state, txt_state = plan[i]
            (img_empty, img_full), (txt_empty, txt_full) = self.end_embeddings[i]
            for p in range(img_state.shape[0]):
                for a, c in zip(img_state[p].tolist(), txt_state[p].tolist()):
                    left.append(img_empty if a == 0 else img_full if a == g2 else
                                img_emb[img_base + p * (g2 - 1) + a - 1])
                    right.append(txt_empty if c == 0 else txt_full if c == t else
                                 txt_emb[txt_base + p * (t - 1) + c - 1])
        sims = self._similarity(left, right) if left else torch.empty(0, dtype=torch.float64)
        result, start = {}, 0
        for i in active:
            p, k = plan[i][2].shape
            result[i] = self._with_ends(i, sims[start:start + p * k].view(p, k))
            start += p * k
        return result

    def _ends(self, active: list[int]) -> None:
        g = self.g
        todo = [i for i in active if i not in self.ends]
        if todo:
            pairs = [i for i in todo for _ in range(2)]
            img = self._encode_images(pairs, [torch.full((g, g), k) for _ in todo for k in (False, True)])
            txt = self._encode_texts(pairs, [torch.full((self.n_text[i],), k) for i in todo for k in (False, True)])
            v = self._similarity(list(img), list(txt))
            for k, i in enumerate(todo):
                self.end_embeddings[i] = (img[2 * k:2 * k + 2], txt[2 * k:2 * k + 2])
                self.ends[i] = (v[2 * k], v[2 * k + 1])

    def exact_phi(self, members: list[int]) -> dict[int, torch.Tensor]:
        """i -> exact φ [n] (text first) from every image subset and every text subset through the towers."""
        if not members:
            return {}
        g, g2 = self.g, self.g**2
        img_rows = [i for i in members for _ in range(2**g2)]
        txt_rows = [i for i in members for _ in range(2 ** self.n_text[i])]
        img = self._encode_images(img_rows, [k.view(g, g) for _ in members for k in _subsets(g2)])
        txt = self._encode_texts(txt_rows, [k for i in members for k in _subsets(self.n_text[i])])
        out, a, c = {}, 0, 0
        for i in members:
            n_img, n_txt = 2**g2, 2 ** self.n_text[i]
            left = img[a:a + n_img].repeat_interleave(n_txt, dim=0)  # (image subset, text subset) row-major
            right = txt[c:c + n_txt].repeat(n_img, 1)
            table = self._similarity(list(left), list(right)).view(n_img, n_txt)
            out[i] = _shapley_from_table(table, g2, self.n_text[i])
            a, c = a + n_img, c + n_txt
        return out

    def _states(self, active: list[int], orders: dict[int, torch.Tensor]):
        """Embeddings of each order's image prefixes (a = 1..g²−1 image players) and text prefixes (c = 1..t−1).

        Along an order, the image part of the first k players is "the first a image players" with
        a = how many image players are among them; only a = 1..g²−1 need a pass (0 and g² are cached).
        """
        g, g2 = self.g, self.g**2
        self._ends(active)
        img_rows, img_keeps, txt_rows, txt_keeps, plan = [], [], [], [], {}
        for i in active:
            t, order = self.n_text[i], orders[i]
            prefixes = _prefixes(order)  # [P, n − 1, n]
            is_img = order >= t
            plan[i] = (len(img_rows), len(txt_rows), torch.cumsum(is_img, 1)[:, :-1], torch.cumsum(~is_img, 1)[:, :-1])
            for p in range(order.shape[0]):
                for step in torch.nonzero(is_img[p]).flatten()[: g2 - 1].tolist():
                    img_rows.append(i)
                    img_keeps.append(prefixes[p, step, t:].view(g, g))
                for step in torch.nonzero(~is_img[p]).flatten()[: max(t - 1, 0)].tolist():
                    txt_rows.append(i)
                    txt_keeps.append(prefixes[p, step, :t])
        img_emb = self._encode_images(img_rows, img_keeps) if img_rows else None
        txt_emb = self._encode_texts(txt_rows, txt_keeps) if txt_rows else None
        return img_emb, txt_emb, plan


class _InterleavedEvaluator(_SeparableEvaluator):
    """The separable route's passes; each marginal averaged over every interleaving of the two modalities."""

    def marginals(self, active: list[int], orders: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        g2 = self.g**2
        img_emb, txt_emb, plan = self._states(active, orders)
        left, right = [], []
        for i in active:
            t, (img_base, txt_base, _, _) = self.n_text[i], plan[i]
            (img_empty, img_full), (txt_empty, txt_full) = self.end_embeddings[i]
            for p in range(orders[i].shape[0]):
                images = [img_empty, *(img_emb[img_base + p * (g2 - 1) + a] for a in range(g2 - 1)), img_full]
                texts = [txt_empty, *(txt_emb[txt_base + p * (t - 1) + c] for c in range(t - 1)), txt_full]
                image_stack, text_stack = torch.stack(images[: g2 + 1]), torch.stack(texts[: t + 1])
                left.append(image_stack.repeat_interleave(t + 1, dim=0))  # (a, c) row-major
                right.append(text_stack.repeat(g2 + 1, 1))
        sims = self._similarity(list(torch.cat(left)), list(torch.cat(right))) if left else None
        out, start = {}, 0
        for i in active:
            t, order = self.n_text[i], orders[i]
            w_image, w_text = _interleaving_weights(g2, t)
            marginal = torch.zeros(order.shape, dtype=torch.float64)
            for p in range(order.shape[0]):
                grid = sims[start:start + (g2 + 1) * (t + 1)].view(g2 + 1, t + 1)
                start += (g2 + 1) * (t + 1)
                grid[0, 0], grid[g2, t] = self.ends[i]  # the cached ends, exactly as the other routes use them
                image_order, text_order = order[p][order[p] >= t], order[p][order[p] < t]
                marginal[p, image_order] = ((grid[1:] - grid[:-1]) * w_image).sum(1)  # [g², t + 1] → [g²]
                marginal[p, text_order] = ((grid[:, 1:] - grid[:, :-1]) * w_text).sum(0)  # [g² + 1, t] → [t]
            out[i] = marginal
        return out

    def values(self, active, orders):  # noqa: D102 - only marginals are defined on this route
        raise NotImplementedError("the interleaved route averages over orders; use marginals()")


class _CrossedEvaluator(_InterleavedEvaluator):
    """The interleaved route's chains, every image chain of a sample paired with every one of its text chains."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chains: dict[int, dict[str, list]] = {}  # i -> image/text chain embeddings and orders, grids by pair

    def marginals(self, active: list[int], orders: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        g2 = self.g**2
        img_emb, txt_emb, plan = self._states(active, orders)
        for i in active:
            t, (img_base, txt_base, _, _) = self.n_text[i], plan[i]
            (img_empty, img_full), (txt_empty, txt_full) = self.end_embeddings[i]
            c = self.chains.setdefault(i, {"image": [], "text": [], "image_order": [], "text_order": [],
                                           "h": torch.zeros(0, 0, t + g2, dtype=torch.float64)})
            for p, order in enumerate(orders[i]):
                c["image"].append(torch.stack([img_empty, *(img_emb[img_base + p * (g2 - 1) + a] for a in range(g2 - 1)),
                                               img_full][: g2 + 1]))
                c["text"].append(torch.stack([txt_empty, *(txt_emb[txt_base + p * (t - 1) + k] for k in range(t - 1)),
                                              txt_full][: t + 1]))
                c["image_order"].append(order[order >= t])
                c["text_order"].append(order[order < t])
            old, n = c["h"].shape[0], len(c["image"])
            h = torch.zeros(n, n, t + g2, dtype=torch.float64)  # h[p, q]: each player's marginal under pair (p, q)
            h[:old, :old] = c["h"]
            w_image, w_text = _interleaving_weights(g2, t)
            for p in range(n):  # the new pairs only: dot products of cached embeddings
                for q in range(old if p < old else 0, n):
                    grid = self.model.similarity(c["image"][p].repeat_interleave(t + 1, dim=0),
                                                 c["text"][q].repeat(g2 + 1, 1)).detach().double().cpu().view(g2 + 1, t + 1)
                    grid[0, 0], grid[g2, t] = self.ends[i]  # the cached ends, exactly as the other routes use them
                    h[p, q, c["image_order"][p]] = ((grid[1:] - grid[:-1]) * w_image).sum(1)
                    h[p, q, c["text_order"][q]] = ((grid[:, 1:] - grid[:, :-1]) * w_text).sum(0)
            c["h"] = h
            self.calls += 1
        return {}

    def units(self, i: int, per_unit: int) -> torch.Tensor:
        """[m, n] Hoeffding units, one per ``per_unit`` consecutive orders (an antithetic pair): mean = the estimate."""
        h = self.chains[i]["h"]
        mean = h.mean((0, 1))
        projected = h.mean(1) + h.mean(0) - mean  # [P, n]
        return projected.view(-1, per_unit, h.shape[-1]).mean(1)

    def values(self, active, orders):  # noqa: D102 - only units are defined on this route
        raise NotImplementedError("the crossed route pairs chains across orders; use units()")


@lru_cache(maxsize=64)
def _interleaving_weights(n_image: int, n_text: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n_image, n_text + 1]: P(the a-th image player joins after exactly c text players), a = 1..n_image,
    over uniform interleavings; and [n_image + 1, n_text], the same for the c-th text player."""
    def weights(n: int, m: int) -> torch.Tensor:
        total = math.comb(n + m, m)
        return torch.tensor([[math.comb(a - 1 + c, c) * math.comb(n - a + m - c, m - c) / total for c in range(m + 1)]
                             for a in range(1, n + 1)], dtype=torch.float64)
    return weights(n_image, n_text), weights(n_text, n_image).T
