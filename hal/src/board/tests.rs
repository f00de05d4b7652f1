use super::*;

const RPI4: &str = include_str!("../../../board-configs/rpi4.toml");

/// The rpi4 stock text with one line replaced (`old` must occur exactly once).
fn rpi4_with(old: &str, new: &str) -> String {
    assert_eq!(
        RPI4.matches(old).count(),
        1,
        "{old:?} must occur once in rpi4.toml"
    );
    RPI4.replace(old, new)
}

fn parse_err(text: &str) -> String {
    match BoardConfig::parse(text, "rpi4.toml", None) {
        Ok(b) => panic!("expected an error, parsed {b:?}"),
        Err(e) => e.to_string(),
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgellm-board-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_stock_config_loads_and_validates() {
    let names = BoardConfig::stock_names();
    assert_eq!(
        names,
        [
            "generic-x86_64",
            "jetson-orin-nano",
            "rpi-zero-2w",
            "rpi4",
            "rpi5"
        ]
    );
    // Every file in board-configs/ is compiled in.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .map(|n| n.trim_end_matches(".toml").to_string())
        .collect();
    files.sort();
    assert_eq!(files, names);
    for name in names {
        let b = BoardConfig::load_from(name, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.name, name);
        assert!(b.memory.budget_bytes <= b.memory.ram_bytes);
        assert_eq!(b.socket.path, Path::new("/run/edgellm/edgellm.sock"));
        assert_eq!(b.socket.mode, 0o660);
        // SmolLM2-135M (30 layers, 3 KV heads of 64) Q4_1 (94 MiB) + its KV cache fit.
        let need = 98_362_432 + b.kv_cache_bytes(30, 3, 64);
        assert!(need < b.memory.budget_bytes, "{name}: {need} > budget");
    }
}

#[test]
fn stock_figures() {
    let get = |n: &str| BoardConfig::stock(n).unwrap().unwrap();
    let zero = get("rpi-zero-2w");
    assert_eq!((zero.cpu.cores, zero.memory.ram_bytes), (4, 512 << 20));
    assert_eq!(zero.cpu.features, [CpuFeature::Neon]);
    assert_eq!(zero.serial.device, Path::new("/dev/ttyGS0"));
    let pi4 = get("rpi4");
    assert!(!pi4.cpu.features.contains(&CpuFeature::Dotprod));
    assert_eq!(
        (pi4.serial.device.to_str(), pi4.serial.baud),
        (Some("/dev/serial0"), 115200)
    );
    assert!(get("rpi5").cpu.features.contains(&CpuFeature::Dotprod));
    let jetson = get("jetson-orin-nano");
    assert_eq!(
        (jetson.cpu.cores, jetson.serial.device.to_str()),
        (6, Some("/dev/ttyTHS0"))
    );
    let x86 = get("generic-x86_64");
    assert!(!x86.serial.enabled && x86.cpu.features.contains(&CpuFeature::Avx2));
}

#[test]
fn bad_values_name_key_and_value() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "threads = 4",
            "threads = 0",
            "board rpi4: cpu.threads = 0: must be between 1 and 64",
        ),
        (
            "threads = 4",
            "threads = 65",
            "board rpi4: cpu.threads = 65: must be between 1 and 64",
        ),
        (
            "cores = 4",
            "cores = -1",
            "board rpi4: cpu.cores = -1: must be between 1 and 256",
        ),
        (
            "features = [\"neon\"]",
            "features = [\"neon\", \"avx9\"]",
            "cpu.features = \"avx9\": unknown feature",
        ),
        (
            "features = [\"neon\"]",
            "features = [\"neon\", \"neon\"]",
            "cpu.features = \"neon\": listed twice",
        ),
        (
            "features = [\"neon\"]",
            "features = [\"neon\", \"avx2\"]",
            "mixes aarch64 and x86_64",
        ),
        (
            "budget_mib = 3072",
            "budget_mib = 5000",
            "memory.budget_mib = 5000: must not exceed the RAM (4096 MiB)",
        ),
        (
            "budget_mib = 3072",
            "budget_mib = 8",
            "memory.budget_mib = 8: must be at least 16 MiB",
        ),
        (
            "budget_mib = 3072",
            "budget_mib = 3072\nbudget_bytes = 1000000000",
            "memory.budget_mib = 3072: give either",
        ),
        (
            "ram_mib = 4096",
            "",
            "memory.ram_bytes = (missing): one of memory.ram_bytes or memory.ram_mib",
        ),
        (
            "ram_mib = 4096",
            "ram_bytes = -5",
            "memory.ram_bytes = -5: must be positive",
        ),
        (
            "device = \"/dev/serial0\"",
            "device = \"serial0\"",
            "serial.device = \"serial0\": must be an absolute path",
        ),
        (
            "device = \"/dev/serial0\"",
            "device = \"/tmp/x\"",
            "serial.device = \"/tmp/x\": must be a device under /dev/",
        ),
        (
            "baud = 115200",
            "baud = 115201",
            "serial.baud = 115201: must be a standard rate",
        ),
        (
            "flow_control = \"none\"",
            "flow_control = \"xon\"",
            "serial.flow_control = \"xon\": must be one of",
        ),
        (
            "line_buffer = 1024",
            "line_buffer = 10",
            "serial.line_buffer = 10: must be between 64 and 65536",
        ),
        (
            "mode = \"0660\"",
            "mode = \"0666\"",
            "socket.mode = \"0666\": must not be world-writable",
        ),
        (
            "mode = \"0660\"",
            "mode = \"rw\"",
            "socket.mode = \"rw\": must be an octal string",
        ),
        (
            "mode = \"0660\"",
            "mode = \"4660\"",
            "socket.mode = \"4660\": must be an octal string",
        ),
        (
            "mode = \"0660\"",
            "mode = \"0460\"",
            "socket.mode = \"0460\": must give the owner read and write",
        ),
        (
            "path = \"/run/edgellm/edgellm.sock\"",
            "path = \"edgellm.sock\"",
            "socket.path = \"edgellm.sock\": must be an absolute path",
        ),
        (
            "group = \"edgellm\"",
            "group = \"9lives\"",
            "socket.group = \"9lives\": must be a group name",
        ),
        (
            "group = \"edgellm\"",
            "group = \"edgellm\"\nallowed_uids = []",
            "socket.allowed_uids = []: must list 1 to 64 ids",
        ),
        (
            "group = \"edgellm\"",
            "group = \"edgellm\"\nallowed_gids = [1000, -1]",
            "socket.allowed_gids = -1: ids must be between",
        ),
        (
            "context_length = 4096",
            "context_length = 8",
            "model.context_length = 8: must be between 16 and 131072",
        ),
        (
            "kv_type = \"f16\"",
            "kv_type = \"q8_0\"",
            "model.kv_type = \"q8_0\": must be \"f16\" or \"f32\"",
        ),
        (
            "name = \"rpi4\"",
            "name = \"Pi 4\"",
            "board Pi 4: name = \"Pi 4\": must be 1-64 characters",
        ),
    ];
    for (old, new, want) in cases {
        let err = parse_err(&rpi4_with(old, new));
        assert!(err.contains(want), "{new:?}: got {err:?}, want {want:?}");
    }
    // Long socket paths do not fit sun_path.
    let long = format!("path = \"/run/{}.sock\"", "x".repeat(100));
    let err = parse_err(&rpi4_with("path = \"/run/edgellm/edgellm.sock\"", &long));
    assert!(
        err.contains("socket.path") && err.contains("sun_path"),
        "{err}"
    );
}

