"""The preference-query study: a local web server where annotators compare two trajectory videos.

See ``docs/study.md``; run it with ``python -m policy_sampler.study study=demo annotators=2 port=8765
db=study.db tokens_file=tokens.json``.
"""

from policy_sampler.study.db import AnswerRejected, StudyDB
from policy_sampler.study.launch import StudySettings, prepare_study
from policy_sampler.study.pool import StudyPool, build_pool, expert_episodes
from policy_sampler.study.session import ActiveBatches, FixedBatches, Study

__all__ = [
    "ActiveBatches",
    "AnswerRejected",
    "FixedBatches",
    "Study",
    "StudyDB",
    "StudyPool",
    "StudySettings",
    "build_pool",
    "expert_episodes",
    "prepare_study",
]
