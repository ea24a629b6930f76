"""Suggested public replies for the review queue: a starting point in the customer's language that
a person edits and sends (nothing here is ever sent on its own)."""

from __future__ import annotations

from typing import Any

from storage.lifecycle import format_number

# What the complaint is about, to say sorry for the right thing.
ABOUT: dict[str, tuple[str, str]] = {
    "service_attitude": ("the way you were treated", "您遇到的服务态度问题"),
    "service_speed": ("the wait", "让您久等"),
    "product_quality": ("the problem with your product", "商品的质量问题"),
    "product_safety": ("the safety problem you found", "您发现的安全问题"),
    "billing": ("the problem with your bill", "账单的问题"),
    "pricing": ("the confusion over the price", "价格方面的困扰"),
    "delivery": ("the trouble with your delivery", "配送的问题"),
    "returns": ("the trouble with your return", "退货的问题"),
    "store_environment": ("your visit to our store", "您在门店的不愉快体验"),
    "website_app": ("the trouble with our website or app", "网站或应用的问题"),
}

EN = {
    "urgent": "We're very sorry about {about}, and we take it seriously. Please send us a direct "
    "message with your order number and how to reach you so we can act right away.",
    "complaint": "We're sorry about {about}. Please send us a direct message with your order "
    "number and we'll put it right.",
    "praise": "Thank you for the kind words! We'll pass them on to the team.",
    "suggestion": "Thanks for the idea! We've passed it on to the team.",
    "question": "Happy to help! Please send us a direct message with the details.",
    "ticket": "We've opened {ticket} for you and will follow up.",
}
ZH = {
    "urgent": "非常抱歉{about}，我们高度重视。"
    "请立即私信我们您的订单号和联系方式，我们会第一时间处理。",
    "complaint": "非常抱歉{about}给您带来不便。请私信我们您的订单号，我们会尽快为您处理。",
    "praise": "感谢您的肯定！我们会转达给团队。",
    "suggestion": "感谢您的建议！我们已转达给相关团队。",
    "question": "很乐意为您解答！请私信我们详细情况。",
    "ticket": "我们已为您创建工单 {ticket}，会尽快跟进。",
}
GENERIC_ABOUT = ("what happened", "")


def reply_language(language: str | None) -> str:
    return "zh" if (language or "").lower().startswith("zh") else "en"


def _kind(post: Any) -> str:
    if post.intent == "praise":
        return "praise"
    if post.intent == "suggestion":
        return "suggestion"
    if post.intent in ("check_status", "request_human", "greet"):
        return "question"
    if post.priority == "P1":
        return "urgent"
    if post.intent == "complaint" or post.sentiment_label == "negative":
        return "complaint"
    return "question"


def draft_reply(post: Any) -> str:
    """`post` is a social post (row or model). The draft addresses the author by @username."""
    lang = reply_language(post.language)
    texts = ZH if lang == "zh" else EN
    about_en, about_zh = ABOUT.get(post.category or "", GENERIC_ABOUT)
    body = texts[_kind(post)].format(about=about_zh if lang == "zh" else about_en)
    if post.ticket_id is not None:
        body += ("" if lang == "zh" else " ") + texts["ticket"].format(
            ticket=format_number(post.ticket_id)
        )
    username = (post.author_username or "").lstrip("@")
    return f"@{username} {body}" if username else body
