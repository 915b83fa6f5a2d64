"""botocore's data files, loaded lean: plain dicts, no documentation text, S3's part of the endpoint table.

The first S3 client of a session makes botocore's loader parse, and keep for the session's
lifetime, the endpoint table of every AWS service (``endpoints.json``, 1.2 MB of JSON) and the S3
API model (``service-2.json``, mostly documentation), as ``OrderedDict`` trees: 10.6 MB of Python
objects (tracemalloc), and the client's creation added 14.9 MB of RSS. :class:`LeanLoader` parses
the same files into plain dicts (ordered as well), replaces every ``documentation`` string by
``""`` as it parses, and cuts the endpoint table's services down to those an S3 client can need
(S3, and STS/SSO for role and SSO credentials): the same client then adds 6.3 MB (issue 14,
bench/README.md). Nothing reads the documentation at run time (botocore formats it into help and
docstrings only); the keys stay, since botocore indexes some of them directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from aiobotocore.session import AioSession
from botocore.loaders import JSONFileLoader, Loader

ENDPOINT_SERVICES = frozenset({"s3", "s3-control", "sts", "sso", "sso-oidc"})
"""The services whose entries stay in the endpoint table (``endpoints.json``)."""


def _without_documentation(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    node = dict(pairs)
    if isinstance(node.get("documentation"), str):
        node["documentation"] = ""
    return node


class PlainJSONFileLoader(JSONFileLoader):  # type: ignore[misc]
    """botocore's JSON file loader, building plain dicts without documentation text."""

    def _load_file(self, full_path: str, open_method: Callable[..., IO[bytes]]) -> Any:
        if not Path(full_path).is_file():
            return None
        with open_method(full_path, "rb") as handle:
            payload = handle.read().decode("utf-8")
        return json.loads(payload, object_pairs_hook=_without_documentation)


class LeanLoader(Loader):  # type: ignore[misc]
    """botocore's loader with :class:`PlainJSONFileLoader` and an endpoint table cut to S3's needs."""

    def __init__(self, data_path: str | None = None) -> None:
        # As botocore.loaders.create_loader: the session's data_path (AWS_DATA_PATH) adds search paths.
        paths = data_path.split(os.pathsep) if data_path else []
        extra = [str(Path(os.path.expandvars(path)).expanduser()) for path in paths] or None
        super().__init__(extra_search_paths=extra, file_loader=PlainJSONFileLoader())

    def load_data_with_path(self, name: str) -> tuple[Any, str]:
        data, path = super().load_data_with_path(name)  # cached by the loader: trimmed in place, once
        if name == "endpoints":
            for partition in data.get("partitions", []):
                services = partition.get("services", {})
                for service in [service for service in services if service not in ENDPOINT_SERVICES]:
                    del services[service]
        return data, path


def lean_session() -> AioSession:
    """An aiobotocore session whose clients load botocore's data through :class:`LeanLoader`."""
    session = AioSession()
    session.register_component("data_loader", LeanLoader(session.get_config_variable("data_path")))
    return session
