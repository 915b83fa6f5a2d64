"""The pipeline's write stages, built from a target's policy (the pipeline itself never sees policy models).

Stages keep state for one stream: build new ones for every object written.
"""

from __future__ import annotations

from dbguardian.pipeline.encrypt import AgeEncryption, Encryption, GpgEncryption
from dbguardian.pipeline.stages import Stage, compressor
from dbguardian.policy import AgeEncryptionConfig, CompressionConfig, EncryptionConfig


def compression_stage(config: CompressionConfig) -> Stage:
    return compressor(config.algorithm, config.effective_level, config.threads)


def encryption_stage(config: EncryptionConfig | None) -> Encryption | None:
    if config is None:
        return None
    if isinstance(config, AgeEncryptionConfig):
        return AgeEncryption(config.recipients)
    return GpgEncryption(config.recipients, config.keyring)
