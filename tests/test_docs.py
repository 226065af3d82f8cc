"""The README and the documents under docs/ say what is there: every document linked from the README,
every relative link resolving, every `make` target, file and test they name existing."""

import re
from pathlib import Path

import pytest

from tools import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?\s*\)")


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_every_document_is_linked_from_the_readme():
    readme = text(REPO / "README.md")
    assert all(f"(docs/{path.name})" in readme for path in DOCUMENTS[1:]), "a document nobody finds"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_resolves(document):
    for target in LINK.findall(text(document)):
        if not re.match(r"[a-z][a-z0-9+.-]*:|#", target, re.I):
            assert (document.parent / target.split("#")[0]).exists(), f"{document.name} -> {target}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_make_target_and_file_named_exists(document):
    makefile = text(REPO / "Makefile")
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    for target in re.findall(r"`make ([a-z][\w-]*)", text(document)):
        assert target in targets, f"{document.name} names `make {target}`, which the Makefile lacks"
    for name in re.findall(r"\b((?:tests|labkit|tools|benchmarks)/[\w/]+\.(?:py|json))\b", text(document)):
        assert (REPO / name).is_file(), f"{document.name} names {name}, which is not there"
