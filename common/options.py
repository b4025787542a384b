"""Options dicts of datasets and models: defaults overridden by the user's, unknown keys refused."""
from __future__ import annotations

from common.errors import UserError


def merge_options(owner: str, options: dict | None, defaults: dict) -> dict:
    """``defaults`` updated with ``options``; UserError naming ``owner`` (e.g. "model 'resnet18'")
    and the valid keys on a key it does not take."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(sorted(defaults)) if defaults else "none"
        raise UserError(f"{owner} does not take option(s) {', '.join(unknown)}; valid options: {valid}")
    return {**defaults, **options}
