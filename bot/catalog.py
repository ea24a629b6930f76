"""Everything a customer reads, in English and Simplified Chinese.

Texts are `str.format` templates looked up by key; both languages must have the same keys and
the same placeholders (tests/unit/test_catalog.py checks it). Short, friendly, one idea per
message, like a good shop assistant would write in a chat.
"""

from __future__ import annotations

from datetime import timedelta

from storage.lifecycle import STATUS_WORDS

LANGUAGES: tuple[str, ...] = ("en", "zh")
DEFAULT_LANGUAGE = "en"

# Words that answer a question without an answer. Compared after lower-casing and stripping
# punctuation, so "Skip!" and "跳过。" count too. X and Mastodon DMs have no buttons: these are
# how a customer there moves through the flow.
SKIP_WORDS = frozenset(
    {"skip", "/skip", "no", "none", "nope", "n/a", "na", "nothing", "pass",
     "跳过", "略过", "没有", "无", "不用", "不需要", "没"}
)
YES_WORDS = frozenset(
    {"yes", "y", "yeah", "yep", "ok", "okay", "sure", "confirm", "correct", "right", "send",
     "send it", "是", "是的", "好", "好的", "确认", "对", "对的", "可以", "没问题", "提交"}
)
DONE_WORDS = frozenset({"done", "finished", "that's all", "thats all", "完成", "好了", "没了"})

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "welcome": (
            "Hi{name}! 👋 I'm the customer care assistant. I can pass a complaint, a suggestion "
            "or some praise to our team, and tell you where your tickets stand. "
            "What would you like to do?"
        ),
        "menu_hint": "Here's what I can do:",
        "menu_complaint": "Report a problem",
        "menu_suggestion": "Make a suggestion",
        "menu_praise": "Give praise",
        "menu_status": "My tickets",
        "menu_human": "Talk to a person",
        "greet": "Hello! How can I help you today?",
        "goodbye": "Thanks for getting in touch. Have a lovely day!",
        "not_understood": (
            "Sorry, I'm not sure I understood. I can take a complaint, a suggestion or praise, "
            "or check on a ticket:"
        ),
        "unknown_command": "I don't know that command. Here's what I can do:",
        "ask_describe": "What would you like to tell us? A few sentences are enough.",
        "ask_describe_complaint": "Sorry to hear that. What happened? A few sentences are enough.",
        "ask_describe_suggestion": "We'd love to hear it. What's your suggestion?",
        "ask_describe_praise": "That's lovely! What would you like to tell us?",
        "ask_category": "Which of these fits best?",
        "ask_category_guess": "It sounds like this is about {category}. Is that right? "
        "If not, pick the one that fits.",
        "ask_order": "Do you have an order or receipt number? Send it, or press Skip.",
        "ask_store": "Which store was it (town or street)? Or press Skip.",
        "ask_store_praise": "Which store or colleague should we thank? Or press Skip.",
        "ask_photos": "A photo or document often helps. Send it now, or press Skip.",
        "photo_received": "Got it ({count} so far). Send more, or press Done.",
        "summary": "Here's what I'll pass to our team:\n{lines}\n\nShall I create the ticket?",
        "summary_kind": "• Type: {value}",
        "summary_description": "• What happened: {value}",
        "summary_question": "• Your question: {value}",
        "summary_category": "• Category: {value}",
        "summary_order": "• Order: {value}",
        "summary_store": "• Store: {value}",
        "summary_attachments": "• Attachments: {value}",
        "summary_hint": "(Reply yes to confirm.)",
        "ask_edit": "What would you like to change?",
        "ask_edit_description": "Please send the corrected description.",
        "field_description": "What happened",
        "field_category": "Category",
        "field_order": "Order number",
        "field_store": "Store",
        "btn_confirm": "✅ Confirm",
        "btn_edit": "✏️ Edit",
        "btn_skip": "Skip",
        "btn_done": "Done",
        "btn_yes": "Yes, that's right",
        "ticket_created": (
            "✅ Thank you! Your ticket number is {number}.\n"
            "Category: {category} · Priority: {priority}\n"
            "We'll get back to you {first_response}. "
            "Send /status {number} to check on it any time."
        ),
        "status_one": "{number} ({category}): {status}.{next}",
        "status_next_due": " We aim to resolve it {due}.",
        "status_next_waiting": " We're waiting for your reply: just write here.",
        "status_next_done": "",
        "status_unknown": (
            "I can't find ticket {number} among your tickets. Please check the number, "
            "or send /status to see your open tickets."
        ),
        "status_list": "Your open tickets:\n{lines}\n\nSend /status and a number for details.",
        "status_line": "• {number} · {category} · {status}",
        "status_none": "You have no open tickets. To tell us about something, send /new.",
        "lang_choose": "Which language would you like? / 您想使用哪种语言？",
        "lang_set": "OK, I'll write in English from now on.",
        "human_started": (
            "I've asked a person from our team to take over {number}. They'll reply here. "
            "Until then, everything you write is added to the ticket."
        ),
        "human_already": (
            "A person from our team already has {number}. Just write here; they'll see it."
        ),
        "human_request_text": "The customer asked to talk to a person.",
        "cancelled": "OK, I've cancelled that; nothing was sent. Send /new whenever you're ready.",
        "nothing_to_cancel": "There's nothing to cancel. Send /start to see what I can do.",
        "added_to_ticket": (
            "Thanks, I've added that to {number}; our team will see it. "
            "To tell us about something else, send /new."
        ),
        "attachment_added": "Thanks, I've added the file to {number}.",
        "attachment_kept": "Thanks, I've kept the file for your report.",
        "unsupported": (
            "Sorry, I can't read {what} here. Please describe it in words "
            "(photos and documents are fine too)."
        ),
        "unsupported_sticker": "stickers",
        "unsupported_voice": "voice messages",
        "unsupported_video": "videos",
        "unsupported_location": "locations",
        "unsupported_contact": "contacts",
        "unsupported_other": "that kind of message",
        "throttled": (
            "You're writing faster than I can read 🙂 I've saved everything; "
            "give me a few seconds to catch up."
        ),
        "stale_button": "That button belongs to an earlier conversation. Here's what I can do now:",
        "stale_step": "That question is already answered.",
        "already_created": "That's already done: your ticket is {number}.",
        "csat_ask_comment": (
            "Thank you for rating {number} {score}/5! Anything you'd like to add? "
            "Write it here, or press Skip."
        ),
        "csat_low": (
            "Sorry we didn't get this right. I've reopened {number} and a person will follow "
            "up with you. Anything you'd like to add? Write it here, or press Skip."
        ),
        "csat_already": "You've already rated {number}. Thank you!",
        "csat_comment_saved": "Thanks, I've passed your comment on.",
        "csat_comment_skipped": "No problem. Thanks for your feedback!",
        "notify_acknowledged": "📬 {number}: we've seen your ticket. Status: {status}. "
        "We aim to resolve it {due}.",
        "notify_in_progress": "🔧 {number}: our team is working on it. Status: {status}. "
        "We aim to resolve it {due}.",
        "notify_waiting_customer": "❓ {number}: we need a little more information from you. "
        "Status: {status}. Please reply here.",
        "notify_resolved": "🎉 {number} has been resolved (status: {status}). How happy are you "
        "with how we handled it? 1 = not at all, 5 = very.",
        "notify_closed": "📁 {number} is now closed (status: {status}). Thanks for your patience!",
        "notify_reopened": "🔁 {number} is open again and we're on it. Status: {status}. "
        "We aim to resolve it {due}.",
        "notify_new": "{number}: status {status}.",
        "agent_reply": "💬 {agent} about {number}:\n{text}",
        "agent_fallback": "Our team",
        "handed_back": (
            "{number}: our team has handed you back to me, the assistant. Write any time, "
            "or send /human to reach a person again."
        ),
        "asap": "as soon as possible",
        "within_minutes": "within {n} minutes",
        "within_minute": "within a minute",
        "within_hours": "within {n} hours",
        "within_hour": "within an hour",
        "within_days": "within {n} days",
        "within_day": "within a day",
        "none": "none",
    },
    "zh": {
        "welcome": (
            "您好{name}！👋 我是客服助手。我可以把您的投诉、建议或表扬转给我们的团队，"
            "也可以告诉您工单的进度。请问需要什么帮助？"
        ),
        "menu_hint": "我可以帮您：",
        "menu_complaint": "反映问题",
        "menu_suggestion": "提建议",
        "menu_praise": "表扬",
        "menu_status": "我的工单",
        "menu_human": "转人工",
        "greet": "您好！请问有什么可以帮您？",
        "goodbye": "感谢您的联系，祝您生活愉快！",
        "not_understood": "抱歉，我没太明白。我可以受理投诉、建议或表扬，也可以查询工单：",
        "unknown_command": "我不认识这个命令。我可以帮您：",
        "ask_describe": "请告诉我们您想说的事情，几句话就可以。",
        "ask_describe_complaint": "很抱歉给您带来不便。请问发生了什么？几句话就可以。",
        "ask_describe_suggestion": "非常欢迎！请问您有什么建议？",
        "ask_describe_praise": "太好了！请问您想表扬什么？",
        "ask_category": "以下哪一类最贴切？",
        "ask_category_guess": (
            "听起来是关于「{category}」的问题，"
            "对吗？如果不是，请选择合适的类别。"
        ),
        "ask_order": "您有订单号或小票号吗？请发送给我，或点击「跳过」。",
        "ask_store": "是哪家门店（城市或街道）？或点击「跳过」。",
        "ask_store_praise": "您想表扬哪家门店或哪位同事？或点击「跳过」。",
        "ask_photos": "照片或文件往往很有帮助。现在发送，或点击「跳过」。",
        "photo_received": "收到（共 {count} 个）。可以继续发送，或点击「完成」。",
        "summary": "我将把以下内容转给我们的团队：\n{lines}\n\n确认创建工单吗？",
        "summary_kind": "• 类型：{value}",
        "summary_description": "• 情况：{value}",
        "summary_question": "• 您的问题：{value}",
        "summary_category": "• 类别：{value}",
        "summary_order": "• 订单：{value}",
        "summary_store": "• 门店：{value}",
        "summary_attachments": "• 附件：{value}",
        "summary_hint": "（回复「是」即可确认。）",
        "ask_edit": "您想修改哪一项？",
        "ask_edit_description": "请发送修改后的描述。",
        "field_description": "情况描述",
        "field_category": "类别",
        "field_order": "订单号",
        "field_store": "门店",
        "btn_confirm": "✅ 确认",
        "btn_edit": "✏️ 修改",
        "btn_skip": "跳过",
        "btn_done": "完成",
        "btn_yes": "是的，没错",
        "ticket_created": (
            "✅ 谢谢您！您的工单号是 {number}。\n"
            "类别：{category} · 优先级：{priority}\n"
            "我们会在{first_response}回复您。随时发送 /status {number} 查询进度。"
        ),
        "status_one": "{number}（{category}）：{status}。{next}",
        "status_next_due": "我们会争取在{due}解决。",
        "status_next_waiting": "我们在等您的回复，直接在这里回复即可。",
        "status_next_done": "",
        "status_unknown": (
            "在您的工单中找不到 {number}。请核对编号，"
            "或发送 /status 查看您未完结的工单。"
        ),
        "status_list": "您未完结的工单：\n{lines}\n\n发送 /status 加工单号可查看详情。",
        "status_line": "• {number} · {category} · {status}",
        "status_none": "您目前没有未完结的工单。如需反映问题，请发送 /new。",
        "lang_choose": "Which language would you like? / 您想使用哪种语言？",
        "lang_set": "好的，之后我会用中文和您交流。",
        "human_started": (
            "我已请团队同事接手 {number}，他们会在这里回复您。"
            "在此之前，您发送的所有内容都会加入该工单。"
        ),
        "human_already": "团队同事已经在处理 {number}。直接在这里留言，他们就能看到。",
        "human_request_text": "顾客要求转人工客服。",
        "cancelled": "好的，已取消，没有提交任何内容。需要时请发送 /new。",
        "nothing_to_cancel": "目前没有可取消的内容。发送 /start 查看我能做什么。",
        "added_to_ticket": "谢谢，已加入 {number}，团队会看到。如有其他事情，请发送 /new。",
        "attachment_added": "谢谢，文件已加入 {number}。",
        "attachment_kept": "谢谢，文件已保存，会随您的反馈一起提交。",
        "unsupported": "抱歉，这里无法识别{what}。请用文字描述（也可以发送照片或文件）。",
        "unsupported_sticker": "贴纸",
        "unsupported_voice": "语音消息",
        "unsupported_video": "视频",
        "unsupported_location": "位置",
        "unsupported_contact": "名片",
        "unsupported_other": "这类消息",
        "throttled": "您发得太快啦 🙂 所有消息都已保存，请稍等几秒。",
        "stale_button": "这个按钮属于之前的对话。我现在可以帮您：",
        "stale_step": "这个问题已经回答过了。",
        "already_created": "已经处理好了：您的工单号是 {number}。",
        "csat_ask_comment": (
            "感谢您给 {number} 打了 {score}/5 分！"
            "还有什么想补充的吗？直接写下，或点击「跳过」。"
        ),
        "csat_low": (
            "很抱歉这次没有做好。我已重新打开 {number}，"
            "会有同事跟进联系您。还有什么想补充的吗？直接写下，或点击「跳过」。"
        ),
        "csat_already": "您已经给 {number} 评过分了，谢谢！",
        "csat_comment_saved": "谢谢，您的意见已转达。",
        "csat_comment_skipped": "好的，感谢您的反馈！",
        "notify_acknowledged": (
            "📬 {number}：我们已收到您的工单。"
            "状态：{status}。我们会争取在{due}解决。"
        ),
        "notify_in_progress": "🔧 {number}：团队正在处理。状态：{status}。我们会争取在{due}解决。",
        "notify_waiting_customer": (
            "❓ {number}：我们需要您补充一些信息。"
            "状态：{status}。请在这里回复。"
        ),
        "notify_resolved": (
            "🎉 {number} 已处理完毕（状态：{status}）"
            "。您对这次的处理满意吗？1 = 很不满意，5 = 非常满意。"
        ),
        "notify_closed": "📁 {number} 已关闭（状态：{status}）。感谢您的耐心！",
        "notify_reopened": (
            "🔁 {number} 已重新打开，我们正在处理。"
            "状态：{status}。我们会争取在{due}解决。"
        ),
        "notify_new": "{number}：状态 {status}。",
        "agent_reply": "💬 {agent} 关于 {number}：\n{text}",
        "agent_fallback": "客服团队",
        "handed_back": (
            "{number}：团队已将对话交还给我（客服助手）"
            "。随时留言，或发送 /human 再次转人工。"
        ),
        "asap": "尽快",
        "within_minutes": "{n}分钟内",
        "within_minute": "1分钟内",
        "within_hours": "{n}小时内",
        "within_hour": "1小时内",
        "within_days": "{n}天内",
        "within_day": "1天内",
        "none": "无",
    },
}

