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

from monitors.fingerprint import NearDuplicates, fingerprint_of, light_text, words
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
        self._parses: OrderedDict[str, Parse] = OrderedDict()
        self.parsed = 0  # texts actually sent to the NLU (the benchmark reports it)

    async def mentions(self, posts: Sequence[Post]) -> list[NewMention]:
        keys: list[str] = []
        fps: list[str | None] = []
        for post in posts:
            tokens = words(post.text)
            fp = fingerprint_of(tokens)
            if fp is not None and post.stream != DIRECT:
                fp = self.near.canonical(fp, tokens)
            fps.append(fp)
            # Direct messages are parsed one by one: the dialogue answers their exact words.
            keys.append(
                f"f:{fp}" if fp is not None and post.stream != DIRECT
                else f"t:{light_text(post.text)}"
            )
        todo: dict[str, str] = {}
        for key, post in zip(keys, posts, strict=True):
            if key not in self._parses and key not in todo:
                todo[key] = post.text
        if todo:
            parsed = await self.interpreter.parse_many(list(todo.values()))
            self.parsed += len(parsed)
            for key, parse in zip(todo, parsed, strict=True):
                self._parses[key] = parse
        out = [
            to_mention(post, self._parses[key], self.rules, fp)
            for post, key, fp in zip(posts, keys, fps, strict=True)
        ]
        for key in keys:
            self._parses.move_to_end(key)
        while len(self._parses) > self.cache_size:
            self._parses.popitem(last=False)
        return out
