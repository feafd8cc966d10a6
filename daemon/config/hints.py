"""Hints for configuration mistakes that pydantic words for programmers: a misspelt key (did
you mean), a key written at the wrong level (it belongs under another section), a section
written as a single value."""

from __future__ import annotations

import difflib
from typing import get_args

from pydantic import BaseModel


def _models_in(annotation) -> list[type[BaseModel]]:
    """Section classes an annotation holds (Section, Section | None, list[Section], ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def section_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section class at a key path (list positions skipped), or None where there is none."""
    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        models = _models_in(field.annotation) if field is not None else []
        if not models:
            return None
        model = models[0]
    return model


def key_paths(root: type[BaseModel], prefix: str = "", depth: int = 4) -> dict[str, list[str]]:
    """Every key name -> the dotted paths where it is valid (`cameras[].gate.threshold`)."""
    found: dict[str, list[str]] = {}
    for name, field in root.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        found.setdefault(name, []).append(path)
        annotation = field.annotation
        is_list = "list[" in str(annotation) or getattr(annotation, "__origin__", None) is list
        for sub in _models_in(annotation)[:1] if depth > 0 else []:
            for key, paths in key_paths(sub, path + ("[]" if is_list else ""), depth - 1).items():
                found.setdefault(key, []).extend(paths)
    return found


def unknown_key(root: type[BaseModel], loc: tuple) -> str:
    """The message for a key `loc[-1]` the section at `loc[:-1]` does not have."""
    key, parent = str(loc[-1]), section_at(root, loc[:-1])
    siblings = list(parent.model_fields) if parent is not None else []
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.7)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    elsewhere = key_paths(root).get(key, [])  # not valid here (pydantic said so), so these are other places
    if elsewhere:
        where = " or ".join(elsewhere[:3])
        return f"unknown key here; {key!r} belongs elsewhere: {where} (indent it under that section)"
    return "unknown key (check the spelling; see config.yaml for every option)"


def not_a_section(root: type[BaseModel], loc: tuple) -> str | None:
    """The message for a single value where a section (keys indented below) is expected."""
    section = section_at(root, loc)
    if section is None:
        return None
    keys = [name for name, f in section.model_fields.items() if f.is_required()] or list(section.model_fields)[:2]
    name = next((str(p) for p in reversed(loc) if isinstance(p, str)), "the section")
    return (f"must be a section with its keys indented below it, not a single value, e.g. "
            f"{name}: then {', '.join(k + ': ...' for k in keys)} on the next lines")
