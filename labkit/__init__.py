"""Plumbing the notebooks import, so that what they teach stays in plain sight."""
