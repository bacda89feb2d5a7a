"""MM-SHAP against exact Shapley values, and the dual-encoder route against the generic one.

The known-answer tests use a small LoadedModel-like object whose score is a
hand-written polynomial of the players' presence, so exact Shapley values
come from enumerating every coalition (this test only; the adapters' own
masking is tested with the real models in tests/unit/tasks/adapters/).
"""
from __future__ import annotations

import itertools
import json
import math

import open_clip
import pytest
import torch
from PIL import Image

from tasks.adapters.contract import Inputs, ModelSpec, Players
from tasks.adapters.openclip import OpenClipAdapter
from tasks.diagnostics.masking import grid_side, pixel_keep
from tasks.diagnostics.mm_shap import mm_shap, v_shap, v_shap_with_se

SIDE = 12  # the fake image's pixels per side (not a multiple of every g on purpose)


class PolynomialModel:
    """Text: [CLS] + one position per caption word + padding; image: SIDE×SIDE ones.

    A player is present when its word is not masked / its whole grid cell is
    unmasked. score = Σ_m c_m Π_{j∈m} x_j over the sample's monomials m.
    """

    spec = ModelSpec(name="polynomial", adapter="test", source="")
    capabilities = frozenset({"score", "mask_tokens"})

    def __init__(self, terms_for):
        self.terms_for = terms_for  # caption -> [(coefficient, (player, ...)), ...], text players first
        self.score_calls = 0

    def prepare(self, images, captions, sample_ids):
        width = 1 + max(len(c.split()) for c in captions) + 1
        valid = torch.zeros(len(captions), width, dtype=torch.bool)
        for i, c in enumerate(captions):
            valid[i, 1:1 + len(c.split())] = True
        tensors = {"words": torch.ones(len(captions), width), "valid": valid,
                   "pixels": torch.ones(len(captions), SIDE, SIDE)}
        return Inputs(tensors=tensors, sample_ids=list(sample_ids), meta={"captions": list(captions)})

    def players(self, inputs):
        return Players(text_valid=inputs.tensors["valid"].clone())

    def mask_tokens(self, inputs, image_keep, text_keep):
        t = inputs.tensors
        assert text_keep[~t["valid"]].all(), "only players may be masked: never [CLS] or padding"
        words = t["words"] * text_keep.float()
        pixels = t["pixels"] * pixel_keep(image_keep, SIDE, SIDE).float()
        return Inputs(tensors={**t, "words": words, "pixels": pixels}, sample_ids=inputs.sample_ids, meta=inputs.meta)

    def score(self, inputs):
        self.score_calls += 1
        t = inputs.tensors
        out = []
        for i, caption in enumerate(inputs.meta["captions"]):
            assert t["words"][i, 0] == 1, "[CLS] was masked"
            x = self.presence(t["words"][i][t["valid"][i]], t["pixels"][i], grid_side(len(caption.split())))
            out.append(sum(c * math.prod(x[j] for j in m) for c, m in self.terms_for(caption)))
        return torch.tensor(out)

    @staticmethod
    def presence(words, pixels, g):
        cells = torch.arange(SIDE) * g // SIDE  # the cell of each pixel row / column
        image = [float(pixels[cells == r][:, cells == c].min()) for r in range(g) for c in range(g)]
        return [float(w) for w in words] + image


def _terms(caption):
    """A fixed polynomial per caption length: main effects, pairwise and three-way interactions.

    The three-way term matters: antithetic pairs make games of degree ≤ 2
    exact, and then the error estimate would go untested.
    """
    t = len(caption.split())
    n = t + grid_side(t) ** 2
    terms = [(0.3 + 0.4 * j * (-1) ** j, (j,)) for j in range(n)]
    terms += [(1.5, (0, n - 1)), (-0.8, (t, n - 1)), (2.0, (0, 1, n - 1))]
    return terms


def exact_shapley(n, value):
    """φ_j = Σ_S |S|!(n−|S|−1)!/n! [v(S ∪ j) − v(S)] over every coalition S without j."""
    phi = torch.zeros(n, dtype=torch.float64)
    for j in range(n):
        others = [k for k in range(n) if k != j]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in itertools.combinations(others, size):
                phi[j] += weight * (value(set(s) | {j}) - value(set(s)))
    return phi


def _exact(caption):
    t = len(caption.split())
    n = t + grid_side(t) ** 2
    terms = _terms(caption)
    return exact_shapley(n, lambda s: sum(c for c, m in terms if set(m) <= s)), t


