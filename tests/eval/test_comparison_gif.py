import numpy as np
import torch
from PIL import Image

from eval.workloads.video import save_comparison_gif


def _frames(path):
    im = Image.open(path)
    out = []
    for i in range(im.n_frames):
        im.seek(i)
        out.append(np.asarray(im.convert("RGB")))
    return out


def test_gif_panels_are_labelled_above_unchanged_frames(tmp_path):
    t, h, w = 3, 64, 64  # the embedded model's size: the narrowest panels a sweep writes
    ref = torch.zeros(t, 3, h, w)
    out = torch.zeros(t, 3, h, w)
    out[..., : h // 2, :] = 1.0  # sparse output wrong on the top half: the difference panel is white there
    path = save_comparison_gif(tmp_path / "g.gif", ref, out)
    frames = _frames(path)
    assert not list(tmp_path.glob("*.tmp*"))  # (equal frames are merged by the GIF writer)
    frame = frames[0]
    header = frame.shape[0] - h
    assert frame.shape[1] == 3 * w and 8 <= header <= 30
    strip = frame[:header].astype(int).sum(axis=-1)
    for panel in range(3):  # dark text over each of the three panels, on white
        part = strip[:, panel * w:(panel + 1) * w]
        assert (part < 200).sum() > 20 and (part > 700).mean() > 0.5
    body = frame[header:]
    assert (body[:, :w] == 0).all()                                   # dense
    assert (body[: h // 2, w:2 * w] == 255).all() and (body[h // 2:, w:2 * w] == 0).all()  # sparse
    assert (body[: h // 2, 2 * w:] == 255).all() and (body[h // 2:, 2 * w:] == 0).all()    # 4x|difference|
