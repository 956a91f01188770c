"""Virtual environments for peer engines whose dependencies clash with Puffin's.

Each peer with a ``requirements`` tuple in ``engines.ENGINES`` gets its own venv under
``benchmarks/.venvs/<name>``, made once with ``python -m venv`` from the running
interpreter and ``pip install``. A ``.requirements`` file inside records what was installed;
when the pins change the venv is rebuilt.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

VENV_ROOT = Path(__file__).resolve().parent / ".venvs"


def venv_python(name: str) -> Path:
    return VENV_ROOT / name / "bin" / "python"


def ensure_venv(name: str, requirements: tuple[str, ...]) -> Path:
    """Return the python of venv ``name``, creating it first if missing or stale."""
    root = VENV_ROOT / name
    marker = root / ".requirements"
    wanted = "\n".join(requirements) + "\n"
    if marker.exists() and marker.read_text() == wanted and venv_python(name).exists():
        return venv_python(name)
    if root.exists():
        shutil.rmtree(root)
    print(f"[venv] creating {root} with {' '.join(requirements)} (one time) ...", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    log = root / "pip-install.log"
    with log.open("w") as fh:
        proc = subprocess.run(
            [str(venv_python(name)), "-m", "pip", "install", "--disable-pip-version-check", *requirements],
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"pip install for venv {name!r} failed (see {log}):\n{tail}")
    marker.write_text(wanted)
    print(f"[venv] {name} ready in {time.perf_counter() - start:.0f} s", flush=True)
    return venv_python(name)
