"""Camera observations for the tasks: the ``obs_mode`` option and its ``Dict`` observation space.

Every task takes ``obs_mode`` and ``image_size``:

- ``obs_mode="state"`` (the default): the flat state vector, unchanged.
- ``obs_mode="pixels_state"``: a dict in robomimic's naming, for visuomotor policies::

      {"state":   the flat state vector of state mode (what the scripted expert reads),
       "proprio": the robot's own sensing only (puck position and velocity; Meta-World's hand
                  position and gripper opening): the low-dim input of a vision policy, which must
                  see the rest (goal, obstacle, objects) in the image,
       "<camera>_image": uint8 [image_size, image_size, 3] (height, width, RGB), rendered headless
                  (MUJOCO_GL=egl) from the task's camera at every reset and step}

The observation images are rendered fast (:func:`observation_renderer`): no multisampling, shadows or
reflections, which on a software EGL renderer takes a Meta-World frame from about 300 ms to about 7 ms.

Experts read the ``state`` entry (:func:`state_vector`), so demonstrations can be collected in either mode.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from gymnasium import spaces

__all__ = [
    "OBS_MODES",
    "check_image_size",
    "check_obs_mode",
    "image_key",
    "observation_renderer",
    "pixels_state_space",
    "state_vector",
]

OBS_MODES = ("state", "pixels_state")
MAX_IMAGE_SIZE = 1024


def check_obs_mode(obs_mode: Any) -> str:
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
    return obs_mode


def check_image_size(image_size: Any) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or not 8 <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size must be an int in [8, {MAX_IMAGE_SIZE}] (pixels per side), got {image_size!r}")
    return int(image_size)


def image_key(camera: str) -> str:
    """The observation key of ``camera``'s image: ``"<camera>_image"`` (robomimic's ``obs/<camera>_image``)."""
    return f"{camera}_image"


def pixels_state_space(state: spaces.Box, proprio: spaces.Box, camera: str, image_size: int) -> spaces.Dict:
    """The ``pixels_state`` observation space (see the module docstring)."""
    image = spaces.Box(0, 255, shape=(image_size, image_size, 3), dtype=np.uint8)
    return spaces.Dict({"state": state, "proprio": proprio, image_key(camera): image})


def state_vector(observation: Any) -> Any:
    """The flat state of an observation of either mode (a ``pixels_state`` dict's ``"state"``)."""
    return observation["state"] if isinstance(observation, Mapping) else observation


def observation_renderer(model: Any, image_size: int) -> Any:
    """A ``mujoco.Renderer`` of ``image_size`` square frames without multisampling, shadows or
    reflections (the model's own settings, which ``render()`` uses, are left as they were)."""
    import mujoco

    quality = model.vis.quality
    samples = quality.offsamples
    quality.offsamples = 0  # read once, when the renderer's GL context is made
    try:
        renderer = mujoco.Renderer(model, height=image_size, width=image_size)
    finally:
        quality.offsamples = samples
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    return renderer