CAPTIONS = ["a red square on the left", "two dots", "one small blue cross"]  # t = 6, 2, 4 → g = 2, 1, 2
IMAGES = [Image.new("RGB", (4, 4))] * 3
IDS = ["s0", "s1", "s2"]


def test_v_shap_and_its_delta_method_error():
    assert v_shap(torch.tensor([1.0, -1.0]), torch.tensor([2.0])).item() == 0.5
    assert math.isnan(v_shap(torch.zeros(2), torch.zeros(1)).item())
    # identical units: no spread, no error; one unit: no error estimate
    units = torch.tensor([[1.0, -3.0, 2.0]] * 4)  # text first: one text player
    assert v_shap_with_se(units, 1) == (pytest.approx(5 / 6), 0.0)
    assert math.isnan(v_shap_with_se(units[:1], 1)[1])
    # the linearised units ∇V·φ_u carry the error: for V = |φ_img|/(|φ_img| + |φ_txt|) with one player each,
    # ∇V at φ̄ = (1, 1) is (−½·½, ½·½) = (−¼, ¼)
    units = torch.tensor([[1.0, 0.5], [1.0, 1.5]])
    value, se = v_shap_with_se(units, 1)
    linear = torch.tensor([-0.25 * 1 + 0.25 * 0.5, -0.25 * 1 + 0.25 * 1.5])
    assert value == pytest.approx(0.5) and se == pytest.approx((linear.std() / math.sqrt(2)).item())


def test_permutation_estimate_agrees_with_enumeration_within_its_error():
    model = PolynomialModel(_terms)
    result = mm_shap(model, IMAGES, CAPTIONS, IDS, permutations=200, seed=1)
    replicates = [mm_shap(model, IMAGES, CAPTIONS, IDS, permutations=200, seed=s) for s in range(100, 110)]
    assert result.grid.tolist() == [2, 1, 2] and result.n_text.tolist() == [6, 2, 4]
    assert result.permutations.tolist() == [200, 6, 200]
    for i, caption in enumerate(CAPTIONS):
        phi, t = _exact(caption)
        exact = v_shap(phi[t:], phi[:t]).item()
        # "two dots": 3 players, 3! ≤ 200 orders, so every order is used once: exact, zero error
        assert result.se[i] == 0 if caption == "two dots" else result.se[i] > 0
        assert abs(result.v[i].item() - exact) < 4 * result.se[i].item() + 1e-6, (caption, result.v[i], exact)
        estimate = torch.cat([result.phi_text[i], result.phi_image[i]])
        # each φ_j within 4 of its own standard errors, read from the spread of independent replicates
        spread = torch.stack([torch.cat([r.phi_text[i], r.phi_image[i]]) for r in replicates]).std(0)
        assert ((estimate - phi).abs() <= 4 * spread + 1e-6).all(), (caption, estimate, phi, spread)
        # efficiency: Σφ = v(all) − v(∅) holds for every permutation, hence for the mean
        assert estimate.sum().item() == pytest.approx(phi.sum().item(), abs=1e-5)  # float32 scores


def test_an_additive_score_is_exact_with_zero_error():
    # without interactions every order gives each player its own coefficient
    model = PolynomialModel(lambda c: [(w, (j,)) for j, w in enumerate([1.0, -2.0, 0.5, 3.0, 0.25, -0.75])])
    result = mm_shap(model, IMAGES[:1], ["one small blue cross"], IDS[:1], permutations=4)
    assert torch.allclose(result.phi_text[0], torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64))
    assert torch.allclose(result.phi_image[0], torch.tensor([0.25, -0.75, 0, 0], dtype=torch.float64))
    assert result.v[0].item() == pytest.approx(1.0 / 7.5) and result.se[0].item() == 0.0


def test_a_fixed_budget_is_one_score_call_for_the_whole_batch():
    model = PolynomialModel(_terms)
    captions = ["a red square on", "one small blue cross"]  # both t = 4 → one grid group
    result = mm_shap(model, IMAGES[:2], captions, IDS[:2], permutations=8)
    # v(∅) and v(all) in one call, then every coalition of the 4 antithetic pairs of both samples in one call
    assert model.score_calls == result.score_calls == 1 + 1
    n = 4 + 4
    assert result.evals.tolist() == [2 + 8 * (n - 1)] * 2
    capped = PolynomialModel(_terms)
    mm_shap(capped, IMAGES[:2], captions, IDS[:2], permutations=8, max_rows=10)
    assert capped.score_calls > model.score_calls  # rows split into calls of at most 10


