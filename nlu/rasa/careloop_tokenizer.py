"""A Rasa 3.6 tokenizer for English mixed with Simplified Chinese (runs inside .venv-rasa).

Rasa's WhitespaceTokenizer is wrong for careloop's customers in two ways:
- it keeps a Chinese clause as one token, so DIET cannot tag a product or store inside it;
- its emoji filter spans U+24C2..U+1F251, which includes every CJK ideograph, so a clause made
  only of Chinese characters is silently dropped whenever another token survives
  ("订单123-4567被重复扣款了，太差了" loses "太差了").
JiebaTokenizer would need a dictionary download-free install and accepts only language "zh".

So: each Han character is a token (the word featurizer's bigrams then see Chinese words), and a
run of Latin letters, digits and the joiners inside order numbers, e-mails and contractions is
one token, as in the WhitespaceTokenizer. Everything else (spaces, punctuation, emoji, the
zero-width space careloop puts before a leading "/") separates tokens and is dropped.

Imported by Rasa as `careloop_tokenizer.CareloopTokenizer` with nlu/rasa on PYTHONPATH (rasa.mk
sets it for training and serving), not through careloop's own `nlu` package, whose Python 3.11
code must never be loaded into Rasa's Python 3.10 venv.
"""

from __future__ import annotations  # also makes list[...] and X | None fine on Python 3.10

from typing import Any

import regex
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.tokenizers.tokenizer import Token, Tokenizer
from rasa.shared.nlu.training_data.message import Message

# A word character that is not a Han ideograph (regex's V1 set difference).
_W = r"[\w--\p{Han}]"
_TOKEN = regex.compile(
    r"\p{Han}"  # one Chinese character
    # a word or number, also CL-123, 123-4567, a.b@c.com, don't, $12.50, #tag, @user
    rf"|[#@&$€£¥￥]?{_W}(?:(?:{_W}|[#@&.\-/:'’+])*{_W})?",
    flags=regex.V1,
)


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER, is_trainable=False
)
class CareloopTokenizer(Tokenizer):
    """Han characters one by one; other words as runs of word characters."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            "intent_tokenization_flag": False,
            "intent_split_symbol": "_",
            "token_pattern": None,
            "prefix_separator_symbol": None,
        }

    @staticmethod
    def supported_languages() -> list[str] | None:
        return None  # any: the rules above do not depend on a language setting

    def tokenize(self, message: Message, attribute: str) -> list[Token]:
        text = message.get(attribute) or ""
        tokens = [Token(m.group(), m.start()) for m in _TOKEN.finditer(text)]
        if not tokens:
            # Only punctuation or emoji: one token of the whole text, as Rasa's own tokenizers
            # do, because the featurizers expect at least one.
            tokens = [Token(text, 0)]
        return self._apply_token_pattern(tokens)
