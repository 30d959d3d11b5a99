"""Caption languages of the synthetic benchmark: ``LANGUAGES[code]`` realises plans/edits."""

from __future__ import annotations

from mmret.data.synthetic.languages.base import Language
from mmret.data.synthetic.languages.cs import Czech
from mmret.data.synthetic.languages.de import German
from mmret.data.synthetic.languages.en import English
from mmret.data.synthetic.languages.fr import French
from mmret.data.synthetic.languages.ja import Japanese
from mmret.data.synthetic.languages.zh import Chinese

LANGUAGES: dict[str, Language] = {
    lang.code: lang for lang in (English(), German(), French(), Czech(), Chinese(), Japanese())
}
SUPPORTED_LANGUAGES: tuple[str, ...] = tuple(LANGUAGES)


def get_language(code: str) -> Language:
    """The realiser for ``code``; unknown codes list the supported ones."""
    try:
        return LANGUAGES[code]
    except KeyError:
        raise ValueError(
            f"unsupported caption language {code!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}"
        ) from None


__all__ = ["LANGUAGES", "SUPPORTED_LANGUAGES", "Language", "get_language"]
