"""The emotion-over-time plot: size, curves where the weights are, keyframes in their pixel columns."""
import numpy as np
import pytest

from emodiff_core import emotion_plot as ep
from emodiff_core import pipeline as pl
from emodiff_core.editing import parse_keyframes

KEYS = "0:neutral:0, 1:happy:1, 2.5:surprised:1, 4:sad:0.8"


def _has(image, colour, rows, cols):
    patch = image[rows[0]:rows[1], cols[0]:cols[1]]
    return bool((patch == np.array(colour, np.uint8)).all(axis=-1).any())


def _keyframe_rows(image, lay, x):
    """Fraction of the plot area's rows whose pixel in column x is the keyframe colour."""
    column = image[lay.top:lay.bottom, x]
    return float((column == np.array(ep.KEYFRAME_COLOUR, np.uint8)).all(axis=-1).mean())


def test_plot_shape_and_type():
    image = ep.emotion_plot(pl.EmotionSpec("happy", 0.7), 90, 30.0)
    assert image.shape == (240, 640, 3) and image.dtype == np.uint8
    wide = ep.emotion_plot(pl.EmotionSpec("happy", 0.7), 90, 30.0, width=800, height=300)
    assert wide.shape == (300, 800, 3)


def test_keyframes_are_marked_in_their_columns():
    spec = pl.EmotionSpec(keyframes=KEYS)
    n, fps = 150, 30.0                                 # 5 s
    image = ep.emotion_plot(spec, n, fps)
    lay = ep.plot_layout(n / fps, 1.0)
    for t in (1.0, 2.5, 4.0):
        assert _keyframe_rows(image, lay, lay.x_of(t)) > 0.3, t
    for t in (0.5, 1.75, 3.25, 4.5):                    # between keyframes: no dashed line
        assert _keyframe_rows(image, lay, lay.x_of(t)) == 0.0, t
    # each keyframe's dot sits at its intensity, in its emotion's colour
    for kf in parse_keyframes(KEYS)[1:]:
        x, y = lay.x_of(kf.time), lay.y_of(kf.intensity)
        assert _has(image, ep.EMOTION_COLOURS[kf.emotion], (y - 2, y + 3), (x - 2, x + 3)), kf
    # the happy curve is at 0 at the start and at the top at t = 1 s, not at 0 there
    happy = ep.EMOTION_COLOURS["happy"]
    x1 = lay.x_of(1.0)
    assert not _has(image, happy, (lay.y_of(0.1), lay.bottom - 3), (x1 - 1, x1 + 2))
    assert not _has(image, ep.EMOTION_COLOURS["sad"], (lay.top, lay.y_of(0.05)), (x1 - 1, x1 + 2))


def test_intensity_axis_grows_for_exaggerated_emotions_and_silence_is_shaded():
    silent = np.zeros(60, bool)
    silent[20:40] = True
    image = ep.emotion_plot(pl.EmotionSpec("sad", 1.5), 60, 30.0, silent=silent)
    lay = ep.plot_layout(2.0, 2.0)                     # 1.5 > 1: the axis goes to MAX_INTENSITY
    x = lay.x_of(0.3)
    assert _has(image, ep.EMOTION_COLOURS["sad"], (lay.y_of(1.5) - 1, lay.y_of(1.5) + 2), (x, x + 1))
    assert _has(image, ep.SILENCE_COLOUR, (lay.top, lay.bottom), (lay.x_of(1.1), lay.x_of(1.1) + 1))
    assert not _has(image, ep.SILENCE_COLOUR, (lay.top, lay.bottom), (lay.x_of(0.3), lay.x_of(0.3) + 1))


def test_plot_input_errors():
    with pytest.raises(ValueError, match="emotion weights must be"):
        ep.draw_emotion_plot(np.zeros((10, 3)), 30.0)
    with pytest.raises(ValueError, match="at least"):
        ep.emotion_plot(pl.EmotionSpec("happy"), 10, 30.0, width=50, height=40)
    with pytest.raises(ValueError, match="keyframe"):
        ep.emotion_plot(pl.EmotionSpec(keyframes="1:happy"), 10, 30.0)


def test_save_plot_writes_a_png(tmp_path):
    import cv2

    image = ep.emotion_plot(pl.EmotionSpec(keyframes=KEYS), 150, 30.0)
    path = ep.save_plot(str(tmp_path / "sub" / "plot.png"), image)
    back = cv2.imread(path)[..., ::-1]
    assert np.array_equal(back, image) and sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["plot.png"]