#[test]
fn unknown_and_missing_keys_are_named() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "threads = 4",
            "thredas = 4",
            &["board rpi4", "in [cpu]", "thredas"],
        ),
        (
            "baud = 115200",
            "baud = 115200\nparity = \"even\"",
            &["in [serial]", "parity"],
        ),
        (
            "name = \"rpi4\"",
            "name = \"rpi4\"\ncolour = \"red\"",
            &["colour"],
        ),
        ("[model]", "[gpu]\ncores = 1\n[model]", &["gpu"]),
        ("cores = 4\n", "", &["cores"]),
        (
            "threads = 4",
            "threads = \"four\"",
            &["line 9 (in [cpu]) `threads = \"four\"`: invalid type"],
        ),
    ];
    for (old, new, wants) in cases {
        let err = parse_err(&rpi4_with(old, new));
        for w in *wants {
            assert!(err.contains(w), "{new:?}: got {err:?}, want {w:?}");
        }
    }
}

#[test]
fn optional_sections_take_defaults() {
    let text = "name = \"tiny\"\ndescription = \"\"\n[cpu]\ncores = 1\nthreads = 1\n\
                [memory]\nram_bytes = 268435456\nbudget_mib = 128\n\
                [serial]\ndevice = \"/dev/ttyS0\"\nbaud = 9600\n";
    let b = BoardConfig::parse(text, "tiny.toml", None).unwrap();
    assert_eq!(
        b.memory,
        MemoryConfig {
            ram_bytes: 256 << 20,
            budget_bytes: 128 << 20
        }
    );
    assert!(b.serial.enabled);
    assert_eq!(
        (b.serial.flow_control, b.serial.line_buffer),
        (FlowControl::None, 1024)
    );
    assert_eq!(b.socket.path, Path::new("/run/edgellm/edgellm.sock"));
    assert_eq!((b.socket.mode, b.socket.group.as_deref()), (0o660, None));
    assert_eq!(
        (
            b.model.path.as_deref(),
            b.model.context_length,
            b.model.kv_type
        ),
        (None, 2048, KvType::F16)
    );
    assert!(b.cpu.features.is_empty());
}

