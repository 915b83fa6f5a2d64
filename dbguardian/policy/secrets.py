"""Secrets in the policy: ONE reference type, one way to resolve it, one error.

A secret is given either inline (from the YAML, or better from the environment:
``DBGUARDIAN_TARGETS__APP__PASSWORD``) or as a file holding it (``password_file``, ``url_file``,
...: mounted by systemd credentials, Docker/Kubernetes secrets). The policy keys stay two per
secret, ``<name>`` and ``<name>_file``; models that hold secrets mix in :class:`HasSecrets`, and
every caller asks ``config.secret("<name>").resolve()``. Files are read at resolve time, so a
rotated file is picked up without a reload. A file that cannot be read raises
:class:`~dbguardian.errors.SecretUnavailable` naming the key and the path, never the content.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import SecretStr

from dbguardian.errors import SecretUnavailable
from dbguardian.policy.base import http_url_problem


@dataclass(frozen=True)
class SecretRef:
    """Where one secret comes from: ``value`` (inline) wins over ``file``; neither means not configured."""

    key: str
    """The policy key of the file form, for messages (``password_file``, ``alerts.webhook.url_file``)."""
    value: SecretStr | None = None
    file: Path | None = None
    url: bool = False
    """The secret is an http(s) URL (a webhook, a ping): a file's content is checked as one."""

    @property
    def configured(self) -> bool:
        return self.value is not None or self.file is not None

    def resolve(self) -> str | None:
        """The secret, or None when neither form is set; raises SecretUnavailable."""
        if self.value is not None:
            return self.value.get_secret_value()
        if self.file is None:
            return None
        try:
            text = self.file.read_text().strip("\r\n").strip() if self.url else self.file.read_text().strip("\r\n")
        except OSError as error:
            raise SecretUnavailable(f"cannot read {self.key} {self.file}: {error.strerror or error}") from None
        if not text:
            raise SecretUnavailable(f"{self.key} {self.file} is empty")
        if self.url and (problem := http_url_problem(text)) is not None:
            raise SecretUnavailable(f"{self.key} {self.file}: its content {problem}")
        return text

    def require(self) -> str:
        """The secret, which the policy guarantees is configured (a model validator checked it)."""
        value = self.resolve()
        if value is None:
            raise SecretUnavailable(f"{self.key}: not configured")
        return value


class HasSecrets:
    """For models with ``<name>: SecretStr | None`` and ``<name>_file: Path | None`` pairs."""

    location: ClassVar[str] = ""
    """The model's place in the policy, for messages (``alerts.webhook.``); empty where it varies."""
    url_secrets: ClassVar[frozenset[str]] = frozenset()
    """Names whose values are http(s) URLs."""

    def secret(self, name: str) -> SecretRef:
        value = getattr(self, name)
        file = getattr(self, f"{name}_file")
        return SecretRef(f"{self.location}{name}_file", value, file, url=name in self.url_secrets)


def url_secret(value: SecretStr | None) -> SecretStr | None:
    """Field validator for an inline URL secret (the message never shows the URL)."""
    if value is not None and (problem := http_url_problem(value.get_secret_value())) is not None:
        raise ValueError(problem)
    return value
