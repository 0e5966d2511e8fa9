"""Derive the blocking client (`client/_sync.py`) from the asyncio one (`client/_async.py`).

Run `python client/generate_sync.py` after changing `_async.py` (needs the dev
extra: the output is formatted with ruff); `--check` only reports whether
`_sync.py` is stale. CI regenerates and fails on a difference.

The rules are explicit substitutions applied in order, in the manner of
httpcore's unasync script, rather than the `unasync` package: unasync only
renames whole names and drops `async`/`await`, while grpc's blocking API
differs from `grpc.aio` in ways a renamer cannot express (the `.aio`
attribute hop disappears, `Awaitable[...]` unwraps, `close(grace=None)` takes
no argument). Every rule must match at least once, so a rule that the async
source has outgrown fails the run instead of silently doing nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parent
SOURCE = CLIENT_DIR / "_async.py"
TARGET = CLIENT_DIR / "_sync.py"

HEADER = "# Generated from client/_async.py by `python client/generate_sync.py`: edit that file, not this one.\n"

SYNC_DOCSTRING = '''"""Blocking client over a plain `grpc` channel, for scripts and threaded code.

Generated from the event-loop client in `_async.py`, so it mirrors it method for
method; every RPC goes through `_call`, the single place that adds the token,
applies the deadline, retries and maps errors.
"""'''

# (pattern, replacement), in order. Patterns are regular expressions over the whole file.
RULES: list[tuple[str, str]] = [
    (r'\A"""asyncio client.*?"""', SYNC_DOCSTRING.replace("\\", r"\\")),
    (r"^import asyncio$", "import time"),
    (
        r"^from collections\.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence$",
        "from collections.abc import Callable, Iterable, Iterator, Sequence",
    ),
    (r'"""asyncio convhub client \(create it inside a running event loop\)\.', '"""Synchronous convhub client.'),
    (r"Use as an async context manager, or `await close\(\)`\.", "Use as a context manager, or call `close()`."),
    (r"\bAsyncConvhubClient\b", "ConvhubClient"),
    (r"\bgrpc\.aio\.", "grpc."),
    (r"\.close\(grace=None\)", ".close()"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\basyncio\.sleep\(", "time.sleep("),
    (r"\bAwaitable\[Page\[_T\]\]", "Page[_T]"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"^( *)for item in page\.result:\n\1    yield item$", r"\1yield from page.result"),
    (r"\basync for ", "for "),
    (r"\basync def ", "def "),
    (r"\bawait ", ""),
]


def derive(source: str) -> str:
    """The sync client's text for the async client's `source` (before formatting)."""
    unused = []
    for pattern, replacement in RULES:
        source, count = re.subn(pattern, replacement, source, flags=re.MULTILINE | re.DOTALL)
        if count == 0:
            unused.append(pattern)
    if unused:
        raise SystemExit(f"generate_sync: rules that matched nothing in {SOURCE.name}: {unused}")
    leftovers = re.findall(r"\b(?:async|await|aio|asyncio|Awaitable)\b", source)
    if leftovers:
        raise SystemExit(f"generate_sync: async constructs no rule covers: {sorted(set(leftovers))}")
    return HEADER + source


def ruff_format(text: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=CLIENT_DIR.parent,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"generate_sync: ruff format failed:\n{result.stderr}")
    return result.stdout


def main(argv: list[str]) -> int:
    generated = ruff_format(derive(SOURCE.read_text()))
    if "--check" in argv:
        if TARGET.read_text() != generated:
            print(f"{TARGET} is stale: run python client/generate_sync.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
