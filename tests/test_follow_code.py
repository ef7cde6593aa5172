"""i2i-train --follow code: Mask CycleGAN and LOMIT as their published code trains them.

Each difference from the paper is checked against a value worked out by hand here, next to the
paper's (so that a test fails when the option is ignored).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from i2i.data import open_data
from i2i.data.masks import CenterSquare, parse_mask_spec
from i2i.export.to_onnx import export_onnx, onnx_runner
from i2i.kernels import use_fused_kernels
from i2i.models import build, get_entry, load, make_config, read_document
from i2i.models.checkpoint import save_tensors
from i2i.models.lomit import REFERENCE_CODE, HAdaIN, LomitConfig
from i2i.train import lomit as lomit_recipe
from i2i.train.cli import main
from i2i.train.lomit import Halves, LomitRecipe, summed_bce
from i2i.train.maskcyclegan import MaskCycleGANRecipe
from i2i.train.recipe import RecipeOptions

TINY_LOMIT = {"ngf": 4, "style_dim": 4, "n_res": 1, "mlp_dim": 8, "mask_layers": 2}
FP32_MAX_ABS = 1e-4                 # the export parity gate's fp32 threshold, restated


# ---------------------------------------------------------------------------------------------
# Mask CycleGAN

def _mcg(follow: str, masks: str | None = None) -> MaskCycleGANRecipe:
    torch.manual_seed(0)
    o = RecipeOptions(size=16, ndf=4, disc_layers=2, lr=1e-3, follow=follow, masks=masks)
    return MaskCycleGANRecipe.build(make_config("maskcyclegan", {"ngf": 4, "n_blocks": 1}), o)


def _record_masks(recipe: MaskCycleGANRecipe) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    for g in (recipe.translator, recipe.reverse):
        raw = g.raw

        def spy(image, mask, raw=raw):
            seen.append(mask.detach().clone())
            return raw(image, mask)
        g.raw = spy
    return seen


def test_code_masks_are_one_per_batch_shared_by_a_and_b():
    batch = open_data("synthetic:circle2square", 16, paired=False).batch(0, 4, 0)
    recipe = _mcg("code", "rects")
    seen = _record_masks(recipe)
    recipe.step(batch)
    assert len(seen) == 6                       # fake, cycle and identity, both directions
    assert all(torch.equal(m, seen[0]) for m in seen)
    assert all(torch.equal(m, seen[0][0]) for m in seen[0])       # one mask for the batch
    paper = _mcg("paper", "rects")
    seen = _record_masks(paper)
    paper.step(batch)
    assert not all(torch.equal(m, seen[0]) for m in seen)          # A's and B's differ


def test_code_default_masks_are_the_reference_centred_squares():
    recipe = _mcg("code")
    assert recipe.masks == "center:0.5/0.8/1.0"
    assert _mcg("code", "rects").masks == "rects"                  # --masks still wins
    assert _mcg("paper").masks == "rects"
    # The reference's square at 16 px: rows/cols int(8 - 8p) .. int(8 + 8p), p in 0.5, 0.8, 1.
    squares = []
    for lo, hi in ((4, 12), (1, 14), (0, 16)):
        m = torch.zeros(1, 16, 16)
        m[:, lo:hi, lo:hi] = 1
        squares.append(m)
    drawn = [recipe.draw(torch.zeros(3, 3, 16, 16)) for _ in range(30)]
    which = set()
    for masks in drawn:
        matches = [i for i, s in enumerate(squares) if torch.equal(masks[0], s)]
        assert len(matches) == 1
        assert all(torch.equal(m, masks[0]) for m in masks)
        which.add(matches[0])
    assert which == {0, 1, 2}


def test_center_scheme_takes_several_scales():
    sampler = parse_mask_spec("center:0.5/0.8/1.0")
    assert sampler == CenterSquare((0.5, 0.8, 1.0))
    assert sampler.spec() == "center:0.5/0.8/1"
    areas = {m.sum().item() for m in sampler.sample(40, 10, 10, 0)}
    assert areas == {25.0, 64.0, 100.0}                             # sides 5, 8 and 10
    assert parse_mask_spec("center:0.5").spec() == "center:0.5"
    with pytest.raises(ValueError, match="center: scale must be a number, got '0.5/x'"):
        parse_mask_spec("center:0.5/x")
    with pytest.raises(ValueError, match="scale"):
        parse_mask_spec("center:0.5/1.5")


class Fixed(nn.Module):
    """A discriminator whose patch scores are given; a parameter so that backward runs."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = scores
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scores * self.w


