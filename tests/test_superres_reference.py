"""The reference SR head (`SuperResConfig.reference`): what it reads, that it learns to put back the detail the
input lost from the portrait's crop where a plain head cannot, and how the pipeline hands it that crop."""
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emodiff_core import pipeline as pl
from emodiff_core.checkpoint import load_components, save_checkpoint
from emodiff_core.config import SuperResConfig, from_dict, to_dict
from emodiff_core.faces import align_face
from emodiff_core.models import SuperResolver

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _head(reference: bool, seed: int = 0) -> SuperResolver:
    torch.manual_seed(seed)
    return SuperResolver(SuperResConfig(channels=8, num_blocks=1, reference=reference))


def test_an_untrained_reference_head_is_bilinear_and_its_reference_reaches_the_output():
    head, plain = _head(True), _head(False)
    assert head.uses_reference and not plain.uses_reference
    assert head.head.in_channels == 3 + 12 and plain.head.in_channels == 3      # the crop folded to the input grid
    x, ref = torch.rand(2, 3, 16, 16), torch.rand(3, 32, 32)
    bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).clamp(0, 1)
    assert torch.equal(head(x, ref), bilinear) and torch.equal(head(x), bilinear)   # zero-initialised last layer
    torch.nn.init.normal_(head.tail.weight, std=0.1)
    with_ref, without = head(x, ref), head(x)
    assert (with_ref - without).abs().mean() > 1e-3
    assert torch.equal(without, head(x, torch.zeros(1, 3, 32, 32)))   # missing = zeros, what training drops to
    assert torch.allclose(head(x, ref[None].expand(2, -1, -1, -1)), with_ref)     # one crop serves the batch
    with pytest.raises(ValueError, match=r"reference must be \[1 or 2, 3, 32, 32\] .*got \[1, 3, 16, 16\]"):
        head(x, torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"got \[3, 3, 32, 32\]"):
        head(x, torch.rand(3, 3, 32, 32))


def test_heads_saved_before_the_key_load_as_plain_heads_and_a_reference_head_round_trips(tmp_path):
    data = to_dict(SuperResConfig(channels=8, num_blocks=1))
    del data["reference"]
    assert from_dict(SuperResConfig, data) == SuperResConfig(channels=8, num_blocks=1)
    head = _head(True)
    torch.nn.init.normal_(head.tail.weight, std=0.1)
    save_checkpoint(str(tmp_path / "ref.safetensors"), {"superres": head})
    loaded = load_components(str(tmp_path / "ref.safetensors"), ["superres"])["superres"]
    x, ref = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 32, 32)
    assert loaded.uses_reference and torch.equal(loaded(x, ref), head(x, ref))


def _train(head: SuperResolver, steps: int = 150, seed: int = 0):
    """Fit ``head`` to put back fine texture the input lost: each target is its own random texture, the input its
    2x area-downsample, the reference the target itself (as the portrait is to a frame that has not moved).
    Returns the mean L1 over fresh examples."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)

    def example(n):
        target = torch.rand(n, 3, 32, 32, generator=gen)
        return F.interpolate(target, scale_factor=0.5, mode="area"), target

    for _ in range(steps):
        low, target = example(8)
        loss = F.l1_loss(head(low, target) if head.uses_reference else head(low), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        low, target = example(16)
        return float(F.l1_loss(head(low, target) if head.uses_reference else head(low), target))


def test_a_reference_head_learns_to_put_back_detail_that_a_plain_head_cannot_invent():
    gen = torch.Generator().manual_seed(5)
    target = torch.rand(16, 3, 32, 32, generator=gen)
    bilinear_l1 = float(F.l1_loss(F.interpolate(F.interpolate(target, scale_factor=0.5, mode="area"),
                                                scale_factor=2, mode="bilinear", align_corners=False), target))
    plain, reference = _train(_head(False)), _train(_head(True))
    assert plain > 0.8 * bilinear_l1                 # random texture: nothing in the input says where it lies
    assert reference < 0.5 * plain                   # the reference says it


def test_the_pipeline_hands_a_reference_head_the_portraits_crop_at_its_output_size():
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut())
    portrait = pl.prepare_portrait(photo, 32, backend="dlib")
    assert torch.equal(portrait.crop_at(32), portrait.crop_tensor())
    want, _ = align_face(photo, portrait.landmarks, 64)         # the crop evaluate-portraits compares with
    got = (portrait.crop_at(64).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert got.shape == (64, 64, 3) and np.abs(got.astype(int) - want.astype(int)).max() <= 1
    head, plain = _head(True), _head(False)
    torch.nn.init.normal_(head.tail.weight, std=0.1)
    assert pl.superres_reference(plain, portrait, 32) is None and pl.superres_reference(head, None, 32) is None
    reference = pl.superres_reference(head, portrait, 32)
    assert reference.shape == (3, 64, 64)
    frames = portrait.crop_tensor()[None].expand(3, -1, -1, -1)
    up = pl.super_resolve(frames, head, reference=reference, batch_size=2)
    assert torch.allclose(up, head(frames, reference).clamp(0, 1), atol=1e-5)
    assert not torch.allclose(up, pl.super_resolve(frames, head))            # without one it is another head
    assert torch.equal(pl.super_resolve(frames, plain, reference=reference), pl.super_resolve(frames, plain))
    # the CLI's path: apply_superres gives the head the portrait it was given
    from emodiff_core import cli

    bundle = types.SimpleNamespace(superres=head)        # apply_superres reads only the bundle's head
    assert torch.allclose(cli.apply_superres(frames, bundle, "head", portrait), up, atol=1e-5)
    assert torch.allclose(cli.apply_superres(frames, bundle, "head"), pl.super_resolve(frames, head), atol=1e-5)
