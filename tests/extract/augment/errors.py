"""The check every bad-parameter test makes: building the table fails with one line that starts with
where it is and holds the words expected."""

from __future__ import annotations

import pytest

from extract.augment import AugmentError, build


def assert_one_line_error(spec: dict, where: str, words: list[str]) -> str:
    with pytest.raises(AugmentError) as err:
        build(spec, where)
    text = str(err.value)
    assert "\n" not in text and text.startswith(where), text
    assert all(w in text for w in words), text
    return text
