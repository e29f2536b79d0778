"""Images for the image tests: every kind of layer."""

from pathlib import Path

import engine

base = engine.Image.from_debian_base(python_version=(3, 12), registry="localhost:5000/team", name="app")

image = (base.with_apt_packages("curl", "ca-certificates")
         .with_pip_packages("six==1.16.0", "attrs>=23", index_url="https://pypi.org/simple")
         .with_env_vars({"APP_MODE": "prod", "GREETING": 'say "hi" to $USER'})
         .with_source_folder(Path(__file__).with_name("image_src"), dst="/app")
         .with_commands(["python /app/image_src/main.py"]))

# The same spec written again, and one with a changed layer.
same = (base.with_apt_packages("curl", "ca-certificates")
        .with_pip_packages("six==1.16.0", "attrs>=23", index_url="https://pypi.org/simple")
        .with_env_vars({"GREETING": 'say "hi" to $USER', "APP_MODE": "prod"})
        .with_source_folder(Path(__file__).with_name("image_src"), dst="/app")
        .with_commands(["python /app/image_src/main.py"]))
changed = (base.with_apt_packages("curl", "ca-certificates")
           .with_pip_packages("six==1.17.0", "attrs>=23", index_url="https://pypi.org/simple")
           .with_env_vars({"APP_MODE": "prod", "GREETING": 'say "hi" to $USER'})
           .with_source_folder(Path(__file__).with_name("image_src"), dst="/app")
           .with_commands(["python /app/image_src/main.py"]))

# Small enough to build for real where a builder exists: pip needs only PyPI.
tiny = engine.Image.from_debian_base(python_version=(3, 12), name="taskrig-test-tiny").with_pip_packages("six")
tiny_changed = tiny.with_env_vars({"TINY": "2"})