def test_code_averages_patch_scores_before_the_loss():
    # One image, four patches 0, 2, 0, 2: per patch (s - 1)^2 = 1 each -> LSGAN 1; averaged per
    # image the score is 1 -> LSGAN 0. Masked D all 0.5: (0.5 - 1)^2 = 0.25 either way.
    full = torch.tensor([0.0, 2.0, 0.0, 2.0]).view(1, 1, 2, 2)
    masked = torch.full((1, 1, 2, 2), 0.5)
    fake, mask = torch.zeros(1, 3, 16, 16), torch.ones(1, 1, 16, 16)
    for follow, want in (("code", 0.7 * 0.25 + 0.3 * 0.0), ("paper", 0.7 * 0.25 + 0.3 * 1.0)):
        recipe = _mcg(follow)
        recipe.d["D_full_B"], recipe.d["D_masked_B"] = Fixed(full), Fixed(masked)
        assert recipe._gan(fake, mask, "B").item() == pytest.approx(want)


def test_code_weights_the_discriminators_0_3_full_0_7_masked():
    # full D: real scores 0.5, fake 0.5 -> 0.5 (0.25 + 0.25) = 0.25;
    # masked D: real 0 -> (0 - 1)^2 = 1, fake 0 -> 0; 0.5 (1 + 0) = 0.5.
    x = torch.zeros(1, 3, 16, 16)
    for follow, want in (("code", 0.3 * 0.25 + 0.7 * 0.5), ("paper", 0.25 + 0.5)):
        recipe = _mcg(follow)
        pairs = [("full", Fixed(torch.full((1, 1, 2, 2), 0.5)), x, x),
                 ("masked", Fixed(torch.zeros(1, 1, 2, 2)), x, x)]
        assert recipe._d_step(pairs) == pytest.approx(want)


# ---------------------------------------------------------------------------------------------
# LOMIT networks

def _code_config(**fields) -> LomitConfig:
    return make_config("lomit", {**TINY_LOMIT, **REFERENCE_CODE, **fields})


def test_row_std_hadain_against_the_formula():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64) * 3 + 1.5
    m = torch.rand(2, 1, 5, 7, generator=g, dtype=torch.float64)
    styles = [torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(4)]
    eps = 1e-5
    want = torch.empty_like(c)
    for n in range(2):
        for k in range(3):
            x = c[n, k]                                                  # (5, 7)
            row_means = x.sum(1, keepdim=True) / 7
            row_stds = ((x - row_means).square().sum(1) / 6).sqrt()     # (5,), unbiased
            s = ((row_stds - row_stds.sum() / 5).square().sum() / 4).sqrt()
            xn = (x - x.sum() / 35) / (s + eps)
            fg = styles[0][n, k] * xn + styles[1][n, k]
            bg = styles[2][n, k] * xn + styles[3][n, k]
            want[n, k] = m[n, 0] * fg + (1 - m[n, 0]) * bg
    got = HAdaIN(eps, "row_std")(c, m, *styles)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    paper = HAdaIN(eps)(c, m, *styles)
    assert (paper - want).abs().max() > 0.1                             # not the instance norm


def test_code_networks_have_one_style_encoder():
    paper = build("lomit", make_config("lomit", TINY_LOMIT))
    code = build("lomit", _code_config())
    keys = set(code.state_dict())
    assert any(k.startswith("style.") for k in keys)
    assert not any(k.startswith(("style_fg.", "style_bg.")) for k in keys)
    assert not hasattr(code, "style_fg") and not hasattr(code, "style_bg")
    style = sum(p.numel() for p in code.style.parameters())
    assert style == sum(p.numel() for p in paper.style_fg.parameters())
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(code.fg_style(x), code.bg_style(x))