def test_target_standard_error_stops_early_with_a_maximum():
    loose = mm_shap(PolynomialModel(_terms), IMAGES, CAPTIONS, IDS, permutations=64, target_se=1.0,
                    min_permutations=6)
    assert loose.permutations.tolist() == [6, 6, 6]
    strict = mm_shap(PolynomialModel(_terms), IMAGES, CAPTIONS, IDS, permutations=12, target_se=1e-9)
    assert strict.permutations.tolist() == [12, 6, 12]  # "two dots" has only 3! = 6 orders: all used, exact
    assert strict.se[1] == 0
    assert (strict.evals[[0, 2]] > loose.evals[[0, 2]]).all()


def test_target_standard_error_is_reached_in_a_few_rounds_not_one_call_per_pair():
    model = PolynomialModel(_terms)
    result = mm_shap(model, IMAGES, CAPTIONS, IDS, permutations=4000, target_se=0.001, min_permutations=8)
    assert (result.se[[0, 2]] <= 0.001).all() and result.permutations[2] > 100  # > 50 antithetic pairs
    # each round draws half the pairs SE² ≈ σ²/m says are missing: a few calls, not one per pair
    assert 3 * result.score_calls < result.permutations[2] // 2


def test_a_samples_values_do_not_depend_on_the_rest_of_its_batch():
    """Each sample draws its orders from (seed, sample id): alone, first or last in a batch, the same φ."""
    together = mm_shap(PolynomialModel(_terms), IMAGES, CAPTIONS, IDS, permutations=10, seed=5)
    alone = mm_shap(PolynomialModel(_terms), IMAGES[:1], CAPTIONS[:1], IDS[:1], permutations=10, seed=5)
    last = mm_shap(PolynomialModel(_terms), IMAGES[::-1], CAPTIONS[::-1], IDS[::-1], permutations=10, seed=5)
    for other, i in ((alone, 0), (last, 2)):
        assert torch.equal(other.phi_text[i], together.phi_text[0]) and torch.equal(other.phi_image[i], together.phi_image[0])
        assert other.v[i] == together.v[0] and other.se[i] == together.se[0]
    reseeded = mm_shap(PolynomialModel(_terms), IMAGES[:1], CAPTIONS[:1], IDS[:1], permutations=10, seed=6)
    assert not torch.equal(reseeded.phi_text[0], alone.phi_text[0])  # the seed still matters


def test_same_seed_same_values_and_errors_name_the_fix():
    a = mm_shap(PolynomialModel(_terms), IMAGES, CAPTIONS, IDS, permutations=6, seed=3)
    b = mm_shap(PolynomialModel(_terms), IMAGES, CAPTIONS, IDS, permutations=6, seed=3)
    assert torch.equal(a.v, b.v)
    scorer = PolynomialModel(_terms)
    scorer.capabilities = frozenset({"score"})
    with pytest.raises(ValueError, match="mask_tokens"):
        mm_shap(scorer, IMAGES, CAPTIONS, IDS)
    with pytest.raises(ValueError, match="separable"):
        mm_shap(PolynomialModel(_terms), IMAGES, CAPTIONS, IDS, route="separable")


def test_pixel_keep_partitions_the_image_into_cells():
    keep = torch.tensor([[[True, False], [False, True]]])
    pixels = pixel_keep(keep, 5, 4)[0]
    assert pixels.shape == (5, 4)
    # rows 0-2 → cell row 0 (⌊y·2/5⌋), rows 3-4 → cell row 1; columns 0-1 / 2-3
    assert pixels[:3, :2].all() and not pixels[:3, 2:].any() and not pixels[3:, :2].any() and pixels[3:, 2:].all()
    assert [grid_side(t) for t in (0, 1, 2, 3, 6, 7, 12)] == [1, 1, 1, 2, 2, 3, 3]


# --- the dual-encoder route on a tiny open_clip model -------------------------

TINY = "fusionaudit-tiny-ViT-mmshap"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    return OpenClipAdapter(device="cpu").load(
        ModelSpec(name="tiny-clip", adapter="openclip", source="", arch=TINY, allow_random_init=True))


