"""Understanding: what a customer message means.

Intent, complaint category, sentiment, urgency, language and entities.

Imports nothing of storage, bot, monitors or desk.
"""

from nlu.types import CATEGORIES, INTENTS, Entity, Interpreter, Parse, Ranked, Sentiment

__all__ = ["CATEGORIES", "INTENTS", "Entity", "Interpreter", "Parse", "Ranked", "Sentiment"]