CATEGORY_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "service_attitude": "staff attitude",
        "service_speed": "speed of service",
        "product_quality": "product quality",
        "product_safety": "product safety",
        "billing": "billing and payment",
        "pricing": "pricing",
        "delivery": "delivery",
        "returns": "returns and refunds",
        "store_environment": "the store itself",
        "website_app": "website or app",
        "other": "something else",
    },
    "zh": {
        "service_attitude": "服务态度",
        "service_speed": "服务速度",
        "product_quality": "商品质量",
        "product_safety": "商品安全",
        "billing": "账单与付款",
        "pricing": "价格",
        "delivery": "配送",
        "returns": "退换货",
        "store_environment": "门店环境",
        "website_app": "网站或应用",
        "other": "其他",
    },
}

KIND_WORDS: dict[str, dict[str, str]] = {
    "en": {"complaint": "complaint", "suggestion": "suggestion", "praise": "praise",
           "question": "question"},
    "zh": {"complaint": "投诉", "suggestion": "建议", "praise": "表扬", "question": "咨询"},
}

PRIORITY_WORDS: dict[str, dict[str, str]] = {
    "en": {"P1": "urgent (P1)", "P2": "high (P2)", "P3": "normal (P3)", "P4": "standard (P4)"},
    "zh": {"P1": "紧急（P1）", "P2": "高（P2）", "P3": "普通（P3）", "P4": "一般（P4）"},
}

