"""One video encoder for the package: browser-playable MP4 (yuv420p, faststart), odd sizes padded,
a GIF where imageio-ffmpeg is missing, clear errors for bad frames."""

import builtins
import subprocess

import numpy as np
import pytest

from policy_sampler.video import write_mp4, write_video


def frames(n=6, h=33, w=47):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def probe(path):
    import imageio_ffmpeg

    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                         capture_output=True, text=True).stderr
    return out


def test_odd_frames_make_a_browser_playable_mp4_with_the_index_first(tmp_path):
    path = write_mp4(frames(), tmp_path / "clip.mp4", fps=10)
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "the index (moov) must precede the media (+faststart)"
    info = probe(path)
    assert "h264" in info and "yuv420p" in info and "48x34" in info
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"], "no temporary file is left behind"


def test_write_video_falls_back_to_gif_without_imageio_ffmpeg(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_ffmpeg(name, *args, **kwargs):
        if name == "imageio_ffmpeg":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ffmpeg)
    path = write_video(frames(3), tmp_path / "ep0.mp4", fps=5)
    assert path.name == "ep0.gif" and path.read_bytes()[:6] == b"GIF89a"


@pytest.mark.parametrize("bad, message", [([], "no frames"), ([np.zeros((8, 8))], "H x W x 3")])
def test_bad_frames_are_named(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        write_mp4(bad, tmp_path / "x.mp4", fps=5)
