"""Constants of the sweep tests (a module name of its own: tests/conftest.py is also "conftest")."""

from policy_sampler.rollout import SamplerSpec

TASK = "PolicySampler/ObstacleReach-v0"
MAX_STEPS = 12  # 3 chunks of 4 actions per episode
TINY = dict(
    obs_dim=8, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=(16, 32), kernel_size=3,
    n_groups=8, diffusion_step_embed_dim=16, num_train_timesteps=20, num_inference_steps=10,
)
STATS = {
    "state": {"min": [-0.5, -0.5, -0.3, -0.3, -0.1, 0.25, -0.05, -0.05],
              "max": [0.5, 0.5, 0.3, 0.3, 0.1, 0.4, 0.05, 0.05]},
    "action": {"min": [-1.0, -1.0], "max": [1.0, 1.0]},
}
SPECS = [SamplerSpec("ddpm", "ddpm"), SamplerSpec("ddim-5", "ddim", {"eta": 0.0}, num_inference_steps=5, baseline=True)]
