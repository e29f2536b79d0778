"""Copied into a built image by tests/test_image_build.py; a pod imports it."""

MESSAGE = "hello from a source folder"


def greet(name: str) -> str:
    return f"{MESSAGE}, {name}"
