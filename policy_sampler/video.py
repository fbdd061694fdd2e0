"""Videos a browser plays: H.264 MP4 through imageio-ffmpeg, written atomically.

One encoder for every video the package writes (evaluation rollouts and the study's trajectory
clips): libx264, ``yuv420p`` pixels (the only format every browser decodes; it needs even frame
sizes, so an odd row or column is padded by repeating the edge) and ``+faststart`` (the index first,
so a browser starts playing and seeks with Range requests before the whole file arrives).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from policy_sampler.serialization import atomic_path

__all__ = ["write_mp4", "write_video"]


def _even(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame, dtype=np.uint8)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a video frame must be H x W x 3 uint8, got shape {frame.shape}")
    pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
    return np.ascontiguousarray(np.pad(frame, pad, mode="edge") if any(p[1] for p in pad) else frame)


def write_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: int) -> Path:
    """Encode ``frames`` (H x W x 3 uint8) to ``path`` as an H.264/yuv420p MP4 with the index first."""
    import imageio_ffmpeg

    if len(frames) == 0:
        raise ValueError("no frames to encode")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = _even(frames[0])
    height, width = first.shape[:2]
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=7,
            macro_block_size=2, ffmpeg_log_level="error", output_params=["-movflags", "+faststart", "-f", "mp4"])
        writer.send(None)  # start ffmpeg
        try:
            for frame in frames:
                writer.send(_even(frame))
        finally:
            writer.close()
    return path


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: int = 25) -> Path:
    """``write_mp4`` to ``path`` with an ``.mp4`` suffix, or, where imageio-ffmpeg is not installed, an
    animated GIF through Pillow (the suffix becomes ``.gif``). Returns the path written."""
    path = Path(path)
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        from PIL import Image

        if len(frames) == 0:
            raise ValueError("no frames to encode") from None
        target = path.with_suffix(".gif")
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
            images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0,
                           format="GIF")
        return target
    return write_mp4(frames, path.with_suffix(".mp4"), fps)
