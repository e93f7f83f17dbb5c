"""The repository root is the package ``fedaegis``: every subpackage must be listed in pyproject."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_packaged():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"fedaegis"}
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts and rel.parts[0] in {"server", "client", "shared", "orchestration", "deploy"}:
            found.add(".".join(("fedaegis", *rel.parts)))
    assert found == listed


def test_only_fedaegis_is_installed_at_top_level():
    import importlib.metadata

    import fedaegis.server

    assert fedaegis.server.__name__ == "fedaegis.server"
    tops = {top for top, dists in importlib.metadata.packages_distributions().items() if "fedaegis" in dists}
    assert tops == {"fedaegis"}
