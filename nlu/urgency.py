"""Priority (CONTRACT §5) from the words of a message and what the classifier made of it.

Rules rather than a model: a missed P1 (someone was hurt, someone is calling a lawyer) is the
costliest error triage can make, and keyword rules for it are auditable and easy to extend.
"""

from __future__ import annotations

import re

from nlu.caseless import ascii_lowered, without_ignorecase

_WB = r"(?<![A-Za-z])"  # left word boundary that also works next to Chinese characters

# P1: health and safety. English stems are matched at a word start ("injur" -> injured, injury).
_SAFETY_EN = (
    r"injur|hurt|wound|bleed|blood|burn(?:ed|t|s|ing)?\b|scald|fire\b|caught fire|on fire|"
    r"flames?\b|smok(?:e|ing)\b|explod|explosion|blew up|sparks|sparking|electric shock|electrocut|"
    r"shock(?:ed)? me|poison|food poisoning|sick after|got sick|made (?:me|us|my \w+) sick|"
    r"vomit|throw(?:ing)? up|threw up|diarrh|allerg|anaphyla|epipen|rash\b|hives\b|"
    r"hospital|emergency room|ambulance|a&e\b|doctor|chok(?:e|ed|ing)|suffocat|"
    r"toxic|carbon monoxide|gas leak|mou?ld(?:y)?\b|glass in|metal (?:piece|shard)|"
    r"shards?\b|sharp edge|cut (?:my|his|her|their)|recalled|product recall|unsafe|"
    r"dangerous|hazard|"
    r"overheat|melt(?:ed|ing)|lead paint|expired (?:food|milk|meat|medicine|formula)|"
    r"baby formula|slipped|fell (?:on|in)|tripped"
)
_SAFETY_ZH = (
    r"受伤|伤到|弄伤|划伤|割伤|割破|烫伤|烧伤|流血|出血|着火|起火|失火|冒烟|爆炸|炸了|自燃|"
    r"漏电|触电|电到|中毒|食物中毒|吃坏|拉肚子|腹泻|呕吐|吐了|上吐下泻|过敏|起疹子|红疹|"
    r"医院|急诊|住院|看医生|救护车|窒息|噎|有毒|毒性|甲醛|发霉|霉变|长毛|玻璃渣|碎玻璃|"
    r"异物|铁丝|虫子|蟑螂|过期食品|过期的|安全隐患|危险|召回|摔倒|滑倒|烫到|孩子.{0,6}吞"
)
# P1: legal and regulatory threats.
_LEGAL_EN = (
    r"lawyer|attorney|solicitor|\bsue\b|\bsuing\b|lawsuit|legal action|take (?:you|this) to "
    r"court|small claims|class action|legal team|consumer protection|trading standards|"
    r"\bftc\b|\bbbb\b|better business bureau|attorney general|regulator|report you to"
)
_LEGAL_ZH = (
    r"律师|起诉|告你们|告到|法院|打官司|诉讼|法律途径|法律责任|走法律|消协|消费者协会|12315|"
    r"工商局|市场监管|市监局|投诉到|315晚会|维权|报警|警察"
)
# P2: money the customer has lost.
_MONEY_EN = (
    r"charged (?:me )?(?:twice|two times|double|2x|three times|again)|double[- ]?charg|"
    r"duplicate (?:charge|payment)|overcharg|charged (?:me )?(?:the )?wrong|"
    r"unauthori[sz]ed (?:charge|payment|transaction)|(?:never|didn'?t|did not|haven'?t|"
    r"have not|still (?:no|not|haven'?t))\s+(?:\w+\s+){0,3}(?:refund|refunded|money back|"
    r"credit)|refund (?:is )?(?:missing|never|not (?:received|showing|there)|still)|"
    r"where(?:'s| is) my (?:refund|money)|money (?:was )?(?:taken|gone|deducted)|"
    r"took my money|stole my money|paid (?:but|and) (?:never|didn'?t|no)|lost my money|"
    r"scam(?:med)?|fraud"
)
_MONEY_ZH = (
    r"扣了两次|扣两次|重复扣|多扣|乱扣|扣错|扣了.{0,6}钱|重复收费|多收|乱收费|收了两次|"
    r"退款.{0,6}(?:没|未|还没|不到|迟迟)|(?:没|未|还没|没有)(?:收到|到账|看到).{0,4}退款|"
    r"钱.{0,4}(?:没退|没到|不见|没了)|付了钱.{0,6}(?:没|不)|骗钱|骗子|诈骗|被骗"
)
# P2: the customer has had to come back about the same thing.
_REPEAT_EN = (
    r"third time|3rd time|second time|2nd time|fourth time|(?:\d+|several|many|multiple|"
    r"countless|a few|three|four|five) times|again\b|yet again|still (?:not|no|haven'?t|"
    r"waiting|broken)|already (?:called|emailed|contacted|complained|told|asked)|"
    r"keep (?:calling|asking|emailing)|nobody (?:has )?(?:called|replied|answered|responded)|"
    r"no one (?:has )?(?:called|replied|answered|responded)|for (?:two|three|\d+) weeks|"
    r"every time"
)
_REPEAT_ZH = (
    r"第[二三四五六七八九十两\d]+次|又(?:是|来|一次|没|被|出|坏|延|错|发错|要|找|打|问|催|让)|再次|多次|好几次|几次了|无数次|一直|反复|三番五次|"
    r"还是没|仍然|依然|至今|到现在都|打了.{0,4}电话.{0,6}没|催了"
)

_P1 = re.compile(rf"{_WB}(?:{_SAFETY_EN}|{_LEGAL_EN})|{_SAFETY_ZH}|{_LEGAL_ZH}", re.IGNORECASE)
_P2_MONEY = re.compile(rf"{_WB}(?:{_MONEY_EN})|{_MONEY_ZH}", re.IGNORECASE)
_P2_REPEAT = re.compile(rf"{_WB}(?:{_REPEAT_EN})|{_REPEAT_ZH}", re.IGNORECASE)

# Urgency words in praise or small talk ("the doctor recommended you!", "fire deals 🔥") are
# not emergencies; these intents never escalate on words alone.
_CALM_INTENTS = frozenset({"praise", "greet", "goodbye", "affirm", "deny"})
_SCAN = 5000


# The same rules without IGNORECASE, for text whose only cased letters are ASCII (lowered):
# several times faster (nlu/caseless.py says why and when it is the same).
_FAST = {p: without_ignorecase(p) for p in (_P1, _P2_MONEY, _P2_REPEAT)}


def _finds(pattern: re.Pattern[str], scan: str, lowered: str | None) -> bool:
    fast = _FAST.get(pattern)
    if lowered is not None and fast is not None:
        return fast.search(lowered) is not None
    return pattern.search(scan) is not None


def is_safety_or_legal(text: str) -> bool:
    scan = text[:_SCAN]
    return _finds(_P1, scan, ascii_lowered(scan))


def urgency(text: str, intent: str, category: str | None = None) -> str:
    """P1 safety/legal, P2 money lost or repeated contact, P3 other complaints, P4 the rest."""
    scan = text[:_SCAN]
    if category == "product_safety":
        return "P1"
    calm = intent in _CALM_INTENTS
    if calm:  # none of the rules below applies
        return "P4"
    lowered = ascii_lowered(scan)
    if not calm and _finds(_P1, scan, lowered):
        return "P1"
    if not calm and intent != "suggestion" and _finds(_P2_MONEY, scan, lowered):
        return "P2"
    if intent in ("complaint", "request_human") and _finds(_P2_REPEAT, scan, lowered):
        return "P2"
    if intent == "complaint":
        return "P3"
    return "P4"
