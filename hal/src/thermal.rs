//! SoC temperature from the Linux thermal sysfs (`/sys/class/thermal/thermal_zone*/`), for
//! `/health`, `/metrics` and the console's `/stats`.
//!
//! A Raspberry Pi exposes one zone (`cpu-thermal`); a Jetson several (`cpu-thermal`,
//! `gpu-thermal`, `soc0-thermal`, ...); x86 machines `x86_pkg_temp` or `acpitz`, or none (VMs,
//! containers). The zone whose type names the CPU or SoC wins; else the first readable one.

use std::path::Path;

const THERMAL_DIR: &str = "/sys/class/thermal";

/// The SoC temperature in degrees Celsius, or `None` when the machine reports none.
pub fn soc_temperature_c() -> Option<f32> {
    soc_temperature_in(Path::new(THERMAL_DIR))
}

/// [`soc_temperature_c`] over another sysfs root (tests).
pub fn soc_temperature_in(dir: &Path) -> Option<f32> {
    let mut zones: Vec<(String, f32)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
        .filter_map(|e| {
            let kind = std::fs::read_to_string(e.path().join("type")).unwrap_or_default();
            let milli: i64 = std::fs::read_to_string(e.path().join("temp"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((kind.trim().to_string(), milli as f32 / 1000.0))
        })
        .collect();
    zones.sort_by(|a, b| a.0.cmp(&b.0));
    let preferred = |k: &str| {
        let k = k.to_ascii_lowercase();
        k.contains("cpu") || k.contains("soc") || k.contains("x86_pkg")
    };
    zones
        .iter()
        .find(|(k, _)| preferred(k))
        .or_else(|| zones.first())
        .map(|&(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(root: &Path, n: usize, kind: &str, temp: &str) {
        let d = root.join(format!("thermal_zone{n}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(d.join("temp"), format!("{temp}\n")).unwrap();
    }

    #[test]
    fn prefers_the_cpu_zone_and_reads_millidegrees() {
        let root = std::env::temp_dir().join(format!("edgellm-thermal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        zone(&root, 0, "acpitz", "27800");
        zone(&root, 1, "cpu-thermal", "51234");
        zone(&root, 2, "broken", "not a number");
        assert_eq!(soc_temperature_in(&root), Some(51.234));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_zones_is_none() {
        assert_eq!(soc_temperature_in(Path::new("/nonexistent/thermal")), None);
    }
}
