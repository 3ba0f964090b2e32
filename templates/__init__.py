"""Jinja2 templates for every text format photonkick writes, and the strict environment.

A user may put templates of the same names in a folder of their own (spec key ``templates``);
those are found first.
"""

from __future__ import annotations

import shlex
from functools import lru_cache
from pathlib import Path

import jinja2


def shell_quote(value: object) -> str:
    """Quote a value for bash."""
    return shlex.quote(str(value))


def systemd_quote(value: object) -> str:
    """Quote one argument of a systemd Exec= line ('%' and '$' are special there)."""
    text = str(value).replace("%", "%%").replace("$", "$$")
    if text and all(c.isalnum() or c in "@%+=:,./_-" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@lru_cache(maxsize=8)
def environment(user_dir: Path | None = None) -> jinja2.Environment:
    """The template environment: strict about undefined names, keeps trailing newlines.

    HTML templates (``*.html.j2``) escape every value; the text formats (boot configs,
    shell, systemd units) are written as they are, quoted by the ``sh`` and ``systemd``
    filters where they need it.
    """
    loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("photonkick.templates", ".")]
    if user_dir is not None:
        loaders.insert(0, jinja2.FileSystemLoader(str(user_dir)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2", "html"), default_for_string=False, default=False
        ),
    )
    env.filters["sh"] = shell_quote
    env.filters["systemd"] = systemd_quote
    return env


def render(name: str, user_dir: Path | None = None, **context: object) -> str:
    """Render one template by name, e.g. ``kickstart/postinstall.sh.j2``."""
    return environment(user_dir).get_template(name).render(**context)
