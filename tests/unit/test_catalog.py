"""The message catalogues: complete in both languages, and the words customers read."""

from __future__ import annotations

import string
from datetime import timedelta

from bot import catalog


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_both_languages_have_every_text_with_the_same_placeholders() -> None:
    en, zh = catalog.TEXTS["en"], catalog.TEXTS["zh"]
    assert en.keys() == zh.keys()
    for key in en:
        assert _fields(en[key]) == _fields(zh[key]), key


def test_every_category_and_kind_has_words_in_both_languages() -> None:
    from nlu.types import CATEGORIES
    from storage.lifecycle import KINDS, PRIORITIES

    for lang in catalog.LANGUAGES:
        assert set(catalog.CATEGORY_WORDS[lang]) == set(CATEGORIES)
        assert set(catalog.KIND_WORDS[lang]) == set(KINDS)
        assert set(catalog.PRIORITY_WORDS[lang]) == set(PRIORITIES)


def test_status_words_follow_the_contract() -> None:
    assert catalog.status_word("en", "waiting_customer") == "waiting customer"
    assert catalog.status_word("zh", "waiting_customer") == "待您回复"
    assert [catalog.status_word("zh", s) for s in ("new", "acknowledged", "in_progress",
                                                   "resolved", "closed")] == [
        "新建", "已确认", "处理中", "已解决", "已关闭"]


def test_deadlines_in_words() -> None:
    assert catalog.within_words("en", timedelta(minutes=15)) == "within 15 minutes"
    assert catalog.within_words("en", timedelta(hours=3, minutes=59)) == "within 4 hours"
    assert catalog.within_words("en", timedelta(minutes=59, seconds=50)) == "within an hour"
    assert catalog.within_words("en", timedelta(days=7)) == "within 7 days"
    assert catalog.within_words("zh", timedelta(hours=24)) == "24小时内"
    assert catalog.within_words("en", timedelta(minutes=-5)) == "as soon as possible"


def test_answers_without_buttons() -> None:
    assert catalog.is_skip("Skip!") and catalog.is_skip("跳过。")
    assert catalog.is_yes("Yes") and catalog.is_yes("是")
    assert not catalog.is_yes("yesterday")


def test_languages_from_platform_codes() -> None:
    assert catalog.language_of("zh-hans") == "zh"
    assert catalog.language_of("en-GB") == "en"
    assert catalog.language_of("fr") is None
