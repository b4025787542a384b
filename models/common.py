"""Option checking and the small-input-stem rule shared by the model builders."""
from common.errors import UserError
from common.options import merge_options

SMALL_INPUT = 32  # inputs of at most this height and width get the small stem by default


def check_options(model: str, options: dict | None, defaults: dict) -> dict:
    """``defaults`` updated with ``options``; UserError on a key the model does not take."""
    return merge_options(f"model {model!r}", options, defaults)


def small_stem(model: str, sample_shape, option) -> bool:
    """Option ``small_input_stem``: true, false, or null (automatic: H and W <= 32)."""
    if option is None:
        return max(sample_shape[1], sample_shape[2]) <= SMALL_INPUT
    if not isinstance(option, bool):
        raise UserError(f"model {model!r}: small_input_stem must be true, false or null, got {option!r}")
    return option
