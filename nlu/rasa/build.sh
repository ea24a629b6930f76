#!/usr/bin/env bash
# Builds the optional Rasa NLU server: its venv (Python 3.10) and a model trained on nlu/data.
#
# Both live in a cache OUTSIDE the clone, keyed by content hashes, so a fresh clone (CI) reuses
# them when nothing they depend on changed, and two clones never fight over one venv:
#   $CACHE/venv-rasa-<hash of requirements.txt + python version>/
#   $CACHE/models/rasa-nlu-<hash of nlu/data, config.yml, tokenizer, venv key>.tar.gz
# with CACHE = $CARELOOP_CACHE_DIR or ${XDG_CACHE_HOME:-~/.cache}/careloop.
#
# Usage: nlu/rasa/build.sh [all|venv|model-path|python|serve [rasa run args...]]
#   all (default)  venv + model; links .venv-rasa; prints the model's path last
#   model-path     prints where the model for the current inputs is (built or not)
#   python         prints the Python 3.10 it would use, or exits 3
#   serve          `rasa run --enable-api` on the model (builds first), in the foreground
#   prune          removes venvs and models not used lately (all and serve do it too)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
REQ=nlu/rasa/requirements.txt
CONFIG=nlu/rasa/config.yml
DATA="${CARELOOP_RASA_DATA:-nlu/data}"  # training data; override to try another set
CACHE="${CARELOOP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/careloop}"
# How many venvs (~2.3 GB each) and models (~70 MB) the cache keeps, the most recently used.
KEEP_VENVS="${CARELOOP_RASA_KEEP_VENVS:-2}"
KEEP_MODELS="${CARELOOP_RASA_KEEP_MODELS:-4}"

# Rasa must never phone home (telemetry, first-run prompt), and TensorFlow should not spawn
# more threads than the 2 cores this runs on, nor print CUDA noise.
export RASA_TELEMETRY_ENABLED=false
export TF_CPP_MIN_LOG_LEVEL=2
export TF_INTRA_OP_PARALLELISM_THREADS="${TF_INTRA_OP_PARALLELISM_THREADS:-2}"
export TF_INTER_OP_PARALLELISM_THREADS="${TF_INTER_OP_PARALLELISM_THREADS:-2}"
export SQLALCHEMY_SILENCE_UBER_WARNING=1
# careloop_tokenizer.py is a custom Rasa component: importable by training and serving alike.
export PYTHONPATH="$ROOT/nlu/rasa${PYTHONPATH:+:$PYTHONPATH}"

log() { echo "rasa: $*" >&2; }