#[test]
fn lookup_order_paths_and_names() {
    let dir = temp_dir("lookup");
    let dirs = std::slice::from_ref(&dir);
    // A directory config shadows the stock board of the same name.
    std::fs::write(
        dir.join("rpi4.toml"),
        rpi4_with("threads = 4", "threads = 2"),
    )
    .unwrap();
    let b = BoardConfig::load_from("rpi4", dirs).unwrap();
    assert_eq!(b.cpu.threads, 2);
    // Not in the directory: the stock one.
    assert_eq!(BoardConfig::load_from("rpi5", dirs).unwrap().name, "rpi5");
    // By path (contains '/').
    let path = dir.join("rpi4.toml");
    assert_eq!(
        BoardConfig::load(path.to_str().unwrap())
            .unwrap()
            .cpu
            .threads,
        2
    );
    // A file found by name must carry that name.
    std::fs::write(dir.join("mybox.toml"), RPI4).unwrap();
    let err = BoardConfig::load_from("mybox", dirs)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("name = \"rpi4\": must match the file name mybox.toml"),
        "{err}"
    );
    // ...but a path may hold any board.
    assert_eq!(
        BoardConfig::load(dir.join("mybox.toml").to_str().unwrap())
            .unwrap()
            .name,
        "rpi4"
    );
    let err = BoardConfig::load_from("rpi9", dirs)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rpi9") && err.contains("rpi-zero-2w, rpi4, rpi5"),
        "{err}"
    );
    assert!(matches!(
        BoardConfig::load_from("Rpi4", &[]),
        Err(BoardError::BadName(_))
    ));
    let err = BoardConfig::load("/nonexistent/board.toml").unwrap_err();
    assert!(matches!(err, BoardError::Io { .. }), "{err}");
    // A parse error in a file names the file.
    std::fs::write(dir.join("broken.toml"), "name = \"broken\"\n[cpu\n").unwrap();
    let err = BoardConfig::load_from("broken", dirs)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("board broken: ") && err.contains("broken.toml"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
