"""Print the lowest versions pyproject.toml allows, as pip pins (`numpy==2.1.0 ...`).

CI installs exactly these in a fresh venv and runs the engine's tests there, so a floor
that the code does not really meet fails the run. Covers the runtime dependencies and
the `test` extra (the others are exercised only on the newest versions).
"""

import re
import sys
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
pins = []
for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
    match = re.fullmatch(
        r"([A-Za-z0-9_.-]+)\s*(?:>=|==)\s*([0-9][0-9A-Za-z.]*)", requirement.strip()
    )
    if not match:
        sys.exit(f"floors: {requirement!r} in pyproject.toml has no plain `>=` floor or `==` pin")
    pins.append(f"{match[1]}=={match[2]}")
print(" ".join(pins))
