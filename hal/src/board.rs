//! Board configuration: what edgellm may assume about the machine it runs on (CPU, memory
//! budget, serial port, socket, default model), parsed from TOML and validated.
//!
//! Owns the config types, their validation and the lookup of a board by name. It does not
//! open devices or sockets (the serial and socket modules do) and does not probe the host.
//!
//! [`BoardConfig::load`] takes a path (anything containing `/` or ending in `.toml`) or a
//! board name, looked up as `<name>.toml` in `$EDGELLM_BOARD_DIR`, then in
//! `/etc/edgellm/boards/`, then among the stock configs compiled into the binary from
//! `board-configs/` (so one binary knows every stock board). Unknown keys are errors, and every
//! error names the board, the key and the value.

use std::fmt;
use std::path::{Path, PathBuf};

use log::info;
use serde::Deserialize;
use thiserror::Error;

/// Stock boards, compiled in: (name, TOML text).
const STOCK: &[(&str, &str)] = &[
    (
        "generic-x86_64",
        include_str!("../../board-configs/generic-x86_64.toml"),
    ),
    (
        "jetson-orin-nano",
        include_str!("../../board-configs/jetson-orin-nano.toml"),
    ),
    (
        "rpi-zero-2w",
        include_str!("../../board-configs/rpi-zero-2w.toml"),
    ),
    ("rpi4", include_str!("../../board-configs/rpi4.toml")),
    ("rpi5", include_str!("../../board-configs/rpi5.toml")),
];

/// System-wide directory of board configs, searched after `$EDGELLM_BOARD_DIR`.
pub const SYSTEM_BOARD_DIR: &str = "/etc/edgellm/boards";
/// Environment variable naming a directory searched first.
pub const BOARD_DIR_ENV: &str = "EDGELLM_BOARD_DIR";

const MIB: u64 = 1 << 20;
/// `sun_path` holds 108 bytes including the terminating NUL on Linux.
const MAX_SOCKET_PATH: usize = 107;
const BAUD_RATES: &[u32] = &[
    9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000,
    1500000, 2000000, 2500000, 3000000, 3500000, 4000000,
];

#[derive(Debug, Error)]
pub enum BoardError {
    /// A key parsed but its value is not acceptable.
    #[error("board {board}: {key} = {value}: {rule}")]
    Invalid {
        board: String,
        key: &'static str,
        value: String,
        rule: String,
    },
    /// TOML syntax, a wrong type, a missing or unknown key (the message names it).
    #[error("board {board}: {origin}: {message}")]
    Parse {
        board: String,
        origin: String,
        message: String,
    },
    #[error("board config {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("board {name:?}: not found as {name}.toml in [{searched}] nor among the stock boards [{stock}]")]
    NotFound {
        name: String,
        searched: String,
        stock: String,
    },
    #[error("board name {0:?}: must be 1-64 characters of a-z, 0-9, '-', '_', starting with a letter or digit")]
    BadName(String),
}

