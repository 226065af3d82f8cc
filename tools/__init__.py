"""The lab's tools, each run by a make target (see the Makefile); REPO is the lab's root folder."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
