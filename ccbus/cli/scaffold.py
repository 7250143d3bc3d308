"""``ccbus new-plugin NAME``: write a working third-party plugin project.

The project is rendered from ``ccbus/cli/templates/plugin/`` by plain string
replacement of a few placeholders, in file contents and in file and
directory names:

* ``__PLUGIN_NAME__``: NAME itself (``acme-crm``), the entry-point name
  and the prefix of the plugin's actions, sources and event types;
* ``__PACKAGE__``: the import package (``ccbus_acme_crm``);
* ``__DIST__``: the distribution name on PyPI (``ccbus-acme-crm``);
* ``__CCBUS_MINOR__``: this ccbus's ``major.minor`` (``0.1``), the lower
  bound of the plugin's ``ccbus`` dependency;
* ``__YEAR__``: the current year, for the copyright line of ``LICENSE``.

Why not Jinja or cookiecutter: the template is a dozen short files with
nothing conditional, and a placeholder no real code uses keeps
the template readable as the project it becomes, with no extra dependency
and no escaping rules for the ``{braces}`` rule files are full of.

Every template file ends in ``.tmpl``, which is stripped.  That keeps ruff,
mypy, pytest and build backends from treating the template as code or as a
project of its own (a ``pyproject.toml`` or ``test_*.py`` under ``ccbus/``
would be picked up), while the rendered project has the real names.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import uuid
from pathlib import Path

from ccbus.version import __version__

__all__ = ["NAME_PATTERN", "TEMPLATE_DIR", "render_plugin", "validate_name"]

TEMPLATE_DIR = Path(__file__).parent / "templates" / "plugin"
TEMPLATE_SUFFIX = ".tmpl"

#: Lowercase words of letters and digits joined by single hyphens, starting
#: with a letter: valid as a distribution name, an entry-point name and (with
#: ``_`` for ``-``) a Python identifier, and the same in all three.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")

#: Left over in a build tree or by an editor; never part of the template.
_IGNORED = {"__pycache__", ".DS_Store", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def validate_name(name: str) -> str:
    """Return ``name`` if it can name a plugin, else raise :class:`ValueError` saying why."""
    if not NAME_PATTERN.fullmatch(name):
        shown = repr(name) if name else "an empty name"
        raise ValueError(
            f"invalid plugin name {shown}: use lowercase letters, digits and single hyphens, "
            "starting with a letter and not ending with a hyphen (for example 'acme-crm')"
        )
    return name


def placeholders(name: str) -> dict[str, str]:
    """What each placeholder becomes for plugin ``name`` (already validated)."""
    return {
        "__PLUGIN_NAME__": name,
        "__PACKAGE__": "ccbus_" + name.replace("-", "_"),
        "__DIST__": "ccbus-" + name,
        "__CCBUS_MINOR__": _minor_version(__version__),
        "__YEAR__": str(datetime.date.today().year),
    }


def _minor_version(version: str) -> str:
    """``0.1`` for ``0.1.3`` or ``0.1.0.dev2``: plugins need the hook API, not the patch."""
    parts = re.findall(r"\d+", version)[:2]
    return ".".join(parts + ["0"] * (2 - len(parts)))


def _substitute(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def render_plugin(name: str, directory: Path) -> Path:
    """Render the plugin template into ``directory/ccbus-NAME/`` and return that path.

    :raises ValueError: ``name`` is not a valid plugin name, the target
        already exists (nothing is overwritten), or ``directory`` is a file.
        The CLI turns these into usage errors.

    The project is written into a temporary directory next to the target
    and renamed into place at the end, so a failure halfway never leaves a
    half-written project that the next attempt would refuse to overwrite.
    """
    values = placeholders(validate_name(name))
    directory = Path(directory)
    target = directory / values["__DIST__"]
    if target.exists() or target.is_symlink():
        raise ValueError(f"{target} already exists; remove it or choose another --dir")
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is not a directory")
    if not TEMPLATE_DIR.is_dir():
        raise RuntimeError(f"the plugin template is missing from this installation: {TEMPLATE_DIR}")
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory / f".{target.name}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir()
    try:
        for source in sorted(TEMPLATE_DIR.rglob("*")):
            relative = source.relative_to(TEMPLATE_DIR)
            if _IGNORED.intersection(relative.parts) or source.suffix == ".pyc":
                continue
            destination = staging / _substitute(str(relative), values)
            if source.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination = destination.with_name(destination.name.removesuffix(TEMPLATE_SUFFIX))
            destination.parent.mkdir(parents=True, exist_ok=True)
            text = source.read_text(encoding="utf-8")
            destination.write_text(_substitute(text, values), encoding="utf-8")
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
