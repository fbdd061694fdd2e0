"""``python -m policy_sampler.study ...``: run the study server (see :mod:`policy_sampler.study.cli`)."""

from policy_sampler.study.cli import main

main()
