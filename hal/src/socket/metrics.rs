//! The socket server's own counters (requests by endpoint and status, refused connections)
//! and the `/metrics` page: those plus the engine's [`EngineStats`] in Prometheus' text
//! exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::engine::{EngineInfo, EngineStats};

/// The endpoints counted by name; anything else is `other` (a hostile client must not grow
/// the label set).
pub const ENDPOINTS: [&str; 8] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/tokenize",
    "/detokenize",
    "/health",
    "/metrics",
    "other",
];

/// The label an endpoint is counted under.
pub fn endpoint_label(path: &str) -> &'static str {
    ENDPOINTS
        .iter()
        .copied()
        .find(|e| *e == path)
        .unwrap_or("other")
}

#[derive(Default)]
pub struct ServerMetrics {
    /// (endpoint, status) → responses sent.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Connections closed for being over the connection limit.
    pub refused_over_limit: AtomicU64,
    /// Connections closed because the peer is not on the allow-list.
    pub refused_peer: AtomicU64,
    /// Generations that ended in `Event::Failed`.
    pub generation_errors: AtomicU64,
}

impl ServerMetrics {
    pub fn count_request(&self, endpoint: &'static str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((endpoint, status)).or_insert(0) += 1;
    }

    /// The `/metrics` page.
    pub fn render(
        &self,
        stats: &EngineStats,
        info: &EngineInfo,
        soc_temperature_c: Option<f32>,
    ) -> String {
        let mut out = String::new();
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        header(
            &mut out,
            "edgellm_requests_total",
            "counter",
            "HTTP responses by endpoint and status.",
        );
        for ((endpoint, status), n) in &requests {
            let _ = writeln!(
                out,
                "edgellm_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let errors: u64 = requests
            .iter()
            .filter(|((_, s), _)| *s >= 400)
            .map(|(_, n)| n)
            .sum::<u64>()
            + self.generation_errors.load(Ordering::Relaxed);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters: [(&str, &str, u64); 11] = [
            (
                "edgellm_errors_total",
                "Error responses (status >= 400) plus generations that failed mid-stream.",
                errors,
            ),
            (
                "edgellm_prompt_tokens_total",
                "Prompt tokens evaluated.",
                load(&stats.prompt_tokens),
            ),
            (
                "edgellm_reused_tokens_total",
                "Prompt tokens reused from the KV cache instead of evaluated.",
                load(&stats.reused_tokens),
            ),
            (
                "edgellm_generated_tokens_total",
                "Tokens generated.",
                load(&stats.generated_tokens),
            ),
            (
                "edgellm_jobs_completed_total",
                "Generations that ran to a stop condition.",
                load(&stats.jobs_completed),
            ),
            (
                "edgellm_jobs_cancelled_total",
                "Generations cancelled (client gone, Ctrl-C, shutdown).",
                load(&stats.jobs_cancelled),
            ),
            (
                "edgellm_jobs_failed_total",
                "Generations that failed.",
                load(&stats.jobs_failed),
            ),
            (
                "edgellm_model_reloads_total",
                "Times the model file was mapped again (SIGHUP).",
                info.reloads,
            ),
            (
                "edgellm_model_reload_failures_total",
                "Reloads that failed; the old model kept serving.",
                load(&stats.reload_failures),
            ),
            (
                "edgellm_connections_refused_limit_total",
                "Connections closed for being over the connection limit.",
                load(&self.refused_over_limit),
            ),
            (
                "edgellm_connections_refused_peer_total",
                "Connections closed because the peer is not on the allow-list.",
                load(&self.refused_peer),
            ),
        ];
        for (name, help, v) in counters {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        let gauges: [(&str, &str, f64); 6] = [
            (
                "edgellm_last_generation_tokens_per_second",
                "Generation speed of the last job.",
                stats.last_gen_tokens_per_s(),
            ),
            (
                "edgellm_last_prompt_tokens_per_second",
                "Prompt evaluation speed of the last job.",
                stats.last_prompt_tokens_per_s(),
            ),
            (
                "edgellm_queue_depth",
                "Requests waiting for the engine.",
                stats.queue_depth.load(Ordering::Relaxed) as f64,
            ),
            (
                "edgellm_busy",
                "1 while a generation runs.",
                stats.busy.load(Ordering::Relaxed) as f64,
            ),
            (
                "edgellm_context_used",
                "KV cache positions in use after the last job.",
                stats.ctx_used.load(Ordering::Relaxed) as f64,
            ),
            (
                "edgellm_context_size",
                "KV cache positions.",
                info.n_ctx as f64,
            ),
        ];
        for (name, help, v) in gauges {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        }
        if let Some(t) = soc_temperature_c {
            header(
                &mut out,
                "edgellm_soc_temperature_celsius",
                "gauge",
                "SoC temperature.",
            );
            let _ = writeln!(out, "edgellm_soc_temperature_celsius {t}");
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(endpoint_label("/health"), "/health");
        assert_eq!(endpoint_label("/etc/passwd"), "other");
    }
}
