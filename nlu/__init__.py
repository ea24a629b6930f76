"""Understanding: what a customer's message means (intent, category, sentiment, urgency, language, entities).

Imports nothing of storage, bot, monitors or desk.
"""

from nlu.types import INTENTS, CATEGORIES, Entity, Interpreter, Parse, Ranked, Sentiment

__all__ = ["CATEGORIES", "INTENTS", "Entity", "Interpreter", "Parse", "Ranked", "Sentiment"]
