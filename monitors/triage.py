"""Triage: every post gets the NLU parse, then a review state (CONTRACT §5) and a priority.

- flagged: a complaint, negative, urgent (P1/P2), or an author with at least `reach_threshold`
  followers: a person should look;
- ignored: praise and noise (kept, filterable);
- new: direct messages, which the dialogue (monitors/direct.py) takes over.

Parsing is the expensive part (~1,500 texts/s on a core), and a spike is mostly copies, so a
text is parsed once per near-duplicate group (see monitors/fingerprint.py) and the parse reused
for every copy in this batch and in later ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from monitors.fingerprint import NearDuplicates, TextPrints
from monitors.types import DIRECT, Post
from nlu.types import Interpreter, Parse
from storage.mentions import FLAGGED, IGNORED, NEW, NewMention

URGENT = ("P1", "P2")


@dataclass(frozen=True, slots=True)
class TriageRules:
    reach_threshold: int = 10_000


def review_state(post: Post, parse: Parse, rules: TriageRules) -> str:
    if post.stream == DIRECT:
        return NEW
    followers = post.author.followers or 0
    if (
        parse.intent.name == "complaint"
        or parse.sentiment.label == "negative"
        or parse.urgency in URGENT
        or followers >= rules.reach_threshold
    ):
        return FLAGGED
    return IGNORED


def priority(post: Post, parse: Parse, rules: TriageRules) -> str:
    """The parse's urgency; a complaint from a wide-reaching author is at least P2."""
    level = parse.urgency
    wide = (post.author.followers or 0) >= rules.reach_threshold
    if wide and parse.intent.name == "complaint" and level not in URGENT:
        return "P2"
    return level


def to_mention(post: Post, parse: Parse, rules: TriageRules, fp: str | None) -> NewMention:
    return NewMention(
        platform=post.platform,
        stream=post.stream,
        external_id=post.external_id,
        text=post.text,
        posted_at=post.posted_at,
        state=review_state(post, parse, rules),
        url=post.url,
        author_id=post.author.id,
        author_username=post.author.username,
        author_name=post.author.name,
        author_followers=post.author.followers,
        language=parse.language,
        intent=parse.intent.name,
        priority=priority(post, parse, rules),
        category=parse.category.name if parse.category else None,
        sentiment_label=parse.sentiment.label,
        sentiment_score=round(float(parse.sentiment.score), 4),
        fingerprint=fp,
        in_reply_to=post.in_reply_to,
        raw=post.raw,
    )


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What the rules take from one parse, worked out once per parse, not once per copy."""

    language: str | None
    intent: str
    category: str | None
    sentiment_label: str
    sentiment_score: float
    urgency: str
    alarming: bool  # complaint, negative or urgent: flagged whoever the author is
    complaint: bool

    @classmethod
    def of(cls, parse: Parse) -> _Verdict:
        intent = parse.intent.name
        return cls(
            language=parse.language,
            intent=intent,
            category=parse.category.name if parse.category else None,
            sentiment_label=parse.sentiment.label,
            sentiment_score=round(float(parse.sentiment.score), 4),
            urgency=parse.urgency,
            alarming=(intent == "complaint" or parse.sentiment.label == "negative"
                      or parse.urgency in URGENT),
            complaint=intent == "complaint",
        )


def _mention(post: Post, v: _Verdict, rules: TriageRules, fp: str | None) -> NewMention:
    """`to_mention` from a worked-out verdict (the same `review_state` and `priority`)."""
    author = post.author
    wide = (author.followers or 0) >= rules.reach_threshold
    if post.stream == DIRECT:
        state = NEW
    else:
        state = FLAGGED if v.alarming or wide else IGNORED
    level = "P2" if wide and v.complaint and v.urgency not in URGENT else v.urgency
    return NewMention(
        post.platform, post.stream, post.external_id, post.text, post.posted_at, state,
        post.url, author.id, author.username, author.name, author.followers, v.language,
        v.intent, level, v.category, v.sentiment_label, v.sentiment_score, fp,
        post.in_reply_to, post.raw,
    )


class Triage:
    """Parses and triages batches of posts. Holds the near-duplicate memory and a bounded
    parse cache for one process (one per poll loop or import, never a module global)."""

    def __init__(
        self,
        interpreter: Interpreter,
        rules: TriageRules,
        *,
        near: NearDuplicates | None = None,
        cache_size: int = 20_000,
    ) -> None:
        self.interpreter = interpreter
        self.rules = rules
        self.near = near if near is not None else NearDuplicates()
        self.cache_size = cache_size
        self.prints = TextPrints(max_entries=max(cache_size, 1000) * 2)
        self._parses: OrderedDict[str, _Verdict] = OrderedDict()
        self.parsed = 0  # texts actually sent to the NLU (the benchmark reports it)
        self.recalled_id = 0  # the highest stored group leader `recall` has seen

    def recall(self, leaders: Sequence[tuple[str, str]]) -> None:
        """Remembers stored group leaders, (text, stored fingerprint), oldest first, so that a
        text similar to one joins its group: groups another process started, or this one
        before a restart. No parse: only the words and their MinHash."""
        words = [(fp, self.prints.of(text)[1]) for text, fp in leaders]
        # Short texts group on the exact fingerprint only; the store does that without us.
        self.near.canonical_many([(fp, w) for fp, w in words if len(w) >= self.near.min_words])

    async def mentions(self, posts: Sequence[Post]) -> list[NewMention]:
        prints = [self.prints.of(post.text) for post in posts]
        # Near-duplicates for the public posts with words, the batch's new MinHashes at once.
        social = [
            i for i, (post, (_, _, fp)) in enumerate(zip(posts, prints, strict=True))
            if fp is not None and post.stream != DIRECT
        ]
        fps: list[str | None] = [fp for _, _, fp in prints]
        canon = self.near.canonical_many([(prints[i][2] or "", prints[i][1]) for i in social])
        for i, same in zip(social, canon, strict=True):
            fps[i] = same
        keys: list[str] = []
        for post, (light, _, _), fp in zip(posts, prints, fps, strict=True):
            # Direct messages are parsed one by one: the dialogue answers their exact words.
            keys.append(
                f"f:{fp}" if fp is not None and post.stream != DIRECT else f"t:{light}"
            )
        parses = self._parses
        todo: dict[str, str] = {}
        for key, post in zip(keys, posts, strict=True):
            if key not in parses and key not in todo:
                todo[key] = post.text
        if todo:
            parsed = await self.interpreter.parse_many(list(todo.values()))
            self.parsed += len(parsed)
            for key, parse in zip(todo, parsed, strict=True):
                parses[key] = _Verdict.of(parse)
        rules = self.rules
        out = [
            _mention(post, parses[key], rules, fp)
            for post, key, fp in zip(posts, keys, fps, strict=True)
        ]
        # Least recently used first, as moving every key to the end in turn would leave them.
        for key in reversed(dict.fromkeys(reversed(keys))):
            parses.move_to_end(key)
        while len(parses) > self.cache_size:
            parses.popitem(last=False)
        return out
