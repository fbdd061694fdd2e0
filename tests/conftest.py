"""Test-wide settings that must hold before any test module imports mujoco."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; mujoco reads it at import
