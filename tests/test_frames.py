"""What a captured frame keeps (daemon.video.frames): a reduced picture and the ViT's input, made from
the decoded picture, which is then let go."""

import numpy as np
import pytest

from daemon.engine.vision import fit, preprocess
from daemon.video.frames import FrameMaker, reduce
from daemon.video.gate import signature


def picture(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)


@pytest.mark.parametrize("shape, width, want", [
    ((1080, 1920), 640, (360, 640)),
    ((720, 1280), 640, (360, 640)),
    ((480, 640), 640, (480, 640)),  # never enlarged
    ((240, 320), 640, (240, 320)),
    ((1080, 1920), 0, (1080, 1920)),  # 0 keeps the decoded picture
    ((1080, 1440), 500, (375, 500)),
])
def test_the_picture_is_reduced_to_the_width_keeping_its_aspect(shape, width, want):
    assert reduce(picture(*shape), width).shape == (*want, 3)


def test_a_frame_keeps_the_reduced_picture_and_the_model_input_of_the_full_one():
    full = picture(1080, 1920)
    seen = []

    def model_input(bgr):
        seen.append(bgr)
        return fit(bgr, 448)

    frame = FrameMaker(640, model_input)("porch", 12.5, 7, full)
    assert (frame.camera, frame.ts, frame.index) == ("porch", 12.5, 7)
    assert seen[0] is full  # the ViT's resize sees the decoded picture, not the reduced one
    assert frame.image.shape == (360, 640, 3) and frame.model_input.shape == (448, 448, 3)
    assert not np.shares_memory(frame.image, full) and not np.shares_memory(frame.model_input, full)
    np.testing.assert_array_equal(preprocess(full, 448), preprocess(frame.model_input, 448))  # bit-identical
    assert frame.image.nbytes + frame.model_input.nbytes < full.nbytes / 4


def test_without_a_model_input_the_frame_keeps_only_its_picture():
    frame = FrameMaker(320)("porch", 0.0, 0, picture(480, 640))
    assert frame.model_input is None and frame.image.shape == (240, 320, 3)


@pytest.mark.parametrize("shape", [(1080, 1920), (720, 1280)])
def test_the_gate_sees_the_same_change_in_the_reduced_picture(shape):
    """The gate's signature is ~100 cells high whatever the picture's size: a thing covers the same
    share of cells, at the same place, in the full picture and in the 640-wide one frames keep."""
    before = picture(*shape, seed=3)
    after = before.copy()
    h, w = shape
    after[h // 4:h // 4 + h // 10, w // 3:w // 3 + w // 10] = (40, 60, 200)  # 1 % of the picture

    def changed(full_before, full_after):
        diff = np.abs(signature(full_after) - signature(full_before)) > 16
        rows, cols = np.nonzero(diff)
        return diff.mean(), rows.mean() / diff.shape[0], cols.mean() / diff.shape[1]

    full = changed(before, after)
    reduced = changed(reduce(before, 640), reduce(after, 640))
    assert signature(reduce(before, 640)).shape[0] >= 80  # still a fine grid on the small picture
    assert reduced[0] == pytest.approx(full[0], rel=0.35)  # share of cells changed
    assert reduced[1:] == pytest.approx(full[1:], abs=0.03)  # where
