"""Regenerate docs/screenshots/*.png: run the UI tests with CRONPILOT_UPDATE_DOCS_SCREENSHOTS=1,
so that every ``shot(page, name, docs=True)`` they take is also saved as
docs/screenshots/<name>.png (the README's screenshots, from tests/ui/test_docs_screenshots.py).

    python scripts/screenshots.py              # all of tests/ui
    python scripts/screenshots.py -k sign_in   # any pytest arguments instead
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    env = {**os.environ, "CRONPILOT_UPDATE_DOCS_SCREENSHOTS": "1"}
    env.pop("CRONPILOT_SKIP_UI_TESTS", None)
    given_paths = any((REPO / a.split("::")[0]).exists() for a in argv if not a.startswith("-"))
    arguments = argv if given_paths else ["tests/ui", *argv]
    return subprocess.call([sys.executable, "-m", "pytest", "-q", *arguments], cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