UNSUPPORTED_KINDS = frozenset({"sticker", "voice", "video", "location", "contact"})


def language_of(code: str | None) -> str | None:
    """A platform or NLU language code ("zh-hans", "en-GB", "zh") -> a catalogue language."""
    if not code:
        return None
    base = code.strip().lower().replace("_", "-").split("-")[0]
    return base if base in LANGUAGES else None


def t(lang: str, key: str, **args: object) -> str:
    table = TEXTS.get(lang) or TEXTS[DEFAULT_LANGUAGE]
    template = table.get(key) or TEXTS[DEFAULT_LANGUAGE][key]
    return template.format(**args) if args else template


def category_word(lang: str, category: str | None) -> str:
    words = CATEGORY_WORDS.get(lang, CATEGORY_WORDS[DEFAULT_LANGUAGE])
    return words.get(category or "other", category or words["other"])


def kind_word(lang: str, kind: str | None) -> str:
    words = KIND_WORDS.get(lang, KIND_WORDS[DEFAULT_LANGUAGE])
    return words.get(kind or "complaint", kind or "")


def topic_word(lang: str, kind: str | None, category: str | None) -> str:
    """What a ticket is about, for a customer: its category, or its kind when it has none."""
    return category_word(lang, category) if category else kind_word(lang, kind)


