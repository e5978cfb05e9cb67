"""The README's pictures exist and, but for inspect's, are made by docs/make_pictures.py."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT

MADE_ELSEWHERE = {"inspect_correlation.png"}  # by `inspect` on the shared Sintel frames


def test_every_readme_picture_exists_and_has_a_maker() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    pictures = set(re.findall(r"\]\(docs/([\w.-]+\.png)\)", readme))
    assert {"quickstart_flow.png", "viz_scale.png", "warped_panels.png"} <= pictures
    script = (REPO_ROOT / "docs" / "make_pictures.py").read_text(encoding="utf-8")
    for name in pictures:
        assert (REPO_ROOT / "docs" / name).is_file(), name
        assert name in MADE_ELSEWHERE or f'"{name}"' in script, name
