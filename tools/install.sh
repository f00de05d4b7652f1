#!/usr/bin/env bash
# Installs edgellm as a systemd service on the board it runs on (as root):
#
#   /usr/local/bin/edgellm                   the binary (--binary)
#   /etc/edgellm/boards/NAME.toml            the board config (--board NAME or FILE)
#   /var/lib/edgellm/models/MODEL.gguf       the model (--model), folder owned by edgellm
#   /etc/default/edgellm                     EDGELLM_BOARD, EDGELLM_MODEL, EDGELLM_ARGS, RUST_LOG
#                                            (written once, never overwritten)
#   /etc/systemd/system/edgellm.service      the unit (edgellm.service next to this script)
#
# and the system user `edgellm` (member of dialout, for the serial device); then
# `systemctl daemon-reload` and `systemctl enable --now edgellm` (a restart when the binary,
# the board config, the model or the unit changed and the service was running).
#
#   sudo ./install.sh --board rpi5 --model SmolLM2-135M-Instruct.Q4_1.gguf [--binary ./edgellm]
#
#   --binary PATH   edgellm binary (default: ./edgellm next to this script, as cross-build.sh
#                   lays it out, else target/release/edgellm of the checkout)
#   --board NAME|FILE  board config: NAME.toml is looked for in board-configs/ next to this
#                   script (or in ../board-configs/); a NAME without a file uses the config
#                   compiled into the binary. Needed on the first install.
#   --model PATH    GGUF model; copied into /var/lib/edgellm/models/ unless it is there already.
#                   Needed on the first install.
#   --destdir DIR   staged install under DIR (for images and tests): no root needed, no user is
#                   created, nothing is chowned, systemctl is not run.
#   --no-start      install and enable nothing at boot: no `systemctl enable --now`.
#
# Idempotent: a second run with the same files changes nothing and restarts nothing. A board
# config in /etc/edgellm/boards that was edited by hand is kept; the new one is put beside it
# as NAME.toml.dist.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf 'install: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

