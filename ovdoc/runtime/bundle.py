"""Detector bundles, under the names other code has always imported from here.

The format (read, verify, hash, write; one manifest writer) is `ovdoc.runtime.bundle_format`; fitting
(plan -> extract -> fit head -> calibrate -> write) is `ovdoc.runtime.fitting`; what each mode stores
and how it scores is its head's (`ovdoc.runtime.heads`). New code imports from those modules.
"""

from __future__ import annotations

from ovdoc.runtime.bundle_format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    READABLE_VERSIONS,
    SELF_HASH_KEY,
    _canonical,
    check_mode,
    library_versions,
    load_manifest,
    save_threshold,
    sha256_file,
    weight_precision,
    write_bundle,
    write_manifest,
    write_model,
)
from ovdoc.runtime.fit_groups import group_keys as _group_keys
from ovdoc.runtime.fit_groups import near_groups as _near_groups
from ovdoc.runtime.fitting import FitConfig, append_bundle, fit_bundle, fit_bundle_images, parse_size
from ovdoc.runtime.heads.global_head import bundle_vectors
from ovdoc.runtime.heads.patch_head import PATCH_AREA, default_patch_size

MODES = ("global", "patch")  # the built-in heads (ovdoc.runtime.heads.modes() lists registered ones too)

__all__ = [
    "FORMAT", "FORMAT_VERSION", "MANIFEST", "MODES", "PATCH_AREA", "READABLE_VERSIONS",
    "SELF_HASH_KEY", "FitConfig", "_canonical", "_group_keys", "_near_groups", "append_bundle",
    "bundle_vectors", "check_mode", "default_patch_size", "fit_bundle", "fit_bundle_images",
    "library_versions", "load_manifest", "parse_size", "save_threshold", "sha256_file", "weight_precision",
    "write_bundle", "write_manifest", "write_model",
]