def test_separable_route_equals_the_generic_route(clip):
    gen = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(40, 48, 3, generator=gen) * 255).byte().numpy()) for _ in range(3)]
    captions = ["a red square", "two small blue circles on green grass", "a cat"]  # g = 2, 3, 1
    generic = mm_shap(clip, images, captions, IDS, permutations=4, route="generic", seed=5)
    separable = mm_shap(clip, images, captions, IDS, permutations=4, route="separable", seed=5)
    assert separable.route == "separable" and generic.route == "generic"
    assert torch.allclose(generic.v, separable.v, atol=1e-5)
    for a, b in zip(generic.phi_image + generic.phi_text, separable.phi_image + separable.phi_text):
        assert torch.allclose(a, b, atol=1e-4)
    # the image tower runs only on image coalitions: 2 ends + per order g² − 1
    g, t = separable.grid, separable.n_text
    assert separable.image_passes.tolist() == (2 + 4 * (g**2 - 1)).tolist()
    assert separable.text_passes.tolist() == (2 + 4 * (t - 1)).tolist()
    assert generic.image_passes.tolist() == (2 + 4 * (g**2 + t - 1)).tolist()
    assert (separable.image_passes < generic.image_passes).all()


# --- the interleaved route: exact over interleavings, unbiased over orders -----------------