def priority_word(lang: str, priority: str | None) -> str:
    words = PRIORITY_WORDS.get(lang, PRIORITY_WORDS[DEFAULT_LANGUAGE])
    return words.get(priority or "P3", priority or "")


def status_word(lang: str, status: str) -> str:
    """CONTRACT §4: English is the status name with `_` as a space; Chinese the fixed words."""
    words = STATUS_WORDS.get(lang, STATUS_WORDS[DEFAULT_LANGUAGE])
    return words.get(status, status.replace("_", " "))


def unsupported_word(lang: str, what: str | None) -> str:
    kind = what if what in UNSUPPORTED_KINDS else "other"
    return t(lang, f"unsupported_{kind}")


def within_words(lang: str, delta: timedelta) -> str:
    """A deadline as a customer says it: "within 4 hours", "3 天内". Rounded to the unit a
    person would use; a deadline already passed is "as soon as possible"."""
    minutes = delta.total_seconds() / 60
    if minutes <= 0:
        return t(lang, "asap")
    if minutes < 1.5:
        return t(lang, "within_minute")
    if minutes < 55:
        return t(lang, "within_minutes", n=max(5, round(minutes / 5) * 5) if minutes > 5
                 else round(minutes))
    hours = minutes / 60
    if hours < 1.5:
        return t(lang, "within_hour")
    if hours < 36:
        return t(lang, "within_hours", n=round(hours))
    days = hours / 24
    if days < 1.5:
        return t(lang, "within_day")
    return t(lang, "within_days", n=round(days))


def normalise_answer(text: str) -> str:
    """Lower-case, trimmed, without the punctuation people add to one-word answers."""
    return text.strip().lower().strip(" .!?,;:。！？，、~～")


def is_skip(text: str) -> bool:
    return normalise_answer(text) in SKIP_WORDS


def is_yes(text: str) -> bool:
    return normalise_answer(text) in YES_WORDS


def is_done(text: str) -> bool:
    return normalise_answer(text) in DONE_WORDS