command_line="$0 $*"
binary=""
board=""
model=""
destdir=""
start=1
while (($# > 0)); do
    case "$1" in
    --binary | --board | --model | --destdir)
        if (($# < 2)) || [[ -z "$2" ]]; then
            die "$1 needs a value"
        fi
        declare "${1#--}=$2"
        shift 2
        ;;
    --binary=* | --board=* | --model=* | --destdir=*)
        opt="${1%%=*}"
        [[ -n "${1#*=}" ]] || die "$opt needs a value"
        declare "${opt#--}=${1#*=}"
        shift
        ;;
    --no-start)
        start=0
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

staged=0
if [[ -n "$destdir" ]]; then
    staged=1
    mkdir -p "$destdir" || die "cannot create --destdir $destdir"
    destdir="$(cd "$destdir" && pwd)"
    [[ "$destdir" != / ]] || die "--destdir / is a real install: run without --destdir, as root"
elif [[ "$(id -u)" -ne 0 ]]; then
    die "must run as root to install into / (sudo $command_line), or give --destdir DIR for a staged install"
fi

# Paths on the board; the unit file names the same ones.
bin_path=/usr/local/bin/edgellm
board_dir=/etc/edgellm/boards
state_dir=/var/lib/edgellm
model_dir=$state_dir/models
defaults=/etc/default/edgellm
unit_path=/etc/systemd/system/edgellm.service
service_user=edgellm
serial_group=dialout

# --- what to install ----------------------------------------------------------------------------

unit_src="$script_dir/edgellm.service"
[[ -f "$unit_src" ]] || die "$unit_src missing: keep install.sh next to edgellm.service"

if [[ -z "$binary" ]]; then
    for candidate in "$script_dir/edgellm" "$script_dir/../target/release/edgellm"; do
        if [[ -f "$candidate" ]]; then
            binary="$candidate"
            break
        fi
    done
    [[ -n "$binary" ]] || die "no edgellm binary next to $0: give --binary PATH"
fi
[[ -f "$binary" ]] || die "--binary $binary: no such file"
# On the board the binary must run here; a staged install may hold another architecture.
if version="$("$binary" --version 2>/dev/null)"; then
    log "binary: $version ($binary)"
elif ((staged)); then
    log "note: $binary does not run on this machine (another architecture?); installing it anyway"
else
    die "$binary --version failed: not an edgellm binary for $(uname -m)? (cross-build.sh builds aarch64)"
fi

# A board name: letters, digits, '-' and '_' (what edgellm accepts).
valid_board_name() { [[ "$1" =~ ^[a-z0-9][a-z0-9_-]{0,63}$ ]]; }

board_name=""
board_src=""
if [[ -n "$board" ]]; then
    if [[ "$board" == */* || "$board" == *.toml ]]; then
        [[ -f "$board" ]] || die "--board $board: no such file"
        board_src="$board"
        board_name="$(basename "$board" .toml)"
        valid_board_name "$board_name" ||
            die "--board $board: the file name must be NAME.toml with NAME of a-z, 0-9, '-', '_'"
    else
        board_name="$board"
        valid_board_name "$board_name" || die "--board '$board': not a board name or a .toml file"
        for dir in "$script_dir/board-configs" "$script_dir/../board-configs"; do
            if [[ -f "$dir/$board_name.toml" ]]; then
                board_src="$dir/$board_name.toml"
                break
            fi
        done
        [[ -n "$board_src" ]] ||
            log "note: no $board_name.toml next to $0; edgellm will use its compiled-in '$board_name' config (and refuse to start if it has none)"
    fi
    # edgellm looks NAME up as NAME.toml and refuses a file whose name key differs.
    if [[ -n "$board_src" ]]; then
        grep -Eq "^[[:space:]]*name[[:space:]]*=[[:space:]]*[\"']${board_name}[\"']" "$board_src" ||
            die "$board_src: its name key must be \"$board_name\" (edgellm checks it against the file name)"
    fi
fi

model_target=""
if [[ -n "$model" ]]; then
    [[ -f "$model" ]] || die "--model $model: no such file"
    [[ "$(head -c 4 "$model")" == GGUF ]] || die "--model $model: not a GGUF file (no GGUF magic)"
    model_target="$model_dir/$(basename "$model")"
fi
# systemd reads /etc/default/edgellm line by line: keep values to one plain line.
for value in "$board_name" "$model_target"; do
    [[ "$value" != *[$'\n'\"\'\\\$]* ]] || die "'$value': quotes, backslashes, \$ and newlines are not supported in paths"
done

if [[ ! -e "$destdir$defaults" ]]; then
    [[ -n "$board" ]] || die "first install: give --board NAME|FILE (for $defaults)"
    [[ -n "$model" ]] || die "first install: give --model PATH (for $defaults)"
fi

# --- installing ---------------------------------------------------------------------------------

# Set when something the running service uses changed: it is restarted then.
changed=0

# install_file SRC DEST MODE: copies when the content differs; says what it did.
install_file() {
    local src="$1" dest="$destdir$2" mode="$3"
    if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
        chmod "$mode" "$dest"
        log "unchanged $2"
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    # A new file renamed into place: a running edgellm keeps its old binary or mapped model.
    cp "$src" "$dest.tmp.$$"
    chmod "$mode" "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
    changed=1
    log "installed $2"
}

if ((staged)); then
    log "staged install under $destdir (no user, no chown, no systemctl)"
else
    getent group "$serial_group" >/dev/null || {
        groupadd --system "$serial_group"
        log "created group $serial_group"
    }
    if id -u "$service_user" >/dev/null 2>&1; then
        if ! id -nG "$service_user" | tr ' ' '\n' | grep -qx "$serial_group"; then
            usermod -a -G "$serial_group" "$service_user"
            log "added user $service_user to group $serial_group"
        fi
    else
        useradd --system --user-group --groups "$serial_group" --home-dir "$state_dir" \
            --no-create-home --shell /usr/sbin/nologin \
            --comment "edgellm language model service" "$service_user"
        log "created system user $service_user (groups: $service_user, $serial_group)"
    fi
fi

install_file "$binary" "$bin_path" 0755
install_file "$unit_src" "$unit_path" 0644

mkdir -p "$destdir$board_dir"
if [[ -n "$board_src" ]]; then
    board_dest="$board_dir/$board_name.toml"
    # NAME.toml.dist is the config as shipped last time: NAME.toml differing from it (or there
    # without it) was edited by hand and is kept.
    service_changed=$changed
    if [[ -f "$destdir$board_dest" ]] && ! cmp -s "$board_src" "$destdir$board_dest" &&
        ! cmp -s "$destdir$board_dest.dist" "$destdir$board_dest"; then
        log "kept $board_dest (edited by hand); the shipped config is $board_dest.dist"
    else
        install_file "$board_src" "$board_dest" 0644
        service_changed=$changed
    fi
    install_file "$board_src" "$board_dest.dist" 0644
    changed=$service_changed
fi

mkdir -p "$destdir$model_dir"
chmod 0750 "$destdir$state_dir" "$destdir$model_dir"
if [[ -n "$model" ]]; then
    if [[ "$(realpath "$model")" == "$(realpath -m "$destdir$model_target")" ]]; then
        log "unchanged $model_target (already in place)"
    else
        install_file "$model" "$model_target" 0640
    fi
fi
if ((!staged)); then
    chown "$service_user:$service_user" "$state_dir" "$model_dir"
    find "$model_dir" -maxdepth 1 -type f -name '*.gguf' -exec chown "$service_user:$service_user" {} +
fi

if [[ -e "$destdir$defaults" ]]; then
    log "kept $defaults (never overwritten; edit it to change the board or the model)"
    for key_value in "EDGELLM_BOARD=$board_name" "EDGELLM_MODEL=$model_target"; do
        [[ "$key_value" == *= ]] && continue
        grep -qx "$key_value" "$destdir$defaults" ||
            log "note: $defaults does not say $key_value; edit it if you meant to switch"
    done
else
    mkdir -p "$(dirname "$destdir$defaults")"
    cat >"$destdir$defaults.tmp.$$" <<EOF
# Settings of edgellm.service (EnvironmentFile=), written by install.sh; it never overwrites
# this file. After editing: systemctl restart edgellm

# Board config: a name (/etc/edgellm/boards/NAME.toml, else the stock config compiled into
# edgellm) or a path to a .toml file.
EDGELLM_BOARD=$board_name

# GGUF model file; keep it under $model_dir (the service sees nothing in /home).
EDGELLM_MODEL=$model_target

# More flags for \`edgellm serve\`, split at spaces, e.g.
#   --serial /dev/ttyGS0 --baud 115200   another serial device than the board config's
#   --no-serial                          socket only
#   -t 3 --ctx 2048 --queue 8            threads, context length, waiting requests
EDGELLM_ARGS=

# Log level: error, warn, info, debug or trace (per module: info,edgellm_hal=debug).
RUST_LOG=info
EOF
    chmod 0644 "$destdir$defaults.tmp.$$"
    mv -f "$destdir$defaults.tmp.$$" "$destdir$defaults"
    changed=1
    log "wrote $defaults (EDGELLM_BOARD=$board_name, EDGELLM_MODEL=$model_target)"
fi

# --- systemd ------------------------------------------------------------------------------------

if ((staged)); then
    log "done (staged): $destdir"
    exit 0
fi
if ! command -v systemctl >/dev/null 2>&1 || [[ ! -d /run/systemd/system ]]; then
    log "done; systemd is not running here, so the service was not started"
    exit 0
fi
systemctl daemon-reload
if ((!start)); then
    log "done (--no-start): start it with  systemctl enable --now edgellm"
    exit 0
fi
was_active=0
systemctl is-active --quiet edgellm.service && was_active=1
systemctl enable --now edgellm.service
if ((was_active && changed)); then
    log "restarting edgellm (files changed)"
    systemctl restart edgellm.service
fi
if systemctl is-active --quiet edgellm.service; then
    log "done: edgellm is running (systemctl status edgellm; journalctl -u edgellm -f)"
else
    die "edgellm did not start: see  journalctl -u edgellm -n 50"
fi
