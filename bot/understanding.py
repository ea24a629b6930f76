"""What the dialogue asks the NLU, with the parses of short texts remembered.

Chat is full of the same few short messages ("yes", "skip", "hi", "thanks", "ok", "2"), and
a text's parse depends on the text alone, so a short text is understood once per process.
Longer texts (a complaint, a question) are nearly always new and go to the interpreter."""

from __future__ import annotations

from collections import OrderedDict

from nlu.types import Interpreter, Parse

SHORT_CHARS = 32
ENTRIES = 4096


class Understanding:
    def __init__(
        self, interpreter: Interpreter, *, short_chars: int = SHORT_CHARS, entries: int = ENTRIES
    ) -> None:
        self.interpreter = interpreter
        self._short = short_chars
        self._entries = entries
        self._parses: OrderedDict[str, Parse] = OrderedDict()

    async def parse(self, text: str) -> Parse:
        if len(text) > self._short:
            return await self.interpreter.parse(text)
        parse = self._parses.get(text)
        if parse is not None:
            self._parses.move_to_end(text)
            return parse
        parse = await self.interpreter.parse(text)
        self._parses[text] = parse
        if len(self._parses) > self._entries:
            self._parses.popitem(last=False)
        return parse