def test_code_content_norm_is_affine_and_per_sample():
    code = build("lomit", _code_config()).eval()
    keys = set(code.state_dict())
    assert {"content.stem.norm.weight", "content.stem.norm.bias",
            "content.blocks.0.norm2.weight"} <= keys
    assert not any("running_mean" in k for k in keys if k.startswith("content."))
    with torch.no_grad():
        for module in code.content.modules():
            if isinstance(module, nn.InstanceNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
        x = torch.rand(3, 3, 16, 16) * 2 - 1
        together = code.content(x)
        alone = torch.cat([code.content(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone)                         # no batch statistics
    norm = code.content.stem.norm
    h = code.content.stem.conv(code.content.stem.pad(x))
    mean = h.mean(dim=(2, 3), keepdim=True)
    var = h.var(dim=(2, 3), keepdim=True, unbiased=False)
    want = (h - mean) / (var + norm.eps).sqrt() * norm.weight[:, None, None] \
        + norm.bias[:, None, None]
    torch.testing.assert_close(norm(h), want, rtol=1e-5, atol=1e-5)


def test_code_padding_and_coseg_biases():
    paper = build("lomit", make_config("lomit", TINY_LOMIT))
    code = build("lomit", _code_config())
    convs = [m for m in code.coseg.body if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and all(m.bias is not None and m.padding_mode == "reflect" for m in convs)
    assert all(m.bias is None for m in paper.coseg.body
               if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    halving = code.style.body[3]                                        # the first conv4 s2
    x = torch.rand(1, 4, 8, 8)
    want = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"),
                                halving.weight, halving.bias, stride=2)
    torch.testing.assert_close(halving(x), want)
    assert paper.style_fg.body[3].padding_mode == "zeros"


def test_config_fields_are_checked():
    with pytest.raises(ValueError, match="hadain_norm must be one of instance, row_std"):
        LomitConfig(hadain_norm="rows")
    with pytest.raises(ValueError, match="content_norm must be one of instance, instance_affine"):
        LomitConfig(content_norm="layer")


def test_a_checkpoint_without_the_new_fields_loads_as_the_paper_model(tmp_path):
    torch.manual_seed(0)
    old = {"ngf": 4, "style_dim": 4, "n_res": 1, "mlp_dim": 8, "mask_layers": 2,
           "channels": 3, "eps": 1e-5}                                  # as written before
    module = build("lomit", make_config("lomit", TINY_LOMIT))
    path = save_tensors(tmp_path / "old.safetensors", module.state_dict(),
                        {"format": "i2i-checkpoint", "format_version": 1, "model": "lomit",
                         "config": old, "step": 1, "meta": {}, "versions": {}})
    loaded, _ = load(path)
    assert loaded.config == LomitConfig(**old)
    assert (loaded.config.hadain_norm, loaded.config.content_norm) == ("instance", "instance")
    assert not loaded.config.shared_style and hasattr(loaded, "style_bg")
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, x.flip(0)), module.eval()(x, x.flip(0)))


def test_the_fused_engine_leaves_the_code_normalisation_unfused():
    torch.manual_seed(0)
    model = build("lomit", make_config("lomit", {**TINY_LOMIT, "hadain_norm": "row_std"})).eval()
    x, e = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        want = model(x, e)
        use_fused_kernels(model)
        got = model(x, e)
    assert model.unfused_kernels == ["hadain"] and type(model.hadain) is HAdaIN
    assert model.fused_kernels > 0
    torch.testing.assert_close(got["translation"], want["translation"], rtol=1e-5, atol=1e-5)
    everything = build("lomit", _code_config())
    with pytest.raises(ValueError, match="nothing to fuse in LomitTranslator .*hadain.*eager"):
        use_fused_kernels(everything)


def test_a_code_model_exports_to_onnx_matching_eager(tmp_path):
    torch.manual_seed(0)
    config = _code_config()
    model = build("lomit", config).eval()
    spec = get_entry("lomit").spec(config)
    export_onnx(model, spec, tmp_path / "model.onnx", (1, 2, 4), (16, 16))
    run = onnx_runner(tmp_path / "model.onnx", threads=1)
    g = torch.Generator().manual_seed(3)
    for size in ((16, 16), (20, 24)):
        inputs = {"image": torch.rand(3, 3, *size, generator=g) * 2 - 1 + 0.1,
                  "exemplar": torch.rand(3, 3, *size, generator=g) * 2 - 1}
        with torch.no_grad():
            want = model(**inputs)
        got = run(inputs)
        for name in ("translation", "mask", "exemplar_mask"):
            assert (got[name] - want[name]).abs().max().item() < FP32_MAX_ABS, (size, name)


# ---------------------------------------------------------------------------------------------
# LOMIT training

def _lomit(follow: str) -> LomitRecipe:
    torch.manual_seed(0)
    o = RecipeOptions(size=16, ndf=4, lr=1e-3, follow=follow, ngf=4, n_blocks=1)
    config = make_config("lomit", {**TINY_LOMIT, **(REFERENCE_CODE if follow == "code" else {})})
    return LomitRecipe.build(config, o)


def _pair_batch():
    data = open_data("synthetic:attributes:object_color", 16, paired=False, labelled=True)
    return data.batch(0, 2, 0)


def test_summed_bce_by_hand():
    logits, labels = torch.zeros(2, 3), torch.ones(2, 3)
    assert summed_bce(logits, labels).item() == pytest.approx(3 * math.log(2))    # 6 log 2 / 2


class FixedCritic(nn.Module):
    """Source scores 1 for the first half of a batch and 3 for the second; logits 0."""

    def __init__(self, n_labels: int):
        super().__init__()
        self.n_labels = n_labels

    def forward(self, x):
        n = x.shape[0]
        scores = torch.cat([torch.full((n // 2, 1, 2, 2), 1.0), torch.full((n - n // 2, 1, 2, 2),
                                                                           3.0)])
        return scores, torch.zeros(n, self.n_labels)


def test_code_sums_the_generator_adversarial_and_classification_terms():
    batch = _pair_batch()
    k = batch["label_A"].shape[1]
    for follow, adv, cls in (("code", -(1.0 + 3.0), 2 * k * math.log(2)),
                             ("paper", -2.0, math.log(2))):
        recipe = _lomit(follow)
        recipe.critic = FixedCritic(k)
        losses = recipe._generator_step(batch["A"], batch["B"], batch["label_A"],
                                        batch["label_B"])
        assert losses["adv"] == pytest.approx(adv)
        assert losses["cls_fake"] == pytest.approx(cls)


def test_code_critic_sums_each_direction(monkeypatch):
    class LinearCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.linspace(-1, 1, 3 * 16 * 16).view(1, 3, 16, 16))

        def forward(self, x):
            return (x * self.w).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1), torch.zeros(len(x), 1)

    batch = _pair_batch()
    x1, x2 = batch["A"], batch["B"]
    y = torch.zeros(len(x1), 1)
    penalty = lomit_recipe.gradient_penalty
    for follow in ("code", "paper"):
        recipe = _lomit(follow)
        recipe.critic = LinearCritic()
        calls = []

        def spy(critic, real, fake, generator, calls=calls):
            calls.append(len(real))
            return penalty(critic, real, fake, generator)
        monkeypatch.setattr(lomit_recipe, "gradient_penalty", spy)
        with torch.no_grad():
            f12, f21 = Halves(recipe.translator, x1, x2).crossed()
            s = [recipe.critic(t)[0].mean().item() for t in (x1, f12, x2, f21)]
        losses = recipe._critic_step(x1, x2, y, y)
        if follow == "code":
            assert losses["wasserstein"] == pytest.approx((s[0] - s[1]) + (s[2] - s[3]), rel=1e-5)
            assert calls == [len(x1), len(x2)]                         # one per direction
            assert losses["cls_real"] == pytest.approx(2 * math.log(2))
        else:
            assert losses["wasserstein"] == pytest.approx(((s[0] + s[2]) - (s[1] + s[3])) / 2,
                                                          rel=1e-5)
            assert calls == [2 * len(x1)]
            assert losses["cls_real"] == pytest.approx(math.log(2))


def test_code_regularises_three_masks_and_rebuilds_through_the_self_mask(monkeypatch):
    batch = _pair_batch()
    args = (batch["A"], batch["B"], batch["label_A"], batch["label_B"])
    consistency, own = lomit_recipe.content_consistency, Halves.own
    for follow, count in (("code", 6), ("paper", 2)):
        recipe = _lomit(follow)
        seen, values = [], []

        def spy(m, c, seen=seen, values=values):
            seen.append((m, c))
            values.append(consistency(m, c))
            return values[-1]
        monkeypatch.setattr(lomit_recipe, "content_consistency", spy)
        rebuilt = []

        def own_spy(self, m11=None, m22=None, rebuilt=rebuilt):
            with torch.no_grad():
                rebuilt.append((m11, self.t.coseg(self.c1, self.c1), self.m1))
            return own(self, m11, m22)
        monkeypatch.setattr(Halves, "own", own_spy)
        losses = recipe._generator_step(*args)
        assert len(seen) == count
        assert losses["r1"] == pytest.approx(sum(v.item() for v in values), rel=1e-6)
        ((m11, self_mask, m1),) = rebuilt
        if follow == "code":
            c1 = seen[0][1]
            assert all(c is c1 for _, c in seen[:3]) and all(c is not c1 for _, c in seen[3:])
            assert len({id(m) for m, _ in seen[:3]}) == 3               # three different masks
            torch.testing.assert_close(m11, self_mask)
            assert not torch.equal(m11, m1)
        else:
            assert m11 is m1


def test_code_critic_pads_by_reflection_and_has_head_biases():
    code, paper = _lomit("code").critic, _lomit("paper").critic
    assert all(m.padding_mode == "reflect" for m in code.trunk if isinstance(m, nn.Conv2d))
    assert code.source.bias is not None and code.classes.bias is not None
    assert paper.source.bias is None and paper.classes.bias is None
    assert all(m.padding_mode == "zeros" for m in paper.trunk if isinstance(m, nn.Conv2d))
    h = torch.rand(1, code.source.in_channels, 2, 2)
    want = nn.functional.conv2d(nn.functional.pad(h, (1, 1, 1, 1), mode="reflect"),
                                code.source.weight, code.source.bias)
    torch.testing.assert_close(code.source(h), want)


def test_code_updates_the_generator_from_the_first_step():
    batch = _pair_batch()
    for follow, finite_at in (("code", 0), ("paper", 4)):
        recipe = _lomit(follow)
        for step in range(5):
            recipe.step_index = step
            losses = recipe.step(batch)
            assert math.isfinite(losses["G"]) == (step >= finite_at), (follow, step)


# ---------------------------------------------------------------------------------------------
# The command line

def test_follow_is_refused_for_other_recipes(tmp_path, capsys):
    assert main(["--model", "cyclegan", "--follow", "code", "--out", str(tmp_path / "r"),
                 "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "--follow applies to lomit, maskcyclegan and unit only, not 'cyclegan'" in err
    with pytest.raises(SystemExit):
        main(["--model", "lomit", "--follow", "repo", "--out", str(tmp_path / "r")])
    with pytest.raises(ValueError, match="--follow must be paper or code, got 'repo'"):
        _mcg("repo")


CLI_TINY = ["--size", "16", "--batch-size", "2", "--ngf", "4", "--n-blocks", "1", "--ndf", "4",
            "--steps", "2", "--sample-every", "2", "--checkpoint-every", "2", "--no-progress",
            "--log-every", "1", "--follow", "code"]


def test_maskcyclegan_cli_run_with_follow_code(tmp_path):
    out = tmp_path / "mcg"
    assert main(["--model", "maskcyclegan", "--disc-layers", "2", "--out", str(out),
                 *CLI_TINY]) == 0
    assert json.loads((out / "options.json").read_text())["follow"] == "code"
    meta = read_document(out / "checkpoints" / "step_000002.safetensors")["meta"]
    assert meta["training"]["follow"] == "code"
    assert meta["loss_weights"]["masks"] == "center:0.5/0.8/1.0"


def test_lomit_cli_run_with_follow_code(tmp_path):
    out = tmp_path / "lomit"
    assert main(["--model", "lomit", "--data", "synthetic:attributes:object_color",
                 "--out", str(out), *CLI_TINY]) == 0
    final = out / "checkpoints" / "step_000002.safetensors"
    document = read_document(final)
    assert {k: document["config"][k] for k in REFERENCE_CODE} == REFERENCE_CODE
    assert document["meta"]["training"]["follow"] == "code"
    module, _ = load(final)
    assert module.config.shared_style and module.hadain.norm == "row_std"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and math.isfinite(log[0]["losses"]["G"])   # moved at step 0