class SeparableToy(PolynomialModel):
    """A dual encoder in miniature: 2-d tower embeddings of the players present, score = their dot product.

    Within each modality the embedding is not additive (a product term), and the dot product makes every
    image player interact with every text player, so no estimator is exact by accident.
    """

    capabilities = frozenset({"score", "mask_tokens", "separable"})

    def __init__(self):
        super().__init__(None)

    @staticmethod
    def tower(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        w = torch.linspace(0.5, -1.0, n, dtype=torch.float64)
        return torch.stack([x.double() @ w + 0.2, 1.0 + x[:, 0].double() * x[:, -1].double() * 1.5], dim=1)

    def encode_image(self, inputs, image_keep=None):
        b = len(inputs)
        keep = image_keep if image_keep is not None else torch.ones(b, 1, 1, dtype=torch.bool)
        return self.tower(keep.flatten(1))

    def encode_text(self, inputs, text_keep=None):
        valid = inputs.tensors["valid"]
        keep = (text_keep if text_keep is not None else torch.ones_like(valid)) & valid
        return torch.stack([self.tower(keep[r][valid[r]][None])[0] for r in range(len(inputs))])

    def similarity(self, image, text):
        return (image * text).sum(-1)

    def exact(self, caption):
        t = len(caption.split())
        g2 = grid_side(t) ** 2
        def value(s):
            text = torch.tensor([[j in s for j in range(t)]])
            image = torch.tensor([[t + j in s for j in range(g2)]])
            return float(self.similarity(self.tower(image), self.tower(text)))
        return exact_shapley(t + g2, value), t


def test_interleaved_route_is_exact_with_every_order_and_unbiased_with_samples():
    toy = SeparableToy()
    caption = ["two dots"]  # t = 2, g = 1: 3 players, 6 orders
    exact, t = toy.exact(caption[0])
    full = mm_shap(toy, IMAGES[:1], caption, IDS[:1], permutations=6, route="interleaved")
    assert full.route == "interleaved" and full.se[0] == 0
    assert torch.allclose(torch.cat([full.phi_text[0], full.phi_image[0]]), exact, atol=1e-9)

    caption = ["a red square on the left"]  # t = 6, g = 2: 10 players
    exact, t = toy.exact(caption[0])
    errors = {}
    for route in ("separable", "interleaved"):
        r = mm_shap(toy, IMAGES[:1], caption, IDS[:1], permutations=200, route=route, seed=1, exact=False)
        truth = v_shap(exact[t:], exact[:t]).item()
        assert abs(r.v[0].item() - truth) <= 4 * r.se[0].item() + 1e-9, route
        errors[route] = r.se[0].item()
        assert r.image_passes[0] == 2 + 200 * (4 - 1)  # the same tower passes on both routes
    assert errors["interleaved"] < errors["separable"]


def test_interleaved_route_runs_on_a_dual_encoder(clip):
    r = mm_shap(clip, IMAGES[:1], ["a red square"], IDS[:1], permutations=2, route="interleaved")
    assert r.route == "interleaved" and r.v.isfinite().all()


def test_crossed_route_is_exact_with_every_order_unbiased_and_tighter_than_interleaved():
    toy = SeparableToy()
    caption = ["two dots"]  # 3 players, 6 orders: every pair of chains seen is the exact average
    exact, t = toy.exact(caption[0])
    full = mm_shap(toy, IMAGES[:1], caption, IDS[:1], permutations=6, route="crossed")
    assert full.route == "crossed" and full.se[0] == 0
    assert torch.allclose(torch.cat([full.phi_text[0], full.phi_image[0]]), exact, atol=1e-9)

    caption = ["a red square on the left"]  # t = 6, g = 2: 10 players
    exact, t = toy.exact(caption[0])
    truth = v_shap(exact[t:], exact[:t]).item()
    # unbiased: over independent seeds the estimates centre on the truth, each within its own error
    estimates = [mm_shap(toy, IMAGES[:1], caption, IDS[:1], permutations=40, route="crossed", seed=s, exact=False)
                 for s in range(20)]
    values = torch.tensor([r.v[0].item() for r in estimates])
    ses = torch.tensor([r.se[0].item() for r in estimates])
    assert abs(values.mean().item() - truth) <= 4 * values.std().item() / math.sqrt(len(values)) + 1e-9
    assert (values - truth).abs().le(4 * ses + 1e-9).float().mean() >= 0.9  # the reported error covers the truth
    # the reported error tracks the spread actually seen across seeds (first-order U-statistic error)
    assert 0.5 <= ses.mean().item() / values.std().item() <= 2.0
    inter = [mm_shap(toy, IMAGES[:1], caption, IDS[:1], permutations=40, route="interleaved", seed=s,
                     exact=False).v[0].item()
             for s in range(20)]
    assert values.std().item() < torch.tensor(inter).std().item()  # same tower passes, less error


def test_auto_route_of_a_dual_encoder_is_crossed(clip):
    r = mm_shap(clip, IMAGES[:1], ["a red square"], IDS[:1], permutations=4)
    assert r.route == "crossed" and r.v.isfinite().all() and r.se.isfinite().all()


def test_a_dual_encoder_with_few_players_gets_exact_values_from_every_subset():
    toy = SeparableToy()
    caption = ["a red square on the left"]  # t = 6, g = 2: 16 image and 64 text subsets < 40 orders' tower passes
    exact, t = toy.exact(caption[0])
    r = mm_shap(toy, IMAGES[:1], caption, IDS[:1], permutations=40)
    assert torch.allclose(torch.cat([r.phi_text[0], r.phi_image[0]]), exact, atol=1e-9)
    assert r.se[0] == 0 and r.v[0].item() == pytest.approx(v_shap(exact[t:], exact[:t]).item(), abs=1e-6)
    assert (r.image_passes[0], r.text_passes[0]) == (2**4, 2**6) and r.permutations[0] == math.factorial(10)
    # where the orders cost fewer passes than the table, they are sampled as before
    few = mm_shap(toy, IMAGES[:1], caption, IDS[:1], permutations=4)
    assert few.se[0] > 0 and few.image_passes[0] == 2 + 4 * (4 - 1)


def test_the_exact_table_of_a_real_dual_encoder_is_efficient_and_within_the_sampled_error(clip):
    caption = ["a red square"]  # t = 3, g = 2
    exact = mm_shap(clip, IMAGES[:1], caption, IDS[:1], permutations=40)
    sampled = mm_shap(clip, IMAGES[:1], caption, IDS[:1], permutations=40, exact=False, seed=2)
    assert exact.se[0] == 0 and sampled.se[0] > 0
    inputs = clip.prepare(IMAGES[:1], caption, IDS[:1])
    t = int(clip.players(inputs).text_valid.sum())
    none = clip.mask_tokens(inputs, torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros_like(clip.players(inputs).text_valid))
    total = (clip.score(inputs) - clip.score(none)).double().item()  # efficiency: Σφ = v(all) − v(∅)
    assert torch.cat([exact.phi_text[0], exact.phi_image[0]]).sum().item() == pytest.approx(total, abs=1e-4)
    assert abs(exact.v[0].item() - sampled.v[0].item()) <= 4 * sampled.se[0].item() + 1e-6 and t == 3


def test_with_a_target_error_the_table_is_taken_once_the_orders_still_needed_would_cost_more():
    toy = SeparableToy()
    caption = ["a red square on the left"]
    exact, t = toy.exact(caption[0])
    strict = mm_shap(toy, IMAGES[:1], caption, IDS[:1], permutations=4000, target_se=1e-6, min_permutations=8)
    assert strict.se[0] == 0 and torch.allclose(torch.cat([strict.phi_text[0], strict.phi_image[0]]), exact, atol=1e-9)
    assert strict.image_passes[0] == (2 + 8 * (4 - 1)) + 2**4  # the first 8 orders, then the table
    loose = mm_shap(toy, IMAGES[:1], caption, IDS[:1], permutations=4000, target_se=1.0, min_permutations=8)
    assert loose.se[0] > 0 and loose.permutations[0] == 8  # reached after the first orders: no table
