# The optional Rasa NLU backend (CONTRACT §1). Included by the main Makefile.
# The heavy lifting, and the caches outside the clone, are in nlu/rasa/build.sh.
RASA_HOST ?= 127.0.0.1
RASA_PORT ?= 5005

.PHONY: rasa rasa-serve rasa-model-path

# Builds .venv-rasa (Python 3.10, rasa 3.6.21) and trains on nlu/data; quick when nothing changed.
rasa:
	@nlu/rasa/build.sh all

# Rasa's HTTP API on $(RASA_HOST):$(RASA_PORT) in the foreground; careloop reaches it through
# CARELOOP_NLU_BACKEND=rasa and CARELOOP_RASA_URL=http://$(RASA_HOST):$(RASA_PORT).
rasa-serve:
	@nlu/rasa/build.sh serve -i $(RASA_HOST) -p $(RASA_PORT)

rasa-model-path:
	@nlu/rasa/build.sh model-path
