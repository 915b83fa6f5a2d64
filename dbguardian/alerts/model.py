"""What a channel delivers, and the interface every channel implements."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Notification:
    id: str
    kind: str  # firing | reminder | resolved | test
    target: str
    check: str
    observed: str
    expected: str
    since: str | None
    at: str
    runbook: str
    host: str

    @property
    def title(self) -> str:
        icon = {"firing": "🔴", "reminder": "🔴", "resolved": "✅", "test": "🧪"}.get(self.kind, "")
        word = {"firing": "FIRING", "reminder": "STILL FIRING", "resolved": "RESOLVED", "test": "TEST"}[self.kind]
        return f"{icon} [dbguardian {word}] {self.target}: {self.check}"

    def text(self) -> str:
        lines = [
            self.title,
            f"target:   {self.target}",
            f"check:    {self.check}",
            f"seen:     {self.observed}",
            f"expected: {self.expected}",
        ]
        if self.since:
            lines.append(f"since:    {self.since}")
        lines += [f"host:     {self.host}", f"runbook:  {self.runbook}"]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Channel(Protocol):
    name: str

    async def send(self, notification: Notification) -> None:
        """Deliver or raise; the dispatcher retries and keeps undelivered messages."""
        ...
