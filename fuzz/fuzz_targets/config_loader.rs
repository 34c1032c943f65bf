//! The config loader on any bytes: it must return a config or a diagnosis, never panic,
//! and never report more than its cap of problems.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = ncp_watchd::config::Config::parse(std::path::Path::new("/fuzz/config.toml"), &text) {
        let rendered = e.to_string();
        let problems = rendered.lines().filter(|l| l.starts_with("error: ")).count();
        assert!(problems <= 51, "{problems} problems reported");
    }
});
