"""Denoiser runtime: fixed row buckets, ``torch.compile`` or CUDA graphs behind the samplers' denoiser."""

from policy_sampler.runtime.denoiser_runtime import (
    MODES,
    DenoiserRuntime,
    StaticCall,
    bucket_for,
    check_buckets,
    pad_rows,
    pow2_buckets,
)
from policy_sampler.runtime.precision import tf32_mode
from policy_sampler.runtime.sampler_buckets import coalesce_buckets, sampler_buckets, sampler_row_width
from policy_sampler.runtime.sync_audit import SyncCount, host_sync_audit

__all__ = [
    "MODES",
    "DenoiserRuntime",
    "StaticCall",
    "SyncCount",
    "bucket_for",
    "check_buckets",
    "coalesce_buckets",
    "host_sync_audit",
    "pad_rows",
    "pow2_buckets",
    "sampler_buckets",
    "sampler_row_width",
    "tf32_mode",
]
