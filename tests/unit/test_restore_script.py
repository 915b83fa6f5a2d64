"""pg_restore's script for a server older than 17, without its `SET transaction_timeout = 0;` line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from dbguardian.restore.pg_restore import PROLOGUE_LIMIT, without_transaction_timeout

PROLOGUE = (
    b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\n"
    b"SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET idle_in_transaction_session_timeout = 0;\n"
    b"SET transaction_timeout = 0;\nSET client_encoding = 'UTF8';\n\n"
)
BODY = (
    b"--\n-- Name: notes; Type: TABLE; Schema: public; Owner: app\n--\n\nCREATE TABLE public.notes (t text);\n\n"
    b"--\n-- Data for Name: notes; Type: TABLE DATA; Schema: public; Owner: app\n--\n\n"
    b"COPY public.notes (t) FROM stdin;\nSET transaction_timeout = 0;\n\\.\n\n"
)


def filtered(pieces: list[bytes]) -> bytes:
    async def source() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in without_transaction_timeout(source())])

    return asyncio.run(collect())


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.lists(st.integers(min_value=0), max_size=12))
def test_the_prologue_line_goes_and_a_row_with_that_text_stays_in_any_split(cuts: list[int]) -> None:
    script = PROLOGUE + BODY
    out = filtered(split(script, cuts))
    assert out == script.replace(b"SET transaction_timeout = 0;\nSET client_encoding", b"SET client_encoding")
    assert out.count(b"SET transaction_timeout = 0;") == 1  # the table's row
    assert b"SET idle_in_transaction_session_timeout = 0;\n" in out


def test_a_script_without_the_line_or_without_entries_passes_unchanged() -> None:
    plain = PROLOGUE.replace(b"SET transaction_timeout = 0;\n", b"") + BODY
    assert filtered([plain]) == plain
    assert filtered([PROLOGUE]) == PROLOGUE.replace(b"SET transaction_timeout = 0;\n", b"")
    assert filtered([]) == b""


def test_past_the_limit_nothing_is_looked_for() -> None:
    # A prologue can never be this long; the line after it is data, not a setting.
    long = b"--\n" + b"-- x\n" * (PROLOGUE_LIMIT // 5 + 1) + b"SET transaction_timeout = 0;\n"
    out = filtered([long[i : i + 1000] for i in range(0, len(long), 1000)])
    assert out == long
