"""The guarantees as Gherkin feature files, one per guarantee, shipped with the package."""

import hashlib
from pathlib import Path

FEATURES_DIR = Path(__file__).resolve().parent


def feature_files() -> list[Path]:
    return sorted(FEATURES_DIR.glob("*.feature"))


def inventory_digest() -> str:
    """sha256 over every feature file's name and bytes: which checks this harness runs."""
    digest = hashlib.sha256()
    for path in feature_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