find_python() {
    local root candidate
    root="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"
    for candidate in "$root/versions/3.10.13/bin/python" "$(command -v python3.10 || true)"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        # A pyenv shim exists even when no 3.10 is installed: ask the interpreter itself.
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

hash_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

venv_key() {
    local py="$1"
    { cat "$REQ"; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16
}

model_key() {
    # File names count as well as contents: renaming nlu_zh.yml away changes the training data.
    local files
    files=$(find "$DATA" -type f \( -name '*.yml' -o -name '*.yaml' \) | LC_ALL=C sort)
    # shellcheck disable=SC2086
    { echo "$1"; hash_of "$CONFIG" nlu/rasa/careloop_tokenizer.py $files; echo "$files"; } \
        | sha256sum | cut -c1-16
}

build_venv() {
    local py="$1" venv="$2" started
    if [ -f "$venv/.complete" ]; then
        return 0
    fi
    started=$(date +%s)
    log "building $venv (Python $("$py" -c 'import platform; print(platform.python_version())'), a few minutes once)"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    # The lock pins everything; --no-deps would skip the check that it is consistent.
    if ! "$venv/bin/pip" install -q --disable-pip-version-check -r "$REQ" >"$venv.log" 2>&1; then
        tail -30 "$venv.log" >&2
        log "pip install failed (full log: $venv.log)"
        return 1
    fi
    "$venv/bin/rasa" --version >/dev/null 2>&1 || { log "rasa does not start in $venv"; return 1; }
    touch "$venv/.complete"
    log "venv ready in $(( $(date +%s) - started ))s"
}

train_model() {
    local venv="$1" model="$2" out started domain=()
    if [ -f "$model" ]; then
        return 0
    fi
    [ -f "$DATA/nlu.yml" ] || ls "$DATA"/*.yml >/dev/null 2>&1 || { log "no training data in $DATA"; return 1; }
    [ -f "$DATA/domain.yml" ] && domain=(--domain "$DATA/domain.yml")
    mkdir -p "$(dirname "$model")"
    out=$(mktemp -d "$(dirname "$model")/train.XXXXXX")
    started=$(date +%s)
    log "training $(basename "$model") on $DATA with $CONFIG"
    if ! "$venv/bin/rasa" train nlu --config "$CONFIG" --nlu "$DATA" "${domain[@]}" \
            --out "$out" --fixed-model-name model --num-threads 2 >"$model.log" 2>&1; then
        tail -30 "$model.log" >&2
        rm -rf "$out"
        log "training failed (full log: $model.log)"
        return 1
    fi
    # Renamed into place only when complete, so a killed run never leaves half a model behind.
    mv "$out/model.tar.gz" "$model"
    rm -rf "$out"
    echo "$(( $(date +%s) - started ))" >"$model.seconds"
    log "model trained in $(cat "$model.seconds")s"
}

# Every change to requirements.txt or nlu/data makes a new key, so without this the cache grows
# by a venv or a model each time. The most recently used ones stay (another clone or branch
# may still use them); `all` and `serve` mark theirs used. Runs under the build lock, so
# nothing it removes is being built; a venv without its marker is a failed build.
prune_cache() {
    local old
    # shellcheck disable=SC2012
    { ls -1dt "$CACHE"/venv-rasa-*/.complete 2>/dev/null || true; } | tail -n "+$((KEEP_VENVS + 1))" |
        while read -r old; do
            old=$(dirname "$old")
            log "removing $(basename "$old"), not used lately"
            rm -rf "$old" "$old.log"
        done
    for old in "$CACHE"/venv-rasa-*/; do
        old=${old%/}
        if [ -d "$old" ] && [ ! -f "$old/.complete" ]; then
            log "removing $(basename "$old"), an unfinished build"
            rm -rf "$old" "$old.log"
        fi
    done
    # shellcheck disable=SC2012
    { ls -1t "$CACHE"/models/rasa-nlu-*.tar.gz 2>/dev/null || true; } | tail -n "+$((KEEP_MODELS + 1))" |
        while read -r old; do
            log "removing model $(basename "$old"), not used lately"
            rm -f "$old" "$old.log" "$old.seconds"
        done
    # A training run killed before its rename leaves its directory behind.
    if [ -d "$CACHE/models" ]; then
        find "$CACHE/models" -maxdepth 1 -type d -name 'train.*' -mmin +360 -exec rm -rf {} +
    fi
}

main() {
    local cmd="${1:-all}" py venv model
    [ $# -gt 0 ] && shift
    if [ "$cmd" = prune ]; then
        mkdir -p "$CACHE"
        exec 9>"$CACHE/rasa-build.lock"
        flock 9
        prune_cache
        return 0
    fi
    if ! py=$(find_python); then
        log "needs Python 3.10 (pyenv's 3.10.13 or python3.10 on PATH); rasa 3.6 does not run on newer"
        exit 3
    fi
    venv="$CACHE/venv-rasa-$(venv_key "$py")"
    model="$CACHE/models/rasa-nlu-$(model_key "$(basename "$venv")").tar.gz"
    case "$cmd" in
        python) echo "$py"; return 0 ;;
        model-path) echo "$model"; return 0 ;;
        all|venv|serve) ;;
        *) log "unknown command $cmd"; exit 2 ;;
    esac
    mkdir -p "$CACHE"
    # One build at a time per cache (two clones, or make and a test at once).
    exec 9>"$CACHE/rasa-build.lock"
    flock 9
    build_venv "$py" "$venv"
    ln -sfn "$venv" .venv-rasa
    [ "$cmd" = venv ] && return 0
    train_model "$venv" "$model"
    touch "$venv/.complete" "$model"  # used now: what prune_cache keeps is the recently used
    prune_cache
    flock -u 9
    exec 9>&-
    if [ "$cmd" = serve ]; then
        exec "$venv/bin/rasa" run --enable-api -m "$model" "$@"
    fi
    echo "$model"
}

main "$@"
