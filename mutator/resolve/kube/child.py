"""Run one of our modules as a short-lived child process, bounded in time, never left behind.

What needs kubernetes-asyncio's generated client (about 40 MB of RSS once imported)
runs in a child: the configuration loader, the warm-up's Pod listing. The child's
memory goes with it; the server keeps only what the child printed.
"""

from __future__ import annotations

import asyncio
import sys


async def run_module(module: str, *args: str, seconds: float, stderr: bool = False
                     ) -> tuple[int, bytes, bytes]:
    """``python -m module args``: its exit code, stdout and (when *stderr*, else inherited) stderr.

    Killed when *seconds* pass (``TimeoutError``) or the caller is cancelled.
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE if stderr else None)
    try:
        async with asyncio.timeout(seconds):
            out, err = await child.communicate()
    except BaseException:
        if child.returncode is None:
            child.kill()
            await child.wait()
        raise
    assert child.returncode is not None
    return child.returncode, out, err or b""