/// A validated board configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardConfig {
    pub name: String,
    pub description: String,
    pub cpu: CpuConfig,
    pub memory: MemoryConfig,
    pub serial: SerialConfig,
    pub socket: SocketConfig,
    pub model: ModelConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CpuConfig {
    /// Physical cores.
    pub cores: u32,
    /// Default number of compute threads.
    pub threads: u32,
    /// Instruction-set features the board is expected to have (checked against the host by
    /// the caller, e.g. to warn when a config meant for a Pi 5 runs on a Pi 4).
    pub features: Vec<CpuFeature>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryConfig {
    /// Installed RAM.
    pub ram_bytes: u64,
    /// What edgellm may use: mapped weights, KV cache and activations together.
    pub budget_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SerialConfig {
    pub enabled: bool,
    pub device: PathBuf,
    pub baud: u32,
    pub flow_control: FlowControl,
    /// Capacity of the fixed line buffer, in bytes: longer input lines are rejected.
    pub line_buffer: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowControl {
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SocketConfig {
    pub path: PathBuf,
    /// Permission bits of the socket file, e.g. `0o660`.
    pub mode: u32,
    /// Group owning the socket file.
    pub group: Option<String>,
    /// Peer uids allowed to connect (checked with SO_PEERCRED); `None` = any the mode allows.
    pub allowed_uids: Option<Vec<u32>>,
    /// Peer gids allowed to connect; `None` = any the mode allows.
    pub allowed_gids: Option<Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Model used when none is named.
    pub path: Option<PathBuf>,
    /// Default context length, in tokens.
    pub context_length: u32,
    pub kv_type: KvType,
}

pub use edgellm_models::KvType;

/// CPU features a board config may list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuFeature {
    // aarch64
    Neon,
    Fp16,
    Dotprod,
    I8mm,
    Sve,
    // x86_64
    Sse3,
    Ssse3,
    Avx,
    Avx2,
    Fma,
    F16c,
    AvxVnni,
    Avx512f,
    Avx512bw,
    Avx512vnni,
}

impl CpuFeature {
    pub const ALL: [CpuFeature; 15] = [
        CpuFeature::Neon,
        CpuFeature::Fp16,
        CpuFeature::Dotprod,
        CpuFeature::I8mm,
        CpuFeature::Sve,
        CpuFeature::Sse3,
        CpuFeature::Ssse3,
        CpuFeature::Avx,
        CpuFeature::Avx2,
        CpuFeature::Fma,
        CpuFeature::F16c,
        CpuFeature::AvxVnni,
        CpuFeature::Avx512f,
        CpuFeature::Avx512bw,
        CpuFeature::Avx512vnni,
    ];

    /// The name used in config files (Linux `/proc/cpuinfo` / `std::arch` spelling).
    pub fn name(self) -> &'static str {
        match self {
            CpuFeature::Neon => "neon",
            CpuFeature::Fp16 => "fp16",
            CpuFeature::Dotprod => "dotprod",
            CpuFeature::I8mm => "i8mm",
            CpuFeature::Sve => "sve",
            CpuFeature::Sse3 => "sse3",
            CpuFeature::Ssse3 => "ssse3",
            CpuFeature::Avx => "avx",
            CpuFeature::Avx2 => "avx2",
            CpuFeature::Fma => "fma",
            CpuFeature::F16c => "f16c",
            CpuFeature::AvxVnni => "avxvnni",
            CpuFeature::Avx512f => "avx512f",
            CpuFeature::Avx512bw => "avx512bw",
            CpuFeature::Avx512vnni => "avx512vnni",
        }
    }

    pub fn from_name(name: &str) -> Option<CpuFeature> {
        CpuFeature::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn is_aarch64(self) -> bool {
        matches!(
            self,
            CpuFeature::Neon
                | CpuFeature::Fp16
                | CpuFeature::Dotprod
                | CpuFeature::I8mm
                | CpuFeature::Sve
        )
    }
}

impl fmt::Display for CpuFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---- The file format: what serde reads, before validation. ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    name: String,
    description: String,
    cpu: RawCpu,
    memory: RawMemory,
    serial: RawSerial,
    #[serde(default)]
    socket: RawSocket,
    #[serde(default)]
    model: RawModel,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCpu {
    cores: i64,
    threads: i64,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    ram_bytes: Option<i64>,
    ram_mib: Option<i64>,
    budget_bytes: Option<i64>,
    budget_mib: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSerial {
    #[serde(default = "default_true")]
    enabled: bool,
    device: String,
    baud: i64,
    #[serde(default = "default_flow_control")]
    flow_control: String,
    #[serde(default = "default_line_buffer")]
    line_buffer: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSocket {
    #[serde(default = "default_socket_path")]
    path: String,
    #[serde(default = "default_socket_mode")]
    mode: String,
    group: Option<String>,
    allowed_uids: Option<Vec<i64>>,
    allowed_gids: Option<Vec<i64>>,
}

impl Default for RawSocket {
    fn default() -> Self {
        RawSocket {
            path: default_socket_path(),
            mode: default_socket_mode(),
            group: None,
            allowed_uids: None,
            allowed_gids: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    path: Option<String>,
    #[serde(default = "default_context_length")]
    context_length: i64,
    #[serde(default = "default_kv_type")]
    kv_type: String,
}

impl Default for RawModel {
    fn default() -> Self {
        RawModel {
            path: None,
            context_length: default_context_length(),
            kv_type: default_kv_type(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_flow_control() -> String {
    "none".into()
}
fn default_line_buffer() -> i64 {
    1024
}
fn default_socket_path() -> String {
    "/run/edgellm/edgellm.sock".into()
}
fn default_socket_mode() -> String {
    "0660".into()
}
fn default_context_length() -> i64 {
    2048
}
fn default_kv_type() -> String {
    "f16".into()
}

impl BoardConfig {
    /// Loads a board by path or name (see the module doc for the search order).
    pub fn load(name_or_path: &str) -> Result<BoardConfig, BoardError> {
        BoardConfig::load_from(name_or_path, &BoardConfig::search_dirs())
    }

    /// The directories searched for `<name>.toml`: `$EDGELLM_BOARD_DIR` (if set), then
    /// [`SYSTEM_BOARD_DIR`].
    pub fn search_dirs() -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(d) = std::env::var_os(BOARD_DIR_ENV).filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(d));
        }
        dirs.push(PathBuf::from(SYSTEM_BOARD_DIR));
        dirs
    }

    /// [`load`](Self::load) with an explicit list of directories before the stock boards.
    pub fn load_from(name_or_path: &str, dirs: &[PathBuf]) -> Result<BoardConfig, BoardError> {
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            return BoardConfig::load_file(Path::new(name_or_path), None);
        }
        let name = name_or_path;
        check_name(name)?;
        for dir in dirs {
            let path = dir.join(format!("{name}.toml"));
            if path.is_file() {
                return BoardConfig::load_file(&path, Some(name));
            }
        }
        if let Some(board) = BoardConfig::stock(name) {
            info!("board {name}: stock config");
            return board;
        }
        Err(BoardError::NotFound {
            name: name.to_string(),
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            stock: BoardConfig::stock_names().join(", "),
        })
    }

    /// Names of the stock boards compiled into the binary, sorted.
    pub fn stock_names() -> Vec<&'static str> {
        STOCK.iter().map(|(n, _)| *n).collect()
    }

    /// A stock board, parsed and validated; `None` if there is no stock board of that name.
    pub fn stock(name: &str) -> Option<Result<BoardConfig, BoardError>> {
        STOCK
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| BoardConfig::parse(text, &format!("stock {n}.toml"), Some(n)))
    }

    fn load_file(path: &Path, expected_name: Option<&str>) -> Result<BoardConfig, BoardError> {
        let text = std::fs::read_to_string(path).map_err(|source| BoardError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let board = BoardConfig::parse(&text, &path.display().to_string(), expected_name)?;
        info!("board {}: loaded {}", board.name, path.display());
        Ok(board)
    }

    /// Parses and validates TOML text. `origin` names the text in errors (a path); if
    /// `expected_name` is given, the `name` key must equal it.
    pub fn parse(
        text: &str,
        origin: &str,
        expected_name: Option<&str>,
    ) -> Result<BoardConfig, BoardError> {
        let board_label = || {
            expected_name.map(str::to_string).unwrap_or_else(|| {
                Path::new(origin)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| origin.to_string())
            })
        };
        let raw: RawBoard = toml::from_str(text).map_err(|e| BoardError::Parse {
            board: board_label(),
            origin: origin.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        let v = Validator {
            board: raw.name.clone(),
        };
        check_name(&raw.name).map_err(|_| {
            v.invalid(
                "name",
                format!("{:?}", raw.name),
                "must be 1-64 characters of a-z, 0-9, '-', '_', starting with a letter or digit",
            )
        })?;
        if let Some(expected) = expected_name {
            if raw.name != expected {
                return Err(v.invalid(
                    "name",
                    format!("{:?}", raw.name),
                    format!("must match the file name {expected}.toml"),
                ));
            }
        }
        v.validate(raw)
    }

    /// Memory the KV cache needs for `context_length` tokens of a model with these shapes:
    /// `2 (K and V) * n_layer * n_kv_heads * head_dim * context_length * element size`.
    pub fn kv_cache_bytes(&self, n_layer: u64, n_kv_heads: u64, head_dim: u64) -> u64 {
        edgellm_models::kv_cache::KvCache::bytes_for(
            n_layer as usize,
            self.model.context_length as usize,
            (n_kv_heads * head_dim) as usize,
            self.model.kv_type,
        ) as u64
    }
}

fn check_name(name: &str) -> Result<(), BoardError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(BoardError::BadName(name.to_string()))
    }
}

/// toml's message (which names an unknown or missing key) with the line number, the enclosing
/// `[table]` and the offending line itself (which names a mistyped key), on one line.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().replace('\n', " ");
    let Some(span) = e.span() else {
        return message;
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.split(']').next().unwrap_or(l).trim_start_matches('['));
    let source_line = text[before.rfind('\n').map_or(0, |i| i + 1)..]
        .lines()
        .next()
        .unwrap_or("")
        .trim();
    match table {
        Some(t) => format!("line {line} (in [{t}]) `{source_line}`: {message}"),
        None => format!("line {line} `{source_line}`: {message}"),
    }
}

struct Validator {
    board: String,
}

impl Validator {
    fn invalid(
        &self,
        key: &'static str,
        value: impl fmt::Display,
        rule: impl Into<String>,
    ) -> BoardError {
        BoardError::Invalid {
            board: self.board.clone(),
            key,
            value: value.to_string(),
            rule: rule.into(),
        }
    }

    fn range(&self, key: &'static str, v: i64, lo: i64, hi: i64) -> Result<i64, BoardError> {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(self.invalid(key, v, format!("must be between {lo} and {hi}")))
        }
    }

    /// Exactly one of `<what>_bytes` / `<what>_mib`, in bytes.
    fn bytes_or_mib(
        &self,
        keys: (&'static str, &'static str),
        bytes: Option<i64>,
        mib: Option<i64>,
    ) -> Result<u64, BoardError> {
        match (bytes, mib) {
            (Some(_), Some(m)) => Err(self.invalid(
                keys.1,
                m,
                format!("give either {} or {}, not both", keys.0, keys.1),
            )),
            (None, None) => Err(self.invalid(
                keys.0,
                "(missing)",
                format!("one of {} or {} is required", keys.0, keys.1),
            )),
            (Some(b), None) if b <= 0 => Err(self.invalid(keys.0, b, "must be positive")),
            (None, Some(m)) if !(1..=(1 << 24)).contains(&m) => {
                Err(self.invalid(keys.1, m, "must be between 1 and 16777216 (16 TiB)"))
            }
            (Some(b), None) => Ok(b as u64),
            (None, Some(m)) => Ok(m as u64 * MIB),
        }
    }

    fn absolute_path(&self, key: &'static str, p: &str) -> Result<PathBuf, BoardError> {
        if p.starts_with('/') && !p.contains('\0') {
            Ok(PathBuf::from(p))
        } else {
            Err(self.invalid(key, format!("{p:?}"), "must be an absolute path"))
        }
    }

    fn ids(
        &self,
        key: &'static str,
        ids: Option<Vec<i64>>,
    ) -> Result<Option<Vec<u32>>, BoardError> {
        let Some(ids) = ids else { return Ok(None) };
        if ids.is_empty() || ids.len() > 64 {
            return Err(self.invalid(
                key,
                format!("{ids:?}"),
                "must list 1 to 64 ids (omit the key to allow any)",
            ));
        }
        ids.iter()
            .map(|&id| {
                u32::try_from(id)
                    .ok()
                    .filter(|&id| id != u32::MAX)
                    .ok_or_else(|| self.invalid(key, id, "ids must be between 0 and 4294967294"))
            })
            .collect::<Result<Vec<u32>, _>>()
            .map(Some)
    }

    fn validate(&self, raw: RawBoard) -> Result<BoardConfig, BoardError> {
        if raw.description.len() > 512 {
            return Err(self.invalid(
                "description",
                format!("({} bytes)", raw.description.len()),
                "must be at most 512 bytes",
            ));
        }

        // [cpu]
        let cores = self.range("cpu.cores", raw.cpu.cores, 1, 256)? as u32;
        let threads = self.range("cpu.threads", raw.cpu.threads, 1, 64)? as u32;
        let mut features = Vec::with_capacity(raw.cpu.features.len());
        for name in &raw.cpu.features {
            let f = CpuFeature::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = CpuFeature::ALL.iter().map(|f| f.name()).collect();
                self.invalid(
                    "cpu.features",
                    format!("{name:?}"),
                    format!("unknown feature; known: {}", known.join(", ")),
                )
            })?;
            if features.contains(&f) {
                return Err(self.invalid("cpu.features", format!("{name:?}"), "listed twice"));
            }
            features.push(f);
        }
        if features.iter().any(|f| f.is_aarch64()) && features.iter().any(|f| !f.is_aarch64()) {
            return Err(self.invalid(
                "cpu.features",
                format!("{:?}", raw.cpu.features),
                "mixes aarch64 and x86_64 features",
            ));
        }

        // [memory]
        let m = &raw.memory;
        let ram_bytes = self.bytes_or_mib(
            ("memory.ram_bytes", "memory.ram_mib"),
            m.ram_bytes,
            m.ram_mib,
        )?;
        let budget_bytes = self.bytes_or_mib(
            ("memory.budget_bytes", "memory.budget_mib"),
            m.budget_bytes,
            m.budget_mib,
        )?;
        let budget_key = if m.budget_mib.is_some() {
            "memory.budget_mib"
        } else {
            "memory.budget_bytes"
        };
        let budget_shown = m.budget_mib.or(m.budget_bytes).unwrap_or_default();
        if budget_bytes < 16 * MIB {
            return Err(self.invalid(budget_key, budget_shown, "must be at least 16 MiB"));
        }
        if budget_bytes > ram_bytes {
            return Err(self.invalid(
                budget_key,
                budget_shown,
                format!("must not exceed the RAM ({} MiB)", ram_bytes / MIB),
            ));
        }

        // [serial]
        let s = &raw.serial;
        let device = self.absolute_path("serial.device", &s.device)?;
        if !s.device.starts_with("/dev/") {
            return Err(self.invalid(
                "serial.device",
                format!("{:?}", s.device),
                "must be a device under /dev/",
            ));
        }
        let baud = u32::try_from(s.baud)
            .ok()
            .filter(|b| BAUD_RATES.contains(b))
            .ok_or_else(|| {
                self.invalid(
                    "serial.baud",
                    s.baud,
                    format!("must be a standard rate: {BAUD_RATES:?}"),
                )
            })?;
        let flow_control = match s.flow_control.as_str() {
            "none" => FlowControl::None,
            "software" => FlowControl::Software,
            "hardware" => FlowControl::Hardware,
            other => {
                return Err(self.invalid(
                    "serial.flow_control",
                    format!("{other:?}"),
                    "must be one of \"none\", \"software\", \"hardware\"",
                ))
            }
        };
        let line_buffer = self.range("serial.line_buffer", s.line_buffer, 64, 65536)? as usize;

        // [socket]
        let k = &raw.socket;
        let path = self.absolute_path("socket.path", &k.path)?;
        if k.path.len() > MAX_SOCKET_PATH {
            return Err(self.invalid(
                "socket.path",
                format!("{:?}", k.path),
                format!("must be at most {MAX_SOCKET_PATH} bytes (sun_path limit)"),
            ));
        }
        let mode = parse_mode(&k.mode).ok_or_else(|| {
            self.invalid(
                "socket.mode",
                format!("{:?}", k.mode),
                "must be an octal string of 3 or 4 digits, e.g. \"0660\"",
            )
        })?;
        if mode & 0o002 != 0 {
            return Err(self.invalid(
                "socket.mode",
                format!("{:?}", k.mode),
                "must not be world-writable (anyone could drive the model)",
            ));
        }
        if mode & 0o600 != 0o600 {
            return Err(self.invalid(
                "socket.mode",
                format!("{:?}", k.mode),
                "must give the owner read and write (0600)",
            ));
        }
        if let Some(g) = &k.group {
            let valid = (1..=32).contains(&g.len())
                && g.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                })
                && !g.as_bytes()[0].is_ascii_digit()
                && g.as_bytes()[0] != b'-';
            if !valid {
                return Err(self.invalid(
                    "socket.group",
                    format!("{g:?}"),
                    "must be a group name (1-32 of a-z, 0-9, '_', '-', not starting with a digit or '-')",
                ));
            }
        }
        let allowed_uids = self.ids("socket.allowed_uids", k.allowed_uids.clone())?;
        let allowed_gids = self.ids("socket.allowed_gids", k.allowed_gids.clone())?;

        // [model]
        let md = &raw.model;
        let model_path = match &md.path {
            None => None,
            Some(p) if p.is_empty() => {
                return Err(self.invalid(
                    "model.path",
                    "\"\"",
                    "must not be empty (omit the key instead)",
                ))
            }
            Some(p) => Some(PathBuf::from(p)),
        };
        let context_length =
            self.range("model.context_length", md.context_length, 16, 131072)? as u32;
        let kv_type = match KvType::from_name(&md.kv_type) {
            Some(t) => t,
            None => {
                let other = &md.kv_type;
                return Err(self.invalid(
                    "model.kv_type",
                    format!("{other:?}"),
                    "must be \"f16\" or \"f32\"",
                ));
            }
        };

        Ok(BoardConfig {
            name: raw.name,
            description: raw.description,
            cpu: CpuConfig {
                cores,
                threads,
                features,
            },
            memory: MemoryConfig {
                ram_bytes,
                budget_bytes,
            },
            serial: SerialConfig {
                enabled: s.enabled,
                device,
                baud,
                flow_control,
                line_buffer,
            },
            socket: SocketConfig {
                path,
                mode,
                group: k.group.clone(),
                allowed_uids,
                allowed_gids,
            },
            model: ModelConfig {
                path: model_path,
                context_length,
                kv_type,
            },
        })
    }
}

/// `"0660"` / `"660"` -> `0o660`; at most `0o777` (no setuid/setgid/sticky bits).
fn parse_mode(s: &str) -> Option<u32> {
    if !(3..=4).contains(&s.len()) || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|&m| m <= 0o777)
}

#[cfg(test)]
mod tests;
